//! systemd integration for `Type=notify` units: `READY=1` once the model is loaded and the first
//! frame is on screen, then `WATCHDOG=1` only while every pipeline stage keeps ticking, so a hung
//! camera, model or display makes systemd restart the service. Outside systemd
//! (`NOTIFY_SOCKET` unset) nothing is sent.

use crate::pipeline::Shared;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Starts the notifier thread if the service manager asked for notifications.
/// `stall_limit`: how long a stage may go without a tick before pings stop.
pub fn spawn(shared: Arc<Shared>, stall_limit: Duration) -> Option<JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    // Ping at half the watchdog period (sd_watchdog_enabled(3)); without a watchdog, still
    // report status and extend the start timeout while waiting for the first frame.
    let tick = watchdog
        .map(|w| (w / 2).max(Duration::from_millis(50)))
        .unwrap_or(Duration::from_secs(1));
    log::info!(
        "systemd: notify socket set; watchdog {}",
        watchdog.map_or("off".into(), |w| format!("{} ms", w.as_millis()))
    );
    std::thread::Builder::new()
        .name("sd-notify".into())
        .spawn(move || run(&shared, tick, watchdog.is_some(), stall_limit))
        .ok()
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("systemd notify: {e}");
    }
}

fn run(shared: &Shared, tick: Duration, watchdog: bool, stall_limit: Duration) {
    let mut ready = false;
    let mut stalled_before = false;
    while !shared.is_shutdown() {
        if let Some((stage, age)) = shared.stalled(stall_limit) {
            // No ping: systemd's watchdog (or start timeout) takes over.
            if !stalled_before {
                let status = format!(
                    "stalled: {} stage has not progressed for {:.1} s",
                    stage.name(),
                    age.as_secs_f64()
                );
                log::error!("{status}; watchdog pings stopped");
                send(&[NotifyState::Status(&status)]);
            }
            stalled_before = true;
        } else {
            stalled_before = false;
            if !ready && first_frame_shown(shared) {
                ready = true;
                log::info!("systemd: READY (model loaded, first frame on screen)");
                send(&[NotifyState::Ready]);
            }
            if ready {
                let c = shared.counters();
                let status = format!("running: {} frames, {} inferences", c.frames, c.inferences);
                let mut states = vec![NotifyState::Status(&status)];
                if watchdog {
                    states.push(NotifyState::Watchdog);
                }
                send(&states);
            } else {
                // Keep systemd waiting while the pipeline is alive (e.g. the camera is not
                // plugged in yet); a hang stops the extensions and the start times out.
                let usec = (tick * 3).as_micros().min(u32::MAX as u128) as u32;
                send(&[
                    NotifyState::Status("starting: waiting for the first frame on screen"),
                    NotifyState::ExtendTimeoutUsec(usec),
                ]);
            }
        }
        std::thread::sleep(tick);
    }
    send(&[NotifyState::Stopping]);
}

/// The first source frame was presented; without a screen, the first frame was classified.
fn first_frame_shown(shared: &Shared) -> bool {
    shared.first_frame_shown() || (shared.display_absent() && shared.counters().inferences > 0)
}
