use std::cell::Cell;
use std::fs;

use super::*;

thread_local! {
    /// Fail the n-th (from 0) occurrence of an action on this thread.
    static FAIL: Cell<Option<(Action, usize)>> = const { Cell::new(None) };
}

pub(super) fn fail_point(action: Action, path: &Path) -> Result<(), Error> {
    FAIL.with(|f| match f.get() {
        Some((a, 0)) if a == action => {
            f.set(None);
            Err(Error {
                action,
                path: path.to_owned(),
                source: io::Error::other("injected failure"),
            })
        }
        Some((a, n)) if a == action => {
            f.set(Some((a, n - 1)));
            Ok(())
        }
        _ => Ok(()),
    })
}

fn fail_at(action: Action, n: usize) {
    FAIL.with(|f| f.set(Some((action, n))));
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_write_replaces_the_whole_file_with_its_mode_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    fs::write(&path, "old").unwrap();
    write(&path, b"new content", Options::private()).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "new content");
    assert_eq!(mode(&path), 0o600);
    write(&path, b"public", Options::public().not_durable()).unwrap();
    assert_eq!(mode(&path), 0o644);
    assert_eq!(names(dir.path()), ["device.key"]);
}

#[test]
fn the_mode_is_exact_whatever_the_umask_and_the_staging_file_never_wider() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("device.key");
    let mut swap = Swap::new();
    swap.stage(&dest, b"secret", Options::mode(0o640)).unwrap();
    let staging = swap.staging_paths();
    assert_eq!(mode(&staging[0]), 0o640);
    assert!(is_temporary(
        &staging[0].file_name().unwrap().to_string_lossy()
    ));
    assert!(!dest.exists(), "nothing lands before the commit");
    swap.commit().unwrap();
    assert_eq!(mode(&dest), 0o640);
}

#[test]
fn write_with_streams_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    write_with(&path, Options::public(), |w| {
        for i in 0..3 {
            writeln!(w, "line {i}")?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "line 0\nline 1\nline 2\n"
    );
    // A producer that fails leaves the old file and no temporary one.
    let err = write_with(&path, Options::public(), |w| {
        w.write_all(b"half")?;
        Err(io::Error::other("encoder failed"))
    })
    .unwrap_err();
    assert_eq!(err.action, Action::Write);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "line 0\nline 1\nline 2\n"
    );
    assert_eq!(names(dir.path()), ["status.json"]);
}

#[test]
fn every_injected_failure_of_a_write_leaves_the_whole_old_or_the_whole_new_file() {
    for (action, n) in [
        (Action::Write, 0),
        (Action::SyncDirectory, 0),
        (Action::Replace, 0),
        (Action::SyncDirectory, 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        fs::write(&path, "old").unwrap();
        fail_at(action, n);
        let err = write(&path, b"new", Options::public()).unwrap_err();
        assert_eq!(err.action, action, "{action:?} #{n}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot {} ", action.verb()))
                && message.contains(&*dir.path().to_string_lossy()),
            "{message}"
        );
        let now = fs::read_to_string(&path).unwrap();
        // Only the fsync after the rename can fail with the new content in place.
        let expected = if (action, n) == (Action::SyncDirectory, 1) {
            "new"
        } else {
            "old"
        };
        assert_eq!(now, expected, "{action:?} #{n}");
        assert_eq!(
            names(dir.path()),
            ["ca.crt"],
            "{action:?} #{n}: no temporary file left"
        );
    }
}

#[test]
fn a_swap_that_fails_before_its_first_rename_changes_nothing_and_leaves_nothing() {
    // Three files; fail each staging write in turn, then the directory fsync before renames.
    let cases = [
        (Action::Write, 0),
        (Action::Write, 1),
        (Action::Write, 2),
        (Action::SyncDirectory, 0),
    ];
    for (action, n) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert, conf) = (
            dir.path().join("device.key"),
            dir.path().join("device.crt"),
            dir.path().join("agent.toml"),
        );
        for p in [&key, &cert, &conf] {
            fs::write(p, "old").unwrap();
        }
        fail_at(action, n);
        let result = (|| {
            let mut swap = Swap::new();
            swap.stage_at(
                &cert,
                &dir.path().join("device.crt.new"),
                b"new",
                Options::public(),
            )?;
            swap.stage(&key, b"new", Options::private())?;
            swap.stage(&conf, b"new", Options::public())?;
            swap.commit()
        })();
        assert_eq!(result.unwrap_err().action, action);
        for p in [&key, &cert, &conf] {
            assert_eq!(
                fs::read_to_string(p).unwrap(),
                "old",
                "{action:?} #{n}: {}",
                p.display()
            );
        }
        assert_eq!(
            names(dir.path()),
            ["agent.toml", "device.crt", "device.key"],
            "{action:?} #{n}"
        );
    }
}

#[test]
fn a_swap_interrupted_between_renames_keeps_the_named_staging_files_for_recovery() {
    for n in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let dests: Vec<PathBuf> = ["device.crt", "device.key", "ca.crt"]
            .iter()
            .map(|f| dir.path().join(f))
            .collect();
        for p in &dests {
            fs::write(p, "old").unwrap();
        }
        let mut swap = Swap::new();
        swap.stage_at(
            &dests[0],
            &dir.path().join("device.crt.new"),
            b"new",
            Options::public(),
        )
        .unwrap();
        swap.stage_at(
            &dests[1],
            &dir.path().join("device.key.new"),
            b"new",
            Options::private(),
        )
        .unwrap();
        swap.stage(&dests[2], b"new", Options::public()).unwrap();
        fail_at(Action::Replace, n);
        let err = swap.commit().unwrap_err();
        assert_eq!(
            (err.action, err.path.clone()),
            (Action::Replace, dests[n].clone())
        );
        // The renames happen in staging order: the first n files are new, the rest old.
        for (i, p) in dests.iter().enumerate() {
            let expected = if i < n { "new" } else { "old" };
            assert_eq!(
                fs::read_to_string(p).unwrap(),
                expected,
                "failure at #{n}: {}",
                p.display()
            );
        }
        // Named staging files not yet renamed stay (whole, with their mode); temporary ones go.
        let mut expected: Vec<&str> = vec!["ca.crt", "device.crt", "device.key"];
        if n == 0 {
            expected.push("device.crt.new");
        }
        if n <= 1 {
            expected.push("device.key.new");
        }
        expected.sort();
        assert_eq!(names(dir.path()), expected, "failure at #{n}");
        if n <= 1 {
            let staged = dir.path().join("device.key.new");
            assert_eq!(fs::read_to_string(&staged).unwrap(), "new");
            assert_eq!(mode(&staged), 0o600);
        }
    }
}

#[test]
fn a_dropped_swap_removes_its_staging_files_named_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("device.crt");
    {
        let mut swap = Swap::new();
        swap.stage_at(
            &dest,
            &dir.path().join("device.crt.new"),
            b"new",
            Options::public(),
        )
        .unwrap();
        swap.stage(&dir.path().join("device.key"), b"new", Options::private())
            .unwrap();
        assert_eq!(swap.staging_paths().len(), 2);
    }
    assert!(names(dir.path()).is_empty());
}

#[test]
fn files_written_by_root_into_another_users_directory_take_that_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    // Without privileges (or when the owners already agree) this changes nothing and succeeds.
    write(&path, b"k", Options::private().owner_of_directory()).unwrap();
    let (d, f) = (
        fs::metadata(dir.path()).unwrap(),
        fs::metadata(&path).unwrap(),
    );
    assert_eq!((d.uid(), d.gid()), (f.uid(), f.gid()));
    if rustix_is_root() {
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        write(&path, b"k2", Options::private().owner_of_directory()).unwrap();
        let f = fs::metadata(&path).unwrap();
        assert_eq!((f.uid(), f.gid()), (65534, 65534));
        assert_eq!(mode(&path), 0o600);
    }
}

fn rustix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn errors_name_the_destination_and_a_missing_directory_is_not_a_panic() {
    let err = write(
        Path::new("/nonexistent/heex/device.key"),
        b"x",
        Options::private(),
    )
    .unwrap_err();
    assert_eq!(err.action, Action::Write);
    assert_eq!(
        err.to_string(),
        "cannot write /nonexistent/heex/device.key: No such file or directory (os error 2)"
    );
    assert_eq!(parent(Path::new("ca.crt")), Path::new("."));
    assert!(is_temporary(".ca.crt.Ab12Cd.tmp"));
    assert!(!is_temporary("ca.crt") && !is_temporary("device.crt.new"));
}
