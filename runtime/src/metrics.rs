//! Metric names, in one place. Labels are bounded: `operator` (stage name), `phase`, `peer`
//! (rank), `link` (link kind). Recorded through the `metrics` facade; the binary decides where
//! they go.

/// Counter: rows received by an operator. Labels: operator.
pub const OPERATOR_ROWS_IN: &str = "updraft_operator_rows_in_total";
/// Counter: rows emitted by an operator. Labels: operator.
pub const OPERATOR_ROWS_OUT: &str = "updraft_operator_rows_out_total";
/// Counter: bytes of the batches an operator received. Labels: operator.
pub const OPERATOR_BYTES_IN: &str = "updraft_operator_bytes_in_total";
/// Counter: bytes of the batches an operator emitted. Labels: operator.
pub const OPERATOR_BYTES_OUT: &str = "updraft_operator_bytes_out_total";
/// Counter: frames read from links. Labels: peer, link.
pub const LINK_FRAMES_RECEIVED: &str = "updraft_link_frames_received_total";
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
/// Gauge: peak resident memory of the worker process, in bytes.
pub const PEAK_MEMORY_BYTES: &str = "updraft_peak_memory_bytes";
/// Counter: bytes operators wrote to spill files.
pub const SPILLED_BYTES: &str = "updraft_spilled_bytes_total";
/// Gauge: bytes sent on a channel and not yet returned as credit. Labels: operator.
pub const BYTES_IN_FLIGHT: &str = "updraft_bytes_in_flight";
/// Counter: Parquet row groups a source did not read because its filters exclude them.
/// Labels: source.
pub const ROW_GROUPS_SKIPPED: &str = "updraft_source_row_groups_skipped_total";
/// Counter: Parquet row groups a source read. Labels: source.
pub const ROW_GROUPS_READ: &str = "updraft_source_row_groups_read_total";
/// Counter: stages that finished on this worker. Labels: phase.
pub const STAGES_DONE: &str = "updraft_stages_done_total";
/// Gauge: 1 for the state this worker's job is in, 0 for the others. Labels: state
/// (`running`, `succeeded`, `failed`).
pub const JOB_STATE: &str = "updraft_job_state";
/// Histogram: seconds of mesh set-up (rendezvous and punching) on this worker.
pub const SETUP_SECONDS: &str = "updraft_setup_seconds";

/// Registers a help text for every metric above (exporters print it as `# HELP`).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(OPERATOR_ROWS_IN, Unit::Count, "Rows received by an operator.");
    describe_counter!(OPERATOR_ROWS_OUT, Unit::Count, "Rows emitted by an operator.");
    describe_counter!(OPERATOR_BYTES_IN, Unit::Bytes, "Bytes of the batches an operator received.");
    describe_counter!(OPERATOR_BYTES_OUT, Unit::Bytes, "Bytes of the batches an operator emitted.");
    describe_counter!(LINK_FRAMES_RECEIVED, Unit::Count, "Frames read from a link.");
    describe_histogram!(OPERATOR_CALL_SECONDS, Unit::Seconds, "Time spent in one call of an operator.");
    describe_counter!(
        CREDIT_WAITS,
        Unit::Count,
        "Times an operator stopped because a destination had no credit."
    );
    describe_counter!(LINK_BYTES_SENT, Unit::Bytes, "Bytes written to a link (frames, headers included).");
    describe_counter!(LINK_BYTES_RECEIVED, Unit::Bytes, "Bytes read from a link.");
    describe_counter!(LINK_FRAMES_SENT, Unit::Count, "Frames written to a link.");
    describe_counter!(PUNCH_ATTEMPTS, Unit::Count, "TCP connect attempts while punching.");
    describe_counter!(PUNCH_SUCCESSES, Unit::Count, "Links made by punching.");
    describe_counter!(PUNCH_FAILURES, Unit::Count, "Pairs not linked by the mesh deadline.");
    describe_histogram!(PUNCH_SECONDS, Unit::Seconds, "Time from the peer table to a pair's link.");
    describe_histogram!(PHASE_SECONDS, Unit::Seconds, "Busy time of a job phase on a worker.");
    describe_counter!(RENDEZVOUS_REFUSED, Unit::Count, "Registrations refused by the rendezvous.");
    describe_gauge!(PEAK_MEMORY_BYTES, Unit::Bytes, "Peak resident memory of the worker process.");
    describe_gauge!(
        BYTES_IN_FLIGHT,
        Unit::Bytes,
        "Bytes sent by an operator and not yet returned as credit."
    );
    describe_counter!(ROW_GROUPS_SKIPPED, Unit::Count, "Parquet row groups a source's filters excluded.");
    describe_counter!(ROW_GROUPS_READ, Unit::Count, "Parquet row groups a source read.");
    describe_counter!(STAGES_DONE, Unit::Count, "Stages that finished on a worker.");
    describe_gauge!(
        JOB_STATE,
        Unit::Count,
        "1 for the state the job is in on this worker (running, succeeded, failed)."
    );
    describe_histogram!(SETUP_SECONDS, Unit::Seconds, "Rendezvous and punching time of a worker.");
}
