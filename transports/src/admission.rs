//! Bounds on what strangers can make a server hold before they prove they hold the job key:
//! connections per source and in total, and bytes of unauthenticated messages per source and in
//! total. The rendezvous and every worker's punch port admit each new connection here.
//!
//! - A source at its bound gets its newest connection closed at once, before anything is read
//!   or allocated. A source is an IPv4 address, or an IPv6 /64 (one host can use a whole /64).
//! - When the total is reached, the *oldest* unauthenticated connection is evicted to make room
//!   (its task is told through [`Slot::evicted`]): legitimate clients authenticate within a
//!   round trip, so a flood from many addresses delays them at worst, instead of locking them
//!   out until its connections time out.
//! - Every unauthenticated exchange has a deadline, which frees what a slow or silent stranger
//!   held.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unauthenticated connections held at once from one source.
    pub per_source: usize,
    /// Unauthenticated connections held at once in total (the oldest is evicted beyond).
    pub total: usize,
    /// Bytes of unauthenticated messages held at once for one source.
    pub bytes_per_source: u64,
    /// Bytes of unauthenticated messages held at once in total.
    pub bytes_total: u64,
}

/// One admitted connection's accounting.
struct Held {
    source: IpAddr,
    bytes: u64,
    evict: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Live slots by id.
    slots: HashMap<u64, Held>,
    /// Ids in admission order; ids of released slots are skipped (and compacted away).
    order: VecDeque<u64>,
    per_source: HashMap<IpAddr, (usize, u64)>,
    bytes: u64,
    next: u64,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Held> {
        let held = self.slots.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(held.bytes);
        if let Some(mine) = self.per_source.get_mut(&held.source) {
            mine.0 = mine.0.saturating_sub(1);
            mine.1 = mine.1.saturating_sub(held.bytes);
            if mine.0 == 0 {
                self.per_source.remove(&held.source);
            }
        }
        Some(held)
    }
}

/// Admission control for one listener.
pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

/// One admitted connection's share; given back when dropped (or [`Slot::release`]d once the
/// connection authenticated), or taken away by eviction.
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    source: IpAddr,
    evict: Arc<Notify>,
}

/// The source a connection from `addr` counts against: the address itself for IPv4, its /64
/// for IPv6 (an IPv4-mapped IPv6 address counts as the IPv4 address).
pub fn source_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Admission {
    /// Admission with `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission { limits, state: Mutex::new(State::default()) })
    }

    /// Admits a connection from `addr`, evicting the oldest unauthenticated connection if the
    /// total is reached.
    ///
    /// # Errors
    /// A message naming the bound when the source is at its own.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, String> {
        let source = source_of(addr);
        let mut state = self.state.lock().map_err(|_| "admission state poisoned".to_string())?;
        if state.per_source.get(&source).is_some_and(|mine| mine.0 >= self.limits.per_source) {
            return Err(format!(
                "{} unauthenticated connections from {source} already held",
                self.limits.per_source
            ));
        }
        while state.slots.len() >= self.limits.total.max(1) {
            let Some(oldest) = state.order.pop_front() else { break };
            if let Some(held) = state.remove(oldest) {
                held.evict.notify_one();
            }
        }
        if state.order.len() > 2 * self.limits.total.max(16) {
            let State { order, slots, .. } = &mut *state;
            order.retain(|id| slots.contains_key(id));
        }
        let id = state.next;
        state.next += 1;
        let evict = Arc::new(Notify::new());
        state.slots.insert(id, Held { source, bytes: 0, evict: Arc::clone(&evict) });
        state.order.push_back(id);
        state.per_source.entry(source).or_default().0 += 1;
        Ok(Slot { admission: Arc::clone(self), id, source, evict })
    }

    /// Connections held now (for tests and metrics).
    pub fn connections(&self) -> usize {
        self.state.lock().map(|s| s.slots.len()).unwrap_or(0)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({}, {})", self.id, self.source)
    }
}

impl Slot {
    /// Reserves `bytes` more for an unauthenticated message about to be read.
    ///
    /// # Errors
    /// A message naming the bound that would be exceeded, or saying the slot was evicted;
    /// nothing is reserved then.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), String> {
        let limits = self.admission.limits;
        let mut state = self.admission.state.lock().map_err(|_| "admission state poisoned".to_string())?;
        if !state.slots.contains_key(&self.id) {
            return Err("evicted to make room for newer connections".into());
        }
        if state.bytes.saturating_add(bytes) > limits.bytes_total {
            return Err(format!(
                "a {bytes}-byte message would take unauthenticated messages over {} bytes",
                limits.bytes_total
            ));
        }
        let mine = state.per_source.entry(self.source).or_default();
        if mine.1.saturating_add(bytes) > limits.bytes_per_source {
            return Err(format!(
                "a {bytes}-byte message would take {}'s unauthenticated messages over {} bytes",
                self.source, limits.bytes_per_source
            ));
        }
        mine.1 += bytes;
        state.bytes += bytes;
        if let Some(held) = state.slots.get_mut(&self.id) {
            held.bytes += bytes;
        }
        Ok(())
    }

    /// A future that completes when this connection is evicted to make room for a newer one:
    /// its task must then close it. (It does not borrow the slot.)
    pub fn evicted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let evict = Arc::clone(&self.evict);
        async move { evict.notified().await }
    }

    /// Gives the share back (the connection authenticated, or ended).
    pub fn release(self) {}
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.admission.state.lock() {
            state.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { per_source: 2, total: 3, bytes_per_source: 100, bytes_total: 150 };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bounds_hold_per_source_and_in_total_and_free_on_drop() {
        let a = Admission::new(LIMITS);
        let (x, y, z) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let mut s1 = a.admit(x).expect("first");
        let s2 = a.admit(x).expect("second");
        assert!(a.admit(x).expect_err("third from x").contains("from 10.0.0.1"));
        let mut s3 = a.admit(y).expect("y is separate");
        s1.reserve(80).expect("fits");
        assert!(s1.reserve(30).expect_err("per source").contains("10.0.0.1"));
        s3.reserve(60).expect("fits y");
        assert!(s3.reserve(20).expect_err("total bytes").contains("150"));
        drop(s1);
        s3.reserve(20).expect("freed by the drop");
        s2.release();
        assert_eq!(a.connections(), 1);
        let _z = a.admit(z).expect("room");
        drop(s3);
        assert_eq!(a.connections(), 1);
    }

    #[tokio::test]
    async fn a_full_total_evicts_the_oldest() {
        let a = Admission::new(LIMITS);
        let oldest = a.admit(ip("10.0.0.1")).expect("1");
        let _b = a.admit(ip("10.0.0.2")).expect("2");
        let _c = a.admit(ip("10.0.0.3")).expect("3");
        let newest = a.admit(ip("10.0.0.4")).expect("room is made");
        tokio::time::timeout(std::time::Duration::from_secs(1), oldest.evicted()).await.expect("told");
        assert_eq!(a.connections(), 3);
        let mut oldest = oldest;
        assert!(oldest.reserve(1).expect_err("gone").contains("evicted"));
        drop(oldest);
        assert_eq!(a.connections(), 3, "an evicted slot's drop frees nothing twice");
        drop(newest);
        assert_eq!(a.connections(), 2);
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        let a = Admission::new(LIMITS);
        let _first = a.admit(ip("2001:db8::1")).expect("1");
        let _second = a.admit(ip("2001:db8::ffff:1")).expect("2");
        assert!(a.admit(ip("2001:db8::abcd")).is_err(), "the same /64");
        assert!(a.admit(ip("2001:db8:0:1::1")).is_ok(), "another /64");
        assert_eq!(source_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }
}
