//! Labelled image folders for `dermcam eval`: a `manifest.csv` (path,class,split columns) or
//! one sub-folder per class. Errors name the file and row.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{row}: {message}")]
    Row {
        path: PathBuf,
        row: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    /// Class folder name as written in the data.
    pub class: String,
    pub split: String,
    pub source: String,
}

const IMAGE_EXTS: [&str; 3] = ["jpg", "jpeg", "png"];

pub fn read_dataset(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let manifest = root.join("manifest.csv");
    if manifest.is_file() {
        read_manifest_csv(root, &manifest)
    } else {
        read_folders(root)
    }
}

fn read_manifest_csv(root: &Path, manifest: &Path) -> Result<Vec<Sample>, DatasetError> {
    let mut rdr = csv::Reader::from_path(manifest).map_err(|e| DatasetError::Invalid {
        path: manifest.into(),
        message: e.to_string(),
    })?;
    let headers = rdr
        .headers()
        .map_err(|e| DatasetError::Invalid {
            path: manifest.into(),
            message: e.to_string(),
        })?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(pc), Some(cc), Some(sc)) = (col("path"), col("class"), col("split")) else {
        return Err(DatasetError::Invalid {
            path: manifest.into(),
            message: format!(
                "needs columns path,class,split; has {:?}",
                headers.iter().collect::<Vec<_>>()
            ),
        });
    };
    let src = col("source");
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let row = i as u64 + 2;
        let rec = rec.map_err(|e| DatasetError::Row {
            path: manifest.into(),
            row,
            message: e.to_string(),
        })?;
        let get = |c: usize| rec.get(c).unwrap_or("").trim().to_string();
        let (p, class, split) = (get(pc), get(cc), get(sc));
        if p.is_empty() || class.is_empty() || split.is_empty() {
            return Err(DatasetError::Row {
                path: manifest.into(),
                row,
                message: "empty path, class or split".into(),
            });
        }
        if Path::new(&p).is_absolute() || p.split(['/', '\\']).any(|c| c == "..") {
            return Err(DatasetError::Row {
                path: manifest.into(),
                row,
                message: format!("path {p:?} must stay inside the dataset folder"),
            });
        }
        let path = root.join(&p);
        if !path.is_file() {
            return Err(DatasetError::Row {
                path: manifest.into(),
                row,
                message: format!("image file {} does not exist", path.display()),
            });
        }
        let source = src
            .map(get)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        out.push(Sample {
            path,
            class,
            split,
            source,
        });
    }
    if out.is_empty() {
        return Err(DatasetError::Invalid {
            path: manifest.into(),
            message: "no rows".into(),
        });
    }
    Ok(out)
}

fn read_folders(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: root.into(),
        source,
    };
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let class = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|source| DatasetError::Io {
                path: d.clone(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|path| Sample {
            path,
            class: class.clone(),
            split: "all".into(),
            source: "unknown".into(),
        }));
    }
    if out.is_empty() {
        return Err(DatasetError::Invalid {
            path: root.into(),
            message: "no manifest.csv and no class sub-folders with JPEG/PNG images".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dermcam-ds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("melanoma")).unwrap();
        std::fs::write(d.join("melanoma/a.jpg"), b"x").unwrap();
        d
    }

    #[test]
    fn manifest_rows_are_checked() {
        let d = tmp("rows");
        std::fs::write(d.join("manifest.csv"), "path,class,split,source\nmelanoma/a.jpg,melanoma,val,s1\nmelanoma/missing.jpg,melanoma,val,s1\n").unwrap();
        let e = read_dataset(&d).unwrap_err().to_string();
        assert!(
            e.contains("manifest.csv:3") && e.contains("missing.jpg"),
            "{e}"
        );
        std::fs::write(
            d.join("manifest.csv"),
            "path,class\nmelanoma/a.jpg,melanoma\n",
        )
        .unwrap();
        assert!(
            read_dataset(&d)
                .unwrap_err()
                .to_string()
                .contains("needs columns")
        );
        std::fs::write(
            d.join("manifest.csv"),
            "path,class,split\n../etc/passwd,melanoma,val\n",
        )
        .unwrap();
        assert!(
            read_dataset(&d)
                .unwrap_err()
                .to_string()
                .contains("inside the dataset")
        );
        std::fs::write(
            d.join("manifest.csv"),
            "path,class,split\nmelanoma/a.jpg,melanoma,val\n",
        )
        .unwrap();
        let s = read_dataset(&d).unwrap();
        assert_eq!(
            (
                s[0].class.as_str(),
                s[0].split.as_str(),
                s[0].source.as_str()
            ),
            ("melanoma", "val", "unknown")
        );
    }

    #[test]
    fn class_folders_without_manifest() {
        let d = tmp("folders");
        let s = read_dataset(&d).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].class, "melanoma");
    }
}
