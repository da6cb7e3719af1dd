//! `skiff-proxy`: the sidecar's command line (being built).

fn main() {}
