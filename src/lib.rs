//! Manifold: a Kubernetes operator that attaches foreign-data-wrapper
//! connections to Postgres workspaces.

pub use manifold_core::api;
pub mod controller;
pub mod import;
pub mod metrics;
pub use manifold_core::plugins;
pub mod postgres;
pub use manifold_core::secret;
