//! Byte credit. A consumer holds a [`CreditGuard`] for every batch it has not processed yet;
//! dropping the guard (after processing, or on failure) returns the bytes to the producer, so
//! credit is never lost on an error path.

use actix::Recipient;

use crate::ids::{EdgeId, Rank};
use crate::messages::{SendFrame, ToOperator};
use crate::wire::{Control, OutFrame};

/// Where returned credit goes.
enum Sink {
    /// The producer is on this worker.
    Local(Recipient<ToOperator>),
    /// The producer is on `peer`: a credit frame through the transport.
    Remote { transport: Recipient<SendFrame>, peer: Rank },
    /// Nothing to return (zero bytes, or already returned).
    Spent,
}

/// Returns `bytes` of credit on `edge` when dropped.
pub struct CreditGuard {
    edge: EdgeId,
    consumer_rank: Rank,
    bytes: u64,
    sink: Sink,
}

impl std::fmt::Debug for CreditGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditGuard").field("edge", &self.edge).field("bytes", &self.bytes).finish()
    }
}

impl CreditGuard {
    /// Credit for a local producer.
    pub fn local(producer: Recipient<ToOperator>, edge: EdgeId, consumer_rank: Rank, bytes: u64) -> Self {
        CreditGuard { edge, consumer_rank, bytes, sink: Sink::Local(producer) }
    }

    /// Credit for a producer on `peer`.
    pub fn remote(
        transport: Recipient<SendFrame>,
        peer: Rank,
        edge: EdgeId,
        consumer_rank: Rank,
        bytes: u64,
    ) -> Self {
        CreditGuard { edge, consumer_rank, bytes, sink: Sink::Remote { transport, peer } }
    }

    /// Bytes this guard returns.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for CreditGuard {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.sink, Sink::Spent) {
            Sink::Local(producer) => producer.do_send(ToOperator::Credit {
                edge: self.edge,
                dest: self.consumer_rank,
                bytes: self.bytes,
            }),
            Sink::Remote { transport, peer } => {
                match OutFrame::control(self.edge.0, 0, &Control::Credit { bytes: self.bytes }) {
                    Ok(frame) => transport.do_send(SendFrame { peer, frame }),
                    Err(e) => tracing::error!(%e, "cannot encode a credit frame"),
                }
            }
            Sink::Spent => {}
        }
    }
}
