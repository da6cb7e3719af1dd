//! Golden tests: every `tests/golden/<name>.yaml` is injected with the built-in config and
//! compared with `<name>.injected.yaml`, which was checked by hand. Over the same inputs,
//! the properties the webhook and `uninject` rely on are checked too.
//!
//! To regenerate after a deliberate change: `SKIFF_BLESS=1 cargo test -p skiff-injector
//! --test golden`, then review every changed file with `git diff` before committing.

use std::path::{Path, PathBuf};

use serde_json::Value;
use skiff_injector::cli::{self, Mode};
use skiff_injector::config::InjectionConfig;
use skiff_injector::patch;
use skiff_injector::workload::split_documents;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn inputs() -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.to_string_lossy().ends_with(".injected.yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 10, "golden inputs missing");
    inputs
}

fn expected_path(input: &Path) -> PathBuf {
    input.with_extension("injected.yaml")
}

fn inject(text: &str) -> String {
    cli::process(text, Mode::Inject, &InjectionConfig::default(), "default")
        .unwrap()
        .output
}

fn uninject(text: &str) -> String {
    cli::process(text, Mode::Uninject, &InjectionConfig::default(), "default")
        .unwrap()
        .output
}

/// The documents of a file as values (comments and formatting aside).
fn documents(text: &str) -> Vec<Value> {
    split_documents(text)
        .into_iter()
        .map(|(_, doc)| yaml_serde::from_str::<Value>(doc).unwrap_or(Value::Null))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn injected_output_matches_the_reviewed_golden_files() {
    let bless = std::env::var_os("SKIFF_BLESS").is_some();
    for input in inputs() {
        let actual = inject(&std::fs::read_to_string(&input).unwrap());
        let expected_file = expected_path(&input);
        if bless {
            std::fs::write(&expected_file, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_else(|_| {
            panic!(
                "{} is missing (SKIFF_BLESS=1 creates it)",
                expected_file.display()
            )
        });
        assert_eq!(
            actual,
            expected,
            "{} differs from its golden file",
            input.display()
        );
    }
}

#[test]
fn injection_is_idempotent() {
    for input in inputs() {
        let once = inject(&std::fs::read_to_string(&input).unwrap());
        let twice = inject(&once);
        assert_eq!(documents(&twice), documents(&once), "{}", input.display());
    }
}

#[test]
fn uninject_restores_what_inject_changed() {
    for input in inputs() {
        let original = std::fs::read_to_string(&input).unwrap();
        let restored = uninject(&inject(&original));
        // An input that was injected already comes back as its uninjected self.
        let expected = if original.contains("sidecar.istio.io/status") {
            uninject(&original)
        } else {
            original
        };
        assert_eq!(
            documents(&restored),
            documents(&expected),
            "{}",
            input.display()
        );
    }
}

#[test]
fn the_patch_turns_each_original_document_into_the_injected_one() {
    for input in inputs() {
        let original = std::fs::read_to_string(&input).unwrap();
        let before = documents(&original);
        let after = documents(&inject(&original));
        assert_eq!(before.len(), after.len(), "{}", input.display());
        for (a, b) in before.iter().zip(&after) {
            let p = patch::diff(a, b);
            assert_eq!(&patch::apply(a, &p).unwrap(), b, "{}", input.display());
        }
    }
}

#[test]
fn untouched_documents_keep_their_bytes() {
    let original = std::fs::read_to_string(golden_dir().join("deployment.yaml")).unwrap();
    let out = inject(&original);
    assert!(out.contains("# Services pass through untouched, comments and all.\n"));
    assert!(out.contains("  name: reviews   # the service name\n"));
    let opt_out = std::fs::read_to_string(golden_dir().join("opt-out.yaml")).unwrap();
    let skipped = cli::process(
        &opt_out,
        Mode::Inject,
        &InjectionConfig::default(),
        "default",
    )
    .unwrap();
    assert_eq!(documents(&skipped.output), documents(&opt_out));
    assert_eq!(skipped.skipped.len(), 3, "{:?}", skipped.skipped);
    assert!(skipped.skipped[0].contains("label sidecar.istio.io/inject=false"));
    assert!(skipped.skipped[1].contains("annotation sidecar.istio.io/inject=false"));
    assert!(skipped.skipped[2].contains("hostNetwork"));
}
