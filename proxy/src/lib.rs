//! skiff-proxy: the Skiff sidecar. It accepts the connections that skiff-init's rules
//! redirect to it, recovers each one's original destination, and forwards it according to
//! the running [`snapshot::Snapshot`].

pub mod balance;
pub mod detect;
pub mod listener;
pub mod orig_dst;
pub mod snapshot;
pub mod tcp;
