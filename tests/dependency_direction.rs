//! Checks the dependency direction of the workspace (docs/architecture.md) from
//! `cargo metadata`: a library crate that starts to depend on a crate above it fails CI.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// The workspace library crates and the workspace crates each one may depend on
/// (normal and build dependencies; dev-dependencies may also use `test-fixtures`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("tensor-io", &[]),
    ("smpl", &["tensor-io"]),
    ("motion-repr", &["smpl", "tensor-io"]),
    ("motion-data", &["smpl", "motion-repr", "tensor-io"]),
    ("kernels", &[]),
    ("diffusion", &["kernels", "tensor-io"]),
    ("dit", &["diffusion", "kernels", "tensor-io"]),
    ("metrics", &["tensor-io"]),
    ("tmr", &["kernels", "smpl", "motion-repr", "tensor-io"]),
    ("motion-viz", &["smpl", "motion-repr", "tensor-io"]),
    ("motion-export", &["smpl", "tensor-io"]),
    ("test-fixtures", &[]),
    ("motion-web", &["motion-dit"]),
];

/// Workspace dependencies of every workspace package, split into (normal+build, dev).
type Edges = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn workspace_edges() -> Edges {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages array");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("package name").to_string())
        .collect();
    let mut edges = Edges::new();
    for p in packages {
        let name = p["name"].as_str().expect("package name").to_string();
        let entry = edges.entry(name).or_default();
        for d in p["dependencies"].as_array().expect("dependencies array") {
            let dep = d["name"].as_str().expect("dependency name");
            if !names.contains(dep) {
                continue;
            }
            match d["kind"].as_str() {
                Some("dev") => entry.1.insert(dep.to_string()),
                _ => entry.0.insert(dep.to_string()),
            };
        }
    }
    edges
}

/// Returns one line per forbidden edge.
fn violations(edges: &Edges) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (pkg, (normal, dev)) in edges {
        if pkg == "motion-dit" {
            continue; // the root package sees everything
        }
        let Some(ok) = allowed.get(pkg.as_str()) else {
            bad.push(format!(
                "{pkg}: not in the dependency table of tests/dependency_direction.rs"
            ));
            continue;
        };
        for dep in normal {
            if !ok.contains(&dep.as_str()) {
                bad.push(format!("{pkg} -> {dep} (allowed: {ok:?})"));
            }
        }
        for dep in dev {
            if dep != "test-fixtures" && !ok.contains(&dep.as_str()) {
                bad.push(format!(
                    "{pkg} -dev-> {dep} (allowed: {ok:?} + test-fixtures)"
                ));
            }
        }
    }
    bad
}

#[test]
fn workspace_crates_depend_only_downwards() {
    let edges = workspace_edges();
    for (name, _) in ALLOWED {
        assert!(
            edges.contains_key(*name),
            "workspace crate {name} is missing"
        );
    }
    let bad = violations(&edges);
    assert!(
        bad.is_empty(),
        "dependency direction violated:\n{}",
        bad.join("\n")
    );
}

#[test]
fn a_diffusion_to_dit_edge_would_be_reported() {
    let mut edges = workspace_edges();
    edges
        .get_mut("diffusion")
        .expect("diffusion is a workspace crate")
        .0
        .insert("dit".to_string());
    let bad = violations(&edges);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].starts_with("diffusion -> dit"), "{bad:?}");
}
