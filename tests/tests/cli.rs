//! End-to-end tests of the team CLI: the real `heex` binary against a real `heex-cloud`, with
//! credentials from the environment (`HEEX_SERVER`, `HEEX_API_KEY`, `HEEX_CA_FINGERPRINT`) or
//! stored by `heex login` under a temporary `XDG_CONFIG_HOME`.
// Helpers shared by the tests panic like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use heex_tests::{bin, mode, token, wait_for, Cloud, Machine};
use serde_json::Value;
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(60);
const KEY_LEN: usize = heex_proto::apikey::KEY_LEN;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
}

fn json(out: &Output) -> Value {
    assert_exit(out, 0);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(out)))
}

/// The key id inside a full key.
fn key_id(key: &str) -> &str {
    let start = heex_proto::apikey::PREFIX.len();
    &key[start..start + heex_proto::apikey::ID_LEN]
}

/// The secret inside a full key: what must never show up where it should not.
fn secret_of(key: &str) -> &str {
    let start = heex_proto::apikey::PREFIX.len() + heex_proto::apikey::ID_LEN;
    &key[start..start + heex_proto::apikey::SECRET_LEN]
}

/// One person using `heex`: their own config directory (`XDG_CONFIG_HOME` and `HOME`), and
/// optionally credentials in the environment.
struct User {
    home: TempDir,
    env: Vec<(&'static str, String)>,
}

impl User {
    /// Someone with no credentials yet.
    fn new() -> Self {
        User {
            home: tempfile::Builder::new()
                .prefix("heex-user-")
                .tempdir()
                .unwrap(),
            env: Vec::new(),
        }
    }

    /// Someone whose credentials for `cloud` are all in the environment.
    fn with_env(cloud: &Cloud, key: &str) -> Self {
        let mut user = User::new();
        user.env = vec![
            ("HEEX_SERVER", cloud.api_url.clone()),
            ("HEEX_API_KEY", key.to_owned()),
            ("HEEX_CA_FINGERPRINT", cloud.fingerprint.clone()),
        ];
        user
    }

    /// Someone who ran `heex login` (key given through `HEEX_API_KEY`, not argv).
    fn logged_in(cloud: &Cloud, key: &str) -> Self {
        let user = User::new();
        let out = user.run_with(
            cloud,
            &[
                "login",
                "--server",
                &cloud.api_url,
                "--ca-fingerprint",
                &cloud.fingerprint,
            ],
            &[("HEEX_API_KEY", key)],
        );
        assert_exit(&out, 0);
        user
    }

    fn credentials(&self) -> PathBuf {
        self.home.path().join("heex").join("credentials.toml")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(bin("heex"));
        cmd.env("XDG_CONFIG_HOME", self.home.path())
            .env("HOME", self.home.path())
            .env_remove("HEEX_SERVER")
            .env_remove("HEEX_API_KEY")
            .env_remove("HEEX_CA_FINGERPRINT")
            .env_remove("HEEX_CA_FILE")
            .env_remove("RUST_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, cloud: &Cloud, args: &[&str]) -> Output {
        self.run_with(cloud, args, &[])
    }

    fn run_with(&self, cloud: &Cloud, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cloud.logs.run("heex", &mut cmd, TIMEOUT)
    }

    /// `heex --json ARGS`, asserting success; the parsed output.
    fn json(&self, cloud: &Cloud, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json(&self.run(cloud, &all))
    }

    /// `heex keys create NAME EXTRA…` with stdout piped: the key printed alone.
    fn create_key(&self, cloud: &Cloud, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create", name];
        args.extend_from_slice(extra);
        let out = self.run(cloud, &args);
        assert_exit(&out, 0);
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{}", describe(&out));
        let key = stdout.trim().to_owned();
        assert_eq!(key.len(), KEY_LEN, "{}", describe(&out));
        assert!(key.parse::<heex_proto::ApiKey>().is_ok(), "{stdout}");
        key
    }
}

/// `heex whoami --json` with `key` in the environment.
fn whoami_with(cloud: &Cloud, key: &str) -> Output {
    User::with_env(cloud, key).run(cloud, &["--json", "whoami"])
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The list of every key in the workspace, as the owner sees it.
fn all_keys(cloud: &Cloud, admin: &User) -> Vec<Value> {
    admin
        .json(cloud, &["keys", "list", "--all"])
        .as_array()
        .cloned()
        .expect("keys list --json is an array")
}

fn find<'a>(list: &'a [Value], field: &str, value: &str) -> Option<&'a Value> {
    list.iter().find(|v| v[field] == value)
}

// ---------------------------------------------------------------- credentials, keys, devices

#[test]
fn whoami_with_environment_credentials_writes_nothing() {
    let cloud = Cloud::start();
    let user = User::with_env(&cloud, &cloud.owner_key);

    let out = user.run(&cloud, &["whoami"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("owner"), "{stdout}");
    assert!(stdout.contains(key_id(&cloud.owner_key)), "{stdout}");
    assert!(stdout.contains(&cloud.api_url), "{stdout}");
    assert!(!stdout.contains(secret_of(&cloud.owner_key)), "{stdout}");

    let who = user.json(&cloud, &["whoami"]);
    assert_eq!(who["role"], "owner", "{who}");
    assert_eq!(who["key"]["id"], key_id(&cloud.owner_key), "{who}");
    assert_eq!(who["key"]["scope"], "admin", "{who}");
    assert!(who["workspace_id"].as_str().unwrap().starts_with("ws_"));

    // The environment is enough: no credentials file, nothing at all written.
    assert_eq!(fs::read_dir(user.home.path()).unwrap().count(), 0);
}

#[test]
fn login_stores_credentials_0600_and_logout_deletes_them() {
    let cloud = Cloud::start();
    let user = User::new();

    // Nothing stored and nothing in the environment: a config error saying what to do.
    let out = user.run(&cloud, &["whoami"]);
    assert_exit(&out, heex_proto::exit::CONFIG);
    assert!(
        text(&out.stderr).contains("heex login"),
        "{}",
        describe(&out)
    );

    let out = user.run_with(
        &cloud,
        &[
            "login",
            "--server",
            &cloud.api_url,
            "--ca-fingerprint",
            &cloud.fingerprint,
        ],
        &[("HEEX_API_KEY", &cloud.owner_key)],
    );
    assert_exit(&out, 0);
    assert!(
        !text(&out.stdout).contains(secret_of(&cloud.owner_key))
            && !text(&out.stderr).contains(secret_of(&cloud.owner_key)),
        "login printed the key: {}",
        describe(&out)
    );
    let path = user.credentials();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let stored: toml::Table = fs::read_to_string(&path).unwrap().parse().unwrap();
    assert_eq!(stored["server"].as_str(), Some(cloud.api_url.as_str()));
    assert_eq!(
        stored["ca_fingerprint"].as_str(),
        Some(cloud.fingerprint.as_str())
    );
    assert_eq!(stored["api_key"].as_str(), Some(cloud.owner_key.as_str()));

    // Later commands need no environment.
    let who = user.json(&cloud, &["whoami"]);
    assert_eq!(who["key"]["id"], key_id(&cloud.owner_key));

    // The environment overrides the stored key: a revoked one is refused (77).
    let (other, other_id) = cloud.create_key("other", "admin", None);
    cloud.revoke_key(&other_id);
    let out = user.run_with(&cloud, &["whoami"], &[("HEEX_API_KEY", &other)]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    assert!(text(&out.stderr).contains("revoked"), "{}", describe(&out));

    let out = user.run(&cloud, &["logout"]);
    assert_exit(&out, 0);
    assert!(!path.exists());
    assert_exit(&user.run(&cloud, &["whoami"]), heex_proto::exit::CONFIG);
    // Logging out twice is fine.
    assert_exit(&user.run(&cloud, &["logout"]), 0);
}

#[test]
fn login_with_a_ca_file() {
    let cloud = Cloud::start();
    let user = User::new();
    let ca = cloud.ca_file();
    let out = user.run_with(
        &cloud,
        &[
            "login",
            "--server",
            &cloud.api_url,
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &[("HEEX_API_KEY", &cloud.owner_key)],
    );
    assert_exit(&out, 0);
    let who = user.json(&cloud, &["whoami"]);
    assert_eq!(who["role"], "owner");
}

#[test]
fn login_refuses_an_untrusted_server_and_stores_nothing() {
    let cloud = Cloud::start();
    let user = User::new();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let out = user.run_with(
        &cloud,
        &[
            "login",
            "--server",
            &cloud.api_url,
            "--ca-fingerprint",
            &wrong,
        ],
        &[("HEEX_API_KEY", &cloud.owner_key)],
    );
    assert_exit(&out, heex_proto::exit::UNAVAILABLE);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(stderr.contains(&cloud.fingerprint), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!user.credentials().exists());

    // Nobody listening: unreachable, also 69.
    let out = user.run_with(
        &cloud,
        &[
            "login",
            "--server",
            &format!("https://127.0.0.1:{}", closed_port()),
            "--ca-fingerprint",
            &cloud.fingerprint,
        ],
        &[("HEEX_API_KEY", &cloud.owner_key)],
    );
    assert_exit(&out, heex_proto::exit::UNAVAILABLE);
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        describe(&out)
    );
    assert!(!user.credentials().exists());

    // A plain-HTTP server URL is refused before any connection.
    let plain = cloud.api_url.replace("https://", "http://");
    let out = user.run_with(
        &cloud,
        &[
            "login",
            "--server",
            &plain,
            "--ca-fingerprint",
            &cloud.fingerprint,
        ],
        &[("HEEX_API_KEY", &cloud.owner_key)],
    );
    assert_exit(&out, heex_proto::exit::USAGE);
}

#[test]
fn keys_create_prints_a_working_key_when_piped_and_revoke_stops_it() {
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);

    let key = owner.create_key(&cloud, "ci", &["--scope", "admin", "--expires-in", "30d"]);
    let who = json(&whoami_with(&cloud, &key));
    assert_eq!(who["key"]["id"], key_id(&key), "{who}");
    assert_eq!(who["key"]["name"], "ci");
    assert_eq!(who["key"]["scope"], "admin");
    let created = time::OffsetDateTime::parse(
        who["key"]["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        who["key"]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((expires - created).whole_days(), 30);

    // --json prints the API's answer, key included, when piped.
    let created = owner.json(&cloud, &["keys", "create", "fleet", "--max-uses", "2"]);
    let fleet = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["id"], key_id(&fleet));
    assert_eq!(created["scope"], "enroll");
    assert_exit(&whoami_with(&cloud, &fleet), 0);

    let out = owner.run(&cloud, &["keys", "revoke", key_id(&key)]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stdout).contains(key_id(&key)),
        "{}",
        describe(&out)
    );
    assert!(!text(&out.stdout).contains(secret_of(&key)));
    let out = whoami_with(&cloud, &key);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("revoked") && stderr.contains(key_id(&key)),
        "{stderr}"
    );
    assert!(!stderr.contains(secret_of(&key)), "{stderr}");

    let revoked = owner.json(&cloud, &["keys", "revoke", key_id(&fleet)]);
    assert_eq!(revoked["id"], key_id(&fleet));
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // An enroll key may not create keys: refused by the server, exit 77, its message shown.
    let enroll = owner.create_key(&cloud, "enroll-only", &[]);
    let out = User::with_env(&cloud, &enroll).run(&cloud, &["keys", "create", "x"]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    assert!(text(&out.stderr).contains("scope"), "{}", describe(&out));
    assert_eq!(text(&out.stderr).lines().count(), 1, "{}", describe(&out));
}

#[test]
fn keys_create_on_a_terminal_goes_to_the_clipboard_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed to provide a terminal");
        return;
    }
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);
    // `script` runs the command on a pseudo-terminal, as a person would.
    let heex = bin("heex");
    let mut cmd = owner.command();
    cmd.arg("-qec")
        .arg(format!("{} keys create laptop", heex.display()))
        .arg("/dev/null");
    let mut script = Command::new("script");
    script.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = cloud.logs.run("heex-tty", &mut script, TIMEOUT);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("copied to clipboard"), "{stdout:?}");
    let start = stdout.find("\x1b]52;c;").expect("an OSC 52 sequence") + 7;
    let end = start + stdout[start..].find('\x07').expect("OSC 52 ends with BEL");
    let key = String::from_utf8(base64_decode(&stdout[start..end])).unwrap();
    assert_eq!(key.len(), KEY_LEN, "{key:?}");
    // The key itself is not on the screen, only its id.
    assert!(!stdout.contains(&key), "{stdout:?}");
    assert!(stdout.contains(key_id(&key)), "{stdout:?}");
    assert_exit(&whoami_with(&cloud, &key), 0);
}

/// Standard base64 (with padding), enough to read an OSC 52 payload.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 digit") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

#[test]
fn devices_list_shows_an_enrolled_machine() {
    let cloud = Cloud::start();
    let owner = User::logged_in(&cloud, &cloud.owner_key);

    let out = owner.run(&cloud, &["devices", "list"]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stdout).contains("No devices"),
        "{}",
        describe(&out)
    );

    let enroll = owner.create_key(&cloud, "robots", &[]);
    let machine = Machine::new();
    let id = machine.enroll(&cloud, &enroll, "robot-1");

    let out = owner.run(&cloud, &["devices", "list"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{stdout}"));
    assert!(
        row.contains("robot-1") && row.contains("offline"),
        "{stdout}"
    );
    assert!(row.contains("owner@"), "{stdout}");
    assert!(stdout.lines().next().unwrap().starts_with("ID"), "{stdout}");

    let devices = owner.json(&cloud, &["devices", "list"]);
    let device = find(devices.as_array().unwrap(), "id", &id).expect("listed");
    assert_eq!(device["name"], "robot-1");
    assert_eq!(device["enrolled_by_key"], key_id(&enroll));

    // An enroll key may not list devices.
    let out = User::with_env(&cloud, &enroll).run(&cloud, &["devices", "list"]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
}

#[test]
fn completions_and_usage_errors() {
    let cloud = Cloud::start();
    let user = User::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = user.run(&cloud, &["completions", shell]);
        assert_exit(&out, 0);
        let script = text(&out.stdout);
        assert!(script.contains("heex"), "{shell}: {script}");
        assert!(script.contains("invitations"), "{shell}");
    }
    let bash = text(&user.run(&cloud, &["completions", "bash"]).stdout);
    assert!(bash.contains("complete -F _heex"), "{bash}");
    // The script parses as bash.
    let check = Command::new("bash")
        .arg("-n")
        .arg("-c")
        .arg(&bash)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    assert_exit(&user.run(&cloud, &["--help"]), 0);
    assert_exit(&user.run(&cloud, &["--version"]), 0);
    assert_exit(
        &user.run(&cloud, &["keys", "create"]),
        heex_proto::exit::USAGE,
    );
    assert_exit(&user.run(&cloud, &["frobnicate"]), heex_proto::exit::USAGE);

    // A mistyped key in the environment is caught offline, and not echoed.
    let mut typo = cloud.owner_key.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let out = whoami_with(&cloud, &typo);
    assert_exit(&out, heex_proto::exit::USAGE);
    assert!(
        text(&out.stderr).contains("HEEX_API_KEY"),
        "{}",
        describe(&out)
    );
    assert!(!text(&out.stderr).contains(secret_of(&typo)));

    // A whole key where a key id belongs is refused without echoing it.
    let out =
        User::with_env(&cloud, &cloud.owner_key).run(&cloud, &["keys", "revoke", &cloud.owner_key]);
    assert_exit(&out, heex_proto::exit::USAGE);
    assert!(!text(&out.stderr).contains(secret_of(&cloud.owner_key)));
}

// ---------------------------------------------------------------- key lifecycle, members, audit

#[test]
fn keys_list_copy_and_rotate() {
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);
    let key = owner.create_key(&cloud, "ci", &["--max-uses", "3"]);
    let id = key_id(&key).to_owned();

    let out = owner.run(&cloud, &["keys", "list"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let row = stdout.lines().find(|l| l.contains(&id)).expect("listed");
    assert!(
        row.contains("ci") && row.contains("active") && row.contains("0/3"),
        "{stdout}"
    );
    assert!(row.contains("in 90 days"), "{stdout}");
    assert!(
        !stdout.contains(secret_of(&key)),
        "keys list shows a key: {stdout}"
    );

    let keys = owner.json(&cloud, &["keys", "list"]);
    let entry = find(keys.as_array().unwrap(), "id", &id)
        .expect("listed")
        .clone();
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["max_uses"], 3);
    assert!(entry.get("key").is_none(), "{entry}");

    // Copy re-derives the same key.
    let out = owner.run(&cloud, &["keys", "copy", &id]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), key);

    // Rotate with an overlap: a new working key; the old one works until the overlap ends.
    let out = owner.run(&cloud, &["keys", "rotate", &id, "--overlap", "1h"]);
    assert_exit(&out, 0);
    let new = text(&out.stdout).trim().to_owned();
    assert_eq!(new.len(), KEY_LEN, "{}", describe(&out));
    assert_ne!(key_id(&new), id);
    let who = json(&whoami_with(&cloud, &new));
    assert_eq!(who["key"]["name"], "ci");
    assert_eq!(who["key"]["scope"], "enroll");
    assert_exit(&whoami_with(&cloud, &key), 0);
    let keys = owner.json(&cloud, &["keys", "list"]);
    let old = find(keys.as_array().unwrap(), "id", &id).expect("old key listed");
    assert_eq!(old["replaced_by"], key_id(&new), "{old}");
    assert!(old["revoked_at"].is_string(), "{old}");

    // Rotate without overlap: the old key stops at once.
    let out = owner.run(&cloud, &["keys", "rotate", key_id(&new)]);
    assert_exit(&out, 0);
    let newer = text(&out.stdout).trim().to_owned();
    assert_exit(&whoami_with(&cloud, &new), heex_proto::exit::KEY_REFUSED);
    assert_exit(&whoami_with(&cloud, &newer), 0);

    // A revoked key cannot be copied.
    let out = owner.run(&cloud, &["keys", "copy", key_id(&new)]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
}

#[test]
fn rotating_the_logged_in_key_updates_the_stored_credentials() {
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);
    let admin_key = owner.create_key(&cloud, "laptop", &["--scope", "admin"]);
    let user = User::logged_in(&cloud, &admin_key);

    let out = user.run(&cloud, &["keys", "rotate", key_id(&admin_key)]);
    assert_exit(&out, 0);
    let new = text(&out.stdout).trim().to_owned();
    assert_eq!(new.len(), KEY_LEN, "{}", describe(&out));
    let stored: toml::Table = fs::read_to_string(user.credentials())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(stored["api_key"].as_str(), Some(new.as_str()));
    assert_eq!(mode(&user.credentials()), 0o600);
    // The old key is revoked, yet heex keeps working with the stored replacement.
    assert_exit(
        &whoami_with(&cloud, &admin_key),
        heex_proto::exit::KEY_REFUSED,
    );
    let who = user.json(&cloud, &["whoami"]);
    assert_eq!(who["key"]["id"], key_id(&new));
}

#[test]
fn removing_a_member_revokes_their_keys_but_not_their_devices() {
    let cloud = Cloud::start();
    let alice = User::logged_in(&cloud, &cloud.owner_key);

    // Alice invites Bob; with stdout piped the token is printed alone.
    let out = alice.run(
        &cloud,
        &["members", "invite", "bob@example.com", "--role", "admin"],
    );
    assert_exit(&out, 0);
    let invitation = token(&text(&out.stdout), "heexinv_", 8 + 32)
        .unwrap_or_else(|| panic!("no invitation token:\n{}", describe(&out)));

    // Bob accepts on his own machine: his first key is stored like `heex login` does.
    let bob = User::new();
    let out = bob.run(
        &cloud,
        &[
            "invitations",
            "accept",
            &invitation,
            "--server",
            &cloud.api_url,
            "--ca-fingerprint",
            &cloud.fingerprint,
        ],
    );
    assert_exit(&out, 0);
    assert_eq!(mode(&bob.credentials()), 0o600);
    let stored: toml::Table = fs::read_to_string(bob.credentials())
        .unwrap()
        .parse()
        .unwrap();
    let first_key = stored["api_key"].as_str().unwrap().to_owned();
    assert!(
        !text(&out.stdout).contains(secret_of(&first_key)),
        "accept printed the key: {}",
        describe(&out)
    );
    let who = bob.json(&cloud, &["whoami"]);
    assert_eq!(who["email"], "bob@example.com");

    // The token works once.
    let again = User::new().run(
        &cloud,
        &[
            "invitations",
            "accept",
            &invitation,
            "--server",
            &cloud.api_url,
            "--ca-fingerprint",
            &cloud.fingerprint,
        ],
    );
    assert_exit(&again, heex_proto::exit::USAGE);

    // Bob creates a key and enrolls a machine; its agent connects.
    let bob_key = bob.create_key(&cloud, "bob-robots", &[]);
    let machine = Machine::new();
    let device = machine.enroll(&cloud, &bob_key, "bobs-robot");
    machine.configure("heartbeat_interval = \"1s\"");
    let mut agent = machine.agent(&cloud.logs);
    wait_for(TIMEOUT, "bob's robot to connect", || {
        cloud.device(&device).filter(|d| d["connected"] == true)
    });

    let members = alice.json(&cloud, &["members", "list"]);
    let bob_entry = find(members.as_array().unwrap(), "email", "bob@example.com")
        .expect("bob listed")
        .clone();
    assert_eq!(bob_entry["role"], "admin");

    let before = machine.status(&cloud.logs);
    assert_eq!(before["connected"], true, "{before}");
    let sessions = before["sessions"].clone();

    // Alice removes Bob by email.
    let removed_at = time::OffsetDateTime::now_utc();
    let out = alice.run(&cloud, &["members", "remove", "bob@example.com"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("bob@example.com") && stdout.contains("revoked"),
        "{stdout}"
    );

    // Every one of Bob's keys is revoked.
    let keys = all_keys(&cloud, &alice);
    let bobs: Vec<&Value> = keys
        .iter()
        .filter(|k| k["owner"] == "bob@example.com")
        .collect();
    assert!(bobs.len() >= 2, "bob's keys: {bobs:?}");
    for k in &bobs {
        assert_eq!(k["status"], "revoked", "{k}");
    }
    for id in [key_id(&first_key), key_id(&bob_key)] {
        assert!(
            find(&keys, "id", id).is_some(),
            "{id} not in keys list --all"
        );
    }
    let out = alice.run(&cloud, &["keys", "list", "--all"]);
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(key_id(&bob_key)))
        .unwrap();
    assert!(row.contains("revoked"), "{table}");

    // Bob's keys are refused, saying why.
    let out = bob.run(&cloud, &["whoami"]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    assert!(text(&out.stderr).contains("removed"), "{}", describe(&out));
    let other = Machine::new();
    let out = cloud.logs.run(
        "installer",
        other
            .installer(&cloud, &bob_key)
            .arg("--name")
            .arg("another"),
        TIMEOUT,
    );
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("was removed from the workspace"), "{said}");

    // Bob's robot belongs to the workspace: it stays connected.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        agent.try_wait().is_none(),
        "the agent exited:\n{}",
        agent.stderr()
    );
    let listed = cloud.device(&device).expect("device still listed");
    assert_eq!(listed["connected"], true, "{listed}");
    assert!(listed["revoked_at"].is_null(), "{listed}");
    // ... on the same session, still heartbeating.
    let after = machine.status(&cloud.logs);
    assert_eq!(after["connected"], true, "{after}");
    assert_eq!(
        after["sessions"], sessions,
        "the agent reconnected: {after}"
    );
    let acked = time::OffsetDateTime::parse(
        after["last_heartbeat_ack"]
            .as_str()
            .expect("heartbeats acked"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        acked > removed_at,
        "no heartbeat since the removal: {after}"
    );

    // The members list shows Bob as removed.
    let members = alice.json(&cloud, &["members", "list"]);
    let bob_entry = find(members.as_array().unwrap(), "email", "bob@example.com").unwrap();
    assert!(bob_entry["removed_at"].is_string(), "{bob_entry}");
}

#[test]
fn audit_log_records_key_and_member_events() {
    let cloud = Cloud::start();
    let alice = User::with_env(&cloud, &cloud.owner_key);
    let key = alice.create_key(&cloud, "ci", &[]);
    assert_exit(&alice.run(&cloud, &["keys", "revoke", key_id(&key)]), 0);
    let out = alice.run(&cloud, &["members", "invite", "carol@example.com"]);
    assert_exit(&out, 0);

    let events = alice.json(&cloud, &["audit", "--action", "key.", "--since", "1h"]);
    let events = events.as_array().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["action"].as_str().unwrap().starts_with("key.")),
        "{events:?}"
    );
    // Newest first.
    let on_key: Vec<&str> = events
        .iter()
        .filter(|e| e["target"] == key_id(&key))
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(on_key, ["key.revoke", "key.create"], "{events:?}");

    let events = alice.json(
        &cloud,
        &["audit", "--action", "member.invite", "--limit", "1"],
    );
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["target"], "carol@example.com");

    let out = alice.run(&cloud, &["audit"]);
    assert_exit(&out, 0);
    let table = text(&out.stdout);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.contains("key.revoke") && table.contains("member.invite"),
        "{table}"
    );
    assert!(!table.contains(secret_of(&key)), "{table}");
}

#[test]
fn devices_show_describes_one_device() {
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);
    let machine = Machine::new();
    let id = machine.enroll(&cloud, &cloud.owner_key, "robot-7");

    let out = owner.run(&cloud, &["devices", "show", &id]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&id) && stdout.contains("robot-7"),
        "{stdout}"
    );
    assert!(stdout.contains("spiffe://"), "{stdout}");
    let device = owner.json(&cloud, &["devices", "show", &id]);
    assert_eq!(device["id"], id.as_str());

    let out = owner.run(&cloud, &["devices", "show", "dev_AAAAAAAAAAAAAAAAAAAA"]);
    assert_exit(&out, heex_proto::exit::USAGE);
}

/// `heex-installer` for `machine` with `key`, run to completion.
fn install(cloud: &Cloud, machine: &Machine, key: &str, name: &str) -> Output {
    cloud.logs.run(
        "installer",
        machine.installer(cloud, key).arg("--name").arg(name),
        TIMEOUT,
    )
}

/// `by` invites `email` with `role`; the invitee accepts on their own machine and is then
/// logged in with their first key.
fn join(cloud: &Cloud, by: &User, email: &str, role: &str) -> User {
    let out = by.run(cloud, &["members", "invite", email, "--role", role]);
    assert_exit(&out, 0);
    let invitation = token(&text(&out.stdout), "heexinv_", 8 + 32)
        .unwrap_or_else(|| panic!("no invitation token:\n{}", describe(&out)));
    let user = User::new();
    let out = user.run(
        cloud,
        &[
            "invitations",
            "accept",
            &invitation,
            "--server",
            &cloud.api_url,
            "--ca-fingerprint",
            &cloud.fingerprint,
        ],
    );
    assert_exit(&out, 0);
    user
}

/// The `revoked_at` of key `id` as listed to `user`, parsed.
fn revoked_at(cloud: &Cloud, user: &User, id: &str) -> time::OffsetDateTime {
    let keys = user.json(cloud, &["keys", "list"]);
    let entry = find(keys.as_array().unwrap(), "id", id).expect("key listed");
    time::OffsetDateTime::parse(
        entry["revoked_at"].as_str().expect("revocation scheduled"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[test]
fn a_rotated_key_enrolls_during_the_overlap_and_is_refused_after_it() {
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);
    let old = owner.create_key(&cloud, "fleet", &["--scope", "enroll"]);

    let out = owner.run(&cloud, &["keys", "rotate", key_id(&old), "--overlap", "8s"]);
    assert_exit(&out, 0);
    let new = text(&out.stdout).trim().to_owned();
    assert_eq!(new.len(), KEY_LEN, "{}", describe(&out));
    let ends = revoked_at(&cloud, &owner, key_id(&old));

    // During the overlap both keys enroll.
    assert_exit(&install(&cloud, &Machine::new(), &old, "during-overlap"), 0);
    assert_exit(&install(&cloud, &Machine::new(), &new, "with-new-key"), 0);
    assert!(
        time::OffsetDateTime::now_utc() < ends,
        "the machine is too slow for this overlap"
    );
    let keys = owner.json(&cloud, &["keys", "list"]);
    let listed = find(keys.as_array().unwrap(), "id", key_id(&old)).unwrap();
    assert_eq!(listed["status"], "active", "{listed}");
    assert_eq!(listed["replaced_by"], key_id(&new), "{listed}");

    // After it, the old key is refused and the new one still works.
    let wait = ends - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(200);
    std::thread::sleep(wait.try_into().unwrap_or_default());
    let out = install(&cloud, &Machine::new(), &old, "after-overlap");
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("revoked") && said.contains(key_id(&old)),
        "{said}"
    );
    assert_exit(&install(&cloud, &Machine::new(), &new, "still-new"), 0);
    let keys = owner.json(&cloud, &["keys", "list"]);
    let listed = find(keys.as_array().unwrap(), "id", key_id(&old)).unwrap();
    assert_eq!(listed["status"], "revoked", "{listed}");
    let names: Vec<Value> = cloud
        .devices()
        .into_iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn a_key_for_one_enrollment_enrolls_exactly_one_of_twenty_concurrent_machines() {
    let cloud = Cloud::start();
    let owner = User::with_env(&cloud, &cloud.owner_key);
    let key = owner.create_key(&cloud, "once", &["--max-uses", "1"]);

    let machines: Vec<Machine> = (0..20).map(|_| Machine::new()).collect();
    let mut running: Vec<_> = machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut cmd = m.installer(&cloud, &key);
            cmd.arg("--name").arg(format!("robot-{i}"));
            cloud.logs.spawn("installer", &mut cmd)
        })
        .collect();
    let (mut enrolled, mut refused) = (0, 0);
    for p in &mut running {
        let status = p.wait_timeout(TIMEOUT).expect("installer finished");
        match status.code() {
            Some(0) => enrolled += 1,
            Some(code) if code == heex_proto::exit::KEY_REFUSED => {
                let said = format!("{}{}", p.stdout(), p.stderr());
                assert!(
                    said.contains(&format!(
                        "API key {} has used all of its 1 enrollments",
                        key_id(&key)
                    )),
                    "{said}"
                );
                refused += 1;
            }
            other => panic!(
                "installer exited {other:?}:\n{}\n{}",
                p.stdout(),
                p.stderr()
            ),
        }
    }
    assert_eq!((enrolled, refused), (1, 19));
    let by_key: Vec<Value> = cloud
        .devices()
        .into_iter()
        .filter(|d| d["enrolled_by_key"] == key_id(&key))
        .collect();
    assert_eq!(by_key.len(), 1, "{by_key:?}");

    let keys = owner.json(&cloud, &["keys", "list"]);
    let entry = find(keys.as_array().unwrap(), "id", key_id(&key)).unwrap();
    assert_eq!(
        (entry["uses"].as_u64(), entry["status"].as_str()),
        (Some(1), Some("exhausted"))
    );
    let out = owner.run(&cloud, &["keys", "list"]);
    let table = text(&out.stdout);
    let row = table.lines().find(|l| l.contains(key_id(&key))).unwrap();
    assert!(row.contains("exhausted") && row.contains("1/1"), "{table}");
}

#[test]
fn members_keep_to_their_own_keys_and_workspaces_do_not_cross() {
    let cloud = Cloud::start();
    let alice = User::logged_in(&cloud, &cloud.owner_key);
    let mia = join(&cloud, &alice, "mia@example.com", "member");
    let nick = join(&cloud, &alice, "nick@example.com", "member");
    let mias = mia.create_key(&cloud, "mia-ci", &[]);

    // Nick lists only his own keys, and may neither list, copy nor revoke Mia's.
    let nicks = nick.json(&cloud, &["keys", "list"]);
    let nicks = nicks.as_array().unwrap();
    assert!(!nicks.is_empty());
    assert!(
        nicks.iter().all(|k| k["owner"] == "nick@example.com"),
        "{nicks:?}"
    );
    let out = nick.run(&cloud, &["keys", "list", "--all"]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    assert!(text(&out.stderr).contains("role"), "{}", describe(&out));
    let out = nick.run(&cloud, &["keys", "copy", key_id(&mias)]);
    assert_exit(&out, heex_proto::exit::USAGE);
    assert!(!text(&out.stdout).contains(secret_of(&mias)));
    let out = nick.run(&cloud, &["keys", "revoke", key_id(&mias)]);
    assert_exit(&out, heex_proto::exit::KEY_REFUSED);
    assert_exit(&whoami_with(&cloud, &mias), 0);
    // Nor manage members.
    assert_exit(
        &nick.run(&cloud, &["members", "remove", "mia@example.com"]),
        heex_proto::exit::KEY_REFUSED,
    );
    assert_exit(
        &nick.run(&cloud, &["members", "invite", "eve@example.com"]),
        heex_proto::exit::KEY_REFUSED,
    );
    // Alice (owner) sees and may revoke everyone's keys, but copy is Mia's alone.
    assert!(find(&all_keys(&cloud, &alice), "id", key_id(&mias)).is_some());
    assert_exit(
        &alice.run(&cloud, &["keys", "copy", key_id(&mias)]),
        heex_proto::exit::USAGE,
    );

    // A second workspace on the same cloud, made by the operator while it serves.
    let out = cloud.logs.run(
        "cloud-workspace",
        cloud
            .command()
            .args(["workspaces", "create", "beta", "--owner", "bea@example.com"])
            .arg("--data-dir")
            .arg(cloud.data()),
        TIMEOUT,
    );
    assert_exit(&out, 0);
    let bea_key = token(&text(&out.stdout), "heex_", KEY_LEN)
        .unwrap_or_else(|| panic!("no owner key:\n{}", describe(&out)));
    let bea = User::with_env(&cloud, &bea_key);
    let who = bea.json(&cloud, &["whoami"]);
    assert_eq!(who["workspace_name"], "beta");
    let bea_member = who["member_id"].as_str().unwrap().to_owned();
    let beas = bea.create_key(&cloud, "beta-ci", &[]);
    let beta_device = Machine::new().enroll(&cloud, &beas, "beta-robot");

    // Alice, owner of the first workspace, gets 404 for all of them.
    for args in [
        vec!["keys", "revoke", key_id(&beas)],
        vec!["keys", "copy", key_id(&beas)],
        vec!["keys", "rotate", key_id(&beas)],
        vec!["members", "remove", &bea_member],
        vec!["devices", "show", &beta_device],
    ] {
        let out = alice.run(&cloud, &args);
        assert_exit(&out, heex_proto::exit::USAGE);
        assert!(
            text(&out.stderr).contains("in this workspace"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    assert_exit(&whoami_with(&cloud, &beas), 0);
    assert!(find(&all_keys(&cloud, &alice), "id", key_id(&beas)).is_none());
    let devices = alice.json(&cloud, &["devices", "list"]);
    assert!(find(devices.as_array().unwrap(), "id", &beta_device).is_none());
    let members = alice.json(&cloud, &["members", "list"]);
    assert!(find(members.as_array().unwrap(), "email", "bea@example.com").is_none());
    // Bea's own view is hers.
    let shown = bea.json(&cloud, &["devices", "show", &beta_device]);
    assert_eq!(shown["name"], "beta-robot");
}

#[test]
fn keys_copy_returns_the_created_key_and_the_database_holds_neither() {
    let cloud = Cloud::start();
    let owner = User::logged_in(&cloud, &cloud.owner_key);
    let created = owner.create_key(&cloud, "docker-fleet-a", &["--scope", "enroll"]);
    let out = owner.run(&cloud, &["keys", "copy", key_id(&created)]);
    assert_exit(&out, 0);
    let copied = text(&out.stdout).trim().to_owned();
    assert_eq!(copied, created);

    // Nothing in the data directory (database, WAL, anything) or the PostgreSQL server's
    // files holds the key or its secret; nor does the server's output.
    for dir in cloud.stored_dirs() {
        let hits = heex_tests::files_containing(&dir, secret_of(&created));
        assert!(hits.is_empty(), "the key's secret is in {hits:?}");
        let hits = heex_tests::files_containing(&dir, &created);
        assert!(hits.is_empty(), "the key is in {hits:?}");
    }
    let served = format!("{}{}", cloud.proc().stdout(), cloud.proc().stderr());
    assert!(
        !served.contains(secret_of(&created)),
        "the server printed the key"
    );

    let copies = owner.json(&cloud, &["audit", "--action", "key.copy"]);
    assert_eq!(copies[0]["target"], key_id(&created), "{copies}");
}

// ---------------------------------------------------------------- paged device lists

/// Enrolls a device through the API with a fresh key pair; its id.
fn enroll_raw(cloud: &Cloud, key: &str, name: &str, labels: Value) -> String {
    let pair = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&pair).unwrap().pem().unwrap();
    let (status, body) = cloud.post(
        "/v1/enroll",
        key,
        &serde_json::json!({"csr_pem": csr, "name": name, "labels": labels}),
    );
    assert_eq!(status, 201, "enroll {name}: {body}");
    body["device_id"].as_str().unwrap().to_owned()
}

/// Ids of JSON device objects, checking none repeats.
fn unique_ids<'a>(devices: impl Iterator<Item = &'a Value>) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for d in devices {
        let id = d["id"].as_str().expect("device id").to_owned();
        assert!(ids.insert(id.clone()), "{id} listed twice");
    }
    ids
}

fn jsonl(out: &Output) -> Vec<Value> {
    assert_exit(out, 0);
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[test]
fn devices_list_pages_filters_and_counts_a_fleet() {
    const FLEET: usize = 250;
    let cloud = Cloud::start();
    let owner = User::logged_in(&cloud, &cloud.owner_key);
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let mut all = std::collections::BTreeSet::new();
    let mut lyon = std::collections::BTreeSet::new();
    let mut lyon_active = std::collections::BTreeSet::new();
    for i in 0..FLEET {
        let site = if i % 3 == 0 { "lyon" } else { "paris" };
        let mut labels = serde_json::json!({"site": site});
        if i % 10 == 0 {
            labels["retired"] = "yes".into();
        }
        let id = enroll_raw(&cloud, &key, &format!("robot-{i:03}"), labels);
        if site == "lyon" {
            lyon.insert(id.clone());
            if i % 10 != 0 {
                lyon_active.insert(id.clone());
            }
        }
        all.insert(id);
    }

    // Every device exactly once, across pages of 70, as JSON lines.
    let lines = jsonl(&owner.run(
        &cloud,
        &["devices", "list", "--all", "--jsonl", "--limit", "70"],
    ));
    assert_eq!(lines.len(), FLEET);
    assert_eq!(unique_ids(lines.iter()), all);

    // One JSON array across pages (default page size 100).
    let array = owner.json(&cloud, &["devices", "list", "--all"]);
    let array = array.as_array().expect("one JSON array");
    assert_eq!(unique_ids(array.iter()), all);

    // Without --all: one page, and a hint on stderr that more exist.
    let out = owner.run(&cloud, &["devices", "list", "--limit", "50"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 51, "header and 50 rows:\n{stdout}");
    assert!(stdout.starts_with("ID"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("more devices: use --all"),
        "{}",
        describe(&out)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // --all as a table: every row, the header once.
    let out = owner.run(&cloud, &["devices", "list", "--all", "--limit", "90"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), FLEET + 1, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ID ")).count(), 1);
    assert!(text(&out.stderr).is_empty(), "{}", describe(&out));

    // Filters.
    let got = jsonl(&owner.run(
        &cloud,
        &[
            "devices",
            "list",
            "--all",
            "--jsonl",
            "--label",
            "site=lyon",
        ],
    ));
    assert!(got.iter().all(|d| d["labels"]["site"] == "lyon"));
    assert_eq!(unique_ids(got.iter()), lyon);
    let got = jsonl(&owner.run(
        &cloud,
        &[
            "devices",
            "list",
            "--all",
            "--jsonl",
            "--label",
            "site=lyon",
            "--label",
            "!retired",
        ],
    ));
    assert_eq!(unique_ids(got.iter()), lyon_active);
    let got = jsonl(&owner.run(
        &cloud,
        &["devices", "list", "--jsonl", "--search", "robot-007"],
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["name"], "robot-007");
    let got = jsonl(&owner.run(&cloud, &["devices", "list", "--jsonl", "--connected"]));
    assert!(got.is_empty(), "{got:?}");
    let got = jsonl(&owner.run(
        &cloud,
        &[
            "devices", "list", "--jsonl", "--limit", "3", "--sort", "-name",
        ],
    ));
    let names: Vec<_> = got.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["robot-249", "robot-248", "robot-247"]);
    let got = jsonl(&owner.run(
        &cloud,
        &[
            "devices",
            "list",
            "--all",
            "--jsonl",
            "--cert-expires-before",
            "1h",
        ],
    ));
    assert!(got.is_empty(), "fresh certificates: {got:?}");

    // The counts match.
    let summary = owner.json(&cloud, &["devices", "count"]);
    assert_eq!(summary["total"], FLEET);
    assert_eq!(summary["connected"], 0);
    assert_eq!(summary["revoked"], 0);
    let out = owner.run(&cloud, &["devices", "count"]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stdout).contains(&format!("{FLEET}")),
        "{}",
        describe(&out)
    );

    // A bad selector: one line naming it, the usage exit code.
    let out = owner.run(&cloud, &["devices", "list", "--label", "=lyon"]);
    assert_exit(&out, heex_proto::exit::USAGE);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("label selector"), "{stderr}");
    let out = owner.run(
        &cloud,
        &["devices", "list", "--connected", "--disconnected"],
    );
    assert_exit(&out, heex_proto::exit::USAGE);
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn a_tampered_or_misplaced_cursor_is_a_bad_request() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    for i in 0..3 {
        enroll_raw(&cloud, &key, &format!("robot-{i}"), serde_json::json!({}));
    }
    let owner = &cloud.owner_key;
    let (status, page) = cloud.get("/v1/devices?limit=1", owner);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["devices"].as_array().unwrap().len(), 1);
    let cursor = page["next_after"].as_str().expect("a next page").to_owned();
    let (status, next) = cloud.get(&format!("/v1/devices?limit=1&after={cursor}"), owner);
    assert_eq!(status, 200, "{next}");
    assert_ne!(next["devices"][0]["id"], page["devices"][0]["id"]);

    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() / 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        format!("/v1/devices?after={tampered}"),
        format!("/v1/devices?after={cursor}x"),
        "/v1/devices?after=not-a-cursor".to_owned(),
        format!("/v1/devices?sort=name&after={cursor}"),
        format!("/v1/keys?after={cursor}"),
        "/v1/devices?limit=0".to_owned(),
        "/v1/devices?limit=1001".to_owned(),
    ] {
        let (status, body) = cloud.get(&bad, owner);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {body}"
        );
    }
}
