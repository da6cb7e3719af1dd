//! Running external commands (iptables, ip) behind a small trait, so the apply flow can be
//! driven by a fake in unit tests and printed verbatim in `--dry-run`.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{InitError, xtables_hint, xtables_problem};

/// A command line with optional stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn stdin(mut self, text: impl Into<String>) -> Cmd {
        self.stdin = Some(text.into());
        self
    }
}

/// The command as a shell would need it typed: words with shell metacharacters are quoted.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs commands. Only spawning can fail here; a non-zero exit is an `Output`.
pub trait Runner {
    fn run(&self, cmd: &Cmd) -> Result<Output, InitError>;

    /// Runs `cmd`; a non-zero exit is an error (see [`ensure_success`]).
    fn run_ok(&self, cmd: &Cmd) -> Result<Output, InitError> {
        let out = self.run(cmd)?;
        ensure_success(cmd, out)
    }
}

/// Turns a non-zero exit of `cmd` into an error that explains xtables' exit codes.
pub fn ensure_success(cmd: &Cmd, out: Output) -> Result<Output, InitError> {
    if out.success() {
        return Ok(out);
    }
    let xtables = cmd.program.contains("tables");
    Err(InitError::Command {
        command: cmd.to_string(),
        code: out.code,
        problem: if xtables {
            format!(": xtables {} problem", xtables_problem(out.code))
        } else {
            String::new()
        },
        stderr: tail(&out.stderr),
        hint: if xtables {
            xtables_hint(&out.stderr)
        } else {
            ""
        },
    })
}

/// The last few lines of stderr: enough to see the failing rule, short enough for a log line.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Runs commands on this machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct System;

impl Runner for System {
    fn run(&self, cmd: &Cmd) -> Result<Output, InitError> {
        tracing::debug!(command = %cmd, "running");
        let spawn_error = |source| InitError::Spawn {
            command: cmd.to_string(),
            source,
        };
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
            // A restore that fails early closes its stdin; the exit status says why.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_error)?;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_a_shell_would_mangle() {
        let cmd = Cmd::new("iptables").args([
            "-t",
            "nat",
            "-A",
            "X",
            "-m",
            "comment",
            "--comment",
            "a b",
            "*",
        ]);
        assert_eq!(
            cmd.to_string(),
            "iptables -t nat -A X -m comment --comment 'a b' '*'"
        );
        assert_eq!(
            Cmd::new("ip")
                .args(["-6", "addr", "add", "::6/128"])
                .to_string(),
            "ip -6 addr add ::6/128"
        );
        assert_eq!(Cmd::new("x").arg("").to_string(), "x ''");
    }

    #[test]
    fn failures_explain_xtables_exit_codes() {
        struct Fails;
        impl Runner for Fails {
            fn run(&self, _: &Cmd) -> Result<Output, InitError> {
                Ok(Output {
                    code: 2,
                    stdout: String::new(),
                    stderr: "iptables-restore v1.8.9 (nf_tables): Couldn't load match `owner'\n"
                        .into(),
                })
            }
        }
        let err = Fails
            .run_ok(&Cmd::new("iptables-restore").arg("--noflush"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("xtables parameter problem"), "{err}");
        assert!(err.contains("xt_owner"), "{err}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = System
            .run(&Cmd::new("/nonexistent/skiff-test"))
            .unwrap_err();
        assert!(matches!(err, InitError::Spawn { .. }), "{err}");
    }
}
