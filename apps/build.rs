//! Bakes the build id into the binary: `UPDRAFT_BUILD_ID` from the environment if set (release
//! scripts set it), else the git commit the workspace is at, else `unknown`. Workers of one job
//! must run the same build: the id is part of every worker's plan fingerprint.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=UPDRAFT_BUILD_ID");
    let from_env = std::env::var("UPDRAFT_BUILD_ID").ok().filter(|s| !s.trim().is_empty());
    let id = from_env.or_else(git_commit).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=UPDRAFT_BUILD_ID={id}");
}

fn git_commit() -> Option<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let git = Path::new(&manifest).parent()?.join(".git");
    if git.is_dir() {
        // A new commit moves HEAD's branch and rewrites the index.
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", git.join("index").display());
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(&manifest)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let id = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !id.is_empty()).then_some(id)
}
