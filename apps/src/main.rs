//! The `updraft` command: the command line with the built-in operators only.

/// mimalloc keeps freed memory for reuse instead of returning every large block to the kernel
/// (glibc maps and unmaps blocks above its threshold), so the batches and tables a job
/// allocates again and again are not zero-filled by page faults each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    updraft::main_with(updraft::Registry::new())
}

/// mimalloc asks for transparent huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), and the
/// kernel then zeroes 2 MiB at the first touch of each: measured on a 2-core machine, a 64-worker
/// mesh spent half of all CPU in `clear_page_erms` under that fault (7.2 s of system time
/// against 2.4 s without), and a 16M-row join on one worker 1.2–4.4 s of system time against
/// 1.2–1.6 s. Turned off for this process and the workers it starts (the setting is inherited
/// across fork and exec); Linux only, and a failure changes nothing else.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
