//! skiff-injector: decides which Pods join the mesh and adds Skiff's init container and
//! sidecar to them, as a Kubernetes admission webhook and as a manual `inject` command.

pub mod admission;
pub mod annotations;
pub mod cabundle;
pub mod certstore;
pub mod cli;
pub mod config;
pub mod files;
pub mod inject;
pub mod metrics;
pub mod patch;
pub mod policy;
pub mod probes;
pub mod prometheus;
pub mod selfsigned;
pub mod serve;
pub mod sidecar;
pub mod status;
pub mod store;
pub mod tls;
pub mod workload;
