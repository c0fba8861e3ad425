#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    kfaas::cli::run(kfaas::cli::Cli::parse())
}
