//! Hot reload: watches the folder, reloads after a short quiet period, and keeps the last good
//! config serving when the new one has problems.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{config::load_dir, instances::LocalInstances, run::apply};
use crate::gateway::handler::Gateway;

/// Runs until `shutdown`.
pub async fn watch_and_reload(
    dir: PathBuf,
    gateway: Arc<Gateway>,
    instances: Arc<LocalInstances>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let root = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Hidden files inside the folder (editor swap files, .git) do not count.
            let relevant = event.paths.iter().any(|p| {
                let inside = p.strip_prefix(&root).unwrap_or(p);
                !inside
                    .components()
                    .any(|c| c.as_os_str().to_str().is_some_and(|s| s.starts_with('.')))
            });
            if relevant && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "kfaas local: cannot watch {}: {e}; hot reload is off",
                dir.display()
            );
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
        eprintln!(
            "kfaas local: cannot watch {}: {e}; hot reload is off",
            dir.display()
        );
        return;
    }
    loop {
        tokio::select! {
            got = rx.recv() => if got.is_none() { return },
            () = shutdown.cancelled() => return,
        }
        // Editors write files in several steps: wait until changes stop for a moment.
        loop {
            tokio::select! {
                _ = rx.recv() => continue,
                () = tokio::time::sleep(Duration::from_millis(150)) => break,
            }
        }
        let (config, problems) = load_dir(&dir);
        if problems.is_empty() {
            apply(&config, &gateway, &instances, addr);
        } else {
            for p in &problems {
                eprintln!("kfaas local: {p}");
            }
            eprintln!(
                "kfaas local: not reloaded: fix the problems above; the last good config keeps serving"
            );
        }
    }
}
