//! Diagnostics on stderr through `log` (level from `RUST_LOG`, default info): plain lines for
//! info, `warning:` / `error:` prefixes otherwise. Under systemd (stderr is the journal stream
//! named by `JOURNAL_STREAM`) each line also starts with its syslog priority (`<4>`), so
//! `journalctl -p warning` finds warnings; without it journald files every line as info.

use std::io::Write;

pub fn init() {
    let journal = stderr_is_journal();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rumqttc=warn,ureq=warn,rustls=warn"),
    )
    .format(move |buf, r| writeln!(buf, "{}{}", prefix(r.level(), journal), r.args()))
    .init();
}

/// The line prefix: the sd-daemon priority (journal only) and the level word.
pub fn prefix(level: log::Level, journal: bool) -> &'static str {
    use log::Level::*;
    match (level, journal) {
        (Error, true) => "<3>error: ",
        (Warn, true) => "<4>warning: ",
        (Info, true) => "<6>",
        (Debug, true) => "<7>debug: ",
        (Trace, true) => "<7>trace: ",
        (Error, false) => "error: ",
        (Warn, false) => "warning: ",
        (Info, false) => "",
        (Debug, false) => "debug: ",
        (Trace, false) => "trace: ",
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the stream it connected; a child whose stderr
/// was redirected elsewhere inherits the variable, so the inode is compared too.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_their_syslog_priority() {
        assert_eq!(prefix(log::Level::Warn, true), "<4>warning: ");
        assert_eq!(prefix(log::Level::Error, true), "<3>error: ");
        assert_eq!(prefix(log::Level::Info, true), "<6>");
        assert_eq!(prefix(log::Level::Warn, false), "warning: ");
        assert_eq!(prefix(log::Level::Info, false), "");
        // Not our stderr: the variable alone (inherited) is not enough.
        // SAFETY: single-threaded test; no other test reads JOURNAL_STREAM.
        unsafe { std::env::set_var("JOURNAL_STREAM", "1:1") };
        assert!(!stderr_is_journal());
    }
}
