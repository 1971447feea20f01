//! The fleet thread: the MQTT connection (rumqttc; only this folder imports it; one session's
//! state: `session.rs`) and the outbox queue (commands and model-update jobs: `jobs.rs`; TLS:
//! `tls.rs`). One task polls the event loop and nothing else (a connect in progress is never
//! cancelled); the other moves results and reacts to events.

mod session;

use super::jobs::{Jobs, spawn_updater};
use super::queue::Queue;
use super::tls::{read, tls_config};
use super::{FleetRunner, UpdateReport, offline_json};
use crate::config::{BrokerUrl, FleetConfig};
use crate::device::update::ModelSwitch;
use crate::pipeline::Shared;
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, QoS, TlsConfiguration,
    Transport,
};
use session::Session;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet.broker")]
    Broker(#[source] crate::config::BrokerUrlError),
    #[error("fleet TLS: {0}")]
    Tls(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Results published but not yet acknowledged, at most.
const WINDOW: usize = 16;

struct Topics {
    status: String,
    result: String,
    cmd: String,
    model: String,
}

impl Topics {
    fn new(prefix: &str, id: &str) -> Topics {
        Topics {
            status: format!("{prefix}/{id}/status"),
            result: format!("{prefix}/{id}/result"),
            cmd: format!("{prefix}/{id}/cmd"),
            model: format!("{prefix}/fleet/model"),
        }
    }
}

fn options(cfg: &FleetConfig, device_id: &str, topics: &Topics) -> Result<MqttOptions, FleetError> {
    let url =
        BrokerUrl::parse(cfg.broker.as_deref().unwrap_or_default()).map_err(FleetError::Broker)?;
    let mut o = MqttOptions::new(format!("dermcam-{device_id}"), url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    // A clean session: what was unacknowledged is re-sent from our own queue, not the broker's.
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_INCOMING, 32 << 20);
    o.set_last_will(LastWill::new(
        &topics.status,
        offline_json(device_id).to_string(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => String::from_utf8_lossy(&read("fleet.password_file", f)?)
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => String::new(),
        };
        o.set_credentials(user, password);
    }
    if url.tls {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls_config(cfg)?,
        ))));
    }
    Ok(o)
}

/// Largest incoming packet read: far above any announcement or command, so a big retained
/// message (on any subscribed topic) is read and dropped by the per-topic rule
/// (`topic_limit`) instead of failing the connection on every redelivery.
const MAX_INCOMING: usize = 16 << 20;

/// The most a message on a subscribed topic may hold; larger ones are dropped with a log line
/// naming the topic (a command is one word or a small JSON object).
pub(super) const MAX_COMMAND_BYTES: usize = 4 << 10;

/// A connection that lasts less than this did not really work: the backoff keeps growing
/// (a broker that closes at once must not be hammered).
const STABLE: Duration = Duration::from_secs(10);

/// Backoff cap once the broker keeps closing fresh connections (another device with the same
/// id, an oversized retained message).
const SHORT_LIVED_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The fleet thread: owns the channel from the sink, so a panic in a session restarts the
/// session without losing what waits in the channel (counted in `restarts`).
pub struct FleetHandle {
    thread: std::thread::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl FleetHandle {
    /// Deliver what is queued within a short grace time, say goodbye, end the thread. Call
    /// after the pipeline has ended (every result it made is in the channel).
    pub fn stop_and_join(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

pub(super) fn spawn(
    r: FleetRunner,
    shared: Arc<Shared>,
    switch: Arc<dyn ModelSwitch>,
    report: Arc<UpdateReport>,
) -> Result<FleetHandle, FleetError> {
    let topics = Topics::new(&r.cfg.topic_prefix, &r.device_id);
    // Checked here so a bad broker URL or TLS file is a start-up error.
    options(&r.cfg, &r.device_id, &topics)?;
    Queue::open(&r.cfg.queue_dir, r.cfg.queue_max_bytes).map_err(|source| FleetError::Io {
        what: "fleet.queue_dir",
        path: r.cfg.queue_dir.clone(),
        source,
    })?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (changed_tx, changed_rx) = tokio::sync::mpsc::channel::<()>(4);
    let jobs = spawn_updater(
        &r.cfg,
        &r.device_id,
        switch,
        report.clone(),
        changed_tx,
        shared.clone(),
    );
    let mut ctx = Ctx {
        r,
        topics,
        shared,
        report,
        jobs,
        changed_rx,
        stop: stop_rx,
        rx_open: true,
    };
    let thread = std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            loop {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("fleet: no runtime: {e}");
                        return;
                    }
                };
                let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    rt.block_on(run(&mut ctx))
                }));
                match ended {
                    Ok(()) => break,
                    Err(_) => {
                        let n = ctx.r.stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                        log::error!("fleet: the session panicked; restarting it (restart {n})");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            ctx.jobs.close();
            if let Ok(q) = Queue::open(&ctx.r.cfg.queue_dir, ctx.r.cfg.queue_max_bytes) {
                if !q.is_empty() {
                    log::info!(
                        "fleet: {} result(s) stay queued for the next start",
                        q.len()
                    );
                }
            }
        })
        .map_err(|source| FleetError::Io {
            what: "fleet thread",
            path: PathBuf::new(),
            source,
        })?;
    Ok(FleetHandle { thread, stop })
}

/// What outlives one session (a panic restarts the session with the same context).
struct Ctx {
    r: FleetRunner,
    topics: Topics,
    shared: Arc<Shared>,
    report: Arc<UpdateReport>,
    jobs: Arc<Jobs>,
    changed_rx: tokio::sync::mpsc::Receiver<()>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// False once the pipeline ended: the link stays up (status, queue drain, commands,
    /// updates) until the appliance stops.
    rx_open: bool,
}

/// The event loop's own task: polls rumqttc (a connect in progress is never cancelled) and
/// backs off after failures. The backoff only resets after a connection that stayed up.
fn drive(
    mut eventloop: rumqttc::EventLoop,
    max_backoff: Duration,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<Event, ConnectionError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        let first = Duration::from_millis(250);
        let mut backoff = first;
        let mut short_lived = 0u32;
        let mut up_since: Option<tokio::time::Instant> = None;
        loop {
            let ev = eventloop.poll().await;
            let failed = ev.is_err();
            if matches!(ev, Ok(Event::Incoming(Incoming::ConnAck(_)))) {
                up_since = Some(tokio::time::Instant::now());
            }
            if tx.send(ev).await.is_err() {
                break;
            }
            if failed {
                match up_since.take() {
                    Some(t) if t.elapsed() >= STABLE => {
                        backoff = first;
                        short_lived = 0;
                    }
                    Some(_) => short_lived += 1,
                    None => {}
                }
                let cap = if short_lived >= 3 {
                    // Dropped right after connecting, again and again: most likely another
                    // device took our session (same device_id). Wait the long backoff at once,
                    // so one of the two stays connected instead of both flapping.
                    backoff = SHORT_LIVED_MAX_BACKOFF.max(max_backoff);
                    backoff
                } else {
                    max_backoff
                };
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cap);
            }
        }
    });
    (task, rx)
}

async fn run(ctx: &mut Ctx) {
    let opts = match options(&ctx.r.cfg, &ctx.r.device_id, &ctx.topics) {
        Ok(o) => o,
        Err(e) => {
            log::error!("fleet: {e}");
            return;
        }
    };
    let mut queue = match Queue::open(&ctx.r.cfg.queue_dir, ctx.r.cfg.queue_max_bytes) {
        Ok(q) => q,
        Err(e) => {
            log::error!("fleet: {}: {e}", ctx.r.cfg.queue_dir.display());
            return;
        }
    };
    if !queue.is_empty() {
        log::info!(
            "fleet: {} result(s) from an earlier run wait in {}",
            queue.len(),
            ctx.r.cfg.queue_dir.display()
        );
    }
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let (driver, mut ev_rx) = drive(eventloop, Duration::from_millis(ctx.r.cfg.max_backoff_ms));
    let mut s = Session::new(client, ctx.r.stats.clone());
    let mut status_tick = tokio::time::interval(Duration::from_secs(ctx.r.cfg.status_interval_s));
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = ctx.r.rx.recv(), if ctx.rx_open => match item {
                Some(item) => s.enqueue(&mut queue, item),
                // The pipeline ended (slideshow over): the link stays, on its own clock.
                None => ctx.rx_open = false,
            },
            Some(ev) = ev_rx.recv() => s.on_event(ev, ctx, &mut queue),
            _ = status_tick.tick() => {
                s.resume_subscriptions(ctx);
                s.send_status(ctx)
            }
            Some(()) = ctx.changed_rx.recv() => s.send_status(ctx),
            _ = ctx.stop.changed() => break,
        }
        s.after_event(&mut queue, &ctx.topics.result);
    }
    // Stopping: what the pipeline handed over last goes to the queue first.
    while let Ok(item) = ctx.r.rx.try_recv() {
        s.enqueue(&mut queue, item);
    }
    s.goodbye(ctx, &mut queue, &mut ev_rx).await;
    driver.abort();
}
