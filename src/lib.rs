//! Manifold: a Kubernetes operator that attaches foreign-data-wrapper
//! connections to Postgres workspaces.

pub mod api;
pub mod controller;
pub mod import;
pub mod metrics;
pub mod plugins;
pub mod postgres;
pub mod secret;
