//! System facts reported in Hello and periodically afterwards.

use std::collections::HashSet;

use heex_proto::api::Facts;
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

/// Gathers the machine's facts now.
///
/// Nothing is cached between calls: the collectors are built, read and dropped, so the idle
/// daemon holds no sysinfo state.
pub fn gather() -> Facts {
    let mut sys = System::new();
    sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    sys.refresh_cpu_list(CpuRefreshKind::nothing());
    let cpus = match sys.cpus().len() {
        0 => std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32),
        n => u32::try_from(n).ok(),
    };

    let (disk_total, disk_available) = disk_space();
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    Facts {
        hostname: non_empty(System::host_name()),
        os: non_empty(System::name()),
        os_version: non_empty(System::os_version()),
        kernel: non_empty(System::kernel_version()),
        arch: non_empty(Some(System::cpu_arch())),
        cpus,
        memory_total_bytes: Some(sys.total_memory()).filter(|&b| b > 0),
        memory_available_bytes: Some(sys.available_memory()).filter(|_| sys.total_memory() > 0),
        disk_total_bytes: disk_total,
        disk_available_bytes: disk_available,
        uptime_secs: Some(System::uptime()).filter(|&s| s > 0),
    }
    // Whatever the system says, the gateway accepts these facts.
    .fitted()
}

/// Total and available space of the local disks, each block device counted once (the same
/// device is often mounted in several places, e.g. bind mounts in containers).
fn disk_space() -> (Option<u64>, Option<u64>) {
    // Sizes only: the disk kind and I/O counters would cost more reads of /sys and /proc.
    let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage());
    let mut seen = HashSet::new();
    let (mut total, mut available) = (0u64, 0u64);
    for disk in disks.list() {
        if disk.total_space() == 0 || !seen.insert(disk.name().to_owned()) {
            continue;
        }
        total = total.saturating_add(disk.total_space());
        available = available.saturating_add(disk.available_space());
    }
    if total == 0 {
        (None, None)
    } else {
        (Some(total), Some(available))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_the_basics_on_this_machine() {
        let f = gather();
        assert!(f.hostname.is_some());
        assert!(f.kernel.is_some());
        assert!(f.arch.is_some());
        assert!(f.cpus.unwrap() >= 1);
        let total = f.memory_total_bytes.unwrap();
        assert!(total > 0 && f.memory_available_bytes.unwrap() <= total);
        if let (Some(t), Some(a)) = (f.disk_total_bytes, f.disk_available_bytes) {
            assert!(a <= t);
        }
    }
}
