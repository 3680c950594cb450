//! Bounds on what strangers can make a server hold before they prove they hold the job key:
//! connections per source address, and bytes of unauthenticated messages per source and in
//! total. The rendezvous and every worker's punch port admit each new connection here; one that
//! does not fit is closed at once, before anything is read or allocated.
//!
//! Addresses are the only handle a server has on a stranger, so these bounds make flooding from
//! a few addresses harmless to others, and the deadline on every unauthenticated exchange frees
//! what a slow or silent stranger held. (A stranger with many addresses can still fill the
//! totals; it cannot get past them.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unauthenticated connections held at once from one source address.
    pub per_source: usize,
    /// Unauthenticated connections held at once in total.
    pub total: usize,
    /// Bytes of unauthenticated messages held at once for one source address.
    pub bytes_per_source: u64,
    /// Bytes of unauthenticated messages held at once in total.
    pub bytes_total: u64,
}

#[derive(Default)]
struct Held {
    per_source: HashMap<IpAddr, (usize, u64)>,
    connections: usize,
    bytes: u64,
}

/// Admission control for one listener.
pub struct Admission {
    limits: Limits,
    held: Mutex<Held>,
}

/// One admitted connection's share; released when dropped (or [`Slot::release`]d once the
/// connection authenticated).
pub struct Slot {
    admission: Arc<Admission>,
    source: IpAddr,
    bytes: u64,
    released: bool,
}

impl Admission {
    /// Admission with `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission { limits, held: Mutex::new(Held::default()) })
    }

    /// Admits a connection from `source`.
    ///
    /// # Errors
    /// A message naming the bound that is full.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Slot, String> {
        let mut held = self.held.lock().map_err(|_| "admission state poisoned".to_string())?;
        if held.connections >= self.limits.total {
            return Err(format!("{} unauthenticated connections already held", self.limits.total));
        }
        let mine = held.per_source.entry(source).or_default();
        if mine.0 >= self.limits.per_source {
            return Err(format!(
                "{} unauthenticated connections from {source} already held",
                self.limits.per_source
            ));
        }
        mine.0 += 1;
        held.connections += 1;
        Ok(Slot { admission: Arc::clone(self), source, bytes: 0, released: false })
    }

    /// Connections held now (for tests and metrics).
    pub fn connections(&self) -> usize {
        self.held.lock().map(|h| h.connections).unwrap_or(0)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({}, {} bytes)", self.source, self.bytes)
    }
}

impl Slot {
    /// Reserves `bytes` more for an unauthenticated message about to be read.
    ///
    /// # Errors
    /// A message naming the bound that would be exceeded; nothing is reserved then.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), String> {
        let limits = self.admission.limits;
        let mut held = self.admission.held.lock().map_err(|_| "admission state poisoned".to_string())?;
        if held.bytes.saturating_add(bytes) > limits.bytes_total {
            return Err(format!(
                "a {bytes}-byte message would take unauthenticated messages over {} bytes",
                limits.bytes_total
            ));
        }
        let mine = held.per_source.entry(self.source).or_default();
        if mine.1.saturating_add(bytes) > limits.bytes_per_source {
            return Err(format!(
                "a {bytes}-byte message would take {}'s unauthenticated messages over {} bytes",
                self.source, limits.bytes_per_source
            ));
        }
        mine.1 += bytes;
        held.bytes += bytes;
        self.bytes += bytes;
        Ok(())
    }

    /// Gives the share back (the connection authenticated, or ended).
    pub fn release(mut self) {
        self.give_back();
    }

    fn give_back(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let Ok(mut held) = self.admission.held.lock() else { return };
        held.connections = held.connections.saturating_sub(1);
        held.bytes = held.bytes.saturating_sub(self.bytes);
        if let Some(mine) = held.per_source.get_mut(&self.source) {
            mine.0 = mine.0.saturating_sub(1);
            mine.1 = mine.1.saturating_sub(self.bytes);
            if mine.0 == 0 {
                held.per_source.remove(&self.source);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { per_source: 2, total: 3, bytes_per_source: 100, bytes_total: 150 };

    #[test]
    fn bounds_hold_per_source_and_in_total_and_free_on_drop() {
        let a = Admission::new(LIMITS);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let mut s1 = a.admit(x).expect("first");
        let s2 = a.admit(x).expect("second");
        assert!(a.admit(x).expect_err("third from x").contains("from 10.0.0.1"));
        let mut s3 = a.admit(y).expect("y is separate");
        assert!(a.admit(y).expect_err("total").contains("3 unauthenticated connections"));
        s1.reserve(80).expect("fits");
        assert!(s1.reserve(30).expect_err("per source").contains("10.0.0.1"));
        s3.reserve(60).expect("fits y");
        assert!(s3.reserve(20).expect_err("total bytes").contains("150"));
        drop(s1);
        s3.reserve(20).expect("freed by the drop");
        s2.release();
        assert_eq!(a.connections(), 1);
        drop(s3);
        assert_eq!(a.connections(), 0);
        assert!(a.held.lock().expect("lock").per_source.is_empty());
    }
}
