//! What the fleet thread does besides moving messages: commands from the broker and the
//! model-update jobs (downloads and self-tests take seconds, so they run on their own thread
//! while the MQTT session keeps answering).

use super::{Command, UpdateReport};
use crate::config::FleetConfig;
use crate::device::update::{Announcement, ModelSwitch, Updater};
use crate::pipeline::Shared;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(super) enum Job {
    Announce(Announcement),
    Reload,
}

/// Model updates and reloads run on their own thread (downloads and self-tests take seconds;
/// the MQTT session must keep answering meanwhile).
pub(super) fn spawn_updater(
    cfg: &FleetConfig,
    switch: Arc<dyn ModelSwitch>,
    report: Arc<UpdateReport>,
    changed: tokio::sync::mpsc::Sender<()>,
    shared: Arc<Shared>,
) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let updater = Updater {
        cfg: cfg.updates.clone(),
        ca_file: cfg.ca_file.clone(),
    };
    let _ = std::thread::Builder::new()
        .name("model-update".into())
        .spawn(move || {
            let mut refused: Vec<String> = Vec::new();
            while let Ok(job) = rx.recv() {
                let now = super::rfc3339(crate::sinks::storage::unix_ms());
                match job {
                    Job::Announce(a) => {
                        let running = shared.model();
                        let active = crate::device::update::Active::read(&updater.cfg.models_dir);
                        if active.sha256.as_deref() == Some(a.sha256.to_ascii_lowercase().as_str())
                            && running.dir.ends_with(a.folder())
                        {
                            continue; // Already in service (a retained announcement re-read).
                        }
                        if refused.contains(&a.sha256) {
                            continue;
                        }
                        report.set(json!({"state": "installing", "name": a.name,
                                          "sha256": a.sha256, "time": now}));
                        let _ = changed.try_send(());
                        log::info!("model update: {} ({}) announced", a.name, a.sha256);
                        let v = match updater.apply(&a, switch.as_ref()) {
                            Ok(dir) => {
                                log::info!("model update: switched to {}", dir.display());
                                json!({"state": "switched", "name": a.name, "sha256": a.sha256,
                                       "time": super::rfc3339(crate::sinks::storage::unix_ms())})
                            }
                            Err(e) => {
                                log::warn!("model update: {} refused: {e}", a.name);
                                refused.push(a.sha256.clone());
                                json!({"state": "refused", "name": a.name, "sha256": a.sha256,
                                       "reason": e.to_string(),
                                       "time": super::rfc3339(crate::sinks::storage::unix_ms())})
                            }
                        };
                        report.set(v);
                    }
                    Job::Reload => {
                        let dir = shared.model().dir.clone();
                        let v = match switch.switch(&dir) {
                            Ok(()) => json!({"state": "reloaded", "dir": dir, "time": now}),
                            Err(e) => {
                                json!({"state": "reload failed", "dir": dir, "reason": e, "time": now})
                            }
                        };
                        report.set(v);
                    }
                }
                let _ = changed.try_send(());
            }
        });
    tx
}

/// Run one command from the broker; returns what the status message reports about it.
pub(super) async fn command(
    payload: &[u8],
    shared: &Shared,
    jobs: &std::sync::mpsc::Sender<Job>,
) -> Value {
    let time = super::rfc3339(crate::sinks::storage::unix_ms());
    let cmd = match Command::parse(payload) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("fleet: command refused: {e}");
            return json!({"ok": false, "error": e, "time": time});
        }
    };
    log::info!("fleet: command {cmd:?}");
    let name = format!("{cmd:?}").to_lowercase();
    match cmd {
        Command::Freeze => {
            if !shared.is_frozen() {
                shared.toggle_freeze();
            }
        }
        Command::Release => {
            if shared.is_frozen() {
                shared.toggle_freeze();
            }
        }
        Command::Capture => {
            // A fresh point-and-classify: release a frozen screen first, then freeze again.
            if shared.is_frozen() {
                shared.toggle_freeze();
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if !shared.is_frozen() {
                        break;
                    }
                }
            }
            shared.toggle_freeze();
        }
        Command::ReloadModel => {
            let _ = jobs.send(Job::Reload);
        }
    }
    json!({"command": name, "ok": true, "time": time})
}
