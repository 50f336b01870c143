//! The served OpenAPI document is valid OpenAPI 3.1 with every `$ref` resolved, and a client
//! generated from it by a standard generator (openapi-python-client) works against a real
//! `heex-cloud`; for boundary and hostile values of every constrained field the document and
//! the server agree, and every answer has a declared status and matches its schema.
//!
//! Needs the Python tools pinned in tests/openapi/requirements.txt (`.ci/run` installs them).
//! Without them the tests say so and pass, except under CI (`CI` set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use heex_tests::{Cloud, Machine};
use serde_json::Value;

fn helpers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi")
}

/// True when the Python tools are installed; otherwise explains (and fails under CI).
fn python_tools() -> bool {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import openapi_spec_validator, jsonschema, httpx, openapi_python_client",
        ])
        .output();
    let found = probe.as_ref().is_ok_and(|o| o.status.success())
        && Command::new("openapi-python-client")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let why = match probe {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("python3: {e}"),
    };
    let message = format!(
        "the OpenAPI tools are missing ({why}); install them with \
         `python3 -m pip install -r tests/openapi/requirements.txt`"
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The document as served.
fn served_document(cloud: &Cloud) -> Value {
    let resp = cloud
        .http()
        .get(format!("{}/v1/openapi.json", cloud.api_url))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().unwrap()
}

fn check_document(cloud: &Cloud, path: &Path) -> Output {
    cloud.logs.run(
        "check-document",
        Command::new("python3")
            .arg(helpers().join("check_document.py"))
            .arg(path),
        Duration::from_secs(120),
    )
}

#[test]
fn a_generated_client_works_against_the_server_and_the_document_is_exact() {
    if !python_tools() {
        return;
    }
    let cloud = Cloud::start();
    let machine = Machine::new();
    let device = machine.enroll(&cloud, &cloud.owner_key, "robot-1");
    let work = tempfile::tempdir().unwrap();
    let doc_path = work.path().join("openapi.json");
    std::fs::write(&doc_path, served_document(&cloud).to_string()).unwrap();

    let out = check_document(&cloud, &doc_path);
    assert!(
        out.status.success(),
        "the document is not valid:\n{}",
        text(&out)
    );

    let client_dir = work.path().join("client");
    let out = cloud.logs.run(
        "openapi-python-client",
        Command::new("openapi-python-client")
            .arg("generate")
            .arg("--path")
            .arg(&doc_path)
            .arg("--config")
            .arg(helpers().join("generator.yaml"))
            .args(["--meta", "none"])
            .arg("--output-path")
            .arg(client_dir.join("heex_api_client")),
        Duration::from_secs(300),
    );
    let generated = text(&out);
    assert!(out.status.success(), "generation failed:\n{generated}");
    // The generator leaves out what it cannot understand, and says so.
    assert!(
        !generated.to_lowercase().contains("warning"),
        "the generator did not understand all of the document:\n{generated}"
    );

    let out = cloud.logs.run(
        "client-check",
        Command::new("python3")
            .arg(helpers().join("client_check.py"))
            .arg(&doc_path)
            .arg(&client_dir)
            .env("HEEX_URL", &cloud.api_url)
            .env("HEEX_CA", cloud.ca_file())
            .env("HEEX_KEY", &cloud.owner_key)
            .env("HEEX_DEVICE", &device),
        Duration::from_secs(300),
    );
    let checked = text(&out);
    assert!(out.status.success(), "{checked}");
    assert!(checked.contains("generated client: whoami"), "{checked}");
    assert!(checked.contains("document and server agree"), "{checked}");
}

#[test]
fn the_document_check_refuses_a_dangling_ref() {
    if !python_tools() {
        return;
    }
    let cloud = Cloud::start();
    let mut doc = served_document(&cloud);
    let schemas = doc["components"]["schemas"].as_object_mut().unwrap();
    assert!(schemas.remove("MemberId").is_some(), "no MemberId schema");
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("broken.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = check_document(&cloud, &path);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("$ref #/components/schemas/MemberId does not resolve"),
        "{said}"
    );
}
