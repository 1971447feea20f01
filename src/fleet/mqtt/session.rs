//! One MQTT session's state: the publish window over the disk queue, status messages,
//! commands and model announcements in, and what a lost connection means.

use super::{Ctx, MAX_INCOMING, SHORT_LIVED_MAX_BACKOFF, STABLE, WINDOW};
use crate::device::update::Announcement;
use crate::fleet::jobs::command;
use crate::fleet::queue::Queue;
use crate::fleet::{FleetStats, Item, offline_json, status_json};
use rumqttc::{AsyncClient, ConnectionError, Event, Incoming, Outgoing, QoS};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(super) struct Session {
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
    /// Not subscribed to the command and model topics until then (a message over
    /// `MAX_INCOMING` sits on one of them).
    model_paused_until: Option<std::time::Instant>,
}

impl Session {
    pub(super) fn new(client: AsyncClient, stats: Arc<FleetStats>) -> Session {
        Session {
            client,
            connected: false,
            connected_at: None,
            short_lived: 0,
            order: VecDeque::new(),
            inflight: HashMap::new(),
            stats,
            last_command: Value::Null,
            last_screen_command: None,
            warned: false,
            model_paused_until: None,
        }
    }

    fn status(&self, ctx: &Ctx) -> String {
        let mut v = status_json(&ctx.r.device_id, &ctx.shared, &self.stats, &ctx.report);
        v["last_command"] = self.last_command.clone();
        if let Some(t) = self.model_paused_until {
            let paused = json!({"paused": true, "for_s": t.saturating_duration_since(std::time::Instant::now()).as_secs(),
                "reason": format!("a message over {MAX_INCOMING} bytes on {} or {}", ctx.topics.cmd, ctx.topics.model)});
            v["model_topic"] = paused.clone();
            v["command_topic"] = paused;
        }
        v.to_string()
    }

    /// The pause after an oversized message ends on its own clock, also while the link stays
    /// up (a non-retained oversized message does not drop it again).
    pub(super) fn resume_subscriptions(&mut self, ctx: &Ctx) {
        let due = self
            .model_paused_until
            .is_some_and(|t| std::time::Instant::now() >= t);
        if !due || !self.connected {
            return;
        }
        self.model_paused_until = None;
        log::info!(
            "fleet: pause over; reading {} and {} again",
            ctx.topics.cmd,
            ctx.topics.model
        );
        let _ = self.client.try_subscribe(&ctx.topics.cmd, QoS::AtLeastOnce);
        if ctx.r.cfg.updates.public_key.is_some() {
            let _ = self
                .client
                .try_subscribe(&ctx.topics.model, QoS::AtLeastOnce);
        }
    }

    pub(super) fn send_status(&mut self, ctx: &Ctx) {
        if self.connected {
            let body = self.status(ctx);
            self.publish(&ctx.topics.status, true, body.into_bytes(), None);
        }
    }

    pub(super) fn after_event(&mut self, queue: &mut Queue, topic: &str) {
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

    pub(super) fn on_event(
        &mut self,
        ev: Result<Event, ConnectionError>,
        ctx: &mut Ctx,
        queue: &mut Queue,
    ) {
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
        if self
            .model_paused_until
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            self.model_paused_until = None;
        }
        if self.model_paused_until.is_none() {
            let _ = self.client.try_subscribe(&ctx.topics.cmd, QoS::AtLeastOnce);
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
        // Every subscribed topic has a size rule: a big (retained) message is dropped here,
        // once per delivery, and the link goes on.
        let limit = if p.topic == ctx.topics.model {
            crate::device::update::MAX_ANNOUNCEMENT_BYTES
        } else {
            super::MAX_COMMAND_BYTES
        };
        if p.payload.len() > limit {
            log::warn!(
                "fleet: a {}-byte{} message on {} ignored: over {limit} bytes for that topic",
                p.payload.len(),
                if p.retain { " retained" } else { "" },
                p.topic
            );
            if p.topic == ctx.topics.model {
                ctx.report.ignored(
                    json!({"reason": format!("{} bytes: over {limit}", p.payload.len()),
                    "time": crate::fleet::rfc3339(crate::storage::unix_ms())}),
                );
                self.send_status(ctx);
            }
            return;
        }
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
                ctx.report.ignored(json!({"reason": e.to_string(),
                                    "time": crate::fleet::rfc3339(crate::storage::unix_ms())}));
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
        if oversized {
            // A retained message redelivers at every connect: stop reading its topic a while.
            log::error!(
                "fleet: a message over {MAX_INCOMING} bytes arrived (a retained one on {} or {}?): commands and model updates paused for {} s, results and status go on",
                ctx.topics.cmd,
                ctx.topics.model,
                ctx.r.cfg.oversized_pause_s
            );
            self.model_paused_until = Some(
                std::time::Instant::now()
                    + std::time::Duration::from_secs(ctx.r.cfg.oversized_pause_s),
            );
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
    pub(super) async fn goodbye(
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

    pub(super) fn enqueue(&mut self, queue: &mut Queue, item: Item) {
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
