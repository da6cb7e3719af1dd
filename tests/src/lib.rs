//! The end-to-end harness: throw-away network namespaces wired like pods, the real Skiff
//! binaries run inside them, and small socket helpers to prove where traffic went.
//!
//! Traffic only ever goes to loopback or to addresses inside namespaces the test created.

pub mod bench;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod xds_mesh;
pub mod xds_resources;
pub mod xds_server;

use std::path::PathBuf;

/// Whether this process may create network namespaces and program iptables. Tests that need
/// it return early with a printed reason when not (CI runs as root, so there they run).
pub fn can_run_as_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "iptables", "iptables-save", "iptables-restore"]
        .iter()
        .all(|tool| which(tool).is_some());
    match (root, tools) {
        (true, true) => true,
        (false, _) => {
            eprintln!("SKIPPED {test}: needs root (network namespaces and iptables)");
            false
        }
        (true, false) => {
            eprintln!(
                "SKIPPED {test}: needs ip and iptables (apt-get install -y iproute2 iptables)"
            );
            false
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The path of a workspace binary built in the same profile as this test (the test script
/// builds them first with `cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // A test runs from target/<profile>/deps/, a binary such as skiff-demo from
    // target/<profile>/: the workspace's binaries are in target/<profile>/ either way.
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}
