//! `heex-cloud backup` and `heex-cloud restore`: one file holding a consistent copy of a
//! SQLite data directory, made while `serve` runs.
//!
//! The backup is itself a SQLite database: SQLite's `VACUUM INTO` copies the records as one
//! read transaction saw them (every change committed before it began, none after; the
//! writer goes on meanwhile), and a table of the data directory's other files (server
//! secret, CA, server certificate and keys, settings) is added to the copy. It is written
//! 0600 under a temporary name and renamed into place once complete and on disk, so a
//! backup file is whole or absent. A restore checks the file's integrity first and builds
//! the new data directory under a temporary name, renamed into place at the end: a damaged
//! backup or an interrupted restore leaves nothing that looks like a data directory.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::cli::{BackupArgs, RestoreArgs};
use crate::datadir::{self, DataDir, StoreKind};
use crate::error::Error;
use heex_fs::Options;

/// The table of the data directory's files in a backup.
const FILES_TABLE: &str = "heex_backup_files";
/// The table holding the backup's digest: SHA-256 over every row of every other table, so a
/// restore finds any changed byte (SQLite's own integrity check sees only its structure).
const DIGEST_TABLE: &str = "heex_backup_digest";
/// The files a backup carries besides the database, with their modes.
const FILES: &[(&str, u32)] = &[
    (datadir::SECRET, 0o600),
    (datadir::CA_KEY, 0o600),
    (datadir::CA_CERT, 0o644),
    (datadir::SERVER_KEY, 0o600),
    (datadir::SERVER_CERT, 0o644),
    (datadir::SETTINGS, 0o644),
];
/// Files a backup carries when they exist: the new CA during a CA rotation.
const OPTIONAL_FILES: &[(&str, u32)] = &[
    (crate::datadir::authority::CA_NEXT_KEY, 0o600),
    (crate::datadir::authority::CA_NEXT_CERT, 0o644),
];

/// `heex-cloud backup`.
pub fn backup(args: &BackupArgs) -> Result<(), Error> {
    let dir = DataDir::of(&args.dir);
    let settings = dir.settings()?;
    if settings.store == StoreKind::Postgres || args.dir.store.is_some() {
        return Err(Error::Usage(
            "this data directory's records are in PostgreSQL: back them up with pg_dump and \
             keep a copy of the data directory (its secrets), as docs/deploying.md \
             (\"Backup and restore\") says; heex-cloud backup copies SQLite data directories"
                .to_owned(),
        ));
    }
    let out = &args.out;
    if fs::symlink_metadata(out).is_ok() {
        return Err(Error::Usage(format!(
            "{} exists; give --out a new file (a backup never overwrites one)",
            out.display()
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Named like heex_fs's temporary files, so a crash's leftover is recognisable.
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(|e| Error::file(parent, e))?;
    let tmp_path = tmp.path().to_owned();
    tmp.as_file()
        .set_permissions(Permissions::from_mode(0o600))
        .map_err(|e| Error::file(&tmp_path, e))?;
    // VACUUM INTO wants a new (or empty) file: keep the name, let SQLite write it.
    let db = dir.path(datadir::DATABASE);
    let source = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::corrupt(&db, e.to_string()))?;
    source
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| Error::corrupt(&db, e.to_string()))?;
    let tmp_name = tmp_path
        .to_str()
        .ok_or_else(|| Error::Usage(format!("{}: not a UTF-8 path", tmp_path.display())))?;
    source
        .execute("VACUUM INTO ?1", [tmp_name])
        .map_err(|e| Error::corrupt(&db, format!("cannot copy the database: {e}")))?;
    drop(source);

    let copy = Connection::open(&tmp_path).map_err(|e| Error::corrupt(&tmp_path, e.to_string()))?;
    let sql = |e: rusqlite::Error| Error::corrupt(&tmp_path, e.to_string());
    copy.execute_batch(&format!(
        "CREATE TABLE {FILES_TABLE} (name TEXT PRIMARY KEY, mode INTEGER NOT NULL, content BLOB NOT NULL)"
    ))
    .map_err(sql)?;
    for (name, mode) in FILES.iter().chain(
        OPTIONAL_FILES
            .iter()
            .filter(|(name, _)| fs::symlink_metadata(dir.path(name)).is_ok()),
    ) {
        let path = dir.path(name);
        let content = fs::read(&path).map_err(|e| Error::file(&path, e))?;
        copy.execute(
            &format!("INSERT INTO {FILES_TABLE} (name, mode, content) VALUES (?1, ?2, ?3)"),
            rusqlite::params![name, mode, content],
        )
        .map_err(sql)?;
    }
    let sum = digest(&copy).map_err(sql)?;
    copy.execute_batch(&format!(
        "CREATE TABLE {DIGEST_TABLE} (sha256 TEXT NOT NULL)"
    ))
    .map_err(sql)?;
    copy.execute(
        &format!("INSERT INTO {DIGEST_TABLE} (sha256) VALUES (?1)"),
        [&sum],
    )
    .map_err(sql)?;
    let (devices, reports): (i64, i64) = copy
        .query_row(
            "SELECT (SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM reports)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql)?;
    drop(copy);
    let file = fs::File::open(&tmp_path).map_err(|e| Error::file(&tmp_path, e))?;
    file.set_permissions(Permissions::from_mode(0o600))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::file(&tmp_path, e))?;
    // Rename into place only if nothing appeared under the name meanwhile.
    tmp.persist_noclobber(out)
        .map_err(|e| Error::file(out, e.error))?;
    heex_fs::sync_dir(parent)?;
    println!(
        "backup written to {} ({devices} devices, {reports} reports); restore it with \
         `heex-cloud restore --from {} --data-dir NEW_DIR`",
        out.display(),
        out.display()
    );
    Ok(())
}

/// `heex-cloud restore`.
pub fn restore(args: &RestoreArgs) -> Result<(), Error> {
    let target = &args.data_dir;
    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} is not empty; restore into a new or empty directory",
                    target.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::file(target, e)),
    }
    let from = &args.from;
    let damaged = |why: String| {
        Error::Usage(format!(
            "{} is not a usable heex-cloud backup ({why}); use another backup file",
            from.display()
        ))
    };
    if !from.is_file() {
        return Err(Error::file(
            from,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such backup file"),
        ));
    }
    let backup = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| damaged(e.to_string()))?;
    let check: String = backup
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    if check != "ok" {
        return Err(damaged(format!("integrity check: {check}")));
    }
    let recorded: String = backup
        .query_row(&format!("SELECT sha256 FROM {DIGEST_TABLE}"), [], |r| {
            r.get(0)
        })
        .map_err(|e| damaged(format!("no digest: {e}")))?;
    if digest(&backup).map_err(|e| damaged(e.to_string()))? != recorded {
        return Err(damaged(
            "its contents changed since it was written: a byte differs".to_owned(),
        ));
    }
    let mut files = Vec::new();
    {
        let mut q = backup
            .prepare(&format!("SELECT name, mode, content FROM {FILES_TABLE}"))
            .map_err(|e| damaged(e.to_string()))?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(|e| damaged(e.to_string()))?;
        for row in rows {
            files.push(row.map_err(|e| damaged(e.to_string()))?);
        }
    }
    for (name, _) in FILES {
        if !files.iter().any(|(n, _, _)| n == name) {
            return Err(damaged(format!("it holds no {name}")));
        }
    }

    // Built next to the target, renamed into place once complete.
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".heex-restore-")
        .tempdir_in(parent)
        .map_err(|e| Error::file(parent, e))?;
    fs::set_permissions(staging.path(), Permissions::from_mode(0o700))
        .map_err(|e| Error::file(staging.path(), e))?;
    for (name, mode, content) in &files {
        if !FILES.iter().chain(OPTIONAL_FILES).any(|(n, _)| n == name) {
            return Err(damaged(format!("it holds an unexpected file {name:?}")));
        }
        heex_fs::write(&staging.path().join(name), content, Options::mode(*mode))?;
    }
    let db = staging.path().join(datadir::DATABASE);
    let db_name = db
        .to_str()
        .ok_or_else(|| Error::Usage(format!("{}: not a UTF-8 path", db.display())))?;
    backup
        .execute("VACUUM INTO ?1", [db_name])
        .map_err(|e| damaged(format!("cannot copy its database: {e}")))?;
    drop(backup);
    {
        // The secrets live in their files, not in the database: drop the table and its pages.
        let restored = Connection::open(&db).map_err(|e| Error::corrupt(&db, e.to_string()))?;
        restored
            .execute_batch(&format!(
                "DROP TABLE {FILES_TABLE}; DROP TABLE {DIGEST_TABLE}; VACUUM;"
            ))
            .map_err(|e| Error::corrupt(&db, e.to_string()))?;
    }
    let file = fs::File::open(&db).map_err(|e| Error::file(&db, e))?;
    file.set_permissions(Permissions::from_mode(0o600))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::file(&db, e))?;
    heex_fs::sync_dir(staging.path())?;
    if target.exists() {
        // Empty (checked above): the staging directory takes its place.
        fs::remove_dir(target).map_err(|e| Error::file(target, e))?;
    }
    let staged: PathBuf = staging.keep();
    fs::rename(&staged, target).map_err(|e| Error::file(target, e))?;
    heex_fs::sync_dir(parent)?;
    println!(
        "restored into {}; start it with `heex-cloud serve --data-dir {}`",
        target.display(),
        target.display()
    );
    Ok(())
}

/// SHA-256 over the name and every value of every row of every table but the digest's own,
/// tables by name, rows in the file's order.
fn digest(conn: &Connection) -> Result<String, rusqlite::Error> {
    use rusqlite::types::ValueRef;
    use sha2::{Digest, Sha256};
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tables.retain(|t| t != DIGEST_TABLE);
    let mut hash = Sha256::new();
    for table in tables {
        hash.update(table.as_bytes());
        hash.update([0]);
        let mut q = conn.prepare(&format!("SELECT * FROM \"{}\"", table.replace('"', "\"\"")))?;
        let columns = q.column_count();
        let mut rows = q.query([])?;
        while let Some(row) = rows.next()? {
            for i in 0..columns {
                match row.get_ref(i)? {
                    ValueRef::Null => hash.update([0]),
                    ValueRef::Integer(v) => {
                        hash.update([1]);
                        hash.update(v.to_le_bytes());
                    }
                    ValueRef::Real(v) => {
                        hash.update([2]);
                        hash.update(v.to_le_bytes());
                    }
                    ValueRef::Text(b) | ValueRef::Blob(b) => {
                        hash.update([3]);
                        hash.update((b.len() as u64).to_le_bytes());
                        hash.update(b);
                    }
                }
            }
        }
    }
    Ok(hex::encode(hash.finalize()))
}
