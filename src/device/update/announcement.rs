//! The signed announcement of a bundle archive (`<prefix>/fleet/model`).

use super::UpdateError;
use serde::{Deserialize, Serialize};

/// Largest announcement payload read (a real one is a few hundred bytes).
pub const MAX_ANNOUNCEMENT_BYTES: usize = 8 << 10;
/// Highest release number: a fleet that releases daily needs millions of years to reach it,
/// and one announcement at u64::MAX would leave no newer release a device could accept.
pub const MAX_VERSION: u64 = u32::MAX as u64;
/// Longest an announcement may stay valid when signed (re-sign to extend).
pub const MAX_EXPIRES_DAYS: u64 = 3_650;

/// A signed bundle announcement (what `dermcam bundle sign` prints). The signature covers every
/// field a device acts on, so a replayed or edited announcement is refused: `version` must be
/// newer than anything this device installed (rollback), `expires` bounds how long a captured
/// announcement stays usable (freeze), `target` says which devices it is for, and `url` is
/// signed so nobody can point a device somewhere else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    pub name: String,
    /// Monotonic release number of this fleet's bundles (1, 2, ...).
    pub version: u64,
    pub url: String,
    pub sha256: String,
    /// `*` (every device), a device id, or a prefix ending in `*` (`clinic-a-*`).
    pub target: String,
    /// Unix seconds after which devices refuse it (re-sign to extend).
    pub expires: u64,
    pub signature: String,
}

/// 2025-12-01 00:00 UTC, before this release was built: a clock that reads earlier is not set.
pub const CLOCK_FLOOR: u64 = 1_764_547_200;

/// Context string first: a signature made for anything else never passes as an announcement.
const CONTEXT: &str = "dermcam-announcement-v2";

impl Announcement {
    pub fn parse(payload: &[u8]) -> Result<Announcement, UpdateError> {
        if payload.len() > MAX_ANNOUNCEMENT_BYTES {
            return Err(UpdateError::Announcement(format!(
                "{} bytes: larger than {MAX_ANNOUNCEMENT_BYTES}",
                payload.len()
            )));
        }
        let mut a: Announcement = serde_json::from_slice(payload)
            .map_err(|e| UpdateError::Announcement(format!("bad JSON: {e}")))?;
        // One spelling of the hash everywhere (the signature covers the lower-case one): a
        // refused archive cannot come back with its letters' case changed.
        a.sha256.make_ascii_lowercase();
        if !crate::config::valid_topic_level(&a.name) {
            return Err(UpdateError::Announcement(format!(
                "name {:?}: letters, digits, '-', '_', '.' only",
                a.name
            )));
        }
        if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UpdateError::Announcement("sha256: 64 hex digits".into()));
        }
        if a.version == 0 || a.version > MAX_VERSION {
            return Err(UpdateError::Announcement(format!(
                "version: 1 to {MAX_VERSION}"
            )));
        }
        let target_ok = a.target == "*"
            || crate::config::valid_topic_level(a.target.strip_suffix('*').unwrap_or(&a.target));
        if !target_ok {
            return Err(UpdateError::Announcement(format!(
                "target {:?}: \"*\", a device id or a prefix ending in \"*\"",
                a.target
            )));
        }
        if a.url.len() > 2048 || a.url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(UpdateError::Announcement(
                "url: at most 2048 characters, no spaces or control characters".into(),
            ));
        }
        Ok(a)
    }

    /// The bytes the signature covers: every field but the signature, one per line (no field
    /// can hold a newline: `parse` checks), in a fixed order.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "{CONTEXT}\nname={}\nversion={}\nurl={}\nsha256={}\ntarget={}\nexpires={}\n",
            self.name,
            self.version,
            self.url,
            self.sha256.to_ascii_lowercase(),
            self.target,
            self.expires
        )
        .into_bytes()
    }

    /// Sign with a private key (hex): fills `signature`.
    pub fn sign(&mut self, private_hex: &str) -> Result<(), UpdateError> {
        self.signature = crate::model::signing::sign(private_hex, &self.signed_message())?;
        Ok(())
    }

    /// What a device checks before it queues an announcement: the signature, that it is meant
    /// for `device_id`, and that it has not expired (`now`: unix seconds).
    pub fn verify(&self, public_hex: &str, device_id: &str, now: u64) -> Result<(), UpdateError> {
        crate::model::signing::verify(public_hex, &self.signed_message(), &self.signature)?;
        // A board without a battery-backed clock boots in the past until NTP sets it; expiry
        // means nothing then, so nothing is installed until the clock is plausible.
        if now < CLOCK_FLOOR {
            return Err(UpdateError::Clock(format!(
                "this device's clock reads {} (before {}): not set yet (no RTC, no NTP sync); updates wait for it",
                crate::fleet::rfc3339(u128::from(now) * 1000),
                crate::fleet::rfc3339(u128::from(CLOCK_FLOOR) * 1000)
            )));
        }
        if self.expires > now.saturating_add((MAX_EXPIRES_DAYS + 1) * 86_400) {
            return Err(UpdateError::Announcement(format!(
                "expires more than {MAX_EXPIRES_DAYS} days from now: re-sign it with a shorter --expires-days"
            )));
        }
        let for_us = match self.target.strip_suffix('*') {
            Some(prefix) => device_id.starts_with(prefix),
            None => self.target == device_id,
        };
        if !for_us {
            return Err(UpdateError::Announcement(format!(
                "meant for {:?}, not this device ({device_id})",
                self.target
            )));
        }
        if now > self.expires {
            return Err(UpdateError::Announcement(format!(
                "expired at {} (unix {}): re-sign it to extend",
                crate::fleet::rfc3339(u128::from(self.expires) * 1000),
                self.expires
            )));
        }
        Ok(())
    }

    /// The folder the bundle lives in under `models_dir` once accepted.
    pub fn folder(&self) -> String {
        format!("{}-{}", self.name, &self.sha256[..12].to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_checked() {
        let ok = format!(
            r#"{{"name":"effl0-v3","version":3,"url":"http://h/b.tar","sha256":"{}","target":"*","expires":1,"signature":"00"}}"#,
            "a".repeat(64)
        );
        let a = Announcement::parse(ok.as_bytes()).unwrap();
        assert_eq!(a.folder(), "effl0-v3-aaaaaaaaaaaa");
        // Reliability IV, row 5: the hash is canonical (lower case) once parsed.
        let upper = Announcement::parse(ok.replace(&"a".repeat(64), &"A".repeat(64)).as_bytes());
        assert_eq!(upper.unwrap().sha256, "a".repeat(64));
        // Row 9: the highest release number is accepted, one above it is not.
        let max = ok.replace("\"version\":3", &format!("\"version\":{MAX_VERSION}"));
        assert_eq!(
            Announcement::parse(max.as_bytes()).unwrap().version,
            MAX_VERSION
        );
        for bad in [
            ok.replace("effl0-v3", "../etc"),
            ok.replace(&"a".repeat(64), "abc"),
            ok.replace("\"signature\"", "\"sig\""),
            ok.replace("\"version\":3", "\"version\":0"),
            ok.replace("\"version\":3", "\"version\":18446744073709551615"),
            ok.replace("\"version\":3", "\"version\":4294967296"),
            ok.replace("\"target\":\"*\"", "\"target\":\"a/b\""),
            ok.replace("http://h/b.tar", "http://h/b c.tar"),
            ok.replace(",\"version\":3", ""),
            format!("{ok:<9000}"),
            "{".into(),
        ] {
            assert!(Announcement::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
