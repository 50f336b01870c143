//! Resident memory of a server process and its descendants (nginx runs a master and workers),
//! read from `/proc`.

use std::collections::HashMap;
use std::fs;

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The parent PID in a `/proc/PID/stat` line (the command name may hold spaces and ')').
pub(crate) fn parse_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state, then ppid.
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and all its descendants, from a parent map.
pub(crate) fn tree(pid: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        let mut kids: Vec<u32> = parents
            .iter()
            .filter(|&(_, &parent)| parent == p)
            .map(|(&child, _)| child)
            .collect();
        kids.sort_unstable();
        out.extend(kids);
        i += 1;
    }
    out
}

/// Parent of every process, from `/proc/*/stat`.
pub(crate) fn parents() -> HashMap<u32, u32> {
    let mut parents = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_ppid)
            {
                parents.insert(child, ppid);
            }
        }
    }
    parents
}

/// Total RSS in KiB of `pid` and its descendants; `None` if `pid` is gone.
pub(crate) fn tree_rss_kib(pid: u32) -> Option<u64> {
    let own = rss_kib(pid)?;
    Some(
        own + tree(pid, &parents())
            .into_iter()
            .skip(1)
            .filter_map(rss_kib)
            .sum::<u64>(),
    )
}

/// RSS of one process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t    5128 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(5128));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn ppid_survives_odd_command_names() {
        assert_eq!(parse_ppid("42 (nginx) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_ppid("43 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn tree_walks_all_descendants() {
        let parents: HashMap<u32, u32> = [(2, 1), (3, 1), (4, 2), (5, 9)].into();
        assert_eq!(tree(1, &parents), [1, 2, 3, 4]);
        assert_eq!(tree(9, &parents), [9, 5]);
    }

    #[test]
    fn this_process_and_its_children_are_found() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(tree_rss_kib(me).is_some_and(|k| k > 0));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = tree(me, &parents()).contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
        assert_eq!(tree_rss_kib(u32::MAX), None);
    }
}
