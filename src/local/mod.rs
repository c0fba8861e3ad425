//! local

mod instance_process;
pub mod instances;
