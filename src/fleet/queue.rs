//! The fleet's on-disk outbox: one file per result (`result-<ms>-<pid>-<n>.json`, written
//! atomically, so a power cut leaves whole files or none), sent oldest first and removed only
//! once the broker acknowledged it. Bounded in bytes: the oldest are dropped and counted.

use crate::storage::{check_dir, own_entries, remove_stale_temps, unix_ms, write_atomic};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

pub struct Queue {
    dir: PathBuf,
    max_bytes: u64,
    /// Oldest first: (file, bytes).
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

impl Queue {
    /// Open (creating) the folder and pick up what an earlier run left unsent.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Queue> {
        check_dir(dir)?;
        std::fs::create_dir_all(dir)?;
        remove_stale_temps(dir);
        let files: VecDeque<_> = own_entries(dir, "result")?
            .into_iter()
            .filter(|(p, _)| p.is_file())
            .collect();
        let bytes = files.iter().map(|f| f.1).sum();
        Ok(Queue {
            dir: dir.into(),
            max_bytes,
            files,
            bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Store one message; returns how many old ones the byte limit dropped (never `keep`,
    /// files still waiting for an acknowledgement).
    pub fn push(&mut self, body: &[u8], in_flight: &[PathBuf]) -> std::io::Result<u64> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "result-{:013}-{}-{n:010}.json",
            unix_ms(),
            std::process::id()
        );
        let path = write_atomic(&self.dir.join(name), body)?;
        self.files.push_back((path, body.len() as u64));
        self.bytes += body.len() as u64;
        let mut dropped = 0;
        let mut i = 0;
        while self.bytes > self.max_bytes && i + 1 < self.files.len() {
            if in_flight.contains(&self.files[i].0) {
                i += 1;
                continue;
            }
            let (p, b) = self.files.remove(i).expect("index in range");
            let _ = std::fs::remove_file(&p);
            self.bytes -= b;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// The oldest `n` files not in `skip`, with their contents (an unreadable file is removed:
    /// it can never be sent).
    pub fn next(&mut self, n: usize, skip: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for (p, _) in self.files.iter() {
            if out.len() >= n {
                break;
            }
            if skip.contains(p) {
                continue;
            }
            match std::fs::read(p) {
                Ok(b) => out.push((p.clone(), b)),
                Err(_) => unreadable.push(p.clone()),
            }
        }
        for p in unreadable {
            self.remove(&p);
        }
        out
    }

    /// Acknowledged (or unreadable): delete.
    pub fn remove(&mut self, path: &Path) {
        if let Some(i) = self.files.iter().position(|(p, _)| p == path) {
            let (p, b) = self.files.remove(i).expect("index in range");
            let _ = std::fs::remove_file(p);
            self.bytes -= b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_keeps_order_and_bounds_bytes() {
        let d = std::env::temp_dir().join(format!("dermcam-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut q = Queue::open(&d, 1 << 20).unwrap();
        for i in 0..5 {
            q.push(format!("{{\"n\":{i}}}").as_bytes(), &[]).unwrap();
        }
        // A temp file a power cut left behind is not a message.
        std::fs::write(d.join(".result-1-2-3.json.tmp"), b"{").unwrap();
        let mut q = Queue::open(&d, 1 << 20).unwrap();
        assert_eq!(q.len(), 5);
        assert!(!d.join(".result-1-2-3.json.tmp").exists());
        let first = q.next(2, &[]);
        assert_eq!(first[0].1, b"{\"n\":0}");
        assert_eq!(first[1].1, b"{\"n\":1}");
        let skip = vec![first[0].0.clone()];
        assert_eq!(q.next(1, &skip)[0].1, b"{\"n\":1}");
        q.remove(&first[0].0);
        assert_eq!(q.len(), 4);
        // Byte limit: oldest dropped first, but never one waiting for its acknowledgement.
        let mut q = Queue::open(&d, 20).unwrap();
        let oldest = q.next(1, &[])[0].0.clone();
        let dropped = q.push(b"{\"n\":5}", std::slice::from_ref(&oldest)).unwrap();
        // 5 files of 7 bytes, limit 20: n2, n3, n4 go; n1 (in flight) and n5 stay.
        assert_eq!(dropped, 3);
        assert_eq!(q.len(), 2);
        assert!(oldest.exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
