//! Processes: long-running daemons (proxies, the app) killed with their children when
//! dropped, one-shot clients with a deadline, and the /proc figures the report needs (CPU
//! time, resident memory) summed over a process and its descendants (nginx's workers).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The last lines a daemon wrote to stderr, kept for error messages and readiness.
type Log = Arc<Mutex<VecDeque<String>>>;
const LOG_LINES: usize = 200;

/// A background process (and whatever it forks) that is terminated when dropped.
pub struct Daemon {
    name: String,
    child: Child,
    log: Log,
    /// Lines already looked at by [`Daemon::wait_for_log`].
    seen: usize,
}

impl Daemon {
    /// Starts `cmd` with stdout discarded and stderr collected.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Daemon> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        let log: Log = Arc::default();
        let stderr = child.stderr.take().context("stderr")?;
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        Ok(Daemon {
            name: name.to_owned(),
            child,
            log,
            seen: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The collected stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let skip = log.len().saturating_sub(8);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a stderr line contains `needle`; fails if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                if log.iter().skip(self.seen).any(|l| l.contains(needle)) {
                    self.seen = log.len();
                    return Ok(());
                }
            }
            if !self.alive() {
                bail!("{} exited: {}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no log line with {needle:?} within {timeout:?}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds (user + system) used so far by the process and its descendants.
    pub fn cpu_seconds(&self) -> f64 {
        tree(self.pid()).iter().map(|p| cpu_of(*p)).sum()
    }

    /// A KiB field of /proc/PID/status (`VmRSS:`, `VmHWM:`) summed over the process tree.
    pub fn status_kib(&self, field: &str) -> u64 {
        tree(self.pid())
            .iter()
            .map(|p| skiff_tests::bench::status_kib(*p, field))
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pids = tree(self.pid());
        // SIGTERM first: nginx's master then stops its workers itself.
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().rev() {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                signal(*pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a pid this harness started; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Runs `cmd` to completion, killing it after `timeout`; returns its output.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = format!("{cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("start {described}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{described} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// `pid` and its descendants, parents first.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1)?.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// The fields of /proc/PID/stat after the command name: [0] is the state, [1] the ppid,
/// [11] utime and [12] stime (fields 14 and 15 of proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn cpu_of(pid: u32) -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    stat_fields(pid)
        .and_then(|f| {
            let user: u64 = f.get(11)?.parse().ok()?;
            let system: u64 = f.get(12)?.parse().ok()?;
            Some((user + system) as f64 / ticks)
        })
        .unwrap_or(0.0)
}

/// Where `tool` is, looking in PATH and the sbin directories.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
