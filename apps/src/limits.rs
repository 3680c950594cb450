//! Resources a job's plan needs per worker, checked before it runs.
//!
//! Every stage runs on a thread of its own (an actix arbiter with its own event loop), which
//! holds [`FDS_PER_STAGE`] file descriptors; each peer link holds a socket. A plan too large
//! for the process's file-descriptor limit would fail midway with "too many open files", so
//! `validate`, `run` and every worker refuse it first, naming the numbers. At start the process
//! raises its soft limit to the hard one, as servers commonly do.

/// File descriptors one stage holds: its thread's event loop (epoll, an eventfd, a timer and
/// a pipe), measured on Linux as 4 per stage (99 descriptors for 22 stages, 499 for 122).
pub const FDS_PER_STAGE: u64 = 4;

/// Descriptors a worker holds besides its stages: standard streams, the runtime's event
/// loops, the rendezvous connection, files being read and written, with room to spare.
pub const FDS_BASE: u64 = 128;

/// Most stages a plan may have (each is a thread).
pub const MAX_STAGES: usize = 1000;

/// Raises this process's soft limit on open files to its hard limit, and returns the limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Checks that a plan of `stages` stages on `world` workers fits this process's limits.
///
/// # Errors
/// The numbers, and what to change.
pub fn check(stages: usize, world: u32) -> Result<(), String> {
    if stages > MAX_STAGES {
        return Err(format!(
            "the plan has {stages} stages (each a thread of its own); at most {MAX_STAGES} are allowed: split the pipeline"
        ));
    }
    let limit = raise_fd_limit();
    let needed = FDS_BASE + FDS_PER_STAGE * stages as u64 + 2 * u64::from(world);
    if needed > limit {
        return Err(format!(
            "the plan has {stages} stages on {world} workers: each worker needs about {needed} file descriptors \
             ({FDS_PER_STAGE} per stage, 2 per peer, {FDS_BASE} besides) but may open {limit} (ulimit -n): \
             raise the limit or split the pipeline"
        ));
    }
    Ok(())
}
