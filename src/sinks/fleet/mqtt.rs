//! The fleet thread: the MQTT session (rumqttc; the only file that imports it) and the outbox
//! queue (commands and model-update jobs: `jobs.rs`; TLS: `tls.rs`). One task polls the event
//! loop and nothing else (a connect in progress is never cancelled); the other moves results
//! and reacts to events.

use super::jobs::{Job, command, spawn_updater};
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
    #[error("fleet.broker: {0}")]
    Broker(String),
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
    o.set_max_packet_size(1 << 20, 32 << 20);
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

pub(super) fn spawn(
    r: FleetRunner,
    shared: Arc<Shared>,
    switch: Arc<dyn ModelSwitch>,
    report: Arc<UpdateReport>,
) -> Result<std::thread::JoinHandle<()>, FleetError> {
    let topics = Topics::new(&r.cfg.topic_prefix, &r.device_id);
    let opts = options(&r.cfg, &r.device_id, &topics)?;
    let queue =
        Queue::open(&r.cfg.queue_dir, r.cfg.queue_max_bytes).map_err(|source| FleetError::Io {
            what: "fleet.queue_dir",
            path: r.cfg.queue_dir.clone(),
            source,
        })?;
    if !queue.is_empty() {
        log::info!(
            "fleet: {} result(s) from an earlier run wait in {}",
            queue.len(),
            r.cfg.queue_dir.display()
        );
    }
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fleet runtime");
            rt.block_on(run(r, opts, topics, queue, shared, switch, report));
        })
        .map_err(|source| FleetError::Io {
            what: "fleet thread",
            path: PathBuf::new(),
            source,
        })
}

async fn run(
    r: FleetRunner,
    opts: MqttOptions,
    topics: Topics,
    mut queue: Queue,
    shared: Arc<Shared>,
    switch: Arc<dyn ModelSwitch>,
    report: Arc<UpdateReport>,
) {
    let FleetRunner {
        mut rx,
        cfg,
        device_id,
        stats,
    } = r;
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<Result<Event, ConnectionError>>(64);
    let max_backoff = Duration::from_millis(cfg.max_backoff_ms);
    let driver = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let ev = eventloop.poll().await;
            let failed = ev.is_err();
            if matches!(ev, Ok(Event::Incoming(Incoming::ConnAck(_)))) {
                backoff = Duration::from_millis(250);
            }
            if ev_tx.send(ev).await.is_err() {
                break;
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    });
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(4);
    let updates_on = cfg.updates.public_key.is_some();
    let jobs = spawn_updater(&cfg, switch, report.clone(), changed_tx, shared.clone());
    let mut s = Session {
        client,
        connected: false,
        order: VecDeque::new(),
        inflight: HashMap::new(),
        stats: stats.clone(),
        last_command: Value::Null,
        warned: false,
    };
    let mut status_tick = tokio::time::interval(Duration::from_secs(cfg.status_interval_s));
    let status = |s: &Session| {
        let mut v = status_json(&device_id, &shared, &s.stats, &report);
        v["last_command"] = s.last_command.clone();
        v.to_string()
    };
    // The pipeline's end drops the sink: that closes the channel and ends this loop, after
    // every result the pipeline made is queued.
    let mut closed = false;
    while !closed {
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => s.enqueue(&mut queue, item, &shared),
                None => closed = true,
            },
            Some(ev) = ev_rx.recv() => match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    s.connected = true;
                    s.order.clear();
                    s.inflight.clear();
                    s.warned = false;
                    log::info!("fleet: connected to {} as {device_id}", cfg.broker.as_deref().unwrap_or(""));
                    let _ = s.client.try_subscribe(&topics.cmd, QoS::AtLeastOnce);
                    if updates_on {
                        let _ = s.client.try_subscribe(&topics.model, QoS::AtLeastOnce);
                    }
                    let body = status(&s);
                    s.publish(&topics.status, true, body.into_bytes(), None);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(entry) = s.order.pop_front() {
                        s.inflight.insert(pkid, entry);
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                    if let Some(Some(path)) = s.inflight.remove(&ack.pkid) {
                        queue.remove(&path);
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if p.topic == topics.cmd {
                        if p.retain {
                            // A retained command would re-run at every reconnect.
                            log::warn!("fleet: ignoring a retained command on {}", p.topic);
                        } else {
                        s.last_command = command(&p.payload, &shared, &jobs).await;
                        let body = status(&s);
                        s.publish(&topics.status, true, body.into_bytes(), None);
                        }
                    } else if p.topic == topics.model && !p.payload.is_empty() {
                        match Announcement::parse(&p.payload) {
                            Ok(a) => { let _ = jobs.send(Job::Announce(a)); }
                            Err(e) => {
                                log::warn!("fleet: model announcement ignored: {e}");
                                report.set(json!({"state": "refused", "reason": e.to_string()}));
                                let body = status(&s);
                                s.publish(&topics.status, true, body.into_bytes(), None);
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if s.connected {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if s.connected || !s.warned {
                        log::warn!("fleet: broker unreachable ({e}); results wait in the queue ({} now)", queue.len());
                        s.warned = true;
                    }
                    s.connected = false;
                    s.order.clear();
                    s.inflight.clear();
                }
            },
            _ = status_tick.tick() => if s.connected {
                let body = status(&s);
                s.publish(&topics.status, true, body.into_bytes(), None);
            },
            Some(()) = changed_rx.recv() => if s.connected {
                let body = status(&s);
                s.publish(&topics.status, true, body.into_bytes(), None);
            },
        }
        s.stats.connected.store(s.connected, Ordering::Relaxed);
        if s.connected {
            s.fill_window(&mut queue, &topics.result);
        }
        stats.pending.store(queue.len() as u64, Ordering::Relaxed);
        stats.pending_bytes.store(queue.bytes(), Ordering::Relaxed);
    }
    // Shutting down: give the broker a moment to acknowledge what is in flight, say goodbye
    // (the last will is for vanishing).
    if s.connected {
        s.fill_window(&mut queue, &topics.result);
        let mut v = offline_json(&device_id);
        v["reason"] = "shutdown".into();
        // What this run did with its results (a consumer can check nothing went missing).
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        v["queue"] = json!({"queued_total": g(&stats.queued_total), "sent": g(&stats.sent),
                            "dropped": g(&stats.dropped), "pending": queue.len()});
        s.publish(&topics.status, true, v.to_string().into_bytes(), None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !(s.order.is_empty() && s.inflight.is_empty()) {
            match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
                Ok(Some(Ok(Event::Outgoing(Outgoing::Publish(pkid))))) => {
                    if let Some(e) = s.order.pop_front() {
                        s.inflight.insert(pkid, e);
                    }
                }
                Ok(Some(Ok(Event::Incoming(Incoming::PubAck(ack))))) => {
                    if let Some(Some(path)) = s.inflight.remove(&ack.pkid) {
                        queue.remove(&path);
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    s.fill_window(&mut queue, &topics.result);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        let _ = s.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), ev_rx.recv()).await;
    }
    driver.abort();
    if !queue.is_empty() {
        log::info!(
            "fleet: {} result(s) stay queued for the next start",
            queue.len()
        );
    }
}

struct Session {
    client: AsyncClient,
    connected: bool,
    /// Publish requests in the order handed to the client, waiting for their packet id
    /// (`Some(file)` for results, `None` for status messages).
    order: VecDeque<Option<PathBuf>>,
    inflight: HashMap<u16, Option<PathBuf>>,
    stats: Arc<FleetStats>,
    last_command: Value,
    warned: bool,
}

impl Session {
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

    fn enqueue(&mut self, queue: &mut Queue, item: Item, shared: &Shared) {
        let Item { mut body, frame } = item;
        let model = shared.model();
        if body["model"]["name"] == model.manifest.name.as_str() {
            body["model"]["sha256"] = model.manifest.sha256.clone().into();
        }
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
