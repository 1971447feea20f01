//! Which `/dev/videoN` a configured camera is: a path (symlinks such as `/dev/v4l/by-id/…`,
//! stable across replugging, are followed) or the name its driver reports
//! (`/sys/class/video4linux/*/name`, e.g. "HD Pro Webcam C920"), which survives a renumbering.

use crate::source::SourceError;
use std::path::Path;

pub fn resolve(device: &str, sysfs: &Path) -> Result<u32, SourceError> {
    if device.starts_with('/') {
        let real = std::fs::canonicalize(device).map_err(|_| {
            SourceError::Disconnected(format!("{device}: no such device (camera unplugged?)"))
        })?;
        return node_number(real.file_name().and_then(|n| n.to_str()).unwrap_or("")).ok_or_else(
            || {
                SourceError::Config(format!(
                    "{device} ({}) is not a V4L2 video node",
                    real.display()
                ))
            },
        );
    }
    let mut nodes = Vec::new();
    if let Ok(dir) = std::fs::read_dir(sysfs) {
        for e in dir.flatten() {
            let Some(n) = e.file_name().to_str().and_then(node_number) else {
                continue;
            };
            let read = |attr: &str| std::fs::read_to_string(e.path().join(attr)).ok();
            let name = read("name").unwrap_or_default().trim().to_string();
            // A camera's first node (index 0) streams; further ones carry metadata.
            let index = read("index").and_then(|s| s.trim().parse::<u32>().ok());
            nodes.push((n, name, index.unwrap_or(0)));
        }
    }
    nodes.sort();
    let pick = |hit: &dyn Fn(&str) -> bool| {
        nodes
            .iter()
            .filter(|(_, name, _)| hit(name))
            .min_by_key(|(n, _, index)| (*index, *n))
            .map(|(n, _, _)| *n)
    };
    let want = device.to_lowercase();
    pick(&|name| name.to_lowercase() == want)
        .or_else(|| pick(&|name| name.to_lowercase().contains(&want)))
        .ok_or_else(|| {
            let list = nodes
                .iter()
                .map(|(n, name, _)| format!("{name:?} (/dev/video{n})"))
                .collect::<Vec<_>>();
            SourceError::Disconnected(format!(
                "no camera named {device:?} (camera unplugged?); video devices: {}",
                if list.is_empty() {
                    "none".into()
                } else {
                    list.join(", ")
                }
            ))
        })
}

fn node_number(file: &str) -> Option<u32> {
    file.strip_prefix("video")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(root: &Path, n: u32, name: &str, index: u32) {
        let d = root.join(format!("video{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("index"), format!("{index}\n")).unwrap();
    }

    #[test]
    fn names_paths_and_missing_cameras() {
        let tmp = std::env::temp_dir().join(format!("dermcam-v4l-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let sys = tmp.join("sys");
        node(&sys, 0, "vivid-000-vid-cap", 0);
        node(&sys, 1, "vivid-000-vid-out", 0);
        node(&sys, 2, "HD Pro Webcam C920", 1);
        node(&sys, 3, "HD Pro Webcam C920", 0);
        assert_eq!(resolve("vivid-000-vid-cap", &sys).unwrap(), 0);
        assert_eq!(resolve("VIVID-000-VID-OUT", &sys).unwrap(), 1);
        // Contains, and the streaming node (index 0) of a camera with two nodes.
        assert_eq!(resolve("c920", &sys).unwrap(), 3);
        let e = resolve("Logitech Brio", &sys).unwrap_err();
        assert!(matches!(e, SourceError::Disconnected(_)), "{e}");
        assert!(
            e.to_string()
                .contains("\"HD Pro Webcam C920\" (/dev/video2)"),
            "{e}"
        );
        // Paths: a by-id style symlink is followed to its node.
        let dev = tmp.join("dev");
        std::fs::create_dir_all(dev.join("v4l/by-id")).unwrap();
        std::fs::write(dev.join("video3"), "").unwrap();
        let link = dev.join("v4l/by-id/usb-046d_C920-video-index0");
        std::os::unix::fs::symlink("../../video3", &link).unwrap();
        assert_eq!(resolve(link.to_str().unwrap(), &sys).unwrap(), 3);
        let gone = resolve(dev.join("video9").to_str().unwrap(), &sys).unwrap_err();
        assert!(matches!(gone, SourceError::Disconnected(_)), "{gone}");
        let e = resolve(dev.join("v4l").to_str().unwrap(), &sys).unwrap_err();
        assert!(matches!(e, SourceError::Config(_)), "{e}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
