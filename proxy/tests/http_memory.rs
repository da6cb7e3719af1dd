//! A proxy streams bodies: 64 MiB up and 64 MiB down through it must not raise the
//! process's peak memory by anything near the body size. Its own test binary, so that no
//! other test's allocations move the peak meanwhile.

#[path = "http/bodies.rs"]
mod bodies;
#[path = "http/harness.rs"]
mod harness;

/// The process's peak resident set so far (VmHWM), in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_64_mib_each_way_keeps_memory_bounded() {
    let app = bodies::streaming_server().await;
    let proxy = harness::proxy(
        "routes: [{match: {prefix: /}, route: {cluster: app, timeout: 0s}}]",
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app)],
    )
    .await;
    // Warm up allocator arenas and connection buffers with a small transfer first.
    assert_eq!(
        bodies::upload(proxy.addr, 1 << 20).await,
        format!("{} intact", 1 << 20)
    );
    let before = peak_kib();
    let len: u64 = 64 << 20;
    let (up, down) = tokio::join!(
        bodies::upload(proxy.addr, len),
        bodies::download(proxy.addr, len)
    );
    assert_eq!(up, format!("{len} intact"));
    assert_eq!(down, len);
    let grown_mib = (peak_kib() - before) / 1024;
    // Client, proxy and server all live in this process; buffering either body whole
    // anywhere would add 64 MiB.
    assert!(
        grown_mib < 24,
        "peak memory grew by {grown_mib} MiB while streaming 2 x 64 MiB"
    );
    println!("peak memory grew by {grown_mib} MiB while streaming 2 x 64 MiB");
}
