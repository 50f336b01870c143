use heex_pki::test_kit::TestCa;

use super::*;

/// Writes a complete enrollment under `root` (config in `root/etc`, state in `root/state`).
fn enrolled(root: &Path) -> (DeviceId, PathBuf, PathBuf) {
    let ca = TestCa::named("CA");
    let device_id = DeviceId::generate();
    let key = DeviceKey::generate().unwrap();
    let mut params = TestCa::device_params(device_id.as_str());
    params.subject_alt_names.clear();
    let cert = ca.sign(&params, &key);

    let config_dir = root.join("etc");
    let state_dir = root.join("state");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(state_dir.join(DEVICE_KEY), key.private_pem()).unwrap();
    std::fs::write(state_dir.join(DEVICE_CRT), cert.pem()).unwrap();
    std::fs::write(state_dir.join(CA_CRT), &ca.ca_pem).unwrap();
    let toml = agent_toml(None, "https://h:8443", "h:8444", &device_id, &state_dir).unwrap();
    std::fs::write(config_dir.join(AGENT_TOML), toml).unwrap();
    (device_id, config_dir, state_dir)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn nothing_when_there_is_no_config() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        inspect(dir.path(), now()).unwrap(),
        Existing::Nothing
    ));
}

#[test]
fn recognises_a_complete_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let (device_id, config_dir, state_dir) = enrolled(dir.path());
    let Existing::Enrolled(e) = inspect(&config_dir, now()).unwrap() else {
        panic!("not enrolled");
    };
    assert_eq!(e.device_id, device_id);
    assert_eq!(e.server, "https://h:8443");
    assert_eq!(e.state_dir, state_dir);
    assert!(e.not_after > now());
}

#[test]
fn an_enrollment_with_several_cas_in_ca_crt_is_recognised() {
    // After a CA rotation ca.crt holds the new CA first; the device certificate may still be
    // from the old one (second).
    let dir = tempfile::tempdir().unwrap();
    let (device_id, config_dir, state_dir) = enrolled(dir.path());
    let new_ca = TestCa::new().ca_pem;
    let old_ca = std::fs::read_to_string(state_dir.join(CA_CRT)).unwrap();
    std::fs::write(state_dir.join(CA_CRT), format!("{new_ca}{old_ca}")).unwrap();
    let Existing::Enrolled(e) = inspect(&config_dir, now()).unwrap() else {
        panic!("not enrolled");
    };
    assert_eq!(e.device_id, device_id);
    // Without the CA that signed the device certificate, it is not.
    std::fs::write(state_dir.join(CA_CRT), &new_ca).unwrap();
    let Existing::Unusable(why) = inspect(&config_dir, now()).unwrap() else {
        panic!("expected unusable");
    };
    assert!(why.contains("not signed by the CA"), "{why}");
}

#[test]
fn expired_certificate_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config_dir, _) = enrolled(dir.path());
    let later = now() + time::Duration::days(365 * 5000);
    let Existing::Unusable(why) = inspect(&config_dir, later).unwrap() else {
        panic!("expected unusable");
    };
    assert!(why.contains("expired"), "{why}");
}

#[test]
fn mismatched_or_missing_files_are_unusable() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 5] = [
        ("another key", |s| {
            let other = DeviceKey::generate().unwrap();
            std::fs::write(s.join(DEVICE_KEY), other.private_pem()).unwrap();
        }),
        ("not a usable key", |s| {
            std::fs::write(s.join(DEVICE_KEY), "junk").unwrap()
        }),
        ("missing", |s| std::fs::remove_file(s.join(CA_CRT)).unwrap()),
        ("no certificate", |s| {
            std::fs::write(s.join(DEVICE_CRT), "").unwrap()
        }),
        ("not signed by the CA", |s| {
            std::fs::write(s.join(CA_CRT), TestCa::new().ca_pem).unwrap();
        }),
    ];
    for (expected, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (_, config_dir, state_dir) = enrolled(dir.path());
        damage(&state_dir);
        match inspect(&config_dir, now()).unwrap() {
            Existing::Unusable(why) => assert!(why.contains(expected), "{expected}: {why}"),
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_config_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(AGENT_TOML), "server = \n").unwrap();
    assert!(matches!(
        inspect(dir.path(), now()).unwrap(),
        Existing::Unusable(_)
    ));
}

#[test]
fn agent_toml_has_the_contract_keys_and_keeps_other_settings() {
    let id = DeviceId::generate();
    let text = agent_toml(
        None,
        "https://127.0.0.1:8443",
        "127.0.0.1:8444",
        &id,
        Path::new("/var/lib/heex"),
    )
    .unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table.len(), 4);
    assert_eq!(table["server"].as_str(), Some("https://127.0.0.1:8443"));
    assert_eq!(table["gateway"].as_str(), Some("127.0.0.1:8444"));
    assert_eq!(table["device_id"].as_str(), Some(id.as_str()));
    assert_eq!(table["state_dir"].as_str(), Some("/var/lib/heex"));

    let previous = format!("{text}heartbeat_interval = \"5s\"\n");
    let new_id = DeviceId::generate();
    let text = agent_toml(
        Some(&previous),
        "https://h",
        "h:1",
        &new_id,
        Path::new("/s\"q"),
    )
    .unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table.len(), 5);
    assert_eq!(table["device_id"].as_str(), Some(new_id.as_str()));
    assert_eq!(table["state_dir"].as_str(), Some("/s\"q"));
    assert_eq!(table["heartbeat_interval"].as_str(), Some("5s"));
}

#[test]
fn every_agent_toml_the_installer_writes_parses_with_the_agents_own_parser() {
    let state = Path::new("/var/lib/heex");
    let id = DeviceId::generate();
    let previous = [
        None,
        Some("heartbeat_interval = \"5s\"\nsocket_group = \"robots\"\n"),
        // Keys the agent does not know (a typo, a setting of another version) are dropped,
        // or the agent would refuse the whole file.
        Some("heartbeat = \"5s\"\nbackoff_max = \"2m\"\n[extra]\nx = 1\n"),
        Some("not toml at all ["),
    ];
    for before in previous {
        let text = agent_toml(before, "https://h:8443", "[::1]:8444", &id, state).unwrap();
        let config =
            heex_agent::Config::parse(&text, Path::new("agent.toml")).unwrap_or_else(|e| {
                panic!("{before:?}: the agent refuses what the installer wrote: {e}\n{text}")
            });
        assert_eq!(config.device_id, id);
        assert_eq!(config.gateway, "[::1]:8444");
        assert_eq!(config.state_dir, state);
        if let Some(before) = before.filter(|b| b.contains("socket_group")) {
            assert_eq!(config.socket_group.as_deref(), Some("robots"), "{before}");
            assert_eq!(config.heartbeat_interval, std::time::Duration::from_secs(5));
        }
        if before.is_some_and(|b| b.contains("backoff_max")) {
            assert_eq!(config.backoff_max, std::time::Duration::from_secs(120));
            assert!(
                !text.contains("heartbeat =") && !text.contains("[extra]"),
                "{text}"
            );
        }
    }
}
