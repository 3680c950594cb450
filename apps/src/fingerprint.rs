//! A worker's plan fingerprint: everything that decides what it computes, as `(key path,
//! value)` lines. Workers register it at the rendezvous, which refuses a job whose ranks'
//! fingerprints differ and names the first key path where they do.
//!
//! | lines | from |
//! |---|---|
//! | `job.*`, `runtime.*`, `source.*`, `operator.*`, `sink.*` | the pipeline file, canonical (see `updraft_config::canonical_lines`) |
//! | `updraft.version`, `updraft.build` | this program's version and build id (git commit, or `UPDRAFT_BUILD_ID` at build time) |
//! | `updraft.wire` | the wire protocol version |
//! | `registry.operators`, `registry.version` | the operators this program registered, and the version it gave them |

use updraft_config::PipelineSpec;
use updraft_operators::Registry;

/// The build id baked in at compile time (see `apps/build.rs`). `UPDRAFT_BUILD_ID_OVERRIDE`
/// makes a process claim another one: tests use it to start workers that look like another
/// build.
pub fn build_id() -> String {
    std::env::var("UPDRAFT_BUILD_ID_OVERRIDE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("UPDRAFT_BUILD_ID").to_string())
}

/// The fingerprint lines of a worker that will run `spec` with `registry`.
pub fn plan_lines(spec: &PipelineSpec, registry: &Registry) -> Vec<(String, String)> {
    let mut lines = spec.canonical.clone();
    lines.push(("updraft.version".into(), env!("CARGO_PKG_VERSION").into()));
    lines.push(("updraft.build".into(), build_id()));
    lines.push(("updraft.wire".into(), updraft_runtime::wire::VERSION.to_string()));
    let kinds = updraft_config::OperatorCatalog::kinds(registry);
    if !kinds.is_empty() {
        lines.push(("registry.operators".into(), kinds.join(", ")));
    }
    if let Some(v) = registry.version() {
        lines.push(("registry.version".into(), v.to_string()));
    }
    lines
}
