#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: the gateway allocates and frees small objects on every
/// request, and glibc's free-list work (`_int_free`, `malloc_consolidate`) was a visible share of
/// its CPU per request (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kfaas::cli::run(kfaas::cli::Cli::parse())
}
