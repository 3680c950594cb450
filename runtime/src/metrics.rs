//! Metric names, in one place. Labels are bounded: `operator` (stage name), `phase`, `peer`
//! (rank), `link` (link kind). Recorded through the `metrics` facade; the binary decides where
//! they go.

/// Counter: rows received by an operator. Labels: operator.
pub const OPERATOR_ROWS_IN: &str = "updraft_operator_rows_in_total";
/// Counter: rows emitted by an operator. Labels: operator.
pub const OPERATOR_ROWS_OUT: &str = "updraft_operator_rows_out_total";
/// Histogram: seconds spent in one operator call. Labels: operator.
pub const OPERATOR_CALL_SECONDS: &str = "updraft_operator_call_seconds";
/// Counter: times a producer found a channel out of credit. Labels: operator.
pub const CREDIT_WAITS: &str = "updraft_credit_waits_total";
/// Counter: bytes written to links. Labels: peer, link.
pub const LINK_BYTES_SENT: &str = "updraft_link_bytes_sent_total";
/// Counter: bytes read from links. Labels: peer, link.
pub const LINK_BYTES_RECEIVED: &str = "updraft_link_bytes_received_total";
/// Counter: frames written to links. Labels: peer, link.
pub const LINK_FRAMES_SENT: &str = "updraft_link_frames_sent_total";
/// Counter: connect attempts while punching. Labels: none.
pub const PUNCH_ATTEMPTS: &str = "updraft_punch_attempts_total";
/// Counter: links made by punching. Labels: how (connect/accept).
pub const PUNCH_SUCCESSES: &str = "updraft_punch_successes_total";
/// Counter: pairs not linked by the mesh deadline.
pub const PUNCH_FAILURES: &str = "updraft_punch_failures_total";
/// Histogram: seconds from the peer table to a pair's link.
pub const PUNCH_SECONDS: &str = "updraft_punch_seconds";
/// Histogram: seconds per job phase on this worker. Labels: phase.
pub const PHASE_SECONDS: &str = "updraft_phase_seconds";
/// Counter: registrations refused by the rendezvous. Labels: reason.
pub const RENDEZVOUS_REFUSED: &str = "updraft_rendezvous_refused_total";
