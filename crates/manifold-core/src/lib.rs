//! Manifold's pure core: the API types (`api`), what each plugin becomes
//! in Postgres under the admin's policy (`plugins`), the planner that
//! decides every statement (`plan`), and the one module that renders SQL
//! text (`sql`), with the secret strings they carry (`secret`).
//!
//! It depends on no kube runtime or client and on no Postgres client, so
//! Cargo holds what the planner promises: no I/O here. Its tests build and
//! run without the operator's dependencies.

pub mod api;
pub mod plan;
pub mod plugins;
pub mod secret;
pub mod sql;
