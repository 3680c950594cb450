//! The shared secret that job keys derive from: a file, or the `UPDRAFT_SECRET` variable.

use std::path::Path;

/// Environment variable holding the secret.
pub const ENV: &str = "UPDRAFT_SECRET";

/// Shortest secret accepted, in bytes: every key derives from it, and a registration or a
/// key-exchange message seen on the path would let a weak one be guessed offline.
pub const MIN_LEN: usize = 16;

/// Loads the secret from `file` or, without one, from [`ENV`].
///
/// # Errors
/// When neither gives a secret, or it is shorter than [`MIN_LEN`] bytes.
pub fn load(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let bad = |msg: String| anyhow::Error::new(crate::output::BadInput(msg));
    let secret = match file {
        Some(path) => std::fs::read(path)
            .map_err(|e| bad(format!("cannot read the secret file {}: {e}", path.display())))?,
        None => std::env::var(ENV).map(String::into_bytes).unwrap_or_default(),
    };
    let trimmed = secret.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(bad(format!(
            "no shared secret: set {ENV} or pass --secret-file (every worker and the rendezvous need the same one)"
        )));
    }
    if trimmed.len() < MIN_LEN {
        return Err(bad(format!(
            "the shared secret is {} bytes; use at least {MIN_LEN} (e.g. the output of `openssl rand -hex 16`)",
            trimmed.len()
        )));
    }
    Ok(trimmed)
}

/// A fresh random secret (hex), for a local cluster.
pub fn fresh() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
