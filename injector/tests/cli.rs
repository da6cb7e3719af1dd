//! The `skiff-injector` binary's file handling: stdin/stdout, `-o`, `--diff`, `uninject`,
//! and that a bad document fails the command without writing anything.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: app, image: busybox}\n";

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-injector"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("skiff-injector-cli-{}-{name}", std::process::id()))
}

#[test]
fn stdin_to_stdout_and_back() {
    let injected = run(&["inject", "-f", "-"], POD);
    assert!(injected.status.success());
    let text = String::from_utf8(injected.stdout).unwrap();
    assert!(text.contains("name: istio-proxy"), "{text}");

    let restored = run(&["uninject", "-f", "-"], &text);
    assert!(restored.status.success());
    let again = run(&["inject", "--uninject", "-f", "-"], &text);
    assert_eq!(
        restored.stdout, again.stdout,
        "both spellings of uninject agree"
    );
    let value: serde_json::Value = yaml_serde::from_str(
        String::from_utf8(restored.stdout)
            .unwrap()
            .trim_end_matches("---\n"),
    )
    .unwrap();
    let original: serde_json::Value = yaml_serde::from_str(POD).unwrap();
    assert_eq!(value, original);
}

#[test]
fn output_file_and_diff() {
    let out = temp("out.yaml");
    let result = run(&["inject", "-f", "-", "-o", out.to_str().unwrap()], POD);
    assert!(result.status.success());
    assert!(result.stdout.is_empty());
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("istio-init")
    );
    std::fs::remove_file(&out).unwrap();

    let diff = String::from_utf8(run(&["inject", "-f", "-", "--diff"], POD).stdout).unwrap();
    assert!(diff.starts_with("--- -\n+++ - (injected)\n"), "{diff}");
    assert!(
        diff.contains("\n+  - name: istio-init\n") || diff.contains("+    name: istio-init"),
        "{diff}"
    );
}

#[test]
fn a_malformed_document_fails_and_writes_nothing() {
    let out = temp("never.yaml");
    let input = format!("{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: [oops\n");
    let result = run(&["inject", "-f", "-", "-o", out.to_str().unwrap()], &input);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("document 2 (starting at line 8)"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written when a document fails");
}

#[test]
fn skips_are_reported_on_stderr() {
    let opted_out = POD.replace(
        "metadata: {name: p}",
        "metadata: {name: p, labels: {sidecar.istio.io/inject: \"false\"}}",
    );
    let result = run(&["inject", "-f", "-"], &opted_out);
    assert!(result.status.success());
    assert_eq!(
        String::from_utf8(result.stdout).unwrap(),
        format!("{opted_out}---\n")
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr
            .contains("Skipping injection because Pod \"p\": label sidecar.istio.io/inject=false"),
        "{stderr}"
    );
}
