//! Fault injection for the end-to-end tests: network namespaces joined by a veth pair (the
//! agent on one side, the cloud on the other), packet loss, blackholes and rate limits with
//! iptables and `tc tbf`, a delaying TCP relay (for latency, since the kernel may lack
//! `netem`), and tiny tmpfs mounts for full disks.
//!
//! Everything here needs root. The tests that use it run only when `HEEX_FAULT_TESTS` is set
//! (CI sets `HEEX_FAULT_TESTS=require`), and otherwise pass with a message saying they were
//! skipped, so `cargo nextest run --workspace` works for any developer. Every namespace,
//! rule and mount is removed when its guard is dropped, even when a test fails.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, wait_for, Cloud, Logs, Machine, Proc};

/// Why fault tests cannot run here, or `None` when they can (root, `ip netns`, iptables, tc).
fn missing_capability() -> Option<String> {
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if uid != 0 {
        return Some("they need root (network namespaces, iptables, tmpfs mounts)".to_owned());
    }
    for (tool, args) in [
        ("ip", &["netns", "list"][..]),
        ("iptables", &["--version"][..]),
        ("tc", &["-V"][..]),
        ("mount", &["--version"][..]),
    ] {
        let ok = Command::new(tool)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!(
                "`{tool} {}` does not work here (install iproute2 and iptables)",
                args.join(" ")
            ));
        }
    }
    None
}

/// True when the calling fault test should run. Otherwise prints why it is skipped and
/// returns false; with `HEEX_FAULT_TESTS=require`, a missing capability fails the test
/// instead, so CI cannot pass by skipping.
pub fn enabled(test: &str) -> bool {
    let mode = std::env::var("HEEX_FAULT_TESTS").unwrap_or_default();
    if mode.is_empty() || mode == "0" {
        eprintln!(
            "SKIPPED {test}: fault-injection tests run only with HEEX_FAULT_TESTS=1, as root \
             (see docs/testing-faults.md)"
        );
        return false;
    }
    if let Some(why) = missing_capability() {
        assert!(
            mode != "require",
            "{test}: HEEX_FAULT_TESTS=require but {why}"
        );
        eprintln!("SKIPPED {test}: {why}");
        return false;
    }
    true
}

/// Runs a command that must succeed (fault setup and teardown).
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

static NETNS_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace joined to the root namespace by a veth pair with a /30 of its own:
/// the root side is [`Netns::host_ip`], the namespace side [`Netns::ns_ip`]. Dropping it
/// deletes the namespace, which deletes the pair and every rule inside it.
pub struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// A fresh namespace and veth pair, addresses derived from the process id (so parallel
    /// test processes do not collide).
    pub fn new() -> Netns {
        let n = NETNS_SEQ.fetch_add(1, Ordering::Relaxed) as u32;
        assert!(n < 4, "at most four namespaces per test process");
        let pid = std::process::id() % (1 << 20);
        let slot = (pid << 2) | n; // 22 bits
        let base = (10u32 << 24) | (slot << 2); // a /30 inside 10.0.0.0/8
        let name = format!("heex-{pid}-{n}");
        let ns = Netns {
            host_if: format!("hx{pid}h{n}"),
            ns_if: format!("hx{pid}n{n}"),
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
            name,
        };
        // A namespace left over by a killed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        sh("ip", &["netns", "add", &ns.name]);
        sh(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ],
        );
        sh("ip", &["link", "set", &ns.ns_if, "netns", &ns.name]);
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &ns.host_if,
            ],
        );
        sh("ip", &["link", "set", &ns.host_if, "up"]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &ns.ns_if,
        ]);
        ns.exec_ok(&["ip", "link", "set", &ns.ns_if, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root namespace's address on the pair (where the cloud listens).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's address on the pair (where the agent connects from).
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// The veth interface inside the namespace.
    pub fn ns_if(&self) -> &str {
        &self.ns_if
    }

    /// `ip netns exec <ns> program` as a command to complete.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace; it must succeed.
    pub fn exec_ok(&self, argv: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        sh("ip", &args);
    }

    /// Appends an iptables rule inside the namespace (e.g. `["OUTPUT", "-j", "DROP"]`).
    pub fn iptables(&self, rule: &[&str]) {
        let mut argv = vec!["iptables", "-w", "-A"];
        argv.extend_from_slice(rule);
        self.exec_ok(&argv);
    }

    /// Removes every iptables rule inside the namespace.
    pub fn clear_iptables(&self) {
        self.exec_ok(&["iptables", "-w", "-F"]);
    }

    /// Every packet to or from the namespace is dropped silently (no RST, no ICMP): the
    /// path is dead but no side is told.
    pub fn blackhole(&self) {
        self.iptables(&["INPUT", "-i", &self.ns_if, "-j", "DROP"]);
        self.iptables(&["OUTPUT", "-o", &self.ns_if, "-j", "DROP"]);
    }

    /// Each TCP packet in or out of the namespace is dropped with probability `p`.
    pub fn loss(&self, p: f64) {
        let p = format!("{p}");
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            self.iptables(&[
                chain,
                dir,
                &self.ns_if,
                "-p",
                "tcp",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ]);
        }
    }

    /// Packets leaving the namespace are shaped to `rate` (tc syntax, e.g. "256kbit").
    pub fn rate_limit(&self, rate: &str) {
        self.exec_ok(&[
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "16kb",
            "latency",
            "5s",
        ]);
    }

    /// Removes the rate limit.
    pub fn clear_rate_limit(&self) {
        self.exec_ok(&["tc", "qdisc", "del", "dev", &self.ns_if, "root"]);
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        // Normally gone with the namespace; a leftover host side would keep the address.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

impl Cloud {
    /// `heex-cloud` whose API and gateway listen on `ip` (OS-chosen ports), with `ip` in
    /// the server certificate.
    pub fn start_on(ip: Ipv4Addr) -> Cloud {
        let ip_text = ip.to_string();
        let mut cloud = Cloud::start_with(&["--hostname", &ip_text]);
        cloud.kill9();
        cloud.api_addr = SocketAddr::from((ip, 0));
        cloud.gateway = SocketAddr::from((ip, 0));
        cloud.serve();
        cloud
    }

    /// `heex-cloud init` and `serve` on 127.0.0.1 with the data directory `<dir>/data`,
    /// which may be the mount point of a small filesystem (it must be empty).
    pub fn start_in(dir: tempfile::TempDir) -> Cloud {
        let loopback = "127.0.0.1:0".parse().unwrap();
        Cloud::init_and_serve(dir, loopback, loopback, &[], Cloud::test_store())
    }
}

impl Machine {
    /// `heex-agent run` inside namespace `ns`, output captured in `logs`.
    pub fn agent_in(&self, ns: &Netns, logs: &Logs) -> Proc {
        let mut cmd = ns.command(bin("heex-agent"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.agent_config())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("HEEX_API_KEY");
        logs.spawn("agent", &mut cmd)
    }

    /// Points the agent at another gateway address (rewrites `gateway =` in agent.toml).
    pub fn set_gateway(&self, addr: SocketAddr) {
        let path = self.agent_config();
        let text = fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("gateway ") || l.trim_start().starts_with("gateway=")
                {
                    format!("gateway = \"{addr}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(path, text + "\n").unwrap();
    }

    /// `<state_dir>/status.json` as the daemon wrote it (Null until it exists).
    pub fn status_file(&self) -> Value {
        fs::read(self.state_dir().join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// `heex-agent report --data JSON` (in the root namespace: it only writes the outbox):
    /// (exit code, stdout, stderr).
    pub fn report(&self, data: &Value) -> (i32, String, String) {
        let out = Command::new(bin("heex-agent"))
            .arg("report")
            .arg("--config")
            .arg(self.agent_config())
            .arg("--data")
            .arg(data.to_string())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Queues `data` with `heex-agent report`, asserting it was accepted; returns its seq.
    pub fn queue(&self, data: &Value) -> u64 {
        let (code, out, err) = self.report(data);
        assert_eq!(code, 0, "heex-agent report failed: {out}{err}");
        out.trim()
            .strip_prefix("queued report ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output of heex-agent report: {out}"))
    }
}

/// Waits until the cloud holds every report in `expected` (by its `"id"` field), then
/// asserts each is stored exactly once and nothing else is.
pub fn assert_stored_exactly_once(
    cloud: &Cloud,
    device: &str,
    expected: &[Value],
    timeout: Duration,
) {
    let want: std::collections::BTreeSet<String> =
        expected.iter().map(|v| v["id"].to_string()).collect();
    let got = wait_for(timeout, &format!("{} reports stored", want.len()), || {
        let got = crate::stored_reports(cloud, device);
        let ids: std::collections::BTreeSet<String> =
            got.iter().map(|r| r.1["id"].to_string()).collect();
        want.is_subset(&ids).then_some(got)
    });
    let mut seen = std::collections::BTreeMap::new();
    for (seq, payload) in &got {
        *seen.entry(payload["id"].to_string()).or_insert(0) += 1;
        assert!(
            want.contains(&payload["id"].to_string()),
            "stored report {seq} was never queued: {payload}"
        );
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reports stored more than once: {twice:?}");
    let seqs: std::collections::BTreeSet<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), got.len(), "a sequence number was stored twice");
}

/// A TCP relay that holds every byte for `delay` in each direction before passing it on:
/// a long, fat path (the kernel here has no `netem`). Ordering and pipelining are kept; only
/// latency is added. Stops accepting when dropped.
pub struct DelayRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DelayRelay {
    /// Listens on `listen` (port 0 for any) and relays each connection to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr, delay: Duration) -> DelayRelay {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(target) {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            pipe(&client, &server, delay);
                            pipe(&server, &client, delay);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        DelayRelay { addr, stop }
    }

    /// Where agents connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
fn pipe(from: &TcpStream, to: &TcpStream, delay: Duration) {
    let (Ok(from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut reader = from.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // The sender drops here: the writer finishes what is queued, then closes.
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
        }
        std::thread::sleep(delay);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A tmpfs of `size` (mount syntax, e.g. "256k") mounted on `path` (created if needed);
/// unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts it.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes its size (`mount -o remount,size=...`); what it holds stays.
    pub fn resize(&self, size: &str) {
        sh(
            "mount",
            &[
                "-o",
                &format!("remount,size={size}"),
                self.path.to_str().unwrap(),
            ],
        );
    }

    /// Fills what is left of it with `name` (written until ENOSPC); returns the file.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        let mut f = fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        path
    }

    /// Writes `name` so that about `leave` bytes stay free; returns the file.
    pub fn fill_leaving(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path.join(name);
        let size = self.free_bytes().saturating_sub(leave);
        fs::write(&path, vec![0xa5u8; size as usize]).unwrap();
        path
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process killed a moment ago may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        let _ = fs::remove_dir(&self.path);
    }
}
