//! The `[web]` section: listener, auth token and upload limits.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    pub enabled: bool,
    pub bind: String,
    /// Required when `bind` is not a loopback address; checked for strength and character set
    /// (`validate_token`).
    pub token: Option<String>,
    /// Host names (besides IP literals and `localhost`) the device answers to, e.g.
    /// `"dermcam.local"`. Requests with another `Host` are refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    pub max_upload_bytes: usize,
    pub max_pixels: u64,
    /// Classifications running at once.
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot before 503.
    pub queue: usize,
    /// Open HTTP connections at once; more wait in the kernel's accept queue. One client
    /// address gets at most an eighth of them (at least 4).
    pub max_connections: usize,
    /// A request's headers must arrive within this time; also the idle keep-alive limit.
    pub header_timeout_ms: u64,
    /// A response write that makes no progress this long (a client that requests and never
    /// reads) ends the connection and frees its slot.
    pub write_timeout_ms: u64,
    /// A request body must arrive completely within this time (408 otherwise; an upload's
    /// admission place is given back).
    pub body_timeout_ms: u64,
    /// After a body's first 2 s, it must have arrived at this average rate (bytes/s, 0 = off),
    /// else 408: a trickling upload cannot hold an admission place for the whole timeout.
    pub min_upload_rate: u64,
    /// Login session lifetime (the cookie holds a random session id, never the token).
    pub session_ttl_s: u64,
    /// Mark the session cookie `Secure` (only when served behind HTTPS).
    pub cookie_secure: bool,
    /// HTTP freeze/release requests: at most one per this many ms (429 otherwise), so a flood
    /// cannot push real captures out of retention.
    pub freeze_interval_ms: u64,
    pub save_uploads: Option<PathBuf>,
    /// Retention of saved uploads: count and bytes (0 = no byte limit), oldest removed first.
    pub save_max_files: usize,
    pub save_max_bytes: u64,
    /// Inference threads for uploads (their own model instance, so they never take the live
    /// pipeline's thread pool).
    pub inference_threads: usize,
    /// Scheduling niceness (0-19) of the web server's threads under `dermcam run`: the live
    /// screen keeps its frame rate however many uploads arrive. 0 = same priority.
    pub nice: i32,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            bind: "127.0.0.1:8080".into(),
            token: None,
            allowed_hosts: vec![],
            max_upload_bytes: 10 * 1024 * 1024,
            max_pixels: crate::model::preprocess::DEFAULT_MAX_PIXELS,
            max_concurrent: 2,
            queue: 8,
            max_connections: 64,
            header_timeout_ms: 5_000,
            write_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            min_upload_rate: 32 * 1024,
            session_ttl_s: 12 * 3600,
            cookie_secure: false,
            freeze_interval_ms: 1000,
            save_uploads: None,
            save_max_files: 500,
            save_max_bytes: 1 << 30,
            inference_threads: 1,
            nice: 10,
        }
    }
}

/// Why `token` is not acceptable as `web.token`, if it is not: at least 16 characters of the
/// bearer-token alphabet (RFC 6750: letters, digits, `-._~+/=`; no spaces, `;` or non-ASCII,
/// which would break the `Authorization` header), at least 10 distinct characters and about
/// 64 bits by a character-class estimate, and none of the placeholder words people copy from
/// examples. `openssl rand -hex 16` passes.
pub fn token_problem(token: &str) -> Option<String> {
    if token.len() < 16 {
        return Some(format!(
            "is {} characters; at least 16 are needed",
            token.len()
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(*c)))
    {
        return Some(format!(
            "contains {c:?}; use only letters, digits and - . _ ~ + / = (e.g. `openssl rand -hex 16`)"
        ));
    }
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let classes: f64 = [
        (token.chars().any(|c| c.is_ascii_lowercase()), 26.0),
        (token.chars().any(|c| c.is_ascii_uppercase()), 26.0),
        (token.chars().any(|c| c.is_ascii_digit()), 10.0),
        (token.chars().any(|c| !c.is_ascii_alphanumeric()), 7.0),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n)
    .sum();
    let bits = token.len() as f64 * classes.log2();
    let lower = token.to_ascii_lowercase();
    let weak = [
        "secret", "password", "passw", "token", "change", "example", "random", "dermcam", "12345",
        "qwerty",
    ]
    .into_iter()
    .find(|w| lower.contains(w));
    // Runs like "abcdef" or "123456": most neighbours one apart.
    let steps = token
        .as_bytes()
        .windows(2)
        .filter(|w| w[1] as i32 - w[0] as i32 == 1)
        .count();
    if distinct.len() < 10 || bits < 64.0 || weak.is_some() || steps * 2 >= token.len() {
        return Some(format!(
            "is too weak ({} distinct characters, ~{bits:.0} bits{}); generate one, e.g. `openssl rand -hex 16`",
            distinct.len(),
            weak.map(|w| format!(", contains {w:?}"))
                .unwrap_or_default()
        ));
    }
    None
}
