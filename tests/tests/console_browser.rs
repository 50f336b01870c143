//! The web console in a real browser: Debian's Chromium driven by Python Playwright
//! (tests/console/browser_check.py) against a real `heex-cloud`, with the real
//! `heex-installer` enrolling machines with the keys the console put on the clipboard and
//! their real agents connecting while the Devices page watches.
//!
//! Needs /usr/bin/chromium (`apt-get install chromium`) and the Python packages pinned in
//! tests/console/requirements.txt. Without them the test says so and passes, unless
//! `HEEX_BROWSER_TESTS=require` (CI sets it) makes their absence a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use heex_tests::{bin, Cloud};
use serde_json::Value;

fn chromium() -> PathBuf {
    std::env::var_os("HEEX_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// True when Chromium and the Python packages are present; otherwise explains (and fails
/// when `HEEX_BROWSER_TESTS=require`).
fn browser_tools() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import playwright, axe_playwright_python"])
        .output();
    let python = probe.as_ref().is_ok_and(|o| o.status.success());
    let missing = if !chromium().exists() {
        format!(
            "{} is missing; install it with `apt-get install chromium`",
            chromium().display()
        )
    } else if !python {
        "Python Playwright is missing; install it with \
         `python3 -m pip install -r tests/console/requirements.txt`"
            .to_owned()
    } else {
        return true;
    };
    assert!(
        std::env::var("HEEX_BROWSER_TESTS").as_deref() != Ok("require"),
        "HEEX_BROWSER_TESTS=require but {missing}"
    );
    eprintln!("SKIPPED console browser test: {missing}");
    false
}

#[test]
fn the_console_in_chromium() {
    if !browser_tools() {
        return;
    }
    let cloud = Cloud::start();
    let work = tempfile::tempdir().unwrap();
    let result = work.path().join("result.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/browser_check.py");
    let out = cloud.logs.run(
        "browser",
        Command::new("python3")
            .arg(&script)
            .env("HEEX_URL", &cloud.api_url)
            .env("HEEX_OWNER_KEY", &cloud.owner_key)
            .env("HEEX_FINGERPRINT", &cloud.fingerprint)
            .env("HEEX_INSTALLER", bin("heex-installer"))
            .env("HEEX_AGENT", bin("heex-agent"))
            .env("HEEX_MACHINE_DIR", work.path().join("machine"))
            .env("HEEX_RESULT", &result)
            .env("HEEX_CHROMIUM", chromium()),
        Duration::from_secs(300),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser checks failed:\n{text}");
    assert!(text.contains("all console browser checks passed"), "{text}");

    // The machine the installer enrolled with the copied key is in the cloud's records,
    // enrolled by that key.
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    let devices = cloud.devices();
    let robot = devices
        .iter()
        .find(|d| d["name"] == "robot-7")
        .unwrap_or_else(|| panic!("robot-7 not enrolled: {devices:?}"));
    assert_eq!(robot["enrolled_by_key"], result["key_id"]);

    // No key or token reached a log (but `init`'s, which prints the owner key once).
    let mut logs = String::new();
    for entry in std::fs::read_dir(cloud.logs.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("cloud-init") {
            logs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    assert!(
        logs.contains("console session started"),
        "no server log read"
    );
    assert!(
        !logs.contains(&cloud.owner_key),
        "the owner key is in a log"
    );
    assert!(
        !logs.contains("heexinv_"),
        "an invitation token is in a log"
    );
    assert!(!logs.contains("heexsig_"), "a sign-in token is in a log");
}

/// `heex console` prints a one-time link; its token opens a session once, and neither the
/// token nor the key reaches the server's log. (No browser needed.)
#[test]
fn heex_console_prints_a_one_time_sign_in_link() {
    let cloud = Cloud::start();
    let home = tempfile::tempdir().unwrap();
    let out = cloud.logs.run(
        "heex-console",
        Command::new(bin("heex"))
            .arg("console")
            .env("XDG_CONFIG_HOME", home.path())
            .env("HOME", home.path())
            .env("HEEX_SERVER", &cloud.api_url)
            .env("HEEX_API_KEY", &cloud.owner_key)
            .env("HEEX_CA_FINGERPRINT", &cloud.fingerprint),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("{}/console/signin/link#", cloud.api_url);
    let token = stdout
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, t)| t.trim().to_owned()))
        .unwrap_or_else(|| panic!("no sign-in link in:\n{stdout}"));
    assert!(token.starts_with("heexsig_"), "{token}");

    let pem = std::fs::read(cloud.ca_file()).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let spend = || {
        http.post(format!("{}/console/signin/link", cloud.api_url))
            .header("origin", &cloud.api_url)
            .form(&[("token", token.as_str())])
            .send()
            .unwrap()
    };
    let first = spend();
    assert_eq!(first.status().as_u16(), 303);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-heex_session="), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(format!("{}/console/keys", cloud.api_url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().unwrap().contains("owner@localhost"));
    assert_eq!(spend().status().as_u16(), 401, "a link works once");

    let server_log: String = std::fs::read_dir(cloud.logs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("cloud-serve"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(server_log.contains("console session started"));
    assert!(
        !server_log.contains(&token),
        "the sign-in token is in the server log"
    );
    assert!(!server_log.contains(&cloud.owner_key));
}
