use super::*;

fn options() -> InitOptions {
    InitOptions {
        workspace: "default".to_owned(),
        owner: "owner@localhost".to_owned(),
        hostnames: vec!["cloud.example".to_owned()],
        trust_domain: "heex.local".to_owned(),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn init_creates_a_private_complete_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    assert!(!dir.is_initialized());
    let report = dir.init(&options()).await.unwrap();
    assert!(dir.is_initialized());
    assert_eq!(mode(dir.root()), 0o700);
    for private in [SECRET, CA_KEY, SERVER_KEY] {
        assert_eq!(mode(&dir.path(private)), 0o600, "{private}");
    }
    assert_eq!(fs::read(dir.path(SECRET)).unwrap().len(), 32);

    let loaded = dir.load(&[]).await.unwrap();
    assert_eq!(
        loaded.authority.server().fingerprint(),
        report.ca_fingerprint
    );
    assert_eq!(loaded.settings.trust_domain, "heex.local");
    assert_eq!(loaded.server_chain.len(), 2);
    assert!(report.owner_key.is_authentic(loaded.secret.as_bytes()));
    let key = loaded
        .store
        .find_key(report.owner_key.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.scope, Scope::Admin);
    assert_eq!(key.member_role, Role::Owner);
    assert_eq!(key.member_email, "owner@localhost");
    assert_eq!(key.workspace_name, "default");
    let lifetime = key.expires_at - key.created_at;
    assert_eq!(lifetime, OWNER_KEY_LIFETIME);

    let mut shown = Vec::new();
    report.print(&mut shown).unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains(&format!("Owner API key:  {}", report.owner_key.expose())));
    assert!(shown.contains(&format!("CA fingerprint: {}", report.ca_fingerprint)));
    // No secret material in the database.
    loaded.store.close().await;
    let db = fs::read(dir.path(DATABASE)).unwrap();
    let secret_part = &report.owner_key.expose()[5 + 12..5 + 12 + 32];
    assert!(!db.windows(32).any(|w| w == secret_part.as_bytes()));
}

#[tokio::test]
async fn second_init_refuses_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    dir.init(&options()).await.unwrap();
    let before: Vec<_> = [SECRET, CA_KEY, CA_CERT, SETTINGS]
        .iter()
        .map(|f| fs::read(dir.path(f)).unwrap())
        .collect();
    let err = dir.init(&options()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized(_)), "{err}");
    assert_eq!(err.exit_code(), heex_proto::exit::FILE_ERROR);
    assert!(!err.to_string().contains('\n'));
    let after: Vec<_> = [SECRET, CA_KEY, CA_CERT, SETTINGS]
        .iter()
        .map(|f| fs::read(dir.path(f)).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn interrupted_init_is_not_initialized_and_is_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    dir.init(&options()).await.unwrap();
    // Simulate a crash before the settings file was written.
    fs::remove_file(dir.path(SETTINGS)).unwrap();
    fs::write(dir.path(".tmp-abc"), b"partial").unwrap();
    assert!(!dir.is_initialized());
    assert!(dir.load(&[]).await.is_err());
    let old_secret = fs::read(dir.path(SECRET)).unwrap();
    dir.init(&options()).await.unwrap();
    assert_ne!(fs::read(dir.path(SECRET)).unwrap(), old_secret);
    assert!(!dir.path(".tmp-abc").exists());
    // Exactly one workspace: the old database was discarded.
    let loaded = dir.load(&[]).await.unwrap();
    loaded.store.close().await;
    let conn = rusqlite::Connection::open(dir.path(DATABASE)).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM workspaces", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn foreign_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
    let dir = DataDir::new(tmp.path());
    let err = dir.init(&options()).await.unwrap_err();
    assert!(matches!(err, Error::NotEmpty(_)), "{err}");
    assert_eq!(fs::read(tmp.path().join("notes.txt")).unwrap(), b"mine");
    assert!(!dir.path(SECRET).exists());
}

#[tokio::test]
async fn bad_options_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    for opts in [
        InitOptions {
            trust_domain: "Bad Domain".into(),
            ..options()
        },
        InitOptions {
            owner: "nobody".into(),
            ..options()
        },
        InitOptions {
            workspace: "".into(),
            ..options()
        },
        InitOptions {
            hostnames: vec!["not a host".into()],
            ..options()
        },
    ] {
        let err = dir.init(&opts).await.unwrap_err();
        assert_eq!(err.exit_code(), heex_proto::exit::USAGE, "{err}");
    }
    assert!(!dir.root().exists(), "nothing created on a usage error");
}

#[tokio::test]
async fn server_certificate_is_reissued_for_new_hostnames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    dir.init(&options()).await.unwrap();
    let first = fs::read(dir.path(SERVER_CERT)).unwrap();
    let loaded = dir.load(&["cloud.example".to_owned()]).await.unwrap();
    loaded.store.close().await;
    assert_eq!(
        fs::read(dir.path(SERVER_CERT)).unwrap(),
        first,
        "already covered"
    );
    let loaded = dir.load(&["other.example".to_owned()]).await.unwrap();
    loaded.store.close().await;
    let second = fs::read(dir.path(SERVER_CERT)).unwrap();
    assert_ne!(second, first);
    let der = CertificateDer::from_pem_slice(&second).unwrap();
    let names = certificate_names(&der);
    for n in [
        "localhost",
        "127.0.0.1",
        "::1",
        "cloud.example",
        "other.example",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert_eq!(mode(&dir.path(SERVER_KEY)), 0o600);
}

#[tokio::test]
async fn workspaces_are_added_with_their_owner_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    let beta = WorkspaceOptions {
        name: "beta".into(),
        owner: "bea@example.com".into(),
    };
    // Not before init.
    let e = dir.add_workspace(&beta).await.unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::CONFIG);

    dir.init(&options()).await.unwrap();
    let report = dir.add_workspace(&beta).await.unwrap();
    let mut shown = Vec::new();
    report.print(&mut shown).unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains(&format!("Owner API key:  {}", report.owner_key.expose())));

    let loaded = dir.load(&[]).await.unwrap();
    assert!(report.owner_key.is_authentic(loaded.secret.as_bytes()));
    let key = loaded
        .store
        .find_key(report.owner_key.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.workspace_name, "beta");
    assert_eq!(key.workspace_id, report.workspace_id);
    assert_eq!((key.scope, key.member_role), (Scope::Admin, Role::Owner));
    assert_eq!(key.member_email, "bea@example.com");
    loaded.store.close().await;

    // Names are unique; bad input is a usage error.
    for (name, owner) in [
        ("beta", "x@example.com"),
        ("", "x@example.com"),
        ("gamma", "nobody"),
    ] {
        let e = dir
            .add_workspace(&WorkspaceOptions {
                name: name.into(),
                owner: owner.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.exit_code(),
            heex_proto::exit::USAGE,
            "{name} {owner}: {e}"
        );
    }
}

/// A database that belongs to another data directory (a backup restored into the wrong
/// place, a replica given the wrong secrets) is refused at start, exit 78, in one line
/// naming both CAs; and a directory and a command line that disagree on the kind of store
/// are refused before anything is opened.
#[tokio::test]
async fn a_store_of_another_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        DataDir::new(tmp.path().join("a")),
        DataDir::new(tmp.path().join("b")),
    );
    let report_a = a.init(&options()).await.unwrap();
    let report_b = b.init(&options()).await.unwrap();
    // The whole database: its write-ahead log may hold the latest pages.
    for suffix in ["", "-wal", "-shm"] {
        let (from, to) = (
            a.path(&format!("{DATABASE}{suffix}")),
            b.path(&format!("{DATABASE}{suffix}")),
        );
        let _ = fs::remove_file(&to);
        if from.exists() {
            fs::copy(from, to).unwrap();
        }
    }
    let Err(err) = b.load(&[]).await else {
        panic!("a foreign database was accepted")
    };
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 78, "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(&report_a.ca_fingerprint.to_string()), "{msg}");
    assert!(msg.contains(&report_b.ca_fingerprint.to_string()), "{msg}");
    assert!(msg.contains("same data directory"), "{msg}");

    // The same CA with another server secret: keys would not verify.
    fs::copy(b.path(SECRET), a.path(SECRET)).unwrap();
    let Err(err) = a.load(&[]).await else {
        panic!("another secret was accepted")
    };
    assert_eq!(err.exit_code(), 78);
    assert!(err.to_string().contains("server secret"), "{err}");

    // A SQLite directory given a PostgreSQL URL (nothing is contacted).
    let url: PostgresUrl = "postgres://heex@127.0.0.1:1/heex".parse().unwrap();
    let wrong_kind = DataDir::with_store(b.root(), Some(url));
    let Err(err) = wrong_kind.load(&[]).await else {
        panic!("the wrong kind of store was accepted")
    };
    assert_eq!(err.exit_code(), 78);
    assert!(err.to_string().contains("leave out --store"), "{err}");
}

/// A SQLite store made before stores recorded their owner is claimed by its directory at
/// the first start, and checked from then on.
#[tokio::test]
async fn a_store_without_an_owner_is_claimed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("data"));
    dir.init(&options()).await.unwrap();
    {
        let c = rusqlite::Connection::open(dir.path(DATABASE)).unwrap();
        c.execute("DELETE FROM deployment", []).unwrap();
    }
    dir.load(&[]).await.unwrap().store.close().await;
    let c = rusqlite::Connection::open(dir.path(DATABASE)).unwrap();
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM deployment", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}
