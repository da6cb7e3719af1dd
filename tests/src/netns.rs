//! Throw-away Linux network namespaces that stand in for pods.
//!
//! A [`Netns`] is deleted when dropped, also when the test panics. Code runs inside one by
//! way of a short-lived thread that has `setns`-ed into it: sockets remember the namespace
//! they were created in, so a listener made there can be used from any thread afterwards.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Every namespace this harness makes starts with this, followed by the creating pid, so a
/// later run can tell its own leftovers from a crashed run's.
const PREFIX: &str = "skiff-t";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists while this value lives.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}-{}-{n}-{tag}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `setns` or `skiff-init --network-namespace`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `ip ARGS` inside the namespace; fails with ip's stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.run_as(None, f)
    }

    /// Starts `f` on a thread inside the namespace and returns at once (background traffic
    /// while the test does something else).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// Like [`Netns::run`], with the thread's credentials switched to `owner` (uid, gid)
    /// first: iptables' owner match reads them from the socket, which records them when it
    /// is created. Raw syscalls change only the calling thread, not the test process.
    pub fn run_as<T: Send + 'static>(
        &self,
        owner: Option<(u32, u32)>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            if let Some((uid, gid)) = owner {
                // SAFETY: these raw syscalls change only this thread's credentials, and the
                // thread ends when `f` returns.
                unsafe {
                    assert_eq!(
                        libc::syscall(libc::SYS_setresgid, gid, gid, gid),
                        0,
                        "setresgid"
                    );
                    assert_eq!(
                        libc::syscall(libc::SYS_setresuid, uid, uid, uid),
                        0,
                        "setresuid"
                    );
                }
            }
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: the "pod" and a "peer" on the same link, with
/// IPv4 10.77.0.1/24 (pod) and .2 (peer), IPv6 fd77::1/64 and fd77::2.
#[derive(Debug)]
pub struct PodPair {
    pub pod: Netns,
    pub peer: Netns,
}

impl PodPair {
    pub const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    pub const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
    pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

    pub fn new(tag: &str) -> io::Result<PodPair> {
        let pod = Netns::new(&format!("{tag}-pod"))?;
        let peer = Netns::new(&format!("{tag}-peer"))?;
        run_ok(Command::new("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            pod.name(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            peer.name(),
        ]))?;
        for (ns, v4, v6) in [
            (&pod, Self::POD_V4, Self::POD_V6),
            (&peer, Self::PEER_V4, Self::PEER_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            // nodad: the address is usable at once, without waiting for duplicate detection.
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok(PodPair { pod, peer })
    }

    pub fn pod_ip(v6: bool) -> IpAddr {
        if v6 {
            Self::POD_V6.into()
        } else {
            Self::POD_V4.into()
        }
    }

    pub fn peer_ip(v6: bool) -> IpAddr {
        if v6 {
            Self::PEER_V6.into()
        } else {
            Self::PEER_V4.into()
        }
    }
}

fn run_ok(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Deletes namespaces left by test processes that no longer exist (killed by a timeout or
/// a signal, when no destructor ran).
fn sweep_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    });
}
