//! End-to-end tests against a real kube-apiserver and a real Postgres, both
//! started by the test support on 127.0.0.1. Build them first with
//! tests/controlplane/build.sh (the README's test command does).

mod support;

mod attach;
mod crds;
mod gitops;
mod test_connection;
