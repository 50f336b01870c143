//! Credentials: where the file lives, environment over file, and how the file is written.

use std::os::unix::fs::PermissionsExt;

use heex_proto::KeyId;

use super::*;

fn key() -> ApiKey {
    ApiKey::derive(b"0123456789abcdef0123456789abcdef", KeyId::generate())
}

fn fingerprint(byte: u8) -> String {
    format!("sha256:{}", hex_byte(byte).repeat(32))
}

fn hex_byte(b: u8) -> String {
    format!("{b:02x}")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An environment whose config directory is a fresh temp dir, nothing else set.
fn env_in(dir: &Path) -> Env {
    Env {
        xdg_config_home: Some(dir.to_path_buf()),
        ..Env::default()
    }
}

fn store(env: &Env, server: &str, key: &ApiKey, fp: &str) -> PathBuf {
    let path = env.credentials_path().unwrap();
    let creds = StoredCredentials::of(
        &parse_server(server, "test").unwrap(),
        &parse_fingerprint(fp, "test").unwrap(),
        key,
    );
    write_credentials(&path, &creds).unwrap();
    path
}

#[test]
fn credentials_path_follows_xdg_then_home() {
    let env = Env {
        xdg_config_home: Some("/x/config".into()),
        home: Some("/home/a".into()),
        ..Env::default()
    };
    assert_eq!(
        env.credentials_path().unwrap(),
        PathBuf::from("/x/config/heex/credentials.toml")
    );
    // A relative XDG_CONFIG_HOME is invalid and ignored.
    let env = Env {
        xdg_config_home: Some("config".into()),
        home: Some("/home/a".into()),
        ..Env::default()
    };
    assert_eq!(
        env.credentials_path().unwrap(),
        PathBuf::from("/home/a/.config/heex/credentials.toml")
    );
    let e = Env::default().credentials_path().unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::CONFIG);
}

#[test]
fn file_is_0600_in_a_0700_dir_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(dir.path());
    let k = key();
    let path = store(&env, "https://127.0.0.1:8443/", &k, &fingerprint(0xab));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let stored = read_credentials(&path).unwrap().unwrap();
    assert_eq!(stored.server, "https://127.0.0.1:8443");
    assert_eq!(
        stored.ca_fingerprint.as_deref(),
        Some(fingerprint(0xab).as_str())
    );
    assert_eq!(stored.api_key, k.expose());

    let profile = resolve(&env).unwrap();
    assert_eq!(profile.api_key, k);
    assert_eq!(profile.server.as_str(), "https://127.0.0.1:8443/");
    assert_eq!(profile.file.as_deref(), Some(path.as_path()));

    // Overwriting a file someone made world-readable leaves it 0600, and no temp file behind.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let k2 = key();
    store(&env, "https://127.0.0.1:8443", &k2, &fingerprint(0xab));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(resolve(&env).unwrap().api_key, k2);
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("credentials.toml")]);

    assert!(delete_credentials(&path).unwrap());
    assert!(!delete_credentials(&path).unwrap());
    assert_eq!(
        resolve(&env).unwrap_err().exit_code(),
        heex_proto::exit::CONFIG
    );
}

#[test]
fn environment_alone_needs_no_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let env = Env {
        server: Some("https://10.1.2.3:8443".into()),
        api_key: Some(k.expose()),
        ca_fingerprint: Some(fingerprint(1)),
        ..env_in(dir.path())
    };
    let profile = resolve(&env).unwrap();
    assert_eq!(profile.api_key, k);
    assert_eq!(profile.file, None);
    assert_eq!(
        profile.trust,
        TrustAnchor::Pinned(fingerprint(1).parse().unwrap())
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn environment_overrides_the_file_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let file_key = key();
    store(
        &env_in(dir.path()),
        "https://stored.example:8443",
        &file_key,
        &fingerprint(2),
    );

    let env_key = key();
    let env = Env {
        api_key: Some(env_key.expose()),
        ..env_in(dir.path())
    };
    let p = resolve(&env).unwrap();
    assert_eq!(p.api_key, env_key);
    assert_eq!(p.server.as_str(), "https://stored.example:8443/");
    assert_eq!(
        p.trust,
        TrustAnchor::Pinned(fingerprint(2).parse().unwrap())
    );

    let env = Env {
        server: Some("https://other.example".into()),
        ca_fingerprint: Some(fingerprint(3)),
        ..env_in(dir.path())
    };
    let p = resolve(&env).unwrap();
    assert_eq!(p.api_key, file_key);
    assert_eq!(p.server.as_str(), "https://other.example/");
    assert_eq!(
        p.trust,
        TrustAnchor::Pinned(fingerprint(3).parse().unwrap())
    );
}

#[test]
fn a_partial_environment_without_a_file_says_how_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        api_key: Some(key().expose()),
        ..env_in(dir.path())
    };
    let e = resolve(&env).unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::CONFIG);
    assert!(e.to_string().contains("heex login"), "{e}");
    assert!(e.to_string().contains("HEEX_SERVER"), "{e}");
}

#[test]
fn malformed_values_are_refused_without_echoing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let k = key().expose();
    let last = if k.ends_with('x') { 'y' } else { 'x' };
    let typo = format!("{}{last}", &k[..k.len() - 1]);
    let env = Env {
        server: Some("https://h".into()),
        api_key: Some(typo.clone()),
        ca_fingerprint: Some(fingerprint(4)),
        ..env_in(dir.path())
    };
    let e = resolve(&env).unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
    assert!(e.to_string().starts_with("HEEX_API_KEY: "), "{e}");
    assert!(!e.to_string().contains(&typo[5..]), "{e}");

    let env = Env {
        server: Some("http://h".into()),
        api_key: Some(k.clone()),
        ca_fingerprint: Some(fingerprint(4)),
        ..env_in(dir.path())
    };
    assert_eq!(
        resolve(&env).unwrap_err().exit_code(),
        heex_proto::exit::USAGE
    );

    let env = Env {
        ca_fingerprint: Some(fingerprint(4)),
        ca_file: Some("/ca.crt".into()),
        ..env_in(dir.path())
    };
    assert_eq!(
        resolve(&env).unwrap_err().exit_code(),
        heex_proto::exit::USAGE
    );

    // A corrupt stored key is a credentials problem (78), not a usage error.
    let env = env_in(dir.path());
    let path = env.credentials_path().unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let body = format!(
        "server = \"https://h\"\nca_fingerprint = \"{}\"\napi_key = \"{typo}\"\n",
        fingerprint(4)
    );
    fs::write(&path, body).unwrap();
    let e = resolve(&env).unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::CONFIG);
    assert!(!e.to_string().contains(&typo[5..]), "{e}");

    fs::write(&path, "server = \"https://h\"\nsurprise = 1\n").unwrap();
    assert_eq!(
        resolve(&env).unwrap_err().exit_code(),
        heex_proto::exit::CONFIG
    );
}

#[test]
fn debug_output_hides_the_key() {
    let k = key();
    let secret = &k.expose()[17..49];
    let env = Env {
        api_key: Some(k.expose()),
        ..Env::default()
    };
    let stored = StoredCredentials::of(
        &parse_server("https://h", "t").unwrap(),
        &parse_fingerprint(&fingerprint(5), "t").unwrap(),
        &k,
    );
    let profile = Profile {
        server: parse_server("https://h", "t").unwrap(),
        trust: parse_fingerprint(&fingerprint(5), "t").unwrap(),
        api_key: k.clone(),
        file: None,
    };
    for shown in [
        format!("{env:?}"),
        format!("{stored:?}"),
        format!("{profile:?}"),
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
}
