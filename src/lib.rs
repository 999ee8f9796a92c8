//! Manifold: a Kubernetes operator that attaches foreign-data-wrapper
//! connections to Postgres workspaces.

pub mod api;
pub mod plugins;
pub mod secret;
pub mod postgres;
pub mod controller;
pub mod metrics;
