//! Cheap facts about this machine, sent at enrollment: read from `/proc` and `/etc`, never
//! blocking on anything slow. Every fact is optional.

use heex_proto::api::Facts;

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// This machine's host name, if it can be found.
pub fn hostname() -> Option<String> {
    read_trimmed("/proc/sys/kernel/hostname").or_else(|| read_trimmed("/etc/hostname"))
}

/// The value of `key` in an os-release(5) text.
fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
    })
}

/// Host name, OS, kernel, architecture and CPU count.
pub fn gather() -> Facts {
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    Facts {
        hostname: hostname(),
        os: os_release_value(&os_release, "NAME"),
        os_version: os_release_value(&os_release, "VERSION_ID"),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        arch: Some(std::env::consts::ARCH.to_owned()),
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        ..Facts::default()
    }
    // Whatever the system says, the cloud accepts these facts.
    .fitted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let text = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(
            os_release_value(text, "NAME").as_deref(),
            Some("Debian GNU/Linux")
        );
        assert_eq!(os_release_value(text, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release_value(text, "ID").as_deref(), Some("debian"));
        assert_eq!(os_release_value(text, "MISSING"), None);
    }

    #[test]
    fn gathers_something() {
        let facts = gather();
        assert_eq!(facts.arch.as_deref(), Some(std::env::consts::ARCH));
        assert!(facts.cpus.unwrap_or(0) >= 1);
    }
}
