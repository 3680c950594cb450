//! The rendezvous server's state machine, without I/O: registrations in, replies out, time
//! passed in explicitly so tests can drive it with a fake clock.
//!
//! A job's ranks must agree on what they run: every registration carries the worker's plan
//! fingerprint, and a job whose ranks' fingerprints differ is refused as a whole, every
//! waiting rank told which ranks differ and the first key path where they do. Ranks of that job
//! that register later (within the TTL) get the same answer; a rank that was refused and
//! registers again starts the job afresh (the user fixed and restarted the workers).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use updraft_runtime::FailureClass;

use crate::auth::{JobKey, RegisterFields};
use crate::rendezvous::protocol::{PeerEntry, PlanLine, RendezvousMsg, first_difference, plan_digest};

/// Identifies one client connection.
pub type ConnId = u64;

/// Largest world a job may declare.
pub const MAX_WORLD: u32 = 4096;

/// Most half-registered jobs held at once; registrations of further jobs are refused as
/// `Unavailable` until some complete or expire. Only holders of a job key can open one.
pub const MAX_PENDING_JOBS: usize = 4096;

/// Why a registration whose MAC does not hold is refused.
pub fn authentication_failed(job: &str, rank: u32) -> String {
    format!(
        "authentication failed for job `{job}` rank {rank}: another secret, or a registration replayed from \
         another connection"
    )
}

/// A reply for a connection; the connection ends after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Which connection.
    pub conn: ConnId,
    /// What to send.
    pub msg: RendezvousMsg,
}

struct Member {
    conn: ConnId,
    public: SocketAddr,
    private: String,
    plan: Vec<PlanLine>,
    digest: [u8; 32],
}

/// A job refused because its ranks disagreed.
struct Refusal {
    reason: String,
    class: FailureClass,
    /// Ranks told so far.
    ranks: BTreeSet<u32>,
    since: Instant,
}

struct PendingJob {
    world: u32,
    since: Instant,
    /// When the job expires: the TTL, or just before the earliest registered worker gives up
    /// waiting, so that it hears which ranks never came.
    deadline: Instant,
    members: BTreeMap<u32, Member>,
}

/// All half-registered jobs.
pub struct RendezvousState {
    secret: Vec<u8>,
    ttl: Duration,
    jobs: HashMap<String, PendingJob>,
    refused: HashMap<String, Refusal>,
}

/// A registration as received.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// Job id.
    pub job: &'a str,
    /// Rank.
    pub rank: u32,
    /// World.
    pub world: u32,
    /// Private address as sent.
    pub private: &'a str,
    /// Plan fingerprint as sent.
    pub plan: &'a [PlanLine],
    /// How long the worker waits for the peer table.
    pub wait: Duration,
    /// The challenge the server sent on this registration's connection.
    pub challenge: &'a [u8; 16],
    /// The worker's nonce, as sent.
    pub nonce: &'a [u8; 16],
    /// MAC as sent.
    pub mac: &'a [u8; 32],
}

impl RendezvousState {
    /// A server state that authenticates with `secret` and expires jobs after `ttl`.
    pub fn new(secret: Vec<u8>, ttl: Duration) -> Self {
        RendezvousState { secret, ttl, jobs: HashMap::new(), refused: HashMap::new() }
    }

    fn refuse(conn: ConnId, reason: String) -> Vec<Reply> {
        Self::refuse_as(conn, reason, FailureClass::Config)
    }

    fn refuse_as(conn: ConnId, reason: String, class: FailureClass) -> Vec<Reply> {
        metrics::counter!(updraft_runtime::metrics::RENDEZVOUS_REFUSED).increment(1);
        vec![Reply { conn, msg: RendezvousMsg::refused(reason, class) }]
    }

    /// A worker registered from `public` on connection `conn`.
    pub fn register(
        &mut self,
        now: Instant,
        conn: ConnId,
        public: SocketAddr,
        reg: Registration<'_>,
    ) -> Vec<Reply> {
        let Registration { job, rank, world, private, plan, wait, challenge, nonce, mac } = reg;
        let key = JobKey::derive(&self.secret, job);
        let digest = plan_digest(plan);
        let fields = RegisterFields { challenge, nonce, job, rank, world, private, plan: &digest, wait };
        if !key.verify_register(&fields, mac) {
            return Self::refuse(conn, authentication_failed(job, rank));
        }
        if world == 0 || world > MAX_WORLD {
            return Self::refuse(conn, format!("world size {world} is outside 1..={MAX_WORLD}"));
        }
        if rank >= world {
            return Self::refuse(conn, format!("rank {rank} is outside 0..{world}"));
        }
        if private.parse::<SocketAddr>().is_err() {
            return Self::refuse(conn, format!("private address `{private}` is not ip:port"));
        }
        if !self.jobs.contains_key(job) && self.jobs.len() >= MAX_PENDING_JOBS {
            return Self::refuse_as(
                conn,
                format!(
                    "the rendezvous holds {MAX_PENDING_JOBS} half-registered jobs already; try again later"
                ),
                FailureClass::Unavailable,
            );
        }
        if let Some(r) = self.refused.get_mut(job) {
            if now.duration_since(r.since) < self.ttl && !r.ranks.contains(&rank) {
                r.ranks.insert(rank);
                let (reason, class) = (r.reason.clone(), r.class);
                return Self::refuse_as(conn, reason, class);
            }
            // A refused rank registers again (or the refusal is old): the job starts afresh.
            self.refused.remove(job);
        }
        let ttl = self.ttl;
        let entry = self.jobs.entry(job.to_string()).or_insert_with(|| PendingJob {
            world,
            since: now,
            deadline: now + ttl,
            members: BTreeMap::new(),
        });
        let margin = (wait / 10).min(Duration::from_secs(1));
        entry.deadline = entry.deadline.min(now + wait.saturating_sub(margin));
        if entry.world != world {
            return Self::refuse(
                conn,
                format!("job `{job}` has world size {}, this registration says {world}", entry.world),
            );
        }
        let mut out = Vec::new();
        let member = Member { conn, public, private: private.to_string(), plan: plan.to_vec(), digest };
        if let Some(old) = entry.members.insert(rank, member)
            && old.conn != conn
        {
            out.push(Reply {
                conn: old.conn,
                msg: RendezvousMsg::refused(
                    format!("rank {rank} of job `{job}` registered again; this registration is replaced"),
                    FailureClass::Rendezvous,
                ),
            });
        }
        if let Some(reason) = disagreement(job, &entry.members) {
            let ranks: BTreeSet<u32> = entry.members.keys().copied().collect();
            for m in entry.members.values() {
                metrics::counter!(updraft_runtime::metrics::RENDEZVOUS_REFUSED).increment(1);
                let msg = RendezvousMsg::refused(reason.clone(), FailureClass::Config);
                out.push(Reply { conn: m.conn, msg });
            }
            self.jobs.remove(job);
            self.refused
                .insert(job.to_string(), Refusal { reason, class: FailureClass::Config, ranks, since: now });
            return out;
        }
        if entry.members.len() == world as usize {
            let peers: Vec<PeerEntry> = entry
                .members
                .iter()
                .map(|(r, m)| PeerEntry {
                    rank: *r,
                    public: m.public.to_string(),
                    private: m.private.clone(),
                })
                .collect();
            let run: u64 = rand::random();
            for m in entry.members.values() {
                out.push(Reply {
                    conn: m.conn,
                    msg: RendezvousMsg::Peers { peers: peers.clone(), run, mac: [0; 32] },
                });
            }
            self.jobs.remove(job);
        }
        out
    }

    /// A connection went away before its job completed: forget its registration.
    pub fn disconnected(&mut self, conn: ConnId) {
        self.jobs.retain(|_, j| {
            j.members.retain(|_, m| m.conn != conn);
            !j.members.is_empty()
        });
    }

    /// Expires jobs older than the TTL; their waiting workers are told which ranks never came.
    pub fn expire(&mut self, now: Instant) -> Vec<Reply> {
        let ttl = self.ttl;
        self.refused.retain(|_, r| now.duration_since(r.since) < ttl);
        let expired: Vec<String> =
            self.jobs.iter().filter(|(_, j)| now >= j.deadline).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for job in expired {
            if let Some(j) = self.jobs.remove(&job) {
                let missing: Vec<String> =
                    (0..j.world).filter(|r| !j.members.contains_key(r)).map(|r| r.to_string()).collect();
                let reason = format!(
                    "{} {} of job `{job}` never registered at the rendezvous (waited {:.1} s)",
                    if missing.len() == 1 { "rank" } else { "ranks" },
                    missing.join(", "),
                    now.duration_since(j.since).as_secs_f64()
                );
                out.extend(j.members.values().map(|m| Reply {
                    conn: m.conn,
                    msg: RendezvousMsg::refused(reason.clone(), FailureClass::Rendezvous),
                }));
            }
        }
        out
    }

    /// When the next job expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.jobs.values().map(|j| j.deadline).min()
    }

    /// Fails a job that cannot complete (its launcher saw one of its workers die): every
    /// waiting rank is refused with `reason`, and so are ranks that register later, within
    /// the TTL.
    pub fn fail_job(&mut self, now: Instant, job: &str, reason: &str, class: FailureClass) -> Vec<Reply> {
        let mut out = Vec::new();
        if let Some(j) = self.jobs.remove(job) {
            for m in j.members.values() {
                let msg = RendezvousMsg::refused(reason.to_string(), class);
                out.push(Reply { conn: m.conn, msg });
            }
        }
        let refusal = Refusal { reason: reason.to_string(), class, ranks: BTreeSet::new(), since: now };
        self.refused.insert(job.to_string(), refusal);
        out
    }

    /// Number of half-registered jobs.
    pub fn pending_jobs(&self) -> usize {
        self.jobs.len()
    }
}

/// The reason to refuse a job whose members' plans differ: each differing rank against the
/// lowest rank, with the first key path where they differ.
fn disagreement(job: &str, members: &BTreeMap<u32, Member>) -> Option<String> {
    // Ranks grouped by plan, groups in order of their lowest rank.
    let mut groups: Vec<(Vec<u32>, &Member)> = Vec::new();
    for (rank, m) in members {
        match groups.iter_mut().find(|(_, g)| g.digest == m.digest) {
            Some((ranks, _)) => ranks.push(*rank),
            None => groups.push((vec![*rank], m)),
        }
    }
    let (first, others) = groups.split_first()?;
    if others.is_empty() {
        return None;
    }
    let name = |ranks: &[u32]| {
        let list = ranks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        if ranks.len() == 1 { format!("rank {list}") } else { format!("ranks {list}") }
    };
    let differing: Vec<String> = others
        .iter()
        .map(|(ranks, m)| {
            let at = first_difference(&first.1.plan, &m.plan).unwrap_or("?");
            format!("{} and {} differ first at `{at}`", name(&first.0), name(ranks))
        })
        .collect();
    Some(format!(
        "the workers of job `{job}` would run different plans: {}; give every worker the same pipeline \
         file and the same updraft build",
        differing.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn reg(
        state: &mut RendezvousState,
        now: Instant,
        conn: ConnId,
        job: &str,
        rank: u32,
        world: u32,
    ) -> Vec<Reply> {
        reg_with(state, now, conn, job, rank, world, SECRET)
    }

    fn reg_with(
        state: &mut RendezvousState,
        now: Instant,
        conn: ConnId,
        job: &str,
        rank: u32,
        world: u32,
        secret: &[u8],
    ) -> Vec<Reply> {
        reg_plan(state, now, conn, job, rank, world, secret, &plan("max(amount)"))
    }

    fn plan(agg: &str) -> Vec<PlanLine> {
        vec![PlanLine::new("operator.totals.aggregate.m", agg), PlanLine::new("updraft.version", "1")]
    }

    #[allow(clippy::too_many_arguments)]
    fn reg_plan(
        state: &mut RendezvousState,
        now: Instant,
        conn: ConnId,
        job: &str,
        rank: u32,
        world: u32,
        secret: &[u8],
        plan: &[PlanLine],
    ) -> Vec<Reply> {
        let private = format!("10.0.0.{}:{}", rank + 1, 5000 + rank);
        let digest = plan_digest(plan);
        let wait = Duration::from_secs(300);
        let (challenge, nonce) = ([conn as u8; 16], [7u8; 16]);
        let fields = RegisterFields {
            challenge: &challenge,
            nonce: &nonce,
            job,
            rank,
            world,
            private: &private,
            plan: &digest,
            wait,
        };
        let mac = JobKey::derive(secret, job).register_mac(&fields);
        let public: SocketAddr = format!("198.51.100.{}:{}", rank + 1, 6000 + rank).parse().expect("addr");
        let reg = Registration {
            job,
            rank,
            world,
            private: &private,
            plan,
            wait,
            challenge: &challenge,
            nonce: &nonce,
            mac: &mac,
        };
        state.register(now, conn, public, reg)
    }

    #[test]
    fn ranks_with_different_plans_are_refused_naming_the_first_difference() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(60));
        let t = Instant::now();
        assert!(reg(&mut s, t, 1, "j", 0, 4).is_empty());
        assert!(reg(&mut s, t, 2, "j", 1, 4).is_empty());
        let out = reg_plan(&mut s, t, 3, "j", 2, 4, SECRET, &plan("min(amount)"));
        let r = refused(&out);
        assert_eq!(
            r.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "every waiting rank is told"
        );
        assert!(
            r[0].1.contains("ranks 0, 1 and rank 2 differ first at `operator.totals.aggregate.m`"),
            "{}",
            r[0].1
        );
        assert_eq!(s.pending_jobs(), 0);
        // A rank that comes later hears the same; a refused rank coming back starts afresh.
        let late = reg(&mut s, t, 4, "j", 3, 4);
        assert!(refused(&late)[0].1.contains("and rank 2 differ first"), "{late:?}");
        assert!(reg(&mut s, t, 5, "j", 0, 4).is_empty());
        assert_eq!(s.pending_jobs(), 1);
    }

    #[test]
    fn a_job_expires_just_before_its_first_worker_stops_waiting() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(60));
        let t = Instant::now();
        let private = "10.0.0.1:5000";
        let plan = plan("max(amount)");
        let digest = plan_digest(&plan);
        let wait = Duration::from_secs(30);
        let (challenge, nonce) = ([1u8; 16], [2u8; 16]);
        let fields = RegisterFields {
            challenge: &challenge,
            nonce: &nonce,
            job: "j",
            rank: 0,
            world: 3,
            private,
            plan: &digest,
            wait,
        };
        let mac = JobKey::derive(SECRET, "j").register_mac(&fields);
        let public: SocketAddr = "198.51.100.1:6000".parse().expect("addr");
        let reg = Registration {
            job: "j",
            rank: 0,
            world: 3,
            private,
            plan: &plan,
            wait,
            challenge: &challenge,
            nonce: &nonce,
            mac: &mac,
        };
        assert!(s.register(t, 1, public, reg).is_empty());
        assert_eq!(s.next_expiry(), Some(t + Duration::from_secs(29)));
        let out = s.expire(t + Duration::from_secs(29));
        assert!(refused(&out)[0].1.contains("ranks 1, 2 of job `j` never registered"), "{out:?}");
        // A launcher that saw a worker die fails the job for everyone, now and later.
        assert!(reg_plan(&mut s, t, 2, "k", 0, 2, SECRET, &plan).is_empty());
        let out = s.fail_job(t, "k", "rank 1 exited", FailureClass::Link);
        assert_eq!(refused(&out), vec![(2, "rank 1 exited".to_string())]);
        assert_eq!(
            refused(&reg_plan(&mut s, t, 3, "k", 1, 2, SECRET, &plan)),
            vec![(3, "rank 1 exited".to_string())]
        );
    }

    #[test]
    fn first_difference_finds_missing_and_changed_paths() {
        let a = vec![PlanLine::new("a", "1"), PlanLine::new("b", "2"), PlanLine::new("d", "4")];
        let b = vec![PlanLine::new("a", "1"), PlanLine::new("b", "3")];
        assert_eq!(first_difference(&a, &b), Some("b"));
        let c = vec![PlanLine::new("a", "1"), PlanLine::new("b", "2")];
        assert_eq!(first_difference(&a, &c), Some("d"));
        let d = vec![
            PlanLine::new("a", "1"),
            PlanLine::new("b", "2"),
            PlanLine::new("c", "9"),
            PlanLine::new("d", "4"),
        ];
        assert_eq!(first_difference(&a, &d), Some("c"));
        assert_eq!(first_difference(&a, &a), None);
    }

    fn refused(r: &[Reply]) -> Vec<(ConnId, String)> {
        r.iter()
            .filter_map(|r| match &r.msg {
                RendezvousMsg::Refused { reason, .. } => Some((r.conn, reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn peers_go_to_everyone_once_the_job_is_complete() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(60));
        let t = Instant::now();
        assert!(reg(&mut s, t, 1, "j", 1, 3).is_empty());
        assert!(reg(&mut s, t, 2, "j", 0, 3).is_empty());
        let out = reg(&mut s, t, 3, "j", 2, 3);
        assert_eq!(out.len(), 3);
        let RendezvousMsg::Peers { peers, run, .. } = &out[0].msg else { panic!("peers expected") };
        assert!(
            out.iter().all(|r| matches!(&r.msg, RendezvousMsg::Peers { run: other, .. } if other == run))
        );
        assert_eq!(peers.iter().map(|p| p.rank).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(peers[2].public, "198.51.100.3:6002");
        assert_eq!(peers[2].private, "10.0.0.3:5002");
        assert_eq!(s.pending_jobs(), 0);
    }

    #[test]
    fn bad_registrations_are_refused_with_a_reason() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(60));
        let t = Instant::now();
        let r = reg_with(&mut s, t, 1, "j", 0, 2, b"wrong");
        assert!(refused(&r)[0].1.contains("authentication failed"), "{r:?}");
        assert!(refused(&reg(&mut s, t, 2, "j", 5, 2))[0].1.contains("outside 0..2"));
        assert!(refused(&reg(&mut s, t, 3, "j", 0, 0))[0].1.contains("world size 0"));
        assert!(reg(&mut s, t, 4, "j", 0, 2).is_empty());
        assert!(refused(&reg(&mut s, t, 5, "j", 1, 3))[0].1.contains("has world size 2"));
    }

    #[test]
    fn a_rank_registering_again_replaces_its_entry() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(60));
        let t = Instant::now();
        assert!(reg(&mut s, t, 1, "j", 0, 2).is_empty());
        let out = reg(&mut s, t, 2, "j", 0, 2);
        assert_eq!(
            refused(&out),
            vec![(1, "rank 0 of job `j` registered again; this registration is replaced".to_string())]
        );
        let out = reg(&mut s, t, 3, "j", 1, 2);
        let conns: Vec<ConnId> = out.iter().map(|r| r.conn).collect();
        assert_eq!(conns, vec![2, 3]);
    }

    #[test]
    fn stale_jobs_expire_and_name_the_missing_ranks() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(10));
        let t = Instant::now();
        reg(&mut s, t, 1, "j", 0, 3);
        reg(&mut s, t + Duration::from_secs(2), 2, "j", 2, 3);
        assert_eq!(s.next_expiry(), Some(t + Duration::from_secs(10)));
        assert!(s.expire(t + Duration::from_secs(9)).is_empty());
        let out = s.expire(t + Duration::from_secs(10));
        let r = refused(&out);
        assert_eq!(r.len(), 2);
        assert!(r[0].1.contains("rank 1 of job `j` never registered"), "{r:?}");
        assert_eq!(s.pending_jobs(), 0);
    }

    #[test]
    fn disconnects_forget_registrations_and_jobs_are_separate() {
        let mut s = RendezvousState::new(SECRET.to_vec(), Duration::from_secs(60));
        let t = Instant::now();
        reg(&mut s, t, 1, "a", 0, 2);
        reg(&mut s, t, 2, "b", 0, 2);
        s.disconnected(1);
        assert_eq!(s.pending_jobs(), 1);
        assert_eq!(reg(&mut s, t, 3, "b", 1, 2).len(), 2);
        assert!(reg(&mut s, t, 4, "a", 1, 2).is_empty(), "rank 0 of job a left, so a is incomplete");
    }
}
