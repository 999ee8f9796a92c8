//! The controllers: one reconciler per kind, and what they share.
//!
//! - `context`: settings, stores, indexes, triggers, backoff, errors.
//! - `run`: the watches and the controllers of each scope.
//! - `relations`: which reconciles a watch event causes elsewhere.
//! - `resolve`: references from the stores, into what a plan needs.
//! - `attachment`, `workspace`, `connection`: the three reconcilers. Only
//!   the attachment reconciler makes schemas; the workspace reconciler owns
//!   the periodic resync (one catalog query per workspace) and the removal
//!   of everything its namespace made when it goes; the connection
//!   reconciler owns tests and the connection's status.
//! - `deletion`: the way into a database while objects go, and when a
//!   deletion stops waiting for it.
//! - `selection`: a Workspace's connection selectors, carried out as
//!   WorkspaceConnections it owns.
//! - `status`: conditions, status writes and Events, for all three.
//! - `pin_key`: the operator's key of every Workspace's database pin.

mod admission;
mod aggregates;
mod attachment;
mod backoff;
mod connection;
mod context;
mod deletion;
mod errors;
mod index;
mod observations;
pub mod pin_key;
mod recent_tests;
mod relations;
mod resolve;
mod run;
mod selection;
mod settings;
mod status;
mod stores;
mod subscriber;
mod triggers;
mod workspace;

pub use context::{MANAGER, Settings, Shared};
pub use observations::Observations;
pub use run::run;

#[cfg(test)]
mod testing;
