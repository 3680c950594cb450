//! Keys and MACs. Every worker of a job and the rendezvous share a secret; each job gets its own
//! key derived from it, and every registration and every link hello is authenticated with that
//! key (HMAC-SHA256), so strangers and workers of other jobs are refused.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// A job's key.
#[derive(Clone)]
pub struct JobKey([u8; 32]);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(..)")
    }
}

/// HMAC keyed the way RFC 2104 says: keys longer than a block are hashed, shorter ones padded
/// with zeros to the block size (64 bytes for SHA-256). Done here so keying cannot fail.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = keyed(key);
    for p in parts {
        // Length-prefix every part so that ("ab","c") and ("a","bc") differ.
        m.update(&(p.len() as u64).to_le_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn verify(expected: &[u8; 32], got: &[u8; 32]) -> bool {
    // Constant time: fold every byte before deciding.
    expected.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl JobKey {
    /// Derives the key of `job` from the shared `secret`.
    pub fn derive(secret: &[u8], job: &str) -> JobKey {
        JobKey(mac(secret, &[b"updraft/job-key/v1", job.as_bytes()]))
    }

    /// MAC of a registration at the rendezvous (`plan` is the digest of the plan fingerprint,
    /// `wait` how long the worker waits for the peer table).
    pub fn register_mac(
        &self,
        job: &str,
        rank: u32,
        world: u32,
        private: &str,
        plan: &[u8; 32],
        wait: std::time::Duration,
    ) -> [u8; 32] {
        let wait = (wait.as_millis() as u64).to_le_bytes();
        mac(
            &self.0,
            &[
                b"register",
                job.as_bytes(),
                &rank.to_le_bytes(),
                &world.to_le_bytes(),
                private.as_bytes(),
                plan,
                &wait,
            ],
        )
    }

    /// Checks a registration MAC.
    #[allow(clippy::too_many_arguments, reason = "every field the MAC covers")]
    pub fn verify_register(
        &self,
        job: &str,
        rank: u32,
        world: u32,
        private: &str,
        plan: &[u8; 32],
        wait: std::time::Duration,
        got: &[u8; 32],
    ) -> bool {
        verify(&self.register_mac(job, rank, world, private, plan, wait), got)
    }

    /// MAC of a metrics push.
    pub fn metrics_mac(&self, job: &str, rank: u32, text: &str) -> [u8; 32] {
        mac(&self.0, &[b"metrics", job.as_bytes(), &rank.to_le_bytes(), text.as_bytes()])
    }

    /// Checks a metrics push MAC.
    pub fn verify_metrics(&self, job: &str, rank: u32, text: &str, got: &[u8; 32]) -> bool {
        verify(&self.metrics_mac(job, rank, text), got)
    }

    /// Proof sent on a fresh link: binds both ranks and both nonces, so it cannot be replayed
    /// on another connection or reflected back.
    pub fn link_proof(&self, from: u32, to: u32, from_nonce: &[u8; 16], to_nonce: &[u8; 16]) -> [u8; 32] {
        mac(&self.0, &[b"link", &from.to_le_bytes(), &to.to_le_bytes(), from_nonce, to_nonce])
    }

    /// Checks a link proof made by `from` for `to`.
    pub fn verify_link(
        &self,
        from: u32,
        to: u32,
        from_nonce: &[u8; 16],
        to_nonce: &[u8; 16],
        got: &[u8; 32],
    ) -> bool {
        verify(&self.link_proof(from, to, from_nonce, to_nonce), got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: std::time::Duration = std::time::Duration::from_secs(30);

    #[test]
    fn macs_bind_every_field() {
        let k = JobKey::derive(b"secret", "job-1");
        let p = [1u8; 32];
        let m = k.register_mac("job-1", 2, 4, "10.0.0.1:5000", &p, W);
        assert!(k.verify_register("job-1", 2, 4, "10.0.0.1:5000", &p, W, &m));
        assert!(!k.verify_register("job-1", 3, 4, "10.0.0.1:5000", &p, W, &m));
        assert!(!k.verify_register("job-1", 2, 4, "10.0.0.1:5001", &p, W, &m));
        assert!(!k.verify_register("job-1", 2, 4, "10.0.0.1:5000", &[2u8; 32], W, &m));
        let other_job = JobKey::derive(b"secret", "job-2");
        assert!(!other_job.verify_register("job-1", 2, 4, "10.0.0.1:5000", &p, W, &m));
        let other_secret = JobKey::derive(b"secreT", "job-1");
        assert!(!other_secret.verify_register("job-1", 2, 4, "10.0.0.1:5000", &p, W, &m));
    }

    #[test]
    fn long_and_short_secrets_both_work() {
        let long = vec![7u8; 200];
        let a = JobKey::derive(&long, "j");
        let b = JobKey::derive(&long[..199], "j");
        assert_ne!(a.register_mac("j", 0, 1, "x", &[0; 32], W), b.register_mac("j", 0, 1, "x", &[0; 32], W));
    }

    #[test]
    fn link_proofs_are_directional() {
        let k = JobKey::derive(b"s", "j");
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let p = k.link_proof(0, 1, &a, &b);
        assert!(k.verify_link(0, 1, &a, &b, &p));
        assert!(!k.verify_link(1, 0, &b, &a, &p), "a proof must not be reflected");
        assert!(!k.verify_link(0, 1, &b, &a, &p));
    }
}
