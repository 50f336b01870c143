//! A real PostgreSQL server for one test: a copy of a cluster made once by `initdb` (shared
//! by the test processes of one machine, made under a file lock), started on a Unix socket
//! in a temporary directory and stopped when dropped. PostgreSQL refuses to run as root:
//! as root, the server runs as the user `postgres` (`HEEX_TEST_PG_USER` overrides).
//! The binaries are found in `HEEX_TEST_PG_BIN`, /usr/local/bin, /usr/lib/postgresql/*/bin
//! or the PATH.
//!
//! The store's conformance tests (`heex-cloud`'s `store::tests`) and the end-to-end tests
//! with `HEEX_TEST_STORE=postgres` (each `Cloud` then has a server of its own) both use it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server, stopped (`pg_ctl stop -m immediate`) when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<String>,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HEEX_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut candidates = vec![PathBuf::from("/usr/local/bin")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        candidates.extend(entries.flatten().map(|e| e.path().join("bin")));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .expect(
            "PostgreSQL's initdb and pg_ctl are not installed (looked in HEEX_TEST_PG_BIN, \
             /usr/local/bin, /usr/lib/postgresql/*/bin and the PATH); install postgresql",
        )
}

fn run_as(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn check(what: &str, out: std::io::Result<std::process::Output>) {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown(path: &Path, user: &str) {
    check(
        "chown",
        Command::new("chown").arg("-R").arg(user).arg(path).output(),
    );
}

/// The shared template cluster, made once per machine.
fn template(bin: &Path, user: Option<&str>) -> PathBuf {
    let root = std::env::temp_dir().join("heex-test-pg-template");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join("lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let data = root.join("data");
    if !data.join("PG_VERSION").is_file() {
        let scratch = root.join("scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        if let Some(user) = user {
            chown(&scratch, user);
        }
        check(
            "initdb",
            run_as(user, &bin.join("initdb"))
                .arg("-D")
                .arg(scratch.join("data"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "--no-instructions"])
                .output(),
        );
        std::fs::rename(scratch.join("data"), &data).unwrap();
    }
    drop(lock);
    data
}

/// `s` percent-encoded for a URL's query value: everything but unreserved characters and `/`.
fn query_encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PgServer {
    /// Starts a server of its own.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let user = std::env::var("HEEX_TEST_PG_USER").ok().or_else(|| {
            rustix::process::geteuid()
                .is_root()
                .then(|| "postgres".to_owned())
        });
        let template = template(&bin, user.as_deref());
        let dir = tempfile::Builder::new()
            .prefix("heex-pg-")
            .tempdir()
            .unwrap();
        check(
            "copy the template cluster",
            Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(dir.path().join("data"))
                .output(),
        );
        if let Some(user) = &user {
            chown(dir.path(), user);
        }
        let server = PgServer { dir, bin, user };
        server.start_again();
        server
    }

    /// Starts the server (again, after [`PgServer::stop`]) on the same socket and data.
    pub fn start_again(&self) {
        check(
            "pg_ctl start",
            run_as(self.user.as_deref(), &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-c listen_addresses= -k {} -c fsync=off -c max_connections=100 \
                     -c shared_buffers=16MB",
                    self.dir.path().display()
                ))
                .args(["-w", "-s", "start"])
                .output(),
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`: every connection is cut), as when the
    /// database goes down; [`PgServer::start_again`] brings it back.
    pub fn stop(&self) {
        check(
            "pg_ctl stop",
            run_as(self.user.as_deref(), &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "-s", "stop"])
                .output(),
        );
    }

    /// The server's database as a libpq URL (`postgresql://postgres@localhost/postgres?host=
    /// <socket directory>`), the form `heex-cloud --store` takes.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@localhost/postgres?host={}",
            query_encoded(&self.dir.path().display().to_string())
        )
    }

    /// The same database as a key-value connection string
    /// (`host=<socket directory> user=postgres dbname=postgres`).
    pub fn conninfo(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.dir.path().display()
        )
    }

    /// The directory holding the cluster (`data`), the server's log (`log`) and its socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new client connection to the server's database.
    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL server: {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = run_as(self.user.as_deref(), &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-s", "stop"])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::{query_encoded, PgServer};

    #[test]
    fn the_url_and_the_conninfo_name_the_same_database() {
        if !crate::store_is_postgres() {
            eprintln!("runs with HEEX_TEST_STORE=postgres only");
            return;
        }
        let server = PgServer::start();
        let url = server.url();
        assert!(url.starts_with("postgresql://"), "{url}");
        let mut by_url = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        by_url
            .batch_execute("CREATE TABLE marks (n INT); INSERT INTO marks VALUES (7)")
            .unwrap();
        let n: i32 = server
            .connect()
            .query_one("SELECT n FROM marks", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 7);
    }

    #[test]
    fn socket_directories_are_encoded_for_a_url_query() {
        assert_eq!(query_encoded("/tmp/heex-pg-Ab9._~"), "/tmp/heex-pg-Ab9._~");
        assert_eq!(query_encoded("/tmp/a b&c=d%"), "/tmp/a%20b%26c%3Dd%25");
    }
}
