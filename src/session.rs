//! Starting a child process in a session of its own.

use std::io;

use tokio::process::Command;

/// Starts `cmd`'s process in a session of its own, which also gives it a process group of its
/// own (so the terminal's Ctrl-C reaches only `kfaas local`, which stops its instances in order,
/// and `killpg` reaches the instance with its children).
///
/// A session rather than only a group because Linux, with autogroup scheduling (the default of
/// most desktop distributions), shares the CPU between sessions before it shares it between
/// processes: instances in the gateway's session competed with the gateway for one share, where
/// a backend behind HAProxy or nginx has a share of its own. Measured at 32 connections, that was
/// ~5 % of the gateway's throughput (docs/benchmarks.md, "Sessions and write phases").
///
/// The process also gets SIGKILL should this one die first (`PR_SET_PDEATHSIG`; strictly, should
/// the thread that started it end, and only serving and runtime threads that live as long as
/// the process start instances): `kfaas local` killed with SIGKILL leaves no instance running on
/// without it, a handler in the middle of an invocation included.
#[allow(unsafe_code)]
pub fn in_own_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setsid(2) and prctl(2) are, and the closure
    // allocates nothing (an `Errno` becomes an `io::Error` without allocating).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
}
