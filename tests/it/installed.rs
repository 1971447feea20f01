//! The binary on an installed device: the `.deb`'s asset list (Cargo.toml
//! `[package.metadata.deb]`) laid out under a temp folder, no source tree in reach (working
//! directory outside it, `$DERMCAM_*_DIR` pointing at the layout). `models`, `boards` and
//! `demo` must use the installed copies and never the source tree's.

use crate::*;
use std::process::Command;

/// Copies every asset the package installs under `usr/share/dermcam/` into `to`, keeping the
/// paths below `usr/share/dermcam/`. Returns the installed file paths (relative to `to`).
fn lay_out_package_assets(to: &Path) -> Vec<PathBuf> {
    let cargo: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let assets = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let mut installed = Vec::new();
    for a in assets {
        let a = a.as_array().unwrap();
        let (src, dst) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        let Some(rel) = dst.strip_prefix("usr/share/dermcam/") else {
            continue;
        };
        // Sources are files or `<folder>/*.<ext>` globs (the only pattern the list uses).
        let files: Vec<PathBuf> = match src.rsplit_once("/*") {
            Some((dir, ext)) => std::fs::read_dir(root().join(dir))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(ext))
                .collect(),
            None => vec![root().join(src)],
        };
        assert!(!files.is_empty(), "asset {src} matches nothing");
        for f in files {
            let target = if rel.ends_with('/') || rel.is_empty() {
                Path::new(rel).join(f.file_name().unwrap())
            } else {
                PathBuf::from(rel)
            };
            std::fs::create_dir_all(to.join(&target).parent().unwrap()).unwrap();
            std::fs::copy(&f, to.join(&target)).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            installed.push(target);
        }
    }
    installed
}

fn run_installed(share: &Path, cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(args)
        .current_dir(cwd)
        .env("DERMCAM_MODELS_DIR", share.join("models"))
        .env("DERMCAM_BOARDS_DIR", share.join("boards"))
        .env("DERMCAM_SAMPLES_DIR", share.join("samples"))
        .env_remove("DERMCAM_MODEL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Fails if `text` names the source tree's models, boards or samples.
fn assert_no_source_tree_paths(text: &str) {
    for p in ["models", "boards", "tests/samples"] {
        let src = root().join(p).display().to_string();
        assert!(
            !text.contains(&src),
            "used the source tree's {src}:\n{text}"
        );
    }
}

#[test]
fn installed_layout_models_boards_and_demo_use_the_package_files() {
    let base = std::env::temp_dir().join(format!("dermcam-installed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let share = base.join("usr/share/dermcam");
    let cwd = base.join("home");
    std::fs::create_dir_all(&cwd).unwrap();
    let installed = lay_out_package_assets(&share);
    let has = |prefix: &str| installed.iter().filter(|p| p.starts_with(prefix)).count();
    assert!(has("models") >= 3 && has("boards") >= 3, "{installed:?}");
    assert!(
        has("samples") >= samples().len(),
        "the package does not ship the sample images: {installed:?}"
    );
    assert!(share.join("samples/ATTRIBUTION.md").is_file());
    let shipped: Vec<String> = std::fs::read_dir(share.join("models"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        shipped.contains(&dermcam::DEFAULT_BUNDLE.to_string()),
        "{shipped:?}"
    );

    // models: exactly the shipped bundles, the default marked, read from the layout.
    let (code, out, err) = run_installed(&share, &cwd, &["models"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), shipped.len(), "{out}");
    for name in &shipped {
        let row = rows
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert_eq!(
            row.trim_end().ends_with('*'),
            name == dermcam::DEFAULT_BUNDLE,
            "{row}"
        );
    }
    assert!(
        err.contains(&share.join("models").display().to_string())
            && err.contains("$DERMCAM_MODELS_DIR"),
        "{err}"
    );
    assert_no_source_tree_paths(&format!("{out}{err}"));

    // boards: every shipped preset.
    let (code, out, err) = run_installed(&share, &cwd, &["boards"]);
    assert_eq!(code, 0, "{out}{err}");
    for p in std::fs::read_dir(share.join("boards")).unwrap().flatten() {
        let name = p.path().file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} not listed:\n{out}"
        );
    }
    assert!(
        err.contains(&share.join("boards").display().to_string()),
        "{err}"
    );
    assert_no_source_tree_paths(&format!("{out}{err}"));

    // demo: one pass over the installed samples with the installed default bundle.
    let screen = cwd.join("screen.png");
    let (code, out, err) = run_installed(
        &share,
        &cwd,
        &[
            "demo",
            "--once",
            "--web",
            "off",
            "--interval-ms",
            "50",
            "--backend",
            "tract",
            "--screen",
            screen.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains(&share.join("samples").display().to_string()),
        "{all}"
    );
    assert!(
        all.contains(
            &share
                .join("models")
                .join(dermcam::DEFAULT_BUNDLE)
                .display()
                .to_string()
        ),
        "{all}"
    );
    assert_no_source_tree_paths(&all);
    let n = has("samples") - 1; // every installed image, less ATTRIBUTION.md
    // Every installed image reaches the pipeline (a slow machine may drop frames between
    // inferences: the mailbox keeps the latest).
    assert!(
        all.contains(&format!("frames {n} inferences ")),
        "not every sample shown:\n{all}"
    );
    assert!(!all.contains("inferences 0 "), "{all}");
    assert!(screen.is_file(), "no screen rendered:\n{all}");
    let _ = std::fs::remove_dir_all(&base);
}
