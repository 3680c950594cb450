//! When to fire connect attempts: a state machine over (peer, endpoint) targets, driven with
//! explicit time. Each target fires at once; an attempt lasts until it connects, fails or the
//! mesh deadline passes (the kernel retransmits its SYN meanwhile), and a failed one is fired
//! again after a pause that depends on how it failed ([`Failure`]), until its peer is linked or
//! the deadline passes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Retry delay after a connect that failed at once.
const QUICK_RETRY: Duration = Duration::from_millis(20);

/// How a connect attempt failed, which decides when the target is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer by the deadline it was given: tried again at once.
    TimedOut,
    /// Failed at once (refused: the peer's listener is not up yet, or a reset): tried again
    /// after a short pause, not in a hot loop.
    Refused,
    /// The address pair is held by a connection of ours to that peer that is still being
    /// authenticated (`EADDRNOTAVAIL`): tried again after a whole attempt interval, when that
    /// connection has become the link or has gone.
    Busy,
}

#[derive(Debug, Clone)]
struct Target {
    peer: u32,
    endpoint: SocketAddr,
    next: Instant,
    in_flight: bool,
    attempts: u32,
}

/// The attempt schedule of one worker.
#[derive(Debug, Clone)]
pub struct PunchSchedule {
    attempt: Duration,
    deadline: Instant,
    targets: Vec<Target>,
    linked: BTreeSet<u32>,
    peers: BTreeSet<u32>,
}

impl PunchSchedule {
    /// Targets for every peer: its public endpoint, and its private one if different.
    pub fn new(now: Instant, peers: &[(u32, Vec<SocketAddr>)], attempt: Duration, deadline: Instant) -> Self {
        let mut targets = Vec::new();
        for (peer, endpoints) in peers {
            let mut seen = BTreeSet::new();
            for ep in endpoints {
                if seen.insert(*ep) {
                    targets.push(Target {
                        peer: *peer,
                        endpoint: *ep,
                        next: now,
                        in_flight: false,
                        attempts: 0,
                    });
                }
            }
        }
        PunchSchedule {
            attempt,
            deadline,
            targets,
            linked: BTreeSet::new(),
            peers: peers.iter().map(|(p, _)| *p).collect(),
        }
    }

    /// Attempts due now: `(target id, peer, endpoint)`. Each is marked in flight.
    pub fn due(&mut self, now: Instant) -> Vec<(usize, u32, SocketAddr)> {
        if now >= self.deadline {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            if !t.in_flight && t.next <= now && !self.linked.contains(&t.peer) {
                t.in_flight = true;
                t.attempts += 1;
                out.push((i, t.peer, t.endpoint));
            }
        }
        out
    }

    /// An attempt ended without a link, for `why`.
    pub fn failed(&mut self, target: usize, now: Instant, why: Failure) {
        if let Some(t) = self.targets.get_mut(target) {
            t.in_flight = false;
            t.next = now
                + match why {
                    Failure::TimedOut => Duration::ZERO,
                    Failure::Refused => QUICK_RETRY.min(self.attempt),
                    Failure::Busy => self.attempt,
                };
        }
    }

    /// An attempt produced a connection (it may still lose the handshake or the decision).
    pub fn connected(&mut self, target: usize, now: Instant) {
        if let Some(t) = self.targets.get_mut(target) {
            t.in_flight = false;
            t.next = now + self.attempt;
        }
    }

    /// The pair with `peer` has its link: no more attempts towards it.
    pub fn linked(&mut self, peer: u32) {
        self.linked.insert(peer);
    }

    /// True when every peer is linked.
    pub fn complete(&self) -> bool {
        self.linked.len() == self.peers.len()
    }

    /// When something is next due (an idle target's retry, or the deadline).
    pub fn next_wakeup(&self) -> Instant {
        self.targets
            .iter()
            .filter(|t| !t.in_flight && !self.linked.contains(&t.peer))
            .map(|t| t.next)
            .min()
            .map_or(self.deadline, |t| t.min(self.deadline))
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Peers without a link.
    pub fn missing(&self) -> Vec<u32> {
        self.peers.iter().copied().filter(|p| !self.linked.contains(p)).collect()
    }

    /// Attempts made towards `peer`, over all its endpoints.
    pub fn attempts(&self, peer: u32) -> u32 {
        self.targets.iter().filter(|t| t.peer == peer).map(|t| t.attempts).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 1], port))
    }

    #[test]
    fn every_endpoint_fires_at_once_then_retries_after_each_attempt() {
        let t0 = Instant::now();
        let attempt = Duration::from_millis(250);
        let mut s = PunchSchedule::new(
            t0,
            &[(1, vec![ep(1), ep(2)]), (2, vec![ep(3), ep(3)])],
            attempt,
            t0 + Duration::from_secs(2),
        );
        let first = s.due(t0);
        assert_eq!(first.len(), 3, "duplicate endpoints are tried once");
        assert!(s.due(t0).is_empty(), "nothing fires twice while in flight");
        // A timed-out attempt (it took the whole interval) is retried right away.
        let t1 = t0 + attempt;
        s.failed(first[0].0, t1, Failure::TimedOut);
        assert_eq!(s.next_wakeup(), t1);
        assert_eq!(s.due(t1).len(), 1);
        // A refused attempt is retried after the quick-retry delay, not in a hot loop.
        s.failed(first[1].0, t1, Failure::Refused);
        assert!(s.due(t1).is_empty());
        assert_eq!(s.due(t1 + QUICK_RETRY).len(), 1);
        assert_eq!(s.attempts(1), 4);
        // A busy address pair waits a whole interval.
        s.failed(first[2].0, t1, Failure::Busy);
        assert!(s.due(t1 + QUICK_RETRY).is_empty());
        assert_eq!(s.due(t1 + attempt).len(), 1);
    }

    #[test]
    fn linked_peers_stop_and_the_deadline_ends_everything() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(1);
        let mut s = PunchSchedule::new(
            t0,
            &[(1, vec![ep(1)]), (2, vec![ep(2)])],
            Duration::from_millis(250),
            deadline,
        );
        let first = s.due(t0);
        s.linked(1);
        s.failed(first[0].0, t0, Failure::TimedOut);
        s.failed(first[1].0, t0, Failure::TimedOut);
        let again = s.due(t0);
        assert_eq!(again.iter().map(|a| a.1).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.missing(), vec![2]);
        assert!(!s.complete());
        s.failed(again[0].0, deadline, Failure::TimedOut);
        assert!(s.due(deadline).is_empty(), "nothing fires at or after the deadline");
        assert_eq!(s.next_wakeup(), deadline);
        s.linked(2);
        assert!(s.complete());
    }
}
