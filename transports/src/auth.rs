//! Keys and MACs. Every worker of a job and the rendezvous share a secret; each job gets its own
//! key derived from it (HMAC-SHA256), which authenticates every registration, every rendezvous
//! reply and every metrics push, and from which the keys of the job's links are derived (see
//! [`crate::secure`]), so strangers and workers of other jobs are refused. MACs are compared in
//! constant time; keys never appear in `Debug` output or logs.

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

/// Compares two MACs in constant time: every byte is folded in before deciding.
pub(crate) fn equal(expected: &[u8; 32], got: &[u8; 32]) -> bool {
    std::hint::black_box(expected.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b))) == 0
}

/// What a registration's MAC covers besides the job key.
#[derive(Debug, Clone, Copy)]
pub struct RegisterFields<'a> {
    /// The server's challenge on this connection.
    pub challenge: &'a [u8; 16],
    /// The worker's nonce.
    pub nonce: &'a [u8; 16],
    /// Job id.
    pub job: &'a str,
    /// Rank.
    pub rank: u32,
    /// World size.
    pub world: u32,
    /// The worker's private address.
    pub private: &'a str,
    /// Digest of the plan fingerprint.
    pub plan: &'a [u8; 32],
    /// How long the worker waits for the peer table.
    pub wait: std::time::Duration,
}

impl JobKey {
    /// Derives the key of `job` from the shared `secret`.
    pub fn derive(secret: &[u8], job: &str) -> JobKey {
        JobKey(mac(secret, &[b"updraft/job-key/v1", job.as_bytes()]))
    }

    /// MAC of a registration at the rendezvous.
    pub fn register_mac(&self, f: &RegisterFields<'_>) -> [u8; 32] {
        let wait = (f.wait.as_millis() as u64).to_le_bytes();
        mac(
            &self.0,
            &[
                b"register",
                f.challenge,
                f.nonce,
                f.job.as_bytes(),
                &f.rank.to_le_bytes(),
                &f.world.to_le_bytes(),
                f.private.as_bytes(),
                f.plan,
                &wait,
            ],
        )
    }

    /// Checks a registration MAC.
    pub fn verify_register(&self, f: &RegisterFields<'_>, got: &[u8; 32]) -> bool {
        equal(&self.register_mac(f), got)
    }

    /// MAC of a rendezvous reply (`reply`: its archived bytes with the MAC zeroed) to the
    /// registration of `job` rank `rank` made with `nonce` on the connection challenged with
    /// `challenge`.
    pub fn reply_mac(
        &self,
        challenge: &[u8; 16],
        nonce: &[u8; 16],
        job: &str,
        rank: u32,
        reply: &[u8],
    ) -> [u8; 32] {
        mac(&self.0, &[b"reply", challenge, nonce, job.as_bytes(), &rank.to_le_bytes(), reply])
    }

    /// MAC of a metrics push on the connection challenged with `challenge`.
    pub fn metrics_mac(&self, challenge: &[u8; 16], job: &str, rank: u32, text: &str) -> [u8; 32] {
        mac(&self.0, &[b"metrics", challenge, job.as_bytes(), &rank.to_le_bytes(), text.as_bytes()])
    }

    /// Checks a metrics push MAC.
    pub fn verify_metrics(
        &self,
        challenge: &[u8; 16],
        job: &str,
        rank: u32,
        text: &str,
        got: &[u8; 32],
    ) -> bool {
        equal(&self.metrics_mac(challenge, job, rank, text), got)
    }

    /// The pre-shared key of the link key exchange in run `run` (see `crate::secure`).
    pub fn link_psk(&self, run: u64) -> [u8; 32] {
        mac(&self.0, &[b"link-psk", &run.to_le_bytes()])
    }

    /// The key of the relayed direction `from` → `to` in run `run` (see `crate::secure`).
    pub fn relay_key(&self, run: u64, from: u32, to: u32) -> [u8; 32] {
        mac(&self.0, &[b"relay", &run.to_le_bytes(), &from.to_le_bytes(), &to.to_le_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: std::time::Duration = std::time::Duration::from_secs(30);

    fn fields<'a>(challenge: &'a [u8; 16], plan: &'a [u8; 32]) -> RegisterFields<'a> {
        RegisterFields {
            challenge,
            nonce: &[9; 16],
            job: "job-1",
            rank: 2,
            world: 4,
            private: "10.0.0.1:5000",
            plan,
            wait: W,
        }
    }

    #[test]
    fn macs_bind_every_field() {
        let k = JobKey::derive(b"secret", "job-1");
        let (c, p) = ([1u8; 16], [1u8; 32]);
        let f = fields(&c, &p);
        let m = k.register_mac(&f);
        assert!(k.verify_register(&f, &m));
        assert!(!k.verify_register(&RegisterFields { rank: 3, ..f }, &m));
        assert!(!k.verify_register(&RegisterFields { private: "10.0.0.1:5001", ..f }, &m));
        assert!(!k.verify_register(&RegisterFields { plan: &[2u8; 32], ..f }, &m));
        assert!(!k.verify_register(&RegisterFields { challenge: &[2u8; 16], ..f }, &m), "another connection");
        assert!(!k.verify_register(&RegisterFields { nonce: &[2u8; 16], ..f }, &m));
        assert!(!k.verify_register(&RegisterFields { wait: W * 2, ..f }, &m));
        let other_job = JobKey::derive(b"secret", "job-2");
        assert!(!other_job.verify_register(&f, &m));
        let other_secret = JobKey::derive(b"secreT", "job-1");
        assert!(!other_secret.verify_register(&f, &m));
        let pushed = k.metrics_mac(&c, "job-1", 2, "text");
        assert!(k.verify_metrics(&c, "job-1", 2, "text", &pushed));
        assert!(!k.verify_metrics(&[0; 16], "job-1", 2, "text", &pushed), "a replayed push");
    }

    #[test]
    fn long_and_short_secrets_both_work() {
        let long = vec![7u8; 200];
        let a = JobKey::derive(&long, "j");
        let b = JobKey::derive(&long[..199], "j");
        let (c, p) = ([0u8; 16], [0u8; 32]);
        assert_ne!(a.register_mac(&fields(&c, &p)), b.register_mac(&fields(&c, &p)));
    }

    #[test]
    fn link_keys_differ_by_run_and_direction() {
        let k = JobKey::derive(b"s", "j");
        assert_ne!(k.link_psk(1), k.link_psk(2));
        assert_ne!(k.relay_key(1, 0, 1), k.relay_key(1, 1, 0));
        assert_ne!(k.relay_key(1, 0, 1), k.relay_key(2, 0, 1));
        assert_ne!(JobKey::derive(b"s", "j2").link_psk(1), k.link_psk(1));
    }
}
