//! skiff-proxy: the Skiff sidecar. It accepts the connections that skiff-init's rules
//! redirect to it, recovers each one's original destination, and forwards it according to
//! the running [`snapshot::Snapshot`].

pub mod access_log;
pub mod admin;
pub mod agent;
pub mod balance;
pub mod config_store;
pub mod cow_map;
pub mod detect;
pub mod health;
pub mod http;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod orig_dst;
pub mod route;
pub mod run;
pub mod snapshot;
pub mod splice;
pub mod static_config;
pub mod tcp;
pub mod xds;
