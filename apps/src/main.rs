//! The `updraft` command: the command line with the built-in operators only.

/// mimalloc keeps freed memory for reuse instead of returning every large block to the kernel
/// (glibc maps and unmaps blocks above its threshold), so the batches and tables a job
/// allocates again and again are not zero-filled by page faults each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    updraft::main_with(updraft::Registry::new())
}
