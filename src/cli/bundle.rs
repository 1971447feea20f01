//! `dermcam bundle keygen|pack|sign|verify`: the clinic side of signed model updates.

use anyhow::{Context, Result};
use clap::Subcommand;
use dermcam::device::update::{Announcement, archive};
use dermcam::model::signing;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(super) enum BundleCmd {
    /// Make a signing key pair: the private key to a file (mode 0600), the public key (for
    /// `fleet.updates.public_key` on every device) on stdout.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pack a bundle folder into an update archive (a tar) with self-test samples and their
    /// reference outputs (tract backend); prints the archive's sha256.
    Pack {
        bundle: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Self-test images (default: the shipped samples).
        #[arg(long)]
        samples: Vec<PathBuf>,
    },
    /// Sign an archive: prints the announcement JSON to publish (retained) on
    /// `<prefix>/fleet/model`.
    Sign {
        archive: PathBuf,
        /// Private key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Where devices download the archive (http://, https:// or file://).
        #[arg(long)]
        url: String,
        /// Bundle name in the announcement (default: the archive's model.json name; a device
        /// refuses a bundle whose model.json names another).
        #[arg(long)]
        name: Option<String>,
        /// Release number, higher than every bundle announced before: devices refuse anything
        /// not newer than what they installed (replays, downgrades).
        #[arg(long)]
        version: u64,
        /// Which devices install it: `*`, a device id, or a prefix ending in `*`.
        #[arg(long, default_value = "*")]
        target: String,
        /// Devices refuse the announcement this many days from now (re-sign to extend).
        #[arg(long, default_value_t = 90)]
        expires_days: u64,
    },
    /// Check an announcement (file or `-` for stdin) against an archive and a public key, the
    /// way a device does before downloading.
    Verify {
        announcement: PathBuf,
        archive: PathBuf,
        /// Public key, hex.
        #[arg(long)]
        public_key: String,
        /// Check the target against this device id too.
        #[arg(long, default_value = "")]
        device_id: String,
    },
}

pub(super) fn run(cmd: BundleCmd) -> Result<ExitCode> {
    match cmd {
        BundleCmd::Keygen { out } => keygen(&out)?,
        BundleCmd::Pack {
            bundle,
            out,
            samples,
        } => pack(&bundle, &out, samples)?,
        BundleCmd::Sign {
            archive: path,
            key,
            url,
            name,
            version,
            target,
            expires_days,
        } => {
            let a = sign(&path, &key, url, name, version, target, expires_days)?;
            println!("{}", serde_json::to_string(&a)?);
        }
        BundleCmd::Verify {
            announcement,
            archive: path,
            public_key,
            device_id,
        } => verify(&announcement, &path, &public_key, device_id)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The private key to `out` (never overwritten, mode 0600); the public key on stdout.
fn keygen(out: &Path) -> Result<()> {
    let (private, public) = signing::keygen()?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("{} (never overwritten)", out.display()))?;
    writeln!(f, "{private}")?;
    log::info!(
        "private key written to {} (keep it off the devices)",
        out.display()
    );
    println!("{public}");
    Ok(())
}

/// The shipped sample images, sorted: the default self-test set.
fn shipped_samples() -> Result<Vec<PathBuf>> {
    let dir = dermcam::paths::samples_dir();
    dermcam::paths::image_files(&dir, false)
        .with_context(|| format!("samples folder {}", dir.display()))
}

fn pack(bundle: &Path, out: &Path, samples: Vec<PathBuf>) -> Result<()> {
    let samples = if samples.is_empty() {
        shipped_samples()?
    } else {
        samples
    };
    let sha = archive::pack(bundle, &samples, out)?;
    log::info!("{}: {} self-test sample(s)", out.display(), samples.len());
    println!("{sha}");
    Ok(())
}

/// The signed announcement of the archive at `path`, checked the way a device will.
fn sign(
    path: &Path,
    key: &Path,
    url: String,
    name: Option<String>,
    version: u64,
    target: String,
    expires_days: u64,
) -> Result<Announcement> {
    let sha = dermcam::model::sha256_file(path).with_context(|| format!("{}", path.display()))?;
    let name = match name {
        Some(n) => n,
        None => archive_name(path)?,
    };
    let private = signing::read_private_key(key)?;
    use dermcam::device::update::{MAX_EXPIRES_DAYS, MAX_VERSION};
    if version == 0 || version > MAX_VERSION {
        anyhow::bail!("--version {version}: 1 to {MAX_VERSION}");
    }
    if expires_days == 0 || expires_days > MAX_EXPIRES_DAYS {
        anyhow::bail!("--expires-days {expires_days}: 1 to {MAX_EXPIRES_DAYS} (re-sign to extend)");
    }
    let expires = dermcam::device::update::unix_now() + expires_days * 86_400;
    let mut a = Announcement {
        name,
        version,
        url,
        sha256: sha,
        target,
        expires,
        signature: String::new(),
    };
    a.sign(&private)?;
    // Refuse to print what a device would refuse.
    Announcement::parse(serde_json::to_string(&a)?.as_bytes())?;
    Ok(a)
}

/// Checks an announcement (`-`: stdin) against the archive at `path` and a public key.
fn verify(announcement: &Path, path: &Path, public_key: &str, device_id: String) -> Result<()> {
    let text = if announcement == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(announcement)
            .with_context(|| format!("{}", announcement.display()))?
    };
    let a = Announcement::parse(text.as_bytes())?;
    let sha = dermcam::model::sha256_file(path).with_context(|| format!("{}", path.display()))?;
    if !sha.eq_ignore_ascii_case(&a.sha256) {
        anyhow::bail!(
            "{}: sha256 {sha}, the announcement says {}",
            path.display(),
            a.sha256
        );
    }
    // Without a device id, any device the target names will do.
    let id = if device_id.is_empty() {
        a.target.trim_end_matches('*').to_string()
    } else {
        device_id
    };
    a.verify(public_key, &id, dermcam::device::update::unix_now())?;
    println!(
        "ok: {} version {} ({sha}) for {:?} signed by {public_key}",
        a.name, a.version, a.target
    );
    Ok(())
}

/// The `name` field of the archive's model.json.
fn archive_name(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut a = tar::Archive::new(f);
    for e in a.entries()? {
        let mut e = e?;
        if e.path()?.as_os_str() == "model.json" {
            let v: serde_json::Value = serde_json::from_reader(&mut e)?;
            if let Some(n) = v["name"].as_str() {
                return Ok(n.to_string());
            }
        }
    }
    anyhow::bail!("{}: no model.json name; pass --name", path.display())
}
