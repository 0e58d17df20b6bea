//! QEMU guest agent (qemu-ga) client.
//!
//! The agent sits behind a QEMU chardev that listens whether or not the guest
//! has opened its end. Until it does, QEMU does not read what we write, and
//! when it finally does the agent may answer commands from an earlier,
//! abandoned exchange. So the stream is never trusted: every exchange after a
//! timeout or a protocol error starts with `guest-sync-delimited`, whose reply
//! is preceded by a 0xFF byte that cannot occur in JSON text and carries a
//! fresh id, so everything older can be discarded.

pub(crate) mod poll;
mod wire;
pub(crate) mod worker;

use wire::{decode, decode_base64, initial_sync_id, protocol, reply_result, Budget};

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Largest reply accepted. `guest-exec-status` can carry two 16 MiB outputs
/// as base64 (about 43 MiB together); anything larger is a broken peer.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Raw bytes sent per `guest-file-write`: large enough that a file costs few
/// round trips, small enough that one request stays far below the agent's
/// and our reply limits once base64-encoded.
pub(crate) const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Raw bytes requested per `guest-file-read`, for the same reasons.
pub(crate) const READ_CHUNK_BYTES: u64 = 1024 * 1024;

/// How long `shutdown` may spend re-syncing and sending `guest-shutdown`; it
/// takes no timeout argument because it is a fire-and-forget operation.
pub(crate) const SHUTDOWN_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One slice of `shutdown`'s listening for an error reply, between which it asks
/// whether to go on listening (the runner stops it once QEMU reports the reset).
pub(crate) const SHUTDOWN_LISTEN_SLICE: Duration = Duration::from_millis(200);

/// How long `shutdown` listens for an error reply at most. `guest-shutdown`
/// answers only on failure, and not always fast: qemu-ga 7.2
/// (qga/commands-posix.c, `qmp_guest_shutdown`) waits for the guest's shutdown
/// command to exit, and systemd's `shutdown` without D-Bus takes seconds to give
/// up ("Failed to connect to bus"). A reply that comes after listening stopped
/// would be lost, and the reboot then wrongly waited for as a hang.
pub(crate) const SHUTDOWN_REPLY_WINDOW: Duration = Duration::from_secs(60);

/// Budget for closing a guest file handle after an earlier step failed. It
/// is spent beyond the caller's timeout, since a leaked handle stays open in
/// the agent for the life of the guest.
pub(crate) const CLEANUP_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between attempts while QEMU has not yet created the socket.
pub(crate) const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// Size of one socket read.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The byte that delimits a `guest-sync-delimited` reply. Invalid in UTF-8,
/// so it also resets the agent's JSON parser when we send it.
pub const SENTINEL: u8 = 0xFF;

/// Errors from the guest agent client.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to guest agent socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("guest agent command {command} timed out after {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("guest agent protocol error: {detail}")]
    Protocol { detail: String },
    #[error("guest agent command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("guest agent connection closed")]
    Closed,
    #[error("i/o error on guest agent socket")]
    Io(#[source] io::Error),
    #[error("invalid argument: {detail}")]
    InvalidArgument { detail: String },
    #[error("guest file {path} is larger than {limit} bytes")]
    FileTooLarge { path: String, limit: u64 },
}

/// Result of `guest-exec-status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecStatus {
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Modes of `guest-shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    Reboot,
    Powerdown,
    Halt,
}

/// What `guest-info` says about the agent itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentInfo {
    /// The agent's own version string (qemu-ga's QEMU version, e.g. "7.2.0" or
    /// virtio-win's "107.0.1").
    pub version: String,
    /// The commands it has enabled.
    pub enabled: Vec<String>,
}

impl ShutdownMode {
    fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Reboot => "reboot",
            ShutdownMode::Powerdown => "powerdown",
            ShutdownMode::Halt => "halt",
        }
    }
}

/// A connection to one guest agent. Synchronous: one exchange at a time.
pub struct AgentClient {
    stream: UnixStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
    /// True until a sync succeeds, and again after anything that may leave
    /// unread or half-written bytes in either direction.
    needs_sync: bool,
    next_sync_id: u64,
}

impl AgentClient {
    /// Connects to QEMU's chardev socket, retrying until it exists and
    /// accepts, up to `timeout`. The agent sends no greeting and the guest
    /// may not be listening yet, so nothing is exchanged here: the first call
    /// syncs.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<AgentClient, AgentError> {
        let budget = Budget::new(timeout);
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                // QEMU creates the socket some time after it starts; until
                // then the path is missing, or a stale file refuses.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && budget.remaining("connect").is_ok_and(|left| {
                        left.is_none_or(|left| left > CONNECT_RETRY_INTERVAL)
                    }) =>
                {
                    thread::sleep(CONNECT_RETRY_INTERVAL);
                }
                Err(source) => {
                    return Err(AgentError::Connect {
                        path: socket.to_path_buf(),
                        source,
                    })
                }
            }
        };
        Ok(AgentClient {
            stream,
            buf: Vec::new(),
            needs_sync: true,
            next_sync_id: initial_sync_id(),
        })
    }

    /// Sends 0xFF and `guest-sync-delimited` with a fresh id, discards
    /// everything up to the agent's 0xFF, and skips replies carrying other
    /// (older) ids until the matching one arrives or `timeout` passes.
    pub fn sync(&mut self, timeout: Duration) -> Result<(), AgentError> {
        self.sync_within(Budget::new(timeout))
    }

    /// `guest-ping`.
    pub fn ping(&mut self, timeout: Duration) -> Result<(), AgentError> {
        self.call("guest-ping", None, Budget::new(timeout))
            .map(drop)
    }

    /// `guest-get-time`: the guest's clock, nanoseconds since the Unix epoch (UTC as
    /// the guest sees it; qga's Windows side reads GetSystemTimeAsFileTime).
    pub fn guest_time(&mut self, timeout: Duration) -> Result<i64, AgentError> {
        let command = "guest-get-time";
        decode(command, self.call(command, None, Budget::new(timeout))?)
    }

    /// Names of the commands the agent reports as enabled in `guest-info`.
    pub fn info_commands(&mut self, timeout: Duration) -> Result<Vec<String>, AgentError> {
        self.info(timeout).map(|info| info.enabled)
    }

    /// `guest-info`: the agent's version and the commands it has enabled
    /// (qapi/qga-qapi-schema.json, GuestAgentInfo).
    pub(crate) fn info(&mut self, timeout: Duration) -> Result<AgentInfo, AgentError> {
        #[derive(Deserialize)]
        struct Info {
            // Always sent by qemu-ga; a reply without it still lists the commands.
            #[serde(default)]
            version: String,
            supported_commands: Vec<CommandInfo>,
        }
        #[derive(Deserialize)]
        struct CommandInfo {
            name: String,
            enabled: bool,
        }
        let info: Info = decode(
            "guest-info",
            self.call("guest-info", None, Budget::new(timeout))?,
        )?;
        Ok(AgentInfo {
            version: info.version,
            enabled: info
                .supported_commands
                .into_iter()
                .filter(|c| c.enabled)
                .map(|c| c.name)
                .collect(),
        })
    }

    /// `guest-exec` with captured output; `argv[0]` is the program path. An
    /// empty `env` leaves the agent's environment in place (a non-empty one
    /// replaces it). Returns the guest pid.
    pub fn exec_start(
        &mut self,
        argv: &[String],
        env: &[String],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<i64, AgentError> {
        let Some((path, args)) = argv.split_first() else {
            return Err(AgentError::InvalidArgument {
                detail: "exec_start needs a non-empty argv".to_string(),
            });
        };
        let mut arguments = Map::new();
        arguments.insert("path".to_string(), json!(path));
        arguments.insert("arg".to_string(), json!(args));
        if !env.is_empty() {
            arguments.insert("env".to_string(), json!(env));
        }
        if let Some(input) = input {
            arguments.insert("input-data".to_string(), json!(BASE64.encode(input)));
        }
        arguments.insert("capture-output".to_string(), json!(true));
        #[derive(Deserialize)]
        struct Started {
            pid: i64,
        }
        let started: Started = decode(
            "guest-exec",
            self.call(
                "guest-exec",
                Some(Value::Object(arguments)),
                Budget::new(timeout),
            )?,
        )?;
        Ok(started.pid)
    }

    /// `guest-exec-status`, with the base64 output decoded.
    pub fn exec_status(&mut self, pid: i64, timeout: Duration) -> Result<ExecStatus, AgentError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Status {
            exited: bool,
            exitcode: Option<i32>,
            signal: Option<i32>,
            out_data: Option<String>,
            err_data: Option<String>,
            #[serde(default)]
            out_truncated: bool,
            #[serde(default)]
            err_truncated: bool,
        }
        let command = "guest-exec-status";
        let status: Status = decode(
            command,
            self.call(command, Some(json!({"pid": pid})), Budget::new(timeout))?,
        )?;
        let output = |data: Option<String>| match data {
            Some(text) => decode_base64(command, &text),
            None => Ok(Vec::new()),
        };
        Ok(ExecStatus {
            exited: status.exited,
            exit_code: status.exitcode,
            signal: status.signal,
            stdout: output(status.out_data)?,
            stderr: output(status.err_data)?,
            stdout_truncated: status.out_truncated,
            stderr_truncated: status.err_truncated,
        })
    }

    /// Creates or truncates `guest_path` and writes `data` in chunks of
    /// [`WRITE_CHUNK_BYTES`]. The handle is closed even when a write fails.
    pub fn write_file(
        &mut self,
        guest_path: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let budget = Budget::new(timeout);
        let handle = self.open(guest_path, "w", budget)?;
        let written = self.write_chunks(handle, data, budget);
        self.finish_with_close(handle, written, budget)
    }

    /// Reads `guest_path` to its end. Fails with [`AgentError::FileTooLarge`]
    /// once more than `max_bytes` arrive; the handle is closed either way.
    pub fn read_file(
        &mut self,
        guest_path: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, AgentError> {
        let budget = Budget::new(timeout);
        let handle = self.open(guest_path, "r", budget)?;
        let read = self.read_chunks(handle, guest_path, max_bytes, budget);
        self.finish_with_close(handle, read, budget)
    }

    /// Reads at most `max_bytes` from the start of `guest_path` (a dump's header),
    /// however large the file: `guest-file-read` takes a `count`, so the rest never
    /// crosses. The handle is closed either way.
    pub fn read_file_head(
        &mut self,
        guest_path: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, AgentError> {
        let budget = Budget::new(timeout);
        let handle = self.open(guest_path, "r", budget)?;
        let mut read = || -> Result<Vec<u8>, AgentError> {
            let mut data = Vec::new();
            while (data.len() as u64) < max_bytes {
                let wanted = READ_CHUNK_BYTES.min(max_bytes - data.len() as u64);
                let (bytes, eof) = self.read_chunk(handle, wanted, budget)?;
                if bytes.len() as u64 > wanted {
                    return Err(protocol(format!(
                        "guest-file-read sent {} bytes for a count of {wanted}",
                        bytes.len()
                    )));
                }
                data.extend_from_slice(&bytes);
                if eof || bytes.is_empty() {
                    break;
                }
            }
            Ok(data)
        };
        let result = read();
        self.finish_with_close(handle, result, budget)
    }

    /// Sends `guest-shutdown`, then listens for its error reply for up to
    /// `listen`, or until `done` says the shutdown is confirmed elsewhere. The agent
    /// replies only on failure, so silence (or the connection closing as the VM
    /// goes down) counts as success; confirm the shutdown from QMP events.
    pub fn shutdown(
        &mut self,
        mode: ShutdownMode,
        listen: Duration,
        done: &dyn Fn() -> bool,
    ) -> Result<(), AgentError> {
        let command = "guest-shutdown";
        let budget = Budget::new(SHUTDOWN_SEND_TIMEOUT);
        if self.needs_sync {
            self.sync_within(budget)?;
        }
        // Whatever happens next, the agent is going away or answered in an
        // unknown way: the next exchange must start clean.
        self.needs_sync = true;
        self.send_command(command, Some(&json!({"mode": mode.as_str()})), budget)?;
        let until = std::time::Instant::now() + listen;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.read_value(command, Budget::new(SHUTDOWN_LISTEN_SLICE.min(left))) {
                Ok(reply) => return reply_result(command, reply).map(drop),
                Err(AgentError::Closed) => return Ok(()),
                Err(AgentError::Timeout { .. }) => {
                    if done() || std::time::Instant::now() >= until {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn open(&mut self, path: &str, mode: &str, budget: Budget) -> Result<i64, AgentError> {
        let command = "guest-file-open";
        decode(
            command,
            self.call(command, Some(json!({"path": path, "mode": mode})), budget)?,
        )
    }

    fn write_chunks(&mut self, handle: i64, data: &[u8], budget: Budget) -> Result<(), AgentError> {
        #[derive(Deserialize)]
        struct Written {
            count: u64,
        }
        let command = "guest-file-write";
        for chunk in data.chunks(WRITE_CHUNK_BYTES) {
            let arguments = json!({"handle": handle, "buf-b64": BASE64.encode(chunk)});
            let written: Written = decode(command, self.call(command, Some(arguments), budget)?)?;
            if written.count != chunk.len() as u64 {
                return Err(protocol(format!(
                    "{command} wrote {} of {} bytes",
                    written.count,
                    chunk.len()
                )));
            }
        }
        Ok(())
    }

    fn read_chunks(
        &mut self,
        handle: i64,
        path: &str,
        max_bytes: u64,
        budget: Budget,
    ) -> Result<Vec<u8>, AgentError> {
        let mut data = Vec::new();
        loop {
            // Ask for at most one byte beyond the limit: enough to detect an
            // oversized file without pulling much of it across.
            let wanted = READ_CHUNK_BYTES.min((max_bytes - data.len() as u64).saturating_add(1));
            let (bytes, eof) = self.read_chunk(handle, wanted, budget)?;
            data.extend_from_slice(&bytes);
            if data.len() as u64 > max_bytes {
                return Err(AgentError::FileTooLarge {
                    path: path.to_string(),
                    limit: max_bytes,
                });
            }
            if eof {
                return Ok(data);
            }
        }
    }

    /// One `guest-file-read` of up to `wanted` bytes: the bytes (checked against
    /// the count the agent reported) and whether the file ended.
    fn read_chunk(
        &mut self,
        handle: i64,
        wanted: u64,
        budget: Budget,
    ) -> Result<(Vec<u8>, bool), AgentError> {
        #[derive(Deserialize)]
        struct Chunk {
            count: u64,
            #[serde(rename = "buf-b64")]
            buf_b64: String,
            eof: bool,
        }
        let command = "guest-file-read";
        let chunk: Chunk = decode(
            command,
            self.call(
                command,
                Some(json!({"handle": handle, "count": wanted})),
                budget,
            )?,
        )?;
        let bytes = decode_base64(command, &chunk.buf_b64)?;
        if bytes.len() as u64 != chunk.count {
            return Err(protocol(format!(
                "{command} reported {} bytes but carried {}",
                chunk.count,
                bytes.len()
            )));
        }
        Ok((bytes, chunk.eof))
    }

    /// Closes `handle` and returns `result`. On success a close failure is
    /// the error; on failure the close is best effort and the first error wins.
    fn finish_with_close<T>(
        &mut self,
        handle: i64,
        result: Result<T, AgentError>,
        budget: Budget,
    ) -> Result<T, AgentError> {
        let command = "guest-file-close";
        let arguments = Some(json!({"handle": handle}));
        match result {
            Ok(value) => self.call(command, arguments, budget).map(|_| value),
            Err(e) => {
                let cleanup = if budget.remaining(command).is_ok() {
                    budget
                } else {
                    Budget::new(CLEANUP_CLOSE_TIMEOUT)
                };
                let _ = self.call(command, arguments, cleanup);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
