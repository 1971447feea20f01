//! What the fleet thread does besides moving messages: commands from the broker and the
//! model-update jobs (downloads and self-tests take seconds, so they run on their own thread
//! while the MQTT session keeps answering).

use super::{Command, UpdateReport};
use crate::config::FleetConfig;
use crate::device::update::{Announcement, ModelSwitch, UpdateError, Updater};
use crate::pipeline::Shared;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What waits for the update thread: at most one announcement (the newest wins: the topic is
/// retained, so an older one is never worth installing after a newer one arrived) and at most
/// one reload (reloads coalesce), so a flood of messages costs no memory and no delay.
#[derive(Default)]
struct Pending {
    announce: Option<Announcement>,
    /// The announcement the update thread is installing now.
    busy: Option<Announcement>,
    reload: bool,
    closed: bool,
}

/// The update thread's inbox (shared with the MQTT session).
pub(super) struct Jobs {
    pending: Mutex<Pending>,
    wake: Condvar,
    pub(super) updater: Updater,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Check an announcement before it takes a place (signature, target, expiry, version);
    /// `Ok(false)`: already in service, nothing to do.
    pub(super) fn announce(&self, a: Announcement, running: &Path) -> Result<bool, UpdateError> {
        {
            // The same archive again while it waits or installs (a retained message read at
            // a reconnect): nothing new, and no "replay" verdict on an update that is running.
            let p = self.lock();
            if p.busy.as_ref() == Some(&a) || p.announce.as_ref() == Some(&a) {
                return Ok(false);
            }
        }
        match self.updater.check(&a, running) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            // Not before the clock is set (no RTC before NTP): queued, the update thread
            // retries it with backoff instead of losing a retained announcement until the
            // next reconnect. Its signature has been checked already.
            Err(UpdateError::Clock(m)) => log::info!("model update: {} waits: {m}", a.name),
            Err(e) => return Err(e),
        }
        self.lock().announce = Some(a);
        self.wake.notify_one();
        Ok(true)
    }

    /// Ask for a reload; false when one is already waiting (this one joins it).
    pub(super) fn reload(&self) -> bool {
        let mut p = self.lock();
        let fresh = !p.reload;
        p.reload = true;
        self.wake.notify_one();
        fresh
    }

    /// Let the update thread end once it is idle.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// First retry of a download that failed for a passing reason (network, disk), doubling up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(600);
/// At most one `reload-model` this often (a reload loads a whole bundle: ~a core for a second);
/// more requests meanwhile join the waiting one.
pub(super) const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
enum Job {
    Announce(Announcement),
    Reload,
}

/// Model updates and reloads run on their own thread (downloads and self-tests take seconds;
/// the MQTT session must keep answering meanwhile).
pub(super) fn spawn_updater(
    cfg: &FleetConfig,
    device_id: &str,
    switch: Arc<dyn ModelSwitch>,
    report: Arc<UpdateReport>,
    changed: tokio::sync::mpsc::Sender<()>,
    shared: Arc<Shared>,
) -> Arc<Jobs> {
    let jobs = Arc::new(Jobs {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        updater: Updater {
            cfg: cfg.updates.clone(),
            ca_file: cfg.ca_file.clone(),
            device_id: device_id.to_string(),
        },
    });
    if cfg.updates.public_key.is_some() {
        jobs.updater.clean_leftovers();
    }
    let refused = if cfg.updates.public_key.is_some() {
        crate::device::update::read_refused(&cfg.updates.models_dir)
    } else {
        Vec::new()
    };
    let worker = UpdateWorker {
        jobs: jobs.clone(),
        switch,
        report,
        changed,
        shared,
        refused,
        sched: Schedule::default(),
    };
    let _ = std::thread::Builder::new()
        .name("model-update".into())
        .spawn(move || worker.run());
    jobs
}

/// The model-update thread: one job at a time (an announcement or a reload), with retries of
/// passing failures on their own clock.
struct UpdateWorker {
    jobs: Arc<Jobs>,
    switch: Arc<dyn ModelSwitch>,
    report: Arc<UpdateReport>,
    changed: tokio::sync::mpsc::Sender<()>,
    shared: Arc<Shared>,
    /// Archives refused for good (signature, sha256, archive, self-test): not retried, also
    /// not after a restart (`models_dir/refused.json`).
    refused: Vec<String>,
    sched: Schedule,
}

/// What the update thread does next, decided from its inbox and its own clocks.
#[derive(Default)]
struct Schedule {
    /// A download that failed for a passing reason: tried again at `when`, after `backoff`.
    retry: Option<(Announcement, Instant, Duration)>,
    /// When the last reload ran (rate limit).
    last_reload: Option<Instant>,
}

#[derive(Debug, PartialEq)]
enum Decision {
    Run(Job),
    WaitUntil(Instant),
    Wait,
    Closed,
}

impl Schedule {
    fn decide(&mut self, p: &mut Pending, now: Instant) -> Decision {
        // A signed update first: a stream of reloads must never hold one back.
        if let Some(a) = p.announce.take() {
            // A redelivery of the one waiting to be retried keeps its backoff.
            if self.retry.as_ref().is_some_and(|(r, _, _)| *r != a) {
                self.retry = None;
            }
            p.busy = Some(a.clone());
            return Decision::Run(Job::Announce(a));
        }
        p.busy = None;
        let reload_at = self.last_reload.map(|t| t + RELOAD_INTERVAL);
        if p.reload && reload_at.is_none_or(|t| now >= t) {
            p.reload = false;
            self.last_reload = Some(now);
            return Decision::Run(Job::Reload);
        }
        if p.closed {
            return Decision::Closed;
        }
        let retry_at = match &self.retry {
            Some((a, when, _)) if now >= *when => {
                p.busy = Some(a.clone());
                return Decision::Run(Job::Announce(a.clone()));
            }
            Some((_, when, _)) => Some(*when),
            None => None,
        };
        match [retry_at, reload_at.filter(|_| p.reload)]
            .into_iter()
            .flatten()
            .min()
        {
            Some(t) => Decision::WaitUntil(t),
            None => Decision::Wait,
        }
    }
}

impl UpdateWorker {
    fn run(mut self) {
        while let Some(job) = self.next_job() {
            match job {
                Job::Announce(a) => self.announce(a),
                Job::Reload => self.reload(),
            }
            let _ = self.changed.try_send(());
        }
    }

    /// Waits for the next job: a new announcement (it replaces a pending retry), a reload (at
    /// most one per `RELOAD_INTERVAL`), or a retry that is due; None once the link closed.
    fn next_job(&mut self) -> Option<Job> {
        let j = self.jobs.clone();
        let mut p = j.lock();
        loop {
            p = match self.sched.decide(&mut p, Instant::now()) {
                Decision::Run(job) => return Some(job),
                Decision::Closed => return None,
                Decision::WaitUntil(t) => {
                    j.wake
                        .wait_timeout(p, t.saturating_duration_since(Instant::now()))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                Decision::Wait => j.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    fn announce(&mut self, a: Announcement) {
        let backoff = match &self.sched.retry {
            Some((r, _, b)) if *r == a => *b,
            _ => RETRY_FIRST / 2,
        };
        self.sched.retry = None;
        if self.refused.contains(&a.sha256) {
            log::info!(
                "model update: {} ({}) was refused on this device before; not tried again",
                a.name,
                a.sha256
            );
            return;
        }
        // Already in service (the same announcement queued twice): nothing to install, and
        // nothing to report as a refusal. A check that fails now (expired during a retry's
        // backoff) is reported, never recorded against the archive: a re-signed announcement
        // of it must still install.
        let running = self.shared.model().dir.clone();
        match self.jobs.updater.check(&a, &running) {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) if e.is_transient() => {}
            Err(e) => {
                log::warn!("model update: {} not installed: {e}", a.name);
                self.report.set(
                    json!({"state": "refused", "name": a.name, "version": a.version,
                    "sha256": a.sha256, "reason": e.to_string(),
                    "time": super::rfc3339(crate::storage::unix_ms())}),
                );
                return;
            }
        }
        let now = || super::rfc3339(crate::storage::unix_ms());
        self.report
            .set(json!({"state": "installing", "name": a.name,
                               "version": a.version, "sha256": a.sha256, "time": now()}));
        let _ = self.changed.try_send(());
        log::info!(
            "model update: {} version {} ({}) announced",
            a.name,
            a.version,
            a.sha256
        );
        let v = match self.jobs.updater.apply(&a, self.switch.as_ref()) {
            Ok(dir) => {
                log::info!("model update: switched to {}", dir.display());
                let running = self.shared.model();
                json!({"state": "switched", "name": running.manifest.name,
                       "version": a.version, "sha256": a.sha256, "time": now()})
            }
            Err(e) if e.is_transient() => {
                let next = (backoff * 2).min(RETRY_MAX);
                log::warn!(
                    "model update: {} failed ({e}); retrying in {} s",
                    a.name,
                    next.as_secs()
                );
                let v = json!({"state": "retrying", "name": a.name, "version": a.version,
                               "sha256": a.sha256, "reason": e.to_string(),
                               "retry_in_s": next.as_secs(), "time": now()});
                self.sched.retry = Some((a, Instant::now() + next, next));
                v
            }
            Err(e) => {
                log::warn!("model update: {} refused: {e}", a.name);
                self.refused.push(a.sha256.clone());
                // Kept across restarts only when the archive itself is at fault (its bytes
                // matched the signed hash): a bad download (a proxy's error page, a too-large
                // answer) must not block a good release for good.
                if e.is_archive_fault() {
                    let dir = &self.jobs.updater.cfg.models_dir;
                    let mut persisted = crate::device::update::read_refused(dir);
                    persisted.push(a.sha256.clone());
                    if let Err(w) = crate::device::update::write_refused(dir, &mut persisted) {
                        log::error!("model update: cannot record the refusal: {w}");
                    }
                }
                json!({"state": "refused", "name": a.name, "version": a.version,
                       "sha256": a.sha256, "reason": e.to_string(), "time": now()})
            }
        };
        self.report.set(v);
    }

    fn reload(&self) {
        let now = super::rfc3339(crate::storage::unix_ms());
        let dir = self.shared.model().dir.clone();
        let v = match self.switch.switch(&dir) {
            Ok(()) => json!({"state": "reloaded", "dir": dir, "time": now}),
            Err(e) => {
                json!({"state": "reload failed", "dir": dir, "reason": e.to_string(), "time": now})
            }
        };
        self.report.set(v);
    }
}

/// Screen commands (freeze, release, capture) at most this often, like HTTP freeze.
pub(super) const COMMAND_INTERVAL: Duration = Duration::from_millis(1000);

/// Run one command from the broker; returns what the status message reports about it.
/// `last_screen` is when the last screen command ran (rate limit).
pub(super) fn command(
    payload: &[u8],
    shared: &Arc<Shared>,
    jobs: &Jobs,
    last_screen: &mut Option<Instant>,
) -> Value {
    let time = super::rfc3339(crate::storage::unix_ms());
    let cmd = match Command::parse(payload) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("fleet: command refused: {e}");
            return json!({"ok": false, "error": e.to_string(), "time": time});
        }
    };
    let name = cmd.as_str();
    if cmd != Command::ReloadModel {
        if last_screen.is_some_and(|t| t.elapsed() < COMMAND_INTERVAL) {
            log::warn!(
                "fleet: command {name} refused: more than one per {} ms",
                COMMAND_INTERVAL.as_millis()
            );
            return json!({"command": name, "ok": false, "error": "rate limited", "time": time});
        }
        *last_screen = Some(Instant::now());
    }
    log::info!("fleet: command {name}");
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
            // A fresh point-and-classify: release a frozen screen first, then freeze again
            // (off the session's loop: it keeps answering meanwhile).
            let shared = shared.clone();
            tokio::spawn(async move {
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
            });
        }
        Command::ReloadModel => {
            if !jobs.reload() {
                return json!({"command": name, "ok": true, "coalesced": true, "time": time});
            }
        }
    }
    json!({"command": name, "ok": true, "time": time})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(sha: char) -> Announcement {
        Announcement {
            name: "effl0-v3".into(),
            version: 3,
            url: "http://h/b.tar".into(),
            sha256: sha.to_string().repeat(64),
            target: "*".into(),
            expires: 0,
            signature: String::new(),
        }
    }

    /// Reliability IV, row 6: a stream of reloads never holds back a waiting signed update,
    /// and reloads run at most once per `RELOAD_INTERVAL`.
    #[test]
    fn updates_go_before_reloads_and_reloads_are_rate_limited() {
        let mut s = Schedule::default();
        let mut p = Pending::default();
        let t0 = Instant::now();
        p.reload = true;
        p.announce = Some(announcement('a'));
        assert_eq!(
            s.decide(&mut p, t0),
            Decision::Run(Job::Announce(announcement('a')))
        );
        assert_eq!(p.busy, Some(announcement('a')));
        assert_eq!(s.decide(&mut p, t0), Decision::Run(Job::Reload));
        assert_eq!(p.busy, None);
        // Another reload at once waits for the interval...
        p.reload = true;
        assert_eq!(
            s.decide(&mut p, t0),
            Decision::WaitUntil(t0 + RELOAD_INTERVAL)
        );
        // ...and an update announced meanwhile runs first.
        p.announce = Some(announcement('b'));
        assert_eq!(
            s.decide(&mut p, t0),
            Decision::Run(Job::Announce(announcement('b')))
        );
        assert_eq!(
            s.decide(&mut p, t0 + RELOAD_INTERVAL / 2),
            Decision::WaitUntil(t0 + RELOAD_INTERVAL)
        );
        assert_eq!(
            s.decide(&mut p, t0 + RELOAD_INTERVAL),
            Decision::Run(Job::Reload)
        );
        assert_eq!(s.decide(&mut p, t0 + RELOAD_INTERVAL), Decision::Wait);
        p.closed = true;
        assert_eq!(s.decide(&mut p, t0 + RELOAD_INTERVAL), Decision::Closed);
    }

    /// Row 8: the same archive announced again while it waits or installs is a no-op, not a
    /// "replay" verdict on the update that is running.
    #[test]
    fn a_duplicate_of_a_running_update_is_not_refused() {
        let jobs = Jobs {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            updater: Updater {
                cfg: Default::default(),
                ca_file: None,
                device_id: "dev1".into(),
            },
        };
        jobs.lock().busy = Some(announcement('a'));
        // No public key configured: anything that reached the signature check would fail.
        assert!(matches!(
            jobs.announce(announcement('a'), Path::new("")),
            Ok(false)
        ));
        assert!(jobs.lock().announce.is_none());
        assert!(jobs.announce(announcement('b'), Path::new("")).is_err());
    }
}
