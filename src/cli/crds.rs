//! `kfaas crds`: prints the CustomResourceDefinitions generated from the Rust types.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    print!("{}", crate::api::crds_yaml());
    ExitCode::SUCCESS
}
