//! Harness for Heex's end-to-end tests: starts the real binaries (`heex-cloud`,
//! `heex-installer`, `heex-agent`) as separate processes on loopback, captures every byte
//! they print into log files, and kills them when dropped.
//!
//! The binaries are found beside the test executable's target directory, so build them first:
//! `cargo build --workspace --bins` (the README's test command does this).
//!
//! The cloud's store is SQLite in its data directory, or with `HEEX_TEST_STORE=postgres` a
//! PostgreSQL server each [`Cloud`] starts for itself ([`pg::PgServer`]).
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Path of a workspace binary, from the target directory the tests were built into.
///
/// The first call in a test process runs `cargo build --workspace --bins` (same profile as
/// the tests), so `cargo nextest run` alone builds and tests everything; a separate tests
/// crate gets no `CARGO_BIN_EXE_*` from cargo.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    BUILT.call_once(|| {
        if std::env::var_os("HEEX_TESTS_NO_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Cargo gives a test process its package's CARGO_MANIFEST_DIR, CARGO_PKG_* and the
        // like; build scripts that watch those (ring's does) would see them changed and
        // rebuild everything, here and again at the next build from a shell.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| {
                k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR"
            }) {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("OUT_DIR");
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A command that runs one of the machine's binaries (`heex-agent`, `heex-installer`).
///
/// By default they are this build's ([`bin`]). `HEEX_TEST_DEVICE_BINS` names another directory
/// of them, a cross build such as `target/aarch64-unknown-linux-gnu/agent-small`, that this
/// machine runs through an emulator registered with binfmt_misc (`.ci/arm`): the cloud stays
/// this machine's, the robot is another architecture's (README "ARM boards"). They are
/// executed directly, as on a board, so the agent's process name is its own (`heex-agent
/// status` recognises a running daemon by it).
pub fn device_command(name: &str) -> Command {
    match std::env::var_os("HEEX_TEST_DEVICE_BINS") {
        Some(dir) => {
            let path = PathBuf::from(dir).join(name);
            assert!(
                path.exists(),
                "HEEX_TEST_DEVICE_BINS has no {}",
                path.display()
            );
            Command::new(path)
        }
        None => Command::new(bin(name)),
    }
}

/// The architecture the machine's binaries report in their facts (`uname -m`):
/// `HEEX_TEST_DEVICE_ARCH` with a cross build, this machine's otherwise.
pub fn device_arch() -> String {
    std::env::var("HEEX_TEST_DEVICE_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.to_owned())
}

/// True when `HEEX_TEST_STORE=postgres`: every [`Cloud`] keeps its store on a PostgreSQL
/// server of its own instead of SQLite in its data directory (`sqlite`, the default).
pub fn store_is_postgres() -> bool {
    match std::env::var("HEEX_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HEEX_TEST_STORE={other:?}: use sqlite or postgres"),
    }
}

/// True (with a one-line note naming `test` and `why`) when the store is PostgreSQL and the
/// test, being about the SQLite file itself, has nothing to check.
pub fn sqlite_only(test: &str, why: &str) -> bool {
    let skip = store_is_postgres();
    if skip {
        eprintln!("{test}: skipped with HEEX_TEST_STORE=postgres: {why}");
    }
    skip
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A directory collecting the stdout/stderr of every process a test starts.
pub struct Logs {
    dir: TempDir,
}

impl Default for Logs {
    fn default() -> Self {
        Self::new()
    }
}

impl Logs {
    /// A fresh, empty log directory.
    pub fn new() -> Self {
        Logs {
            dir: tempfile::Builder::new()
                .prefix("heex-logs-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The log directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Two fresh files (stdout, stderr) for a process called `name`.
    fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        (
            self.dir.path().join(format!("{n:03}-{name}.out")),
            self.dir.path().join(format!("{n:03}-{name}.err")),
        )
    }

    /// Everything every process printed so far, concatenated.
    pub fn all(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            out.push_str(&fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }

    /// Every secret-looking token (an API key, an invitation or sign-in token) in what the
    /// processes wrote to stderr, their logs: (file, token). Their stdout may hold secrets
    /// (`init` and `heex keys create` print the key they made), their logs never.
    pub fn secrets_in_logs(&self) -> Vec<(PathBuf, String)> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir.path()) else {
            return found;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|x| x != "err") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            for token in secret_tokens(&text) {
                found.push((path.clone(), token));
            }
        }
        found
    }

    /// Runs `cmd` to completion (at most `timeout`), capturing its output into the log dir.
    pub fn run(&self, name: &str, cmd: &mut Command, timeout: Duration) -> Output {
        let mut p = self.spawn(name, cmd);
        let status = p.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "{name} did not finish within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                p.stdout(),
                p.stderr()
            )
        });
        Output {
            status,
            stdout: p.stdout().into_bytes(),
            stderr: p.stderr().into_bytes(),
        }
    }

    /// Starts `cmd` with stdout/stderr going to log files; the process is killed on drop.
    pub fn spawn(&self, name: &str, cmd: &mut Command) -> Proc {
        let (out, err) = self.files(name);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            out,
            err,
        }
    }
}

impl Drop for Logs {
    /// Fails the test when any process logged a secret (unless it failed already).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let found = self.secrets_in_logs();
        assert!(
            found.is_empty(),
            "a process logged a secret: {:?}",
            found
                .iter()
                .map(|(p, t)| format!("{} in {}", &t[..t.len().min(12)], p.display()))
                .collect::<Vec<_>>()
        );
    }
}

/// Prefixes of the secrets the cloud hands out: API keys, invitation and sign-in tokens.
const SECRET_PREFIXES: &[&str] = &["heex_", "heexinv_", "heexsig_"];

/// Tokens in `text` made of a secret's prefix and at least 20 letters or digits (a module
/// path such as `heex_cloud::…` is not one).
pub fn secret_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in SECRET_PREFIXES {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            let n = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
            let preceded = rest[..at]
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            if n >= 20 && !preceded {
                out.push(format!("{prefix}{}", &after[..n]));
            }
            rest = &after[n..];
        }
    }
    out
}

/// A child process whose output goes to log files; SIGKILLed when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name ("TERM", "INT", "KILL", "STOP", "CONT").
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "kill -{sig} {} ({}) failed",
            self.pid(),
            self.name
        );
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Finds the first whitespace-separated token of `text` starting with `prefix` and of `len` chars.
pub fn token(text: &str, prefix: &str, len: usize) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
        .find(|t| t.starts_with(prefix) && t.len() == len)
        .map(str::to_owned)
}

/// A running `heex-cloud serve`, initialized in its own temporary data directory.
pub struct Cloud {
    /// Where its processes' output goes.
    pub logs: Logs,
    /// The data directory.
    pub data_dir: TempDir,
    /// `https://127.0.0.1:PORT`.
    pub api_url: String,
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// The owner's admin API key, as printed by `init`.
    pub owner_key: String,
    /// `sha256:<hex>` of the CA.
    pub fingerprint: String,
    /// Extra arguments given to every `serve`.
    pub serve_args: Vec<String>,
    proc: Option<Proc>,
    api_addr: SocketAddr,
    /// The store's server with `HEEX_TEST_STORE=postgres`; declared after `proc` so that it
    /// stops after the cloud's process.
    pg: Option<Arc<pg::PgServer>>,
}

impl Cloud {
    /// `heex-cloud init` then `serve` on 127.0.0.1 with OS-chosen ports.
    pub fn start() -> Cloud {
        Self::start_with(&[])
    }

    /// Like [`Cloud::start`], with extra `serve` arguments.
    pub fn start_with(serve_args: &[&str]) -> Cloud {
        let loopback = "127.0.0.1:0".parse().unwrap();
        Self::start_at(loopback, loopback, serve_args)
    }

    /// Like [`Cloud::start_with`], with the API and the gateway on these addresses (port 0:
    /// chosen by the OS).
    pub fn start_at(api: SocketAddr, gateway: SocketAddr, serve_args: &[&str]) -> Cloud {
        let data_dir = tempfile::Builder::new()
            .prefix("heex-cloud-")
            .tempdir()
            .unwrap();
        Self::init_and_serve(data_dir, api, gateway, serve_args, Self::test_store())
    }

    /// The store `HEEX_TEST_STORE` selects: a PostgreSQL server of its own, or `None` for
    /// SQLite in the data directory.
    pub(crate) fn test_store() -> Option<Arc<pg::PgServer>> {
        store_is_postgres().then(|| Arc::new(pg::PgServer::start()))
    }

    /// Like [`Cloud::start_with`], on a PostgreSQL server of its own whatever
    /// `HEEX_TEST_STORE` says (for tests of several replicas, see [`Cloud::replica`]).
    pub fn start_on_postgres(serve_args: &[&str]) -> Cloud {
        let data_dir = tempfile::Builder::new()
            .prefix("heex-cloud-")
            .tempdir()
            .unwrap();
        let loopback = "127.0.0.1:0".parse().unwrap();
        let pg = Some(Arc::new(pg::PgServer::start()));
        Self::init_and_serve(data_dir, loopback, loopback, serve_args, pg)
    }

    /// Another replica of this cloud (which must be on PostgreSQL): `serve` with a copy of
    /// its data directory (the secrets) and the same store, on new ports, with
    /// `serve_args`.
    pub fn replica(&self, serve_args: &[&str]) -> Cloud {
        assert!(self.pg.is_some(), "replicas share a PostgreSQL store");
        let data_dir = tempfile::Builder::new()
            .prefix("heex-replica-")
            .tempdir()
            .unwrap();
        let out = Command::new("cp")
            .arg("-a")
            .arg(self.data())
            .arg(data_dir.path().join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "copy the data directory: {out:?}");
        let loopback = "127.0.0.1:0".parse().unwrap();
        let mut replica = Cloud {
            logs: Logs::new(),
            data_dir,
            api_url: String::new(),
            gateway: loopback,
            owner_key: self.owner_key.clone(),
            fingerprint: self.fingerprint.clone(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            proc: None,
            api_addr: loopback,
            pg: self.pg.clone(),
        };
        replica.serve();
        replica
    }

    /// `heex-cloud init` with the data directory `<data_dir>/data` (and, with
    /// `HEEX_TEST_STORE=postgres`, a new PostgreSQL server as its store), then `serve`.
    pub(crate) fn init_and_serve(
        data_dir: TempDir,
        api: SocketAddr,
        gateway: SocketAddr,
        serve_args: &[&str],
        pg: Option<Arc<pg::PgServer>>,
    ) -> Cloud {
        let mut cloud = Cloud {
            logs: Logs::new(),
            data_dir,
            api_url: String::new(),
            gateway,
            owner_key: String::new(),
            fingerprint: String::new(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            proc: None,
            api_addr: api,
            pg,
        };
        let out = cloud.logs.run(
            "cloud-init",
            cloud
                .command()
                .arg("init")
                .arg("--data-dir")
                .arg(cloud.data()),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "heex-cloud init failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            cloud.pg.is_none() || !cloud.data().join("heex.db").exists(),
            "heex-cloud init made a SQLite store despite HEEX_STORE_URL"
        );
        cloud.owner_key = token(&stdout, "heex_", heex_proto::apikey::KEY_LEN)
            .unwrap_or_else(|| panic!("no API key in init output:\n{stdout}"));
        cloud.fingerprint = token(&stdout, "sha256:", 7 + 64)
            .unwrap_or_else(|| panic!("no CA fingerprint in init output:\n{stdout}"));
        cloud.serve();
        cloud
    }

    /// A `heex-cloud` command for this cloud's store: with PostgreSQL, `HEEX_STORE_URL` names
    /// the cloud's server; otherwise the store is SQLite in the data directory given with
    /// `--data-dir` (and `HEEX_STORE_URL` is removed from the environment).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("heex-cloud"));
        match self.store_url() {
            Some(url) => cmd.env("HEEX_STORE_URL", url),
            None => cmd.env_remove("HEEX_STORE_URL"),
        };
        cmd
    }

    /// The `--store` URL of the cloud's PostgreSQL server; `None` when the store is SQLite.
    pub fn store_url(&self) -> Option<String> {
        self.pg.as_deref().map(pg::PgServer::url)
    }

    /// The cloud's PostgreSQL server; `None` when the store is SQLite.
    pub fn pg(&self) -> Option<&pg::PgServer> {
        self.pg.as_deref()
    }

    /// Every directory holding what the cloud stored: the data directory and, with
    /// PostgreSQL, the server's directory (cluster, log), after a `CHECKPOINT` has written
    /// every change to its files.
    pub fn stored_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.data()];
        if let Some(pg) = &self.pg {
            pg.connect().batch_execute("CHECKPOINT").unwrap();
            dirs.push(pg.dir().to_path_buf());
        }
        dirs
    }

    /// The data directory `heex-cloud` uses.
    pub fn data(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// The CA certificate path.
    pub fn ca_file(&self) -> PathBuf {
        self.data().join("ca.crt")
    }

    /// (Re)starts `serve` on the previous ports (OS-chosen on first start).
    pub fn serve(&mut self) {
        let mut cmd = self.command();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data())
            .arg("--listen")
            .arg(self.api_addr.to_string())
            .arg("--gateway-listen")
            .arg(self.gateway.to_string())
            .args(&self.serve_args)
            .env("RUST_LOG", "info");
        let mut proc = self.logs.spawn("cloud-serve", &mut cmd);
        let (api, gw) = wait_for(
            Duration::from_secs(30),
            "heex-cloud serve to listen",
            || {
                if let Some(status) = proc.try_wait() {
                    panic!(
                        "heex-cloud serve exited with {status}:\n{}\n{}",
                        proc.stdout(),
                        proc.stderr()
                    );
                }
                let out = proc.stdout();
                let api = out
                    .lines()
                    .find_map(|l| l.strip_prefix("API listening on https://"))?
                    .trim()
                    .to_owned();
                let gw = out
                    .lines()
                    .find_map(|l| l.strip_prefix("Gateway listening on "))?
                    .trim()
                    .to_owned();
                Some((api, gw))
            },
        );
        self.api_addr = api.parse().unwrap();
        self.gateway = gw.parse().unwrap();
        self.api_url = format!("https://{}", self.api_addr);
        self.proc = Some(proc);
    }

    /// The running server process.
    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("cloud is running")
    }

    /// SIGKILL the server (the data directory stays).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM the server and wait for it to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut p = self.proc.take().expect("cloud is running");
        p.signal("TERM");
        p.wait_timeout(Duration::from_secs(20))
            .expect("heex-cloud exits after SIGTERM")
    }

    /// kill -9, then serve again on the same ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.serve();
    }

    /// A blocking HTTPS client trusting only this cloud's CA.
    pub fn http(&self) -> reqwest::blocking::Client {
        let pem = fs::read(self.ca_file()).unwrap();
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// GET `path` with `key` as Bearer token; returns status and JSON body (Null if not JSON).
    pub fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let resp = self
            .http()
            .get(format!("{}{}", self.api_url, path))
            .bearer_auth(key)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// POST JSON `body` to `path` with `key`; returns status and JSON body (Null if not JSON).
    pub fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http()
            .post(format!("{}{}", self.api_url, path))
            .bearer_auth(key)
            .json(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Creates a key with the owner's key; returns (full key, key id).
    pub fn create_key(
        &self,
        name: &str,
        scope: &str,
        expires_in_secs: Option<u64>,
    ) -> (String, String) {
        let mut body = serde_json::json!({"name": name, "scope": scope});
        if let Some(s) = expires_in_secs {
            body["expires_in_secs"] = s.into();
        }
        let (status, v) = self.post("/v1/keys", &self.owner_key, &body);
        assert_eq!(status, 201, "create key: {v}");
        (
            v["key"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Revokes key `id` with the owner's key.
    pub fn revoke_key(&self, id: &str) {
        let (status, v) = self.post(
            &format!("/v1/keys/{id}/revoke"),
            &self.owner_key,
            &Value::Null,
        );
        assert_eq!(status, 200, "revoke key: {v}");
    }

    /// Every item of the list endpoint `path` (which may hold a query already), all its
    /// pages followed with `key`: the items are the page's `field` array.
    pub fn list_all(&self, path: &str, key: &str, field: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                Some(a) => format!("{path}{sep}limit=1000&after={a}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let (status, page) = self.get(&url, key);
            assert_eq!(status, 200, "list {url}: {page}");
            let got = page[field]
                .as_array()
                .unwrap_or_else(|| panic!("{url}: no {field} array in {page}"));
            items.extend(got.iter().cloned());
            match page["next_after"].as_str() {
                Some(next) => {
                    assert!(!got.is_empty(), "{url}: empty page with a cursor");
                    after = Some(next.to_owned());
                }
                None => return items,
            }
        }
    }

    /// `heex ARGS` (the team's CLI) against this cloud with the owner's key, in a home of
    /// its own, output captured in the logs.
    pub fn heex(&self, args: &[&str]) -> Output {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin("heex"));
        cmd.args(args)
            .env("HEEX_SERVER", &self.api_url)
            .env("HEEX_CA_FINGERPRINT", &self.fingerprint)
            .env("HEEX_API_KEY", &self.owner_key)
            .env("XDG_CONFIG_HOME", home.path())
            .env("HOME", home.path());
        self.logs.run("heex", &mut cmd, Duration::from_secs(30))
    }

    /// Every device (`GET /v1/devices`, all pages) with the owner's key.
    pub fn devices(&self) -> Vec<Value> {
        self.list_all("/v1/devices", &self.owner_key, "devices")
    }

    /// The device entry for `id`, if listed.
    pub fn device(&self, id: &str) -> Option<Value> {
        self.devices().into_iter().find(|d| d["id"] == id)
    }
}

/// A simulated machine: its own config and state directories.
pub struct Machine {
    root: TempDir,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    /// Empty config and state directories.
    pub fn new() -> Self {
        Machine {
            root: tempfile::Builder::new()
                .prefix("heex-machine-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The root holding both directories.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// What the installer gets as `--config-dir`.
    pub fn config_dir(&self) -> PathBuf {
        self.root.path().join("etc")
    }

    /// What the installer gets as `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    /// The agent config path the installer writes.
    pub fn agent_config(&self) -> PathBuf {
        self.config_dir().join("agent.toml")
    }

    /// The installer command for `cloud`, with the key in `HEEX_API_KEY` and the pinned
    /// fingerprint; add arguments before running it.
    pub fn installer(&self, cloud: &Cloud, key: &str) -> Command {
        self.installer_at(&cloud.api_url, &cloud.fingerprint, key)
    }

    /// Like [`Machine::installer`], for the API at `api_url` (e.g. a load balancer in
    /// front of a cloud's replicas) whose CA has `fingerprint`.
    pub fn installer_at(&self, api_url: &str, fingerprint: &str, key: &str) -> Command {
        let mut cmd = device_command("heex-installer");
        cmd.arg("--server")
            .arg(api_url)
            .arg("--ca-fingerprint")
            .arg(fingerprint)
            .arg("--config-dir")
            .arg(self.config_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .env_remove("HEEX_API_KEY_FILE")
            .env("HEEX_API_KEY", key);
        cmd
    }

    /// Enrolls with `key`, asserting success; returns the device id from agent.toml.
    pub fn enroll(&self, cloud: &Cloud, key: &str, name: &str) -> String {
        let out = cloud.logs.run(
            "installer",
            self.installer(cloud, key).arg("--name").arg(name),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "installer failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.device_id()
    }

    /// A machine enrolled in `cloud` with `key` as `name`, its agent configured for tests:
    /// 1 s heartbeats, reconnects after `backoff` (initial, max; e.g. `("250ms", "1s")`).
    /// With its device id.
    pub fn enrolled(
        cloud: &Cloud,
        key: &str,
        name: &str,
        backoff: (&str, &str),
    ) -> (Machine, String) {
        let machine = Machine::new();
        let id = machine.enroll(cloud, key, name);
        machine.configure("heartbeat_interval = \"1s\"");
        machine.configure(&format!("backoff_initial = \"{}\"", backoff.0));
        machine.configure(&format!("backoff_max = \"{}\"", backoff.1));
        (machine, id)
    }

    /// The device id recorded in agent.toml.
    pub fn device_id(&self) -> String {
        let text = fs::read_to_string(self.agent_config()).unwrap();
        let v: toml::Table = text.parse().unwrap();
        v["device_id"]
            .as_str()
            .expect("device_id in agent.toml")
            .to_owned()
    }

    /// Appends `line` to agent.toml (e.g. `heartbeat_interval = "1s"`).
    pub fn configure(&self, line: &str) {
        let path = self.agent_config();
        let mut text = fs::read_to_string(&path).unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        fs::write(path, text).unwrap();
    }

    /// `heex-agent run --config <agent.toml>`, started with output captured in `logs`.
    pub fn agent(&self, logs: &Logs) -> Proc {
        self.agent_with(logs, |_| {})
    }

    /// Like [`Machine::agent`], letting the caller adjust the command (env, args) first.
    pub fn agent_with(&self, logs: &Logs, adjust: impl FnOnce(&mut Command)) -> Proc {
        let mut cmd = device_command("heex-agent");
        cmd.arg("run")
            .arg("--config")
            .arg(self.agent_config())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("HEEX_API_KEY");
        adjust(&mut cmd);
        logs.spawn("agent", &mut cmd)
    }

    /// `heex-agent status --json`, parsed.
    pub fn status(&self, logs: &Logs) -> Value {
        let out = logs.run(
            "agent-status",
            device_command("heex-agent")
                .arg("status")
                .arg("--json")
                .arg("--config")
                .arg(self.agent_config()),
            Duration::from_secs(20),
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

/// Every file under `root` (recursively) whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

/// File mode bits (permissions only).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every stored report of `device`, paged through the API with the owner's key:
/// (seq, payload), in sequence order.
pub fn stored_reports(cloud: &Cloud, device: &str) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = cloud.get(
            &format!("/v1/devices/{device}/reports?after={after}&limit=1000"),
            &cloud.owner_key,
        );
        assert_eq!(status, 200, "list reports: {page}");
        for r in page["reports"].as_array().unwrap() {
            out.push((r["seq"].as_u64().unwrap(), r["payload"].clone()));
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

pub mod faults;
pub mod metrics;
pub mod pg;

#[cfg(test)]
mod tests {
    use super::{secret_tokens, Logs};

    #[test]
    fn a_test_whose_process_logs_a_secret_fails() {
        let logs = Logs::new();
        let key = format!("heex_{}", "k".repeat(50));
        let out = logs.run(
            "leaky",
            std::process::Command::new("sh")
                .args(["-c", &format!("echo 'key {key}' >&2; echo {key}")]),
            std::time::Duration::from_secs(10),
        );
        assert!(out.status.success());
        assert_eq!(logs.secrets_in_logs().len(), 1, "stderr only, once");
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(logs)));
        assert!(dropped.is_err(), "dropping the logs must fail the test");
    }

    #[test]
    fn secret_tokens_are_found_and_module_paths_are_not() {
        let key = format!("heex_{}", "a1".repeat(25));
        let inv = format!("heexinv_{}", "Z9".repeat(16));
        let text = format!(
            "INFO heex_cloud::store: ok\nkey={key} x\n\"token\":\"{inv}\"\nmy_heex_{}",
            "b".repeat(30)
        );
        assert_eq!(secret_tokens(&text), [key, inv]);
        assert!(secret_tokens("heex_agent=debug heex_short1").is_empty());
    }
}
