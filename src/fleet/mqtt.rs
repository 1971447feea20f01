//! The fleet thread: the MQTT session (rumqttc; the only file that imports it) and the outbox
//! queue (commands and model-update jobs: `jobs.rs`; TLS: `tls.rs`). One task polls the event
//! loop and nothing else (a connect in progress is never cancelled); the other moves results
//! and reacts to events.

use super::jobs::{Jobs, command, spawn_updater};
use super::queue::Queue;
use super::tls::{read, tls_config};
use super::{FleetRunner, FleetStats, Item, UpdateReport, offline_json, status_json};
use crate::config::{BrokerUrl, FleetConfig};
use crate::device::update::{Announcement, ModelSwitch};
use crate::pipeline::Shared;
use rumqttc::{
    AsyncClient, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
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
/// message is read and dropped by us instead of failing the connection on every redelivery.
const MAX_INCOMING: usize = 4 << 20;

/// A connection that lasts less than this did not really work: the backoff keeps growing
/// (a broker that closes at once must not be hammered).
const STABLE: Duration = Duration::from_secs(10);

/// Backoff cap once the broker keeps closing fresh connections (another device with the same
/// id, an oversized retained message).
const SHORT_LIVED_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// After a message too large even for `MAX_INCOMING` on the model topic, the device stays
/// unsubscribed from it this long (results, status and commands keep flowing).
const MODEL_TOPIC_PAUSE: Duration = Duration::from_secs(600);

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
                    SHORT_LIVED_MAX_BACKOFF.max(max_backoff)
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
    let mut s = Session {
        client,
        connected: false,
        connected_at: None,
        short_lived: 0,
        order: VecDeque::new(),
        inflight: HashMap::new(),
        stats: ctx.r.stats.clone(),
        last_command: Value::Null,
        last_screen_command: None,
        warned: false,
        model_paused_until: None,
    };
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
            _ = status_tick.tick() => s.send_status(ctx),
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

struct Session {
    client: AsyncClient,
    connected: bool,
    connected_at: Option<std::time::Instant>,
    /// Connections in a row the broker closed within `STABLE`.
    short_lived: u32,
    /// Publish requests in the order handed to the client, waiting for their packet id
    /// (`Some(file)` for results, `None` for status messages).
    order: VecDeque<Option<PathBuf>>,
    inflight: HashMap<u16, Option<PathBuf>>,
    stats: Arc<FleetStats>,
    last_command: Value,
    last_screen_command: Option<std::time::Instant>,
    warned: bool,
    /// Not subscribed to the model topic until then (an oversized message sits there).
    model_paused_until: Option<std::time::Instant>,
}

impl Session {
    fn status(&self, ctx: &Ctx) -> String {
        let mut v = status_json(&ctx.r.device_id, &ctx.shared, &self.stats, &ctx.report);
        v["last_command"] = self.last_command.clone();
        if let Some(t) = self.model_paused_until {
            v["model_topic"] = json!({"paused": true, "for_s": t.saturating_duration_since(std::time::Instant::now()).as_secs(),
                "reason": format!("a message over {MAX_INCOMING} bytes on {}", ctx.topics.model)});
        }
        v.to_string()
    }

    fn send_status(&mut self, ctx: &Ctx) {
        if self.connected {
            let body = self.status(ctx);
            self.publish(&ctx.topics.status, true, body.into_bytes(), None);
        }
    }

    fn after_event(&mut self, queue: &mut Queue, topic: &str) {
        self.stats
            .connected
            .store(self.connected, Ordering::Relaxed);
        if self.connected {
            self.fill_window(queue, topic);
        }
        self.stats
            .pending
            .store(queue.len() as u64, Ordering::Relaxed);
        self.stats
            .pending_bytes
            .store(queue.bytes(), Ordering::Relaxed);
    }

    fn on_event(&mut self, ev: Result<Event, ConnectionError>, ctx: &mut Ctx, queue: &mut Queue) {
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => self.on_connected(ctx),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(entry) = self.order.pop_front() {
                    self.inflight.insert(pkid, entry);
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => self.acked(ack.pkid, queue),
            Ok(Event::Incoming(Incoming::Publish(p))) => self.on_publish(p, ctx),
            Ok(_) => {}
            Err(e) => self.on_error(e, ctx, queue),
        }
    }

    fn on_connected(&mut self, ctx: &Ctx) {
        self.connected = true;
        self.connected_at = Some(std::time::Instant::now());
        self.order.clear();
        self.inflight.clear();
        self.warned = false;
        log::info!(
            "fleet: connected to {} as {}",
            ctx.r.cfg.broker.as_deref().unwrap_or(""),
            ctx.r.device_id
        );
        let _ = self.client.try_subscribe(&ctx.topics.cmd, QoS::AtLeastOnce);
        if self
            .model_paused_until
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            self.model_paused_until = None;
        }
        if ctx.r.cfg.updates.public_key.is_some() && self.model_paused_until.is_none() {
            let _ = self
                .client
                .try_subscribe(&ctx.topics.model, QoS::AtLeastOnce);
        }
        self.send_status(ctx);
    }

    fn acked(&mut self, pkid: u16, queue: &mut Queue) {
        if let Some(Some(path)) = self.inflight.remove(&pkid) {
            queue.remove(&path);
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_publish(&mut self, p: rumqttc::Publish, ctx: &mut Ctx) {
        if p.topic == ctx.topics.cmd {
            if p.retain {
                // A retained command would re-run at every reconnect.
                log::warn!("fleet: ignoring a retained command on {}", p.topic);
                return;
            }
            self.last_command = command(
                &p.payload,
                &ctx.shared,
                &ctx.jobs,
                &mut self.last_screen_command,
            );
            self.send_status(ctx);
        } else if p.topic == ctx.topics.model && !p.payload.is_empty() {
            // Checked before it takes a place: an unsigned flood costs nothing but this.
            let running = ctx.shared.model().dir.clone();
            let checked =
                Announcement::parse(&p.payload).and_then(|a| ctx.jobs.announce(a, &running));
            if let Err(e) = checked {
                log::warn!("fleet: model announcement ignored: {e}");
                ctx.report
                    .set(json!({"state": "refused", "reason": e.to_string(),
                                "time": super::rfc3339(crate::storage::unix_ms())}));
                self.send_status(ctx);
            }
        }
    }

    fn on_error(&mut self, e: ConnectionError, ctx: &Ctx, queue: &Queue) {
        let oversized = matches!(
            &e,
            ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::Error::PayloadSizeLimitExceeded(_)
            ))
        );
        if oversized && ctx.r.cfg.updates.public_key.is_some() {
            // Only the retained model topic redelivers at every connect.
            log::error!(
                "fleet: a message over {MAX_INCOMING} bytes arrived (a retained one on {}?): model updates paused for {} s, the rest of the link goes on",
                ctx.topics.model,
                MODEL_TOPIC_PAUSE.as_secs()
            );
            self.model_paused_until = Some(std::time::Instant::now() + MODEL_TOPIC_PAUSE);
        }
        let lived = self.connected_at.take().map(|t| t.elapsed());
        if self.connected {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            if lived.is_some_and(|d| d < STABLE) {
                self.short_lived += 1;
            } else {
                self.short_lived = 0;
            }
            if self.short_lived == 3 {
                log::error!(
                    "fleet: the broker closes each connection right after it opens (another device with device_id {:?}? broker ACLs?); backing off up to {} s",
                    ctx.r.device_id,
                    SHORT_LIVED_MAX_BACKOFF.as_secs()
                );
            }
        }
        if (self.connected && self.short_lived < 3) || !self.warned {
            log::warn!(
                "fleet: broker unreachable ({e}); results wait in the queue ({} now)",
                queue.len()
            );
            self.warned = true;
        }
        self.connected = false;
        self.order.clear();
        self.inflight.clear();
    }

    /// Shutting down: give the broker a moment to acknowledge what is in flight, say goodbye
    /// (the last will is for vanishing).
    async fn goodbye(
        &mut self,
        ctx: &Ctx,
        queue: &mut Queue,
        ev_rx: &mut tokio::sync::mpsc::Receiver<Result<Event, ConnectionError>>,
    ) {
        if !self.connected {
            return;
        }
        let topic = &ctx.topics.result;
        self.fill_window(queue, topic);
        let stats = &self.stats;
        let mut v = offline_json(&ctx.r.device_id);
        v["reason"] = "shutdown".into();
        // What this run did with its results (a consumer can check nothing went missing).
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        v["queue"] = json!({"queued_total": g(&stats.queued_total), "sent": g(&stats.sent),
                            "dropped": g(&stats.dropped), "pending": queue.len()});
        self.publish(&ctx.topics.status, true, v.to_string().into_bytes(), None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !(self.order.is_empty() && self.inflight.is_empty()) {
            match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
                Ok(Some(Ok(Event::Outgoing(Outgoing::Publish(pkid))))) => {
                    if let Some(e) = self.order.pop_front() {
                        self.inflight.insert(pkid, e);
                    }
                }
                Ok(Some(Ok(Event::Incoming(Incoming::PubAck(ack))))) => {
                    self.acked(ack.pkid, queue);
                    self.fill_window(queue, topic);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), ev_rx.recv()).await;
    }

    fn publish(&mut self, topic: &str, retain: bool, body: Vec<u8>, file: Option<PathBuf>) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, body)
        {
            Ok(()) => {
                self.order.push_back(file);
                true
            }
            Err(_) => false,
        }
    }

    fn busy(&self) -> Vec<PathBuf> {
        self.order
            .iter()
            .chain(self.inflight.values())
            .flatten()
            .cloned()
            .collect()
    }

    fn fill_window(&mut self, queue: &mut Queue, topic: &str) {
        let busy = self.busy();
        if busy.len() >= WINDOW {
            return;
        }
        for (path, body) in queue.next(WINDOW - busy.len(), &busy) {
            if !self.publish(topic, false, body, Some(path)) {
                break;
            }
        }
    }

    fn enqueue(&mut self, queue: &mut Queue, item: Item) {
        let Item { mut body, frame } = item;
        if let Some(img) = frame {
            let mut jpg = Vec::new();
            if img
                .write_to(
                    &mut std::io::Cursor::new(&mut jpg),
                    image::ImageFormat::Jpeg,
                )
                .is_ok()
            {
                use base64::Engine;
                body["image_jpeg_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(&jpg)
                    .into();
            }
        }
        let bytes = body.to_string().into_bytes();
        let busy = self.busy();
        match queue.push(&bytes, &busy) {
            Ok(dropped) => {
                self.stats.queued_total.fetch_add(1, Ordering::Relaxed);
                // On disk from here on: the soak test's ground truth of what must arrive.
                log::debug!(
                    "fleet: queued result {}",
                    body["id"].as_str().unwrap_or("?")
                );
                if dropped > 0 {
                    self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                    log::warn!(
                        "fleet: queue over its byte limit: dropped the {dropped} oldest result(s)"
                    );
                }
            }
            Err(e) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!("fleet: cannot queue a result: {e}");
            }
        }
    }
}
