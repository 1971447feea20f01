//! Who may talk to the device and how often: `Host` allow-list (DNS rebinding), cross-origin
//! refusal of state-changing requests (CSRF), random expiring revocable login sessions, and
//! token-bucket rate limits (failed token checks, freeze/capture).

use axum::http::{HeaderMap, Method, header};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Name of the session cookie. It holds a random id, never the token.
pub const SESSION_COOKIE: &str = "dermcam_session";

/// At most this many live sessions; the one closest to expiry makes room for a new one.
const MAX_SESSIONS: usize = 256;

/// True when `Host` names this device in a way a DNS-rebinding page cannot produce: an IP
/// literal (v4 or bracketed v6, any port), `localhost`, or a name listed in
/// `web.allowed_hosts`. A missing `Host` (HTTP/1.0 clients, never a browser) is allowed.
pub fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| p.parse::<u16>().is_ok()))
        });
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// True for a state-changing request a browser sent on behalf of another origin: another site,
/// or the same IP on another port (which `SameSite` cookies do not separate). Uses
/// `Sec-Fetch-Site` where the browser sends it, else `Origin` against `Host`. Requests with
/// neither header (curl, scripts) are not browser-driven and pass.
pub fn cross_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return true;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_none_or(|o| !o.eq_ignore_ascii_case(host))
}

/// The credential a request presents: a bearer token (`Authorization: Bearer …`, scheme
/// case-insensitive per RFC 7235) or a session cookie.
pub enum Credential {
    Bearer(String),
    Session(String),
}

pub fn credential(headers: &HeaderMap) -> Option<Credential> {
    if let Some(a) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = a.trim().splitn(2, char::is_whitespace);
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            return Some(Credential::Bearer(
                parts.next().unwrap_or("").trim().to_string(),
            ));
        }
    }
    session_cookie(headers).map(Credential::Session)
}

pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .map(|t| t.to_string())
        .next()
}

/// Constant-time comparison, so response timing does not leak the token.
pub fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Login sessions: 128-bit random ids from the OS, each valid for `ttl`, revocable.
pub struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session id, or None when the OS has no randomness to give.
    pub fn create(&self) -> Option<String> {
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).ok()?;
        let id = hex::encode(raw);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, exp| *exp > now);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
                live.remove(&oldest);
            }
        }
        live.insert(id.clone(), now + self.ttl);
        Some(id)
    }

    pub fn valid(&self, id: &str) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.get(id) {
            Some(exp) if *exp > Instant::now() => true,
            Some(_) => {
                live.remove(id);
                false
            }
            None => false,
        }
    }

    pub fn revoke(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets: `burst` actions at once, refilled at `per_sec`, one bucket per key (client
/// IP) plus a shared one for all clients. The per-key map is bounded.
pub struct RateLimit {
    burst: f64,
    per_sec: f64,
    global_burst: f64,
    global_per_sec: f64,
    buckets: Mutex<(HashMap<Option<IpAddr>, Bucket>, Option<Bucket>)>,
}

impl RateLimit {
    pub fn new(burst: f64, per_sec: f64, global_burst: f64, global_per_sec: f64) -> RateLimit {
        RateLimit {
            burst,
            per_sec,
            global_burst,
            global_per_sec,
            buckets: Mutex::new((HashMap::new(), None)),
        }
    }

    fn refill(b: &mut Bucket, burst: f64, per_sec: f64, now: Instant) {
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(burst);
        b.last = now;
    }

    /// Ok when `key` may act now; else how long until it may. `take` spends a token.
    fn check(&self, key: Option<IpAddr>, take: bool) -> Result<(), Duration> {
        let now = Instant::now();
        let mut g = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (map, global) = &mut *g;
        if map.len() > 4096 {
            map.retain(|_, b| {
                now.duration_since(b.last).as_secs_f64() * self.per_sec + b.tokens < self.burst
            });
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        Self::refill(b, self.burst, self.per_sec, now);
        let gb = global.get_or_insert(Bucket {
            tokens: self.global_burst,
            last: now,
        });
        Self::refill(gb, self.global_burst, self.global_per_sec, now);
        let wait = |tokens: f64, per_sec: f64| Duration::from_secs_f64((1.0 - tokens) / per_sec);
        if b.tokens < 1.0 {
            return Err(wait(b.tokens, self.per_sec));
        }
        if gb.tokens < 1.0 {
            return Err(wait(gb.tokens, self.global_per_sec));
        }
        if take {
            b.tokens -= 1.0;
            gb.tokens -= 1.0;
        }
        Ok(())
    }

    /// May `key` try now (without spending anything)?
    pub fn allowed(&self, key: Option<IpAddr>) -> Result<(), Duration> {
        self.check(key, false)
    }

    /// Spend one token (a failed attempt, a freeze).
    pub fn spend(&self, key: Option<IpAddr>) -> Result<(), Duration> {
        self.check(key, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_network() {
        let p = PerClient::default();
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::99".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        let _s1 = p.take(a, 2).unwrap();
        let _s2 = p.take(b, 2).unwrap();
        assert!(
            p.take(a, 2).is_none(),
            "a second address in the same /64 is the same client"
        );
        assert!(p.take(other, 2).is_some());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn hosts() {
        let allowed = vec!["dermcam.local".to_string()];
        for ok in [
            "192.168.1.20:8080",
            "127.0.0.1",
            "[::1]:8080",
            "localhost:8080",
            "DERMCAM.local:80",
        ] {
            assert!(host_allowed(&h(&[("host", ok)]), &allowed), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "192.168.1.20.nip.io",
            "localhost.evil.com",
            "[::1",
            "a:b:c",
        ] {
            assert!(!host_allowed(&h(&[("host", bad)]), &allowed), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let post = Method::POST;
        assert!(!cross_origin(&post, &h(&[("host", "10.0.0.2:8080")])));
        assert!(!cross_origin(
            &post,
            &h(&[
                ("host", "10.0.0.2:8080"),
                ("origin", "http://10.0.0.2:8080")
            ])
        ));
        assert!(cross_origin(
            &post,
            &h(&[
                ("host", "10.0.0.2:8080"),
                ("origin", "http://10.0.0.2:9090")
            ])
        ));
        assert!(cross_origin(
            &post,
            &h(&[("host", "10.0.0.2:8080"), ("origin", "null")])
        ));
        assert!(cross_origin(&post, &h(&[("sec-fetch-site", "same-site")])));
        assert!(!cross_origin(
            &post,
            &h(&[("sec-fetch-site", "same-origin")])
        ));
        assert!(!cross_origin(
            &Method::GET,
            &h(&[("sec-fetch-site", "cross-site")])
        ));
    }

    #[test]
    fn sessions_expire_and_revoke() {
        let s = Sessions::new(Duration::from_millis(50));
        let a = s.create().unwrap();
        let b = s.create().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(s.valid(&a) && s.valid(&b) && !s.valid("0000"));
        s.revoke(&a);
        assert!(!s.valid(&a));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!s.valid(&b));
    }

    #[test]
    fn rate_limit_per_key_and_global() {
        let r = RateLimit::new(2.0, 0.5, 3.0, 0.5);
        let ip = |n: u8| Some(IpAddr::from([10, 0, 0, n]));
        assert!(r.spend(ip(1)).is_ok() && r.spend(ip(1)).is_ok());
        let wait = r.spend(ip(1)).unwrap_err();
        assert!(wait > Duration::from_millis(1000), "{wait:?}");
        assert!(r.spend(ip(2)).is_ok());
        // Global bucket (3) spent: everyone waits.
        assert!(r.allowed(ip(3)).is_err());
    }
}

/// What each client address holds (open connections, upload places); a slot is given back on
/// drop however the request or connection ends.
#[derive(Clone, Default)]
pub struct PerClient(std::sync::Arc<Mutex<HashMap<IpAddr, usize>>>);

pub struct ClientSlot(PerClient, IpAddr);

/// The client a connection counts against: its IPv4 address, or the /64 network of an IPv6
/// one (one host picks addresses from its /64 freely, so per-address limits would not bind it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl PerClient {
    /// One more for `ip`'s client (`client_key`), unless it already holds `max`.
    pub fn take(&self, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let ip = client_key(ip);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}
