//! `kfaas local`: the whole platform on one machine, from a folder of YAML objects.

pub mod config;
pub mod instance_env;
pub mod instance_process;
pub mod instances;
pub mod run;
pub mod watch;
