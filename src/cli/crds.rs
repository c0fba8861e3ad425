//! `kfaas crds`: prints the CustomResourceDefinitions generated from the Rust types, or writes
//! them one file per kind (how `crds/` and the chart's `crds/` are regenerated).

use std::{path::PathBuf, process::ExitCode};

use crate::objects::{crd_file_name, crds, crds_yaml};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one file per CRD into each of these folders instead of printing
    /// (`kfaas crds --out-dir crds --out-dir charts/kfaas/crds`).
    #[arg(long = "out-dir", env = "KFAAS_CRDS_OUT_DIR")]
    out_dirs: Vec<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    if args.out_dirs.is_empty() {
        print!("{}", crds_yaml());
        return ExitCode::SUCCESS;
    }
    for dir in &args.out_dirs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("kfaas crds: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for crd in crds() {
            let path = dir.join(crd_file_name(&crd));
            if let Err(e) = std::fs::write(&path, crate::objects::crd_yaml(&crd)) {
                eprintln!("kfaas crds: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
