//! skiff-injector: decides which Pods join the mesh and adds Skiff's init container and
//! sidecar to them, as a Kubernetes admission webhook and as a manual `inject` command.

pub mod annotations;
pub mod policy;
