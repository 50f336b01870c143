//! Report intake in the daemon: one committer thread that groups concurrent submissions into
//! one outbox append (one fsync), and the Unix socket programs on the robot write to.
//!
//! Socket protocol: newline-delimited JSON. Each line a client sends is one report (any
//! JSON value, at most [`MAX_REPORT_BYTES`] compact). For each line, in order, the daemon
//! answers one line once the report is durable: `{"ok":true,"seq":N}`, or
//! `{"ok":false,"error":"…"}`. Clients may send many lines without waiting for answers.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use heex_proto::frame::MAX_REPORT_BYTES;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::delivery::Reports;
use crate::outbox::{self, Outbox, OutboxError};

/// Most submissions appended in one batch.
pub const MAX_GROUP: usize = 4096;
/// Longest line accepted on the socket: a report of the largest size with generous
/// whitespace. Longer lines get an error and the connection is closed.
pub const MAX_LINE: usize = 4 * MAX_REPORT_BYTES;

struct Submission {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64, OutboxError>>,
}

/// Queues reports for the committer thread. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Submission>,
    appended: Arc<Notify>,
}

impl Intake {
    /// Starts the committer thread, which owns `outbox` and wakes `appended` after each
    /// append.
    pub fn spawn(mut outbox: Outbox, appended: Arc<Notify>) -> Result<Intake, OutboxError> {
        let (tx, rx) = mpsc::channel::<Submission>();
        let wake = Arc::clone(&appended);
        let dir = outbox.dir().to_owned();
        std::thread::Builder::new()
            .name("heex-outbox".to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(s) => batch.push(s),
                            Err(_) => break,
                        }
                    }
                    let payloads: Vec<Vec<u8>> = batch
                        .iter_mut()
                        .map(|s| std::mem::take(&mut s.payload))
                        .collect();
                    match outbox.append(&payloads) {
                        Ok(answers) => {
                            for (s, a) in batch.into_iter().zip(answers) {
                                let _ = s.reply.send(a);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot append to the report outbox");
                            for s in batch {
                                let _ = s.reply.send(Err(copy_error(&e)));
                            }
                        }
                    }
                    appended.notify_one();
                }
            })
            .map_err(OutboxError::io_at(&dir))?;
        Ok(Intake { tx, appended: wake })
    }

    /// Wakes delivery: another process (`heex-agent report`) may have appended to the outbox.
    pub fn wake(&self) {
        self.appended.notify_one();
    }

    /// Queues one report (compact JSON from [`outbox::prepare`]); resolves once durable.
    pub async fn submit(&self, payload: Vec<u8>) -> Result<u64, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission { payload, reply })
            .map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)?
    }

    /// [`Intake::submit`] for threads outside the runtime.
    pub fn submit_blocking(&self, payload: Vec<u8>) -> Result<u64, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission { payload, reply })
            .map_err(|_| OutboxError::Closed)?;
        answer.blocking_recv().map_err(|_| OutboxError::Closed)?
    }
}

fn copy_error(e: &OutboxError) -> OutboxError {
    match e {
        OutboxError::Io { path, source } => OutboxError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        OutboxError::Full { used, max } => OutboxError::Full {
            used: *used,
            max: *max,
        },
        OutboxError::DiskFull { path } => OutboxError::DiskFull { path: path.clone() },
        _ => OutboxError::Closed,
    }
}

impl OutboxError {
    fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
        move |source| OutboxError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Opens the outbox twice (one handle appends, one acknowledges), starts the committer and,
/// when it can be bound, the socket at `socket`. Returns the delivery side.
pub fn start(
    outbox_dir: &Path,
    max_bytes: u64,
    socket: PathBuf,
    socket_group: Option<&str>,
    cancel: CancellationToken,
) -> Result<(Intake, Reports), OutboxError> {
    let mut appender = Outbox::open(outbox_dir, max_bytes)?;
    appender.repair()?;
    let acker = Outbox::open(outbox_dir, max_bytes)?;
    let appended = Arc::new(Notify::new());
    let intake = Intake::spawn(appender, appended.clone())?;
    let reports = Reports::new(acker, appended);
    let state_dir = outbox_dir.parent().unwrap_or(outbox_dir);
    match bind(&socket, socket_group, state_dir) {
        Ok(listener) => {
            tracing::info!(socket = %socket.display(), "accepting reports on the socket");
            tokio::spawn(serve(listener, socket, intake.clone(), cancel));
        }
        Err(e) => tracing::warn!(
            socket = %socket.display(),
            error = %e,
            "cannot listen for reports on the socket; `heex-agent report` still works"
        ),
    }
    Ok((intake, reports))
}

/// The group id of `group`: a number, or a name in `/etc/group`.
fn resolve_group(group: &str) -> std::io::Result<rustix::fs::Gid> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(rustix::fs::Gid::from_raw(n));
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .map(rustix::fs::Gid::from_raw)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group {group:?} in /etc/group (socket_group in agent.toml)"),
            )
        })
}

/// Binds the report socket: 0660, in `group` when given, so the group's members may write
/// reports. Its directory must let them in too: a directory the agent creates for it, or the
/// runtime directory (`/run/heex`), is made 0750 in that group. The state directory (0700,
/// it holds the device key) is never opened up: a socket there serves the agent's user only.
fn bind(path: &Path, group: Option<&str>, state_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let gid = group.map(resolve_group).transpose()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let own = !dir.exists() || dir == Path::new(crate::config::RUNTIME_DIR);
        if dir == state_dir {
            tracing::info!(
                socket = %path.display(),
                "the report socket is in the state directory: only the agent's user can use \
                 it (set socket_path, e.g. /run/heex/agent.sock, for group access)"
            );
        } else if own {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
            if gid.is_some() {
                rustix::fs::chown(dir, None, gid)?;
            }
        }
    }
    // A socket left by a previous run that was killed; never remove anything else.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    // Owner and group (e.g. the robot's programs in the heex group) may write reports.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if gid.is_some() {
        rustix::fs::chown(path, None, gid)?;
    }
    Ok(listener)
}

async fn serve(listener: UnixListener, path: PathBuf, intake: Intake, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                // `heex-agent report` appends under the outbox lock itself, then connects
                // here only to say so: delivery needs no polling to notice.
                intake.wake();
                tokio::spawn(connection(stream, intake.clone(), cancel.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "report socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

enum Pending {
    Done(Result<u64, OutboxError>),
    Waiting(oneshot::Receiver<Result<u64, OutboxError>>),
}

/// One client: lines in, one answer line per line out, in order. Submissions are queued
/// as they arrive, so a client that pipelines gets its reports grouped into few fsyncs.
async fn connection(stream: UnixStream, intake: Intake, cancel: CancellationToken) {
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(1024);
    let writer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let answer = match p {
                Pending::Done(r) => r,
                Pending::Waiting(w) => w.await.unwrap_or(Err(OutboxError::Closed)),
            };
            let line = match answer {
                Ok(seq) => serde_json::json!({"ok": true, "seq": seq}),
                Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
            };
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = cancel.cancelled() => break,
            r = limited.read_until(b'\n', &mut line) => r,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE {
            let _ = tx
                .send(Pending::Done(Err(OutboxError::LineTooLong {
                    line_max: MAX_LINE,
                    max: MAX_REPORT_BYTES,
                })))
                .await;
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let pending = match outbox::prepare(&line) {
            Err(e) => Pending::Done(Err(e)),
            Ok(payload) => {
                let (reply, answer) = oneshot::channel();
                if intake.tx.send(Submission { payload, reply }).is_err() {
                    Pending::Done(Err(OutboxError::Closed))
                } else {
                    Pending::Waiting(answer)
                }
            }
        };
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
