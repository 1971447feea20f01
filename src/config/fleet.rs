//! The `[fleet]` section: results and health to an MQTT broker, signed model updates. Off
//! unless `broker` is set: nothing leaves the device unless configured.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883`; unset = fleet off.
    pub broker: Option<String>,
    /// This device's name in topics; empty = the hostname.
    pub device_id: String,
    pub topic_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file instead (kept out of the config file).
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) for `mqtts://`; unset = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate + key (PEM) for brokers that authenticate devices by certificate.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub publish: FleetPublish,
    /// With `publish = "all"`: at most this many live results per second.
    pub max_rate_hz: f64,
    /// Attach the frame (JPEG, base64) to each result (off: privacy by default).
    pub include_image: bool,
    /// Results wait here (one file each, written atomically) until the broker acknowledged them.
    pub queue_dir: PathBuf,
    /// Above this many queued bytes the oldest results are dropped (and counted).
    pub queue_max_bytes: u64,
    /// Retained status message period.
    pub status_interval_s: u64,
    /// After a message larger than the device reads at all, it stops reading its command and
    /// model topics this long (results and status go on), then subscribes again.
    pub oversized_pause_s: u64,
    /// MQTT keep-alive: the broker declares the device gone (last will) after 1.5x this.
    pub keep_alive_s: u64,
    /// Longest wait between reconnect attempts (backoff doubles from 250 ms up to this).
    pub max_backoff_ms: u64,
    pub updates: FleetUpdates,
}

/// Which results go to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetPublish {
    /// Only frozen (point-and-classify) results.
    Frozen,
    /// Every live result too, at most `max_rate_hz`.
    All,
}

/// `[fleet.updates]`: model bundles announced on `<prefix>/fleet/model`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetUpdates {
    /// The clinic's ed25519 public key (hex, from `dermcam bundle keygen`); unset = updates off.
    pub public_key: Option<String>,
    /// Downloaded bundles and the active/previous record live here.
    pub models_dir: PathBuf,
    /// Largest bundle archive accepted.
    pub max_download_bytes: u64,
    /// A download not finished within this many seconds is abandoned (and retried later).
    pub download_timeout_s: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            broker: None,
            device_id: String::new(),
            topic_prefix: "dermcam".into(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            publish: FleetPublish::Frozen,
            max_rate_hz: 1.0,
            include_image: false,
            queue_dir: "/var/lib/dermcam/fleet-queue".into(),
            queue_max_bytes: 64 << 20,
            status_interval_s: 30,
            oversized_pause_s: 600,
            keep_alive_s: 15,
            max_backoff_ms: 5000,
            updates: FleetUpdates::default(),
        }
    }
}

impl Default for FleetUpdates {
    fn default() -> Self {
        FleetUpdates {
            public_key: None,
            models_dir: "/var/lib/dermcam/models".into(),
            max_download_bytes: 512 << 20,
            download_timeout_s: 300,
        }
    }
}

/// A parsed `broker` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let err = |why: String| BrokerUrlError {
            url: s.chars().take(200).collect(),
            why,
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(err("use mqtt://host[:port] or mqtts://host[:port]".into()));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '@', '?', '#']) || rest.is_empty() {
            return Err(err(
                "only a host and port (credentials go in username/password)".into(),
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let bad_port = |p: &str| err(format!("bad port {p:?}"));
        let parse_port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:1883`.
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err("IPv6 address without its closing ']'".into()))?;
            let port = match after {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(parse_port)
                    .ok_or_else(|| bad_port(p))?,
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err(format!("{h:?} is not an IPv6 address")));
            }
            (h, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(err("write an IPv6 address in brackets: [::1]".into()));
                }
                Some((h, p)) => (h, parse_port(p).ok_or_else(|| bad_port(p))?),
                None => (rest, default_port),
            }
        };
        if host.is_empty() {
            return Err(err("no host".into()));
        }
        Ok(BrokerUrl {
            tls,
            host: host.into(),
            port,
        })
    }
}

/// A `broker` URL that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {why}")]
pub struct BrokerUrlError {
    pub url: String,
    pub why: String,
}

impl FleetConfig {
    pub fn enabled(&self) -> bool {
        self.broker.is_some()
    }

    /// The device id used in topics: `device_id`, else the hostname.
    pub fn resolved_device_id(&self) -> String {
        if !self.device_id.is_empty() {
            return self.device_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| valid_topic_level(s))
            .unwrap_or_else(|| "dermcam".into())
    }

    /// Problems `check-config` reports (first one wins there).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let Some(b) = &self.broker else {
            return Vec::new();
        };
        let url = BrokerUrl::parse(b);
        let mut v = Vec::new();
        if let Err(e) = &url {
            v.push(("fleet.broker", e.to_string()));
        }
        v.extend(self.topic_problems());
        v.extend(self.credential_problems(&url));
        v.extend(unmet(self.limit_checks()));
        v.extend(self.updates.problems());
        v
    }

    /// `device_id` and `topic_prefix` become topic levels.
    fn topic_problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if !self.device_id.is_empty() && !valid_topic_level(&self.device_id) {
            v.push((
                "fleet.device_id",
                format!(
                    "{:?}: letters, digits, '-', '_' and '.' only (it is a topic level)",
                    self.device_id
                ),
            ));
        }
        if !self.topic_prefix.split('/').all(valid_topic_level) {
            v.push((
                "fleet.topic_prefix",
                format!(
                    "{:?}: levels of letters, digits, '-', '_', '.' joined by '/'",
                    self.topic_prefix
                ),
            ));
        }
        v
    }

    /// Password, username and certificates that do not fit together or with the broker URL.
    fn credential_problems(
        &self,
        url: &Result<BrokerUrl, BrokerUrlError>,
    ) -> Vec<(&'static str, String)> {
        let password = self.password.is_some() || self.password_file.is_some();
        let plain = matches!(url, Ok(BrokerUrl { tls: false, .. }));
        unmet([
            (
                "fleet.password",
                !(self.password.is_some() && self.password_file.is_some()),
                "set either password or password_file".into(),
            ),
            (
                "fleet.username",
                !(password && self.username.is_none()),
                "a password needs a username".into(),
            ),
            (
                "fleet.client_cert",
                self.client_cert.is_some() == self.client_key.is_some(),
                "client_cert and client_key go together".into(),
            ),
            (
                "fleet.ca_file",
                !(plain && (self.ca_file.is_some() || self.client_cert.is_some())),
                "certificates need an mqtts:// broker".into(),
            ),
        ])
    }

    /// Rates, sizes and periods: (field, within range, message when not).
    fn limit_checks(&self) -> [(&'static str, bool, String); 6] {
        [
            (
                "fleet.max_rate_hz",
                self.max_rate_hz > 0.0 && self.max_rate_hz <= 100.0,
                format!("{} not in (0, 100]", self.max_rate_hz),
            ),
            (
                "fleet.queue_max_bytes",
                self.queue_max_bytes >= 64 << 10,
                format!("{} is below 65536", self.queue_max_bytes),
            ),
            (
                "fleet.status_interval_s",
                (1..=86_400).contains(&self.status_interval_s),
                format!("{} not in 1..=86400", self.status_interval_s),
            ),
            (
                "fleet.oversized_pause_s",
                (1..=86_400).contains(&self.oversized_pause_s),
                format!("{} not in 1..=86400", self.oversized_pause_s),
            ),
            (
                "fleet.keep_alive_s",
                (1..=3600).contains(&self.keep_alive_s),
                format!("{} not in 1..=3600", self.keep_alive_s),
            ),
            (
                "fleet.max_backoff_ms",
                (100..=600_000).contains(&self.max_backoff_ms),
                format!("{} not in 100..=600000", self.max_backoff_ms),
            ),
        ]
    }
}

impl FleetUpdates {
    /// The `[fleet.updates]` part of [`FleetConfig::problems`].
    fn problems(&self) -> Vec<(&'static str, String)> {
        let key_ok = self
            .public_key
            .as_ref()
            .is_none_or(|k| hex::decode(k.trim()).is_ok_and(|b| b.len() == 32));
        unmet([
            (
                "fleet.updates.public_key",
                key_ok,
                "64 hex digits (an ed25519 public key from `dermcam bundle keygen`)".into(),
            ),
            (
                "fleet.updates.download_timeout_s",
                (10..=86_400).contains(&self.download_timeout_s),
                format!("{} outside 10..86400", self.download_timeout_s),
            ),
            (
                "fleet.updates.max_download_bytes",
                self.max_download_bytes >= 1 << 20,
                format!("{} is below 1 MiB", self.max_download_bytes),
            ),
        ])
    }
}

/// The (field, message) of each check that failed, in order.
fn unmet<const N: usize>(checks: [(&'static str, bool, String); N]) -> Vec<(&'static str, String)> {
    checks
        .into_iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(field, _, message)| (field, message))
        .collect()
}

/// One MQTT topic level we are willing to build topics from (no wildcards, no separators).
pub fn valid_topic_level(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.local", 1883)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.2:18883/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.2", 18883));
        let u = BrokerUrl::parse("mqtts://[::1]:8884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8884));
        // A bracketed IPv6 literal without a port (was: `bad port "1]"`).
        let u = BrokerUrl::parse("mqtt://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1883));
        let u = BrokerUrl::parse("mqtt://[fe80::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::1", 1883));
        for bad in [
            "mqtt://[::1",
            "mqtt://[::1]x",
            "mqtt://[nothost]:1883",
            "mqtt://::1",
            "http://x",
            "mqtt://",
            "mqtt://u:p@host",
            "mqtt://h:0",
            "mqtt://h:x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = FleetConfig::default();
        assert!(!c.enabled() && c.problems().is_empty());
        let c = FleetConfig {
            broker: Some("mqtt://h".into()),
            device_id: "a/b".into(),
            password: Some("p".into()),
            ca_file: Some("/ca.pem".into()),
            max_rate_hz: 0.0,
            updates: FleetUpdates {
                public_key: Some("abcd".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let fields: Vec<_> = c.problems().into_iter().map(|(f, _)| f).collect();
        for f in [
            "fleet.device_id",
            "fleet.username",
            "fleet.ca_file",
            "fleet.max_rate_hz",
            "fleet.updates.public_key",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }
}
