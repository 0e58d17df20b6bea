//! QEMU guest agent (qemu-ga) client.
//!
//! The agent sits behind a QEMU chardev that listens whether or not the guest
//! has opened its end. Until it does, QEMU does not read what we write, and
//! when it finally does the agent may answer commands from an earlier,
//! abandoned exchange. So the stream is never trusted: every exchange after a
//! timeout or a protocol error starts with `guest-sync-delimited`, whose reply
//! is preceded by a 0xFF byte that cannot occur in JSON text and carries a
//! fresh id, so everything older can be discarded.

pub mod worker;

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
pub const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Raw bytes requested per `guest-file-read`, for the same reasons.
pub const READ_CHUNK_BYTES: u64 = 1024 * 1024;

/// How long `shutdown` may spend re-syncing and sending `guest-shutdown`; it
/// takes no timeout argument because it is a fire-and-forget operation.
pub const SHUTDOWN_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `shutdown` listens for an error reply. `guest-shutdown` answers
/// only on failure, and the agent fails fast (bad mode, no permission), so
/// silence for this long means the shutdown is under way.
pub const SHUTDOWN_ERROR_GRACE: Duration = Duration::from_secs(1);

/// Budget for closing a guest file handle after an earlier step failed. It
/// is spent beyond the caller's timeout, since a leaked handle stays open in
/// the agent for the life of the guest.
pub const CLEANUP_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between attempts while QEMU has not yet created the socket.
pub const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(20);

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

/// The time budget of one public call.
#[derive(Clone, Copy)]
struct Budget {
    /// `None` when the timeout is too large to represent: no limit.
    deadline: Option<Instant>,
    total: Duration,
}

impl Budget {
    fn new(total: Duration) -> Self {
        Budget {
            deadline: Instant::now().checked_add(total),
            total,
        }
    }

    /// Time left (`None`: unlimited), or the timeout error naming `command`.
    fn remaining(&self, command: &str) -> Result<Option<Duration>, AgentError> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.timeout(command))
        } else {
            Ok(Some(left))
        }
    }

    fn timeout(&self, command: &str) -> AgentError {
        AgentError::Timeout {
            command: command.to_string(),
            after: self.total,
        }
    }
}

fn protocol(detail: impl Into<String>) -> AgentError {
    AgentError::Protocol {
        detail: detail.into(),
    }
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

    /// Names of the commands the agent reports as enabled in `guest-info`.
    pub fn info_commands(&mut self, timeout: Duration) -> Result<Vec<String>, AgentError> {
        #[derive(Deserialize)]
        struct Info {
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
        Ok(info
            .supported_commands
            .into_iter()
            .filter(|c| c.enabled)
            .map(|c| c.name)
            .collect())
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

    /// Sends `guest-shutdown`. The agent replies only on failure, so silence
    /// for [`SHUTDOWN_ERROR_GRACE`] (or the connection closing as the VM goes
    /// down) counts as success; confirm the shutdown from QMP events.
    pub fn shutdown(&mut self, mode: ShutdownMode) -> Result<(), AgentError> {
        let command = "guest-shutdown";
        let budget = Budget::new(SHUTDOWN_SEND_TIMEOUT);
        if self.needs_sync {
            self.sync_within(budget)?;
        }
        // Whatever happens next, the agent is going away or answered in an
        // unknown way: the next exchange must start clean.
        self.needs_sync = true;
        self.send_command(command, Some(&json!({"mode": mode.as_str()})), budget)?;
        let grace = Budget::new(SHUTDOWN_ERROR_GRACE);
        match self.read_value(command, grace) {
            Ok(reply) => reply_result(command, reply).map(drop),
            Err(AgentError::Timeout { .. } | AgentError::Closed) => Ok(()),
            Err(e) => Err(e),
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
        #[derive(Deserialize)]
        struct Chunk {
            count: u64,
            #[serde(rename = "buf-b64")]
            buf_b64: String,
            eof: bool,
        }
        let command = "guest-file-read";
        let mut data = Vec::new();
        loop {
            // Ask for at most one byte beyond the limit: enough to detect an
            // oversized file without pulling much of it across.
            let wanted = READ_CHUNK_BYTES.min((max_bytes - data.len() as u64).saturating_add(1));
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
            data.extend_from_slice(&bytes);
            if data.len() as u64 > max_bytes {
                return Err(AgentError::FileTooLarge {
                    path: path.to_string(),
                    limit: max_bytes,
                });
            }
            if chunk.eof {
                return Ok(data);
            }
        }
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

    /// One command and its reply, syncing first if the stream is suspect.
    fn call(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        budget: Budget,
    ) -> Result<Value, AgentError> {
        if self.needs_sync {
            self.sync_within(budget)?;
        }
        // Pessimistic: anything but a complete reply leaves the stream suspect.
        self.needs_sync = true;
        self.send_command(command, arguments.as_ref(), budget)?;
        let reply = self.read_value(command, budget)?;
        // A well-formed reply, even an error one, means we are in step.
        let result = reply_result(command, reply);
        if !matches!(result, Err(AgentError::Protocol { .. })) {
            self.needs_sync = false;
        }
        result
    }

    fn sync_within(&mut self, budget: Budget) -> Result<(), AgentError> {
        let command = "guest-sync-delimited";
        self.needs_sync = true;
        let id = self.next_sync_id;
        self.next_sync_id = next_sync_id(id);
        let mut message = vec![SENTINEL];
        message.extend_from_slice(
            json!({"execute": command, "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        message.push(b'\n');
        self.write_all(&message, command, budget)?;
        loop {
            // Everything before the agent's sentinel is stale: replies to
            // abandoned commands, the parse error our own 0xFF provokes.
            loop {
                if let Some(at) = self.buf.iter().position(|&b| b == SENTINEL) {
                    self.buf.drain(..=at);
                    break;
                }
                self.buf.clear();
                self.fill(command, budget)?;
            }
            match self.read_value(command, budget) {
                Ok(reply) if reply.get("return").and_then(Value::as_u64) == Some(id) => {
                    self.needs_sync = false;
                    return Ok(());
                }
                // An older sync's reply, or junk after a stray 0xFF: keep
                // looking for ours.
                Ok(_) | Err(AgentError::Protocol { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_command(
        &mut self,
        command: &str,
        arguments: Option<&Value>,
        budget: Budget,
    ) -> Result<(), AgentError> {
        let mut message = Map::new();
        message.insert("execute".to_string(), json!(command));
        if let Some(arguments) = arguments {
            message.insert("arguments".to_string(), arguments.clone());
        }
        let mut bytes = Value::Object(message).to_string().into_bytes();
        bytes.push(b'\n');
        self.write_all(&bytes, command, budget)
    }

    fn write_all(&mut self, bytes: &[u8], command: &str, budget: Budget) -> Result<(), AgentError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            // Bounded per write because QEMU stops reading while the guest
            // has not opened its port, which would block us forever.
            let left = budget.remaining(command)?;
            self.stream
                .set_write_timeout(left)
                .map_err(AgentError::Io)?;
            match self.stream.write(rest) {
                Ok(0) => return Err(AgentError::Closed),
                Ok(n) => rest = &rest[n..],
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(budget.timeout(command))
                    }
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                        return Err(AgentError::Closed)
                    }
                    _ => return Err(AgentError::Io(e)),
                },
            }
        }
        Ok(())
    }

    /// Reads more bytes into `buf`; returns how many arrived.
    fn fill(&mut self, command: &str, budget: Budget) -> Result<usize, AgentError> {
        let mut chunk = [0u8; READ_BUFFER_BYTES];
        loop {
            let left = budget.remaining(command)?;
            self.stream.set_read_timeout(left).map_err(AgentError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(AgentError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(budget.timeout(command))
                    }
                    io::ErrorKind::ConnectionReset => return Err(AgentError::Closed),
                    _ => return Err(AgentError::Io(e)),
                },
            }
        }
    }

    /// Parses the next JSON object from the stream. Objects are usually
    /// newline-terminated, but completeness is judged by the parser, not by
    /// line breaks. On a syntax error the offending bytes stay in `buf` for
    /// the next sync to discard.
    fn read_value(&mut self, command: &str, budget: Budget) -> Result<Value, AgentError> {
        // Re-parsing a large reply on every read would be quadratic, so parse
        // only once the scan says the object may be complete. Parsing whenever a
        // '}' arrived was not enough: a hostile guest fills a string with them.
        let mut frame = Frame::default();
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if start > 0 {
                frame = Frame::default();
            }
            if let Some(&first) = self.buf.first() {
                if first != b'{' {
                    return Err(protocol(format!(
                        "expected a json object, got byte {first:#04x}"
                    )));
                }
            }
            if frame.worth_parsing(&self.buf) {
                let mut values =
                    serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.buf.drain(..used);
                        return Ok(value);
                    }
                    // The scan saw the object close (or break), so an error here,
                    // even one about a missing end, is final: waiting for more
                    // would only re-parse the same bytes.
                    Some(Err(e)) => return Err(protocol(format!("malformed json: {e}"))),
                    None => {}
                }
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(protocol(format!(
                    "reply longer than {MAX_REPLY_BYTES} bytes"
                )));
            }
            self.fill(command, budget)?;
        }
    }
}

/// Scans a JSON object as it arrives, each byte once, to tell when it may be
/// complete: when its outermost brace closes, or at a byte that cannot be in
/// valid JSON there (so the parser reports the error without waiting). The
/// scan only finds where to parse; the parser still judges what it finds.
#[derive(Default)]
struct Frame {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// Open braces and brackets.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The scan found the end of the object or a byte that ends its validity.
    done: bool,
}

impl Frame {
    /// Scans what arrived since the last call; true once the buffer is worth
    /// parsing.
    fn worth_parsing(&mut self, buf: &[u8]) -> bool {
        for &byte in buf.get(self.scanned..).unwrap_or_default() {
            if self.done {
                break;
            }
            self.scanned += 1;
            self.done = match byte {
                // Never valid in UTF-8: a stray 0xFF (the sync delimiter) breaks
                // the object, and the next sync must find it, not wait.
                SENTINEL => true,
                _ if self.in_string => {
                    if self.escaped {
                        self.escaped = false;
                    } else if byte == b'\\' {
                        self.escaped = true;
                    } else if byte == b'"' {
                        self.in_string = false;
                    }
                    // JSON strings hold no raw control characters.
                    byte < 0x20
                }
                b'"' => {
                    self.in_string = true;
                    false
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    false
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.depth == 0
                }
                // Outside strings JSON is ASCII.
                _ => !byte.is_ascii(),
            };
        }
        self.done
    }
}

/// Turns a reply object into its `return` value or a command error.
fn reply_result(command: &str, reply: Value) -> Result<Value, AgentError> {
    let Value::Object(mut object) = reply else {
        return Err(protocol(format!("reply to {command} is not an object")));
    };
    if let Some(value) = object.remove("return") {
        return Ok(value);
    }
    if let Some(error) = object.get("error") {
        let text = |key| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Err(AgentError::Command {
            command: command.to_string(),
            class: text("class"),
            desc: text("desc"),
        });
    }
    Err(protocol(format!(
        "reply to {command} has neither return nor error: {}",
        Value::Object(object)
    )))
}

fn decode<T: for<'de> Deserialize<'de>>(command: &str, value: Value) -> Result<T, AgentError> {
    serde_json::from_value(value)
        .map_err(|e| protocol(format!("unexpected reply to {command}: {e}")))
}

fn decode_base64(command: &str, text: &str) -> Result<Vec<u8>, AgentError> {
    BASE64
        .decode(text)
        .map_err(|e| protocol(format!("bad base64 in reply to {command}: {e}")))
}

/// Sync ids only need to differ from those of earlier clients on the same
/// socket (whose replies may still be queued), so time and pid suffice.
/// Kept below 2^53 so any JSON implementation round-trips them exactly.
fn initial_sync_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = nanos ^ (u64::from(std::process::id()) << 20);
    (mixed & ((1 << 52) - 1)) | 1
}

fn next_sync_id(id: u64) -> u64 {
    (id % ((1 << 52) - 1)) + 1
}

#[cfg(test)]
mod tests {
    //! These tests script a fake qemu-ga over a real Unix socket. A fake is
    //! used because a real agent cannot be made on demand to stay silent, send
    //! stale replies or garbage, or answer a sync only after old junk.

    use super::*;
    use crate::testing::fake_peer::{AgentPeer, FakePeer, Request, AGENT_PARSE_ERROR};
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    const TEST_TIMEOUT: Duration = Duration::from_secs(30);

    fn fake(
        script: impl FnOnce(AgentPeer) + Send + 'static,
    ) -> (FakePeer, AgentClient, JoinHandle<()>) {
        let server = FakePeer::bind("qga.sock");
        let handle = server.serve(|stream| script(AgentPeer::new(stream)));
        let client = AgentClient::connect(server.path(), TEST_TIMEOUT).unwrap();
        (server, client, handle)
    }

    #[test]
    fn sync_skips_junk_parse_error_and_stale_replies() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            // Left over from an earlier session: no sentinel, not even JSON.
            agent.send(b"{\"return\": {\"pid\": 1}}\n\x01\x02 half a rep");
            let Some(Request::Sentinel) = agent.next() else {
                panic!("expected the sentinel first")
            };
            agent.send(AGENT_PARSE_ERROR);
            let Some(Request::Command(sync)) = agent.next() else {
                panic!("expected a sync")
            };
            assert_eq!(sync["execute"], "guest-sync-delimited");
            let id = sync["arguments"]["id"].as_u64().unwrap();
            // A stale sync reply from an abandoned exchange, then ours.
            agent.send(&[SENTINEL]);
            agent.reply(json!(id - 1));
            agent.send(&[SENTINEL]);
            agent.reply(json!(id));
            let ping = agent.command();
            assert_eq!(ping["execute"], "guest-ping");
            agent.reply(json!({}));
        });
        client.ping(TEST_TIMEOUT).unwrap();
        assert!(!client.needs_sync);
        assert!(client.buf.iter().all(u8::is_ascii_whitespace));
        peer.join().unwrap();
    }

    #[test]
    fn each_sync_uses_a_fresh_id() {
        let (tx, rx) = mpsc::channel();
        let (_dir, mut client, peer) = fake(move |mut agent| {
            while let Some(request) = agent.next() {
                if let Request::Command(sync) = request {
                    let id = sync["arguments"]["id"].clone();
                    tx.send(id.as_u64().unwrap()).unwrap();
                    agent.send(&[SENTINEL]);
                    agent.reply(id);
                }
            }
        });
        client.sync(TEST_TIMEOUT).unwrap();
        client.sync(TEST_TIMEOUT).unwrap();
        drop(client);
        let ids: Vec<u64> = rx.iter().collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert!(ids.iter().all(|&id| id < 1 << 53));
        peer.join().unwrap();
    }

    #[test]
    fn exec_start_and_status_round_trip() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            let exec = agent.command();
            assert_eq!(exec["execute"], "guest-exec");
            let args = &exec["arguments"];
            assert_eq!(args["path"], "/bin/sh");
            assert_eq!(args["arg"], json!(["-c", "cat; exit 3"]));
            assert_eq!(args["env"], json!(["A=1"]));
            assert_eq!(args["input-data"], BASE64.encode(b"in\xff"));
            assert_eq!(args["capture-output"], true);
            agent.reply(json!({"pid": 4242}));
            let status = agent.command();
            assert_eq!(status["execute"], "guest-exec-status");
            assert_eq!(status["arguments"]["pid"], 4242);
            agent.reply(json!({
                "exited": true,
                "exitcode": 3,
                "out-data": BASE64.encode(b"in\xff"),
                "err-data": BASE64.encode(b"oops\n"),
                "out-truncated": true
            }));
        });
        let argv = ["/bin/sh", "-c", "cat; exit 3"].map(String::from);
        let pid = client
            .exec_start(&argv, &["A=1".to_string()], Some(b"in\xff"), TEST_TIMEOUT)
            .unwrap();
        assert_eq!(pid, 4242);
        let status = client.exec_status(pid, TEST_TIMEOUT).unwrap();
        assert_eq!(
            status,
            ExecStatus {
                exited: true,
                exit_code: Some(3),
                signal: None,
                stdout: b"in\xff".to_vec(),
                stderr: b"oops\n".to_vec(),
                stdout_truncated: true,
                stderr_truncated: false,
            }
        );
        peer.join().unwrap();
    }

    #[test]
    fn exec_start_rejects_an_empty_argv_without_sending() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            assert!(agent.try_command().is_none(), "nothing should be sent");
        });
        assert!(matches!(
            client.exec_start(&[], &[], None, TEST_TIMEOUT),
            Err(AgentError::InvalidArgument { .. })
        ));
        drop(client);
        peer.join().unwrap();
    }

    #[test]
    fn info_commands_lists_only_enabled_ones() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            assert_eq!(agent.command()["execute"], "guest-info");
            agent.reply(json!({"version": "7.2.0", "supported_commands": [
                {"name": "guest-exec", "enabled": true, "success-response": true},
                {"name": "guest-file-open", "enabled": false, "success-response": true},
                {"name": "guest-shutdown", "enabled": true, "success-response": false}
            ]}));
        });
        assert_eq!(
            client.info_commands(TEST_TIMEOUT).unwrap(),
            ["guest-exec", "guest-shutdown"]
        );
        peer.join().unwrap();
    }

    #[test]
    fn write_file_sends_chunks_and_closes() {
        let data: Vec<u8> = (0..WRITE_CHUNK_BYTES * 5 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let expected = data.clone();
        let (_dir, mut client, peer) = fake(move |mut agent| {
            let open = agent.command();
            assert_eq!(open["execute"], "guest-file-open");
            assert_eq!(open["arguments"], json!({"path": "/tmp/x", "mode": "w"}));
            agent.reply(json!(7));
            let mut received = Vec::new();
            let mut writes = 0;
            loop {
                let cmd = agent.command();
                if cmd["execute"] == "guest-file-close" {
                    assert_eq!(cmd["arguments"]["handle"], 7);
                    agent.reply(json!({}));
                    break;
                }
                assert_eq!(cmd["execute"], "guest-file-write");
                assert_eq!(cmd["arguments"]["handle"], 7);
                let chunk = BASE64
                    .decode(cmd["arguments"]["buf-b64"].as_str().unwrap())
                    .unwrap();
                assert!(chunk.len() <= WRITE_CHUNK_BYTES);
                agent.reply(json!({"count": chunk.len(), "eof": false}));
                received.extend(chunk);
                writes += 1;
            }
            assert_eq!(writes, 3);
            assert_eq!(received, expected);
        });
        client.write_file("/tmp/x", &data, TEST_TIMEOUT).unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn write_file_closes_the_handle_when_a_write_fails() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
            agent.reply(json!(9));
            assert_eq!(agent.command()["execute"], "guest-file-write");
            agent.send(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"No space left on device\"}}\n");
            let close = agent.command();
            assert_eq!(close["execute"], "guest-file-close");
            assert_eq!(close["arguments"]["handle"], 9);
            agent.reply(json!({}));
        });
        match client.write_file("/tmp/full", b"data", TEST_TIMEOUT) {
            Err(AgentError::Command { command, desc, .. }) => {
                assert_eq!(command, "guest-file-write");
                assert!(desc.contains("No space"));
            }
            other => panic!("expected a command error, got {other:?}"),
        }
        peer.join().unwrap();
    }

    /// Serves a read of `content` in 3-byte pieces, whatever count is asked.
    fn serve_read(agent: &mut AgentPeer, content: &[u8]) -> (usize, bool) {
        assert_eq!(
            agent.command()["arguments"],
            json!({"path": "/etc/f", "mode": "r"})
        );
        agent.reply(json!(5));
        let mut offset = 0;
        let mut reads = 0;
        loop {
            let cmd = agent.command();
            if cmd["execute"] == "guest-file-close" {
                assert_eq!(cmd["arguments"]["handle"], 5);
                agent.reply(json!({}));
                return (reads, true);
            }
            assert_eq!(cmd["execute"], "guest-file-read");
            let count = cmd["arguments"]["count"].as_u64().unwrap() as usize;
            let piece = &content[offset..(offset + count.min(3)).min(content.len())];
            offset += piece.len();
            reads += 1;
            agent.reply(json!({
                "count": piece.len(),
                "buf-b64": BASE64.encode(piece),
                "eof": offset == content.len()
            }));
        }
    }

    #[test]
    fn read_file_loops_until_eof() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            let (reads, closed) = serve_read(&mut agent, b"0123456789");
            assert_eq!(reads, 4);
            assert!(closed);
        });
        assert_eq!(
            client.read_file("/etc/f", 100, TEST_TIMEOUT).unwrap(),
            b"0123456789"
        );
        peer.join().unwrap();
    }

    #[test]
    fn read_file_enforces_max_bytes_and_still_closes() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            let (_, closed) = serve_read(&mut agent, b"0123456789");
            assert!(closed);
        });
        match client.read_file("/etc/f", 4, TEST_TIMEOUT) {
            Err(AgentError::FileTooLarge { path, limit }) => {
                assert_eq!(path, "/etc/f");
                assert_eq!(limit, 4);
            }
            other => panic!("expected file too large, got {other:?}"),
        }
        peer.join().unwrap();
    }

    #[test]
    fn read_file_exactly_at_the_limit_succeeds() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            serve_read(&mut agent, b"012345");
        });
        assert_eq!(
            client.read_file("/etc/f", 6, TEST_TIMEOUT).unwrap(),
            b"012345"
        );
        peer.join().unwrap();
    }

    #[test]
    fn shutdown_without_reply_succeeds() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            let cmd = agent.command();
            assert_eq!(cmd["execute"], "guest-shutdown");
            assert_eq!(cmd["arguments"]["mode"], "powerdown");
            // Stay connected and silent, as a guest going down does.
            let _ = agent.next();
        });
        let started = Instant::now();
        client.shutdown(ShutdownMode::Powerdown).unwrap();
        assert!(started.elapsed() >= SHUTDOWN_ERROR_GRACE);
        assert!(client.needs_sync);
        drop(client);
        peer.join().unwrap();
    }

    #[test]
    fn shutdown_error_reply_is_returned() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            let cmd = agent.command();
            assert_eq!(cmd["arguments"]["mode"], "halt");
            agent.send(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"child process has failed to shutdown\"}}\n");
        });
        match client.shutdown(ShutdownMode::Halt) {
            Err(AgentError::Command { command, desc, .. }) => {
                assert_eq!(command, "guest-shutdown");
                assert!(desc.contains("failed to shutdown"));
            }
            other => panic!("expected a command error, got {other:?}"),
        }
        peer.join().unwrap();
    }

    #[test]
    fn silent_agent_times_out_and_the_next_call_resyncs() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            let first = agent.command();
            assert_eq!(first["execute"], "guest-info");
            // No reply in time. Then the client must sync before its next
            // command; the late reply arrives ahead of that sync's answer.
            let Some(Request::Sentinel) = agent.next() else {
                panic!("expected a re-sync after the timeout")
            };
            agent.reply(json!({"version": "late", "supported_commands": []}));
            let ping = agent.command();
            assert_eq!(ping["execute"], "guest-ping");
            agent.reply(json!({}));
        });
        let after = Duration::from_millis(300);
        match client.info_commands(after) {
            Err(AgentError::Timeout {
                command,
                after: got,
            }) => {
                assert_eq!(command, "guest-info");
                assert_eq!(got, after);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(client.needs_sync);
        client.ping(TEST_TIMEOUT).unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn guest_not_listening_times_out_the_sync() {
        let (_dir, mut client, peer) = fake(|agent| {
            // Like QEMU before the guest opens its port: accept, never read.
            thread::sleep(Duration::from_millis(600));
            drop(agent);
        });
        let started = Instant::now();
        let result = client.sync(Duration::from_millis(200));
        assert!(
            matches!(&result, Err(AgentError::Timeout { command, .. }) if command == "guest-sync-delimited"),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        peer.join().unwrap();
    }

    #[test]
    fn garbage_reply_is_a_protocol_error_then_resync_recovers() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
            agent.send(b"this is not json\n");
            // The next call must re-sync past the garbage.
            let Some(Request::Sentinel) = agent.next() else {
                panic!("expected a re-sync after the protocol error")
            };
            agent.command();
            agent.reply(json!({}));
        });
        let result = client.ping(TEST_TIMEOUT);
        assert!(
            matches!(&result, Err(AgentError::Protocol { .. })),
            "{result:?}"
        );
        client.ping(TEST_TIMEOUT).unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn malformed_json_and_wrong_shapes_are_protocol_errors() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
            agent.send(b"{\"return\": [1, 2,, 3]}\n");
            agent.command();
            agent.reply(json!({"no-pid": true}));
        });
        assert!(matches!(
            client.ping(TEST_TIMEOUT),
            Err(AgentError::Protocol { .. })
        ));
        let argv = ["/bin/true".to_string()];
        let result = client.exec_start(&argv, &[], None, TEST_TIMEOUT);
        assert!(
            matches!(&result, Err(AgentError::Protocol { detail }) if detail.contains("guest-exec")),
            "{result:?}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn reply_split_across_writes_without_newline_is_parsed() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
            agent.send(b"{\"return\": {\"pid\"");
            thread::sleep(Duration::from_millis(50));
            agent.send(b": 77}}");
        });
        let argv = ["/bin/true".to_string()];
        assert_eq!(
            client.exec_start(&argv, &[], None, TEST_TIMEOUT).unwrap(),
            77
        );
        peer.join().unwrap();
    }

    #[test]
    fn unrepresentable_timeout_means_no_limit_not_a_panic() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
            agent.reply(json!({}));
        });
        client.ping(Duration::MAX).unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn peer_closing_reports_closed() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
        });
        let result = client.ping(TEST_TIMEOUT);
        assert!(matches!(result, Err(AgentError::Closed)), "{result:?}");
        peer.join().unwrap();
    }

    #[test]
    fn command_error_reply_keeps_the_stream_in_sync() {
        let (_dir, mut client, peer) = fake(|mut agent| {
            agent.command();
            agent.send(b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n");
            // No sentinel expected: an error reply is a complete exchange.
            let Some(Request::Command(ping)) = agent.next() else {
                panic!("expected a plain command")
            };
            assert_eq!(ping["execute"], "guest-ping");
            agent.reply(json!({}));
        });
        assert!(matches!(
            client.exec_status(1, TEST_TIMEOUT),
            Err(AgentError::Command { class, .. }) if class == "CommandNotFound"
        ));
        client.ping(TEST_TIMEOUT).unwrap();
        peer.join().unwrap();
    }
}
