//! Logging setup shared by the subcommands: readable text on a terminal, JSON otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `KFAAS_LOG` (or `RUST_LOG`) sets the filter;
/// `KFAAS_LOG_FORMAT` (`json` or `text`) overrides the choice by terminal.
pub fn init() {
    let filter = std::env::var("KFAAS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let text = match std::env::var("KFAAS_LOG_FORMAT").as_deref() {
        Ok("json") => false,
        Ok("text") => true,
        _ => std::io::stderr().is_terminal(),
    };
    let result = if text {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
    // A second init (tests) is harmless.
    drop(result);
}
