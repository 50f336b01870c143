//! `heex-agent report`: queue one report straight into the outbox (under its lock), whether
//! or not the daemon runs.

use std::io::Read;
use std::path::{Path, PathBuf};

use heex_proto::exit;

use crate::outbox::{self, Outbox, OutboxError};
use crate::{AgentError, Config};

/// The exit code for an outbox error: 75 when the outbox or the disk holding it is full
/// (retry later), 65 for a bad report, 73 for a file error.
pub fn exit_code(e: &OutboxError) -> i32 {
    match e {
        OutboxError::Full { .. } | OutboxError::DiskFull { .. } => exit::TEMPFAIL,
        OutboxError::TooLarge { .. }
        | OutboxError::LineTooLong { .. }
        | OutboxError::Invalid(_) => exit::DATA_ERROR,
        OutboxError::Io { .. } => exit::FILE_ERROR,
        _ => exit::SOFTWARE,
    }
}

/// Reads the report (from `data`, `file` — `-` meaning standard input — or standard input),
/// appends it durably and returns its sequence number.
pub fn run(
    config_path: &Path,
    data: Option<String>,
    file: Option<PathBuf>,
    stdin: bool,
) -> Result<u64, AgentError> {
    let config = Config::load(config_path)?;
    let raw = match (data, file) {
        (Some(d), _) => d.into_bytes(),
        (None, Some(f)) if f.as_os_str() != "-" => std::fs::read(&f)
            .map_err(|e| AgentError::ReportInput(format!("{}: {e}", f.display())))?,
        (None, _) => {
            let _ = stdin;
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| AgentError::ReportInput(format!("standard input: {e}")))?;
            buf
        }
    };
    let payload = outbox::prepare(&raw)?;
    let mut outbox = match Outbox::open(&config.outbox_dir(), config.outbox_max_bytes) {
        Ok(o) => o,
        // Not the agent's user: hand the report to the daemon over its socket, which the
        // socket's group may use.
        Err(OutboxError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            return via_socket(&config, &payload);
        }
        Err(e) => return Err(e.into()),
    };
    let mut answers = outbox.append(&[payload])?;
    let seq = answers.pop().ok_or(OutboxError::Closed)??;
    // The report is durable; a running daemon is told to deliver it now (best effort: a
    // daemon that isn't running reads the outbox when it starts).
    let _ = std::os::unix::net::UnixStream::connect(config.socket_path());
    Ok(seq)
}

/// Submits `payload` on the daemon's report socket and waits for its answer.
fn via_socket(config: &Config, payload: &[u8]) -> Result<u64, AgentError> {
    use std::io::{BufRead, BufReader, Write};
    let socket = config.socket_path();
    let refused = |why: String| {
        AgentError::ReportAccess(format!(
            "cannot queue the report: this user may not write the outbox in {} and {why}; run \
             as the agent's user, or as a member of the report socket's group (socket_group \
             in agent.toml)",
            config.state_dir.display()
        ))
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).map_err(|e| {
        refused(match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                format!("has no access to the report socket {}", socket.display())
            }
            _ => format!("cannot reach the agent on {}: {e}", socket.display()),
        })
    })?;
    let mut line = payload.to_vec();
    line.push(b'\n');
    let io = |e: std::io::Error| AgentError::ReportInput(format!("{}: {e}", socket.display()));
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let answer: serde_json::Value = serde_json::from_str(&answer).map_err(|_| {
        AgentError::ReportInput(format!("{}: the agent did not answer", socket.display()))
    })?;
    match answer["seq"].as_u64() {
        Some(seq) if answer["ok"] == true => Ok(seq),
        _ => Err(AgentError::ReportAccess(format!(
            "the agent refused the report: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ))),
    }
}
