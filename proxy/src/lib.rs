//! skiff-proxy: the Skiff sidecar. It accepts the connections that skiff-init's rules
//! redirect to it and forwards them according to its configuration.

pub mod orig_dst;
