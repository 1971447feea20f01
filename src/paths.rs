//! Where dermcam finds what it ships: model bundles, board presets and sample images.
//!
//! Every command resolves these folders here, each in the same order:
//!
//! 1. an environment variable (`$DERMCAM_MODELS_DIR`, `$DERMCAM_BOARDS_DIR`,
//!    `$DERMCAM_SAMPLES_DIR`): used as given, even when the folder is missing, so a wrong
//!    setting fails loudly instead of silently reading another copy;
//! 2. the installed copy (`/usr/share/dermcam/{models,boards,samples}`, what the `.deb`
//!    ships), when that folder exists;
//! 3. the source tree this binary was built from (`models/`, `boards/`, `tests/samples/`).

use std::path::{Path, PathBuf};

/// Where the `.deb` installs shipped data.
pub const INSTALL_ROOT: &str = "/usr/share/dermcam";

/// The source tree's bundle folder (compiled in; for tests, fuzz targets and development).
pub const SOURCE_MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");

/// The folder name of the default bundle.
pub const DEFAULT_BUNDLE: &str = crate::DEFAULT_BUNDLE;

/// One kind of shipped data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Models,
    Boards,
    Samples,
}

impl Kind {
    /// The environment variable that overrides the folder.
    pub fn env_var(self) -> &'static str {
        match self {
            Kind::Models => "DERMCAM_MODELS_DIR",
            Kind::Boards => "DERMCAM_BOARDS_DIR",
            Kind::Samples => "DERMCAM_SAMPLES_DIR",
        }
    }

    /// Where the package installs it.
    pub fn installed(self) -> PathBuf {
        Path::new(INSTALL_ROOT).join(match self {
            Kind::Models => "models",
            Kind::Boards => "boards",
            Kind::Samples => "samples",
        })
    }

    /// Where it lives in the source tree.
    pub fn source_tree(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(match self {
            Kind::Models => "models",
            Kind::Boards => "boards",
            Kind::Samples => "tests/samples",
        })
    }
}

/// Which of the three places a folder was resolved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Env(&'static str),
    Installed,
    SourceTree,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(v) => write!(f, "${v}"),
            Origin::Installed => f.write_str("installed"),
            Origin::SourceTree => f.write_str("source tree"),
        }
    }
}

/// The folder for `kind` and where it came from: env var, else installed, else source tree.
pub fn resolve(kind: Kind) -> (PathBuf, Origin) {
    let var = kind.env_var();
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return (p.into(), Origin::Env(var));
    }
    let installed = kind.installed();
    if installed.is_dir() {
        return (installed, Origin::Installed);
    }
    (kind.source_tree(), Origin::SourceTree)
}

/// Folder holding the shipped model bundles.
pub fn models_dir() -> PathBuf {
    resolve(Kind::Models).0
}

/// Folder holding the board presets (`<name>.toml`).
pub fn boards_dir() -> PathBuf {
    resolve(Kind::Boards).0
}

/// Folder holding the bundled sample images.
pub fn samples_dir() -> PathBuf {
    resolve(Kind::Samples).0
}

/// The folder of the shipped bundle `name`.
pub fn shipped_bundle_dir(name: &str) -> PathBuf {
    models_dir().join(name)
}

/// The default bundle: `$DERMCAM_MODEL` (a bundle folder), else the default bundle in
/// [`models_dir`].
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DERMCAM_MODEL").filter(|p| !p.is_empty()) {
        return p.into();
    }
    shipped_bundle_dir(DEFAULT_BUNDLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_tree_folders_exist() {
        for k in [Kind::Models, Kind::Boards, Kind::Samples] {
            assert!(k.source_tree().is_dir(), "{k:?}");
            assert!(k.installed().starts_with(INSTALL_ROOT));
        }
        assert_eq!(Path::new(SOURCE_MODELS_DIR), Kind::Models.source_tree());
    }
}

/// Whether a path names a JPEG or PNG file by its extension (any case).
pub fn is_image_file_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
}

/// The JPEG/PNG files of a folder, sorted: the one image-folder walker (slideshow, datasets,
/// `classify`, bundle samples). `recursive` descends into sub-folders but never follows a link
/// to a folder (two links to `.` would never end).
pub fn image_files(dir: &Path, recursive: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (p, kind) in entries {
        if kind.is_dir() {
            if recursive {
                out.extend(image_files(&p, true).unwrap_or_default());
            }
        } else if kind.is_symlink() && p.is_dir() {
            if recursive {
                log::warn!("{}: a link to a folder, not followed", p.display());
            }
        } else if is_image_file_name(&p) {
            out.push(p);
        }
    }
    Ok(out)
}
