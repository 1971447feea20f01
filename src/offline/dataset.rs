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
    /// Image collection (`archive` column), "unknown" when absent.
    pub archive: String,
    /// Lesion id (`lesion_id` column): several photos of one lesion share it; may be empty.
    pub lesion_id: String,
}

/// Every sample of several dataset folders (e.g. skin9 and skin9-extra), in order.
pub fn read_datasets(roots: &[PathBuf]) -> Result<Vec<Sample>, DatasetError> {
    let mut out = Vec::new();
    for r in roots {
        out.extend(read_dataset(r)?);
    }
    Ok(out)
}

/// Non-train samples whose lesion also appears in `train` (another photo of the same lesion):
/// figures on them are inflated, so `eval` also reports without them ("lesion-clean").
pub fn leaky(samples: &[Sample]) -> std::collections::HashSet<PathBuf> {
    let train: std::collections::HashSet<&str> = samples
        .iter()
        .filter(|s| s.split == "train" && !s.lesion_id.is_empty())
        .map(|s| s.lesion_id.as_str())
        .collect();
    samples
        .iter()
        .filter(|s| {
            s.split != "train" && !s.lesion_id.is_empty() && train.contains(s.lesion_id.as_str())
        })
        .map(|s| s.path.clone())
        .collect()
}

pub fn read_dataset(root: &Path) -> Result<Vec<Sample>, DatasetError> {
    let manifest = root.join("manifest.csv");
    if manifest.is_file() {
        read_manifest_csv(root, &manifest)
    } else {
        read_folders(root)
    }
}

fn read_manifest_csv(root: &Path, manifest: &Path) -> Result<Vec<Sample>, DatasetError> {
    let invalid = |message: String| DatasetError::Invalid {
        path: manifest.into(),
        message,
    };
    let mut rdr = csv::Reader::from_path(manifest).map_err(|e| invalid(e.to_string()))?;
    let headers = rdr.headers().map_err(|e| invalid(e.to_string()))?;
    let cols = Columns::find(headers).map_err(|e| invalid(e.to_string()))?;
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let row = i as u64 + 2;
        let sample = rec
            .map_err(RowProblem::Csv)
            .and_then(|rec| cols.sample(root, &rec));
        out.push(sample.map_err(|e| DatasetError::Row {
            path: manifest.into(),
            row,
            message: e.to_string(),
        })?);
    }
    if out.is_empty() {
        return Err(invalid("no rows".into()));
    }
    Ok(out)
}

/// What is wrong with `manifest.csv`'s header or one of its rows.
#[derive(Debug, thiserror::Error)]
enum RowProblem {
    #[error("needs columns path,class,split; has {0:?}")]
    Columns(Vec<String>),
    #[error(transparent)]
    Csv(csv::Error),
    #[error("empty path, class or split")]
    Empty,
    #[error("path {0:?} must stay inside the dataset folder")]
    Escapes(String),
    #[error("image file {} does not exist", .0.display())]
    Missing(PathBuf),
}

/// Where `manifest.csv`'s columns are: path, class and split are required.
struct Columns {
    path: usize,
    class: usize,
    split: usize,
    source: Option<usize>,
    archive: Option<usize>,
    lesion_id: Option<usize>,
}

impl Columns {
    fn find(headers: &csv::StringRecord) -> Result<Columns, RowProblem> {
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(path), Some(class), Some(split)) = (col("path"), col("class"), col("split"))
        else {
            return Err(RowProblem::Columns(
                headers.iter().map(String::from).collect(),
            ));
        };
        Ok(Columns {
            path,
            class,
            split,
            source: col("source"),
            archive: col("archive"),
            lesion_id: col("lesion_id"),
        })
    }

    /// One row as a sample; the error is the row's problem.
    fn sample(&self, root: &Path, rec: &csv::StringRecord) -> Result<Sample, RowProblem> {
        let get = |c: usize| rec.get(c).unwrap_or("").trim().to_string();
        let (p, class, split) = (get(self.path), get(self.class), get(self.split));
        if p.is_empty() || class.is_empty() || split.is_empty() {
            return Err(RowProblem::Empty);
        }
        if Path::new(&p).is_absolute() || p.split(['/', '\\']).any(|c| c == "..") {
            return Err(RowProblem::Escapes(p));
        }
        let path = root.join(&p);
        if !path.is_file() {
            return Err(RowProblem::Missing(path));
        }
        let or_unknown = |c: Option<usize>| {
            c.map(get)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into())
        };
        Ok(Sample {
            path,
            class,
            split,
            source: or_unknown(self.source),
            archive: or_unknown(self.archive),
            lesion_id: self.lesion_id.map(get).unwrap_or_default(),
        })
    }
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
        let files = crate::paths::image_files(&d, false).map_err(|source| DatasetError::Io {
            path: d.clone(),
            source,
        })?;
        out.extend(files.into_iter().map(|path| Sample {
            path,
            class: class.clone(),
            split: "all".into(),
            source: "unknown".into(),
            archive: "unknown".into(),
            lesion_id: String::new(),
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
    fn archive_lesion_columns_and_leaky_val() {
        let d = tmp("leaky");
        for f in ["b.jpg", "c.jpg", "e.jpg"] {
            std::fs::write(d.join("melanoma").join(f), b"x").unwrap();
        }
        std::fs::write(
            d.join("manifest.csv"),
            "path,class,split,source,lesion_id,archive\n\
             melanoma/a.jpg,melanoma,train,s,L1,ham10000\n\
             melanoma/b.jpg,melanoma,val,s,L1,ham10000\n\
             melanoma/c.jpg,melanoma,val,s,L2,\n\
             melanoma/e.jpg,melanoma,val,s,,isic_2016_2017\n",
        )
        .unwrap();
        let s = read_datasets(&[d.clone()]).unwrap();
        assert_eq!(s[0].archive, "ham10000");
        assert_eq!(
            (s[2].archive.as_str(), s[2].lesion_id.as_str()),
            ("unknown", "L2")
        );
        let leaky = leaky(&s);
        // Only b (lesion L1 is also in train) is leaky; an empty lesion id never matches.
        assert_eq!(leaky.len(), 1);
        assert!(leaky.contains(&d.join("melanoma/b.jpg")));
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
