//! Board presets (`boards/*.toml`) merged under the user's file.

use super::ConfigError;
use std::path::{Path, PathBuf};

pub fn list_boards() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(crate::paths::boards_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                p,
            )
        })
        .collect();
    v.sort();
    v
}

pub(super) fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = crate::storage::read_small_text(path, crate::storage::MAX_CONFIG_FILE_BYTES)
        .map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

/// `over` wins; tables merge recursively. A `kind` change replaces the whole table (a board's
/// TFT pins make no sense under a user's PNG screen).
pub(super) fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if b.get("kind") == o.get("kind") || o.get("kind").is_none() =>
            {
                merge(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}
