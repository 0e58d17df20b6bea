//! QEMU Machine Protocol (QMP) client.
//!
//! QMP interleaves command replies and asynchronous events on one stream. One
//! reader thread per connection owns the read half: it routes each reply to the
//! caller waiting on that reply's `id` and forwards every event to a channel, so
//! the harness can watch for `GUEST_PANICKED`, `SHUTDOWN` or `RESET` on one thread
//! while other threads issue commands through the shared client.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::util::lock;

/// Longest line accepted from QEMU. Real replies are far smaller; the bound
/// turns a runaway or hostile peer into a protocol error instead of an OOM.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How long to wait, once the socket accepts, for the greeting and the reply to
/// `qmp_capabilities`. QEMU writes the greeting at once, but a TCG guest
/// starting up can keep the main loop busy for a while.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one command write may block. QEMU drains its monitor socket
/// promptly; a write stuck this long means QEMU is wedged, and without a bound
/// a caller holding the writer lock would block every other caller too.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between attempts while QEMU has not yet created or started listening
/// on the socket. Short: QEMU creates it 20-35 ms after it starts, and a VM restored
/// from a saved state answers about 0.1 s after that start.
pub(crate) const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(5);

/// Errors from the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to qmp socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("qmp protocol error: {detail}")]
    Protocol { detail: String },
    #[error("qmp command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("qmp connection closed")]
    Closed,
    #[error("i/o error on qmp socket")]
    Io(#[source] io::Error),
}

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpGreeting {
    pub major: u64,
    pub minor: u64,
    pub micro: u64,
    pub package: String,
}

/// One asynchronous QMP event.
#[derive(Debug, Clone)]
pub struct QmpEvent {
    pub name: String,
    /// `Value::Null` when the event carries no data.
    pub data: Value,
    /// QEMU's timestamp: seconds * 1_000_000 + microseconds.
    pub timestamp_micros: u64,
    /// When the reader thread parsed the event, for latency measurements
    /// against host-side clocks.
    pub received: Instant,
}

/// What the reader thread delivers on the channel returned by
/// [`QmpClient::connect`].
#[derive(Debug)]
pub enum QmpMessage {
    Event(QmpEvent),
    /// Sent once, as the last message: `None` when QEMU closed the stream,
    /// `Some` when the reader stopped on an error (garbage, oversized line).
    Closed(Option<QmpError>),
}

/// A connected, negotiated QMP session. `Send + Sync`: share it by reference or
/// `Arc` between threads.
pub struct QmpClient {
    writer: Mutex<UnixStream>,
    shared: Arc<Mutex<Shared>>,
    next_id: Arc<AtomicU64>,
    greeting: QmpGreeting,
    reader: Option<JoinHandle<()>>,
}

/// State shared between callers and the reader thread.
struct Shared {
    waiters: HashMap<u64, Sender<Reply>>,
    /// Set by the reader thread as it exits; later callers must not register
    /// waiters nobody will ever answer.
    closed: bool,
}

type Reply = Result<Value, CommandFailure>;

struct CommandFailure {
    class: String,
    desc: String,
}

impl QmpClient {
    /// Connects to the Unix socket (retrying until it exists and accepts, up to
    /// `timeout`), reads the greeting and negotiates `qmp_capabilities` (each
    /// bounded by [`HANDSHAKE_TIMEOUT`]). If the socket never accepts, the
    /// error is [`QmpError::Connect`] carrying the last connect failure.
    pub fn connect(
        socket: &Path,
        timeout: Duration,
    ) -> Result<(QmpClient, Receiver<QmpMessage>), QmpError> {
        Self::connect_with(socket, timeout, HANDSHAKE_TIMEOUT)
    }

    fn connect_with(
        socket: &Path,
        timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<(QmpClient, Receiver<QmpMessage>), QmpError> {
        let stream = connect_retrying(socket, timeout)?;
        let connect_err = |source| QmpError::Connect {
            path: socket.to_path_buf(),
            source,
        };
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(connect_err)?;
        let mut writer = stream.try_clone().map_err(connect_err)?;
        let mut lines = LineReader::new(stream);
        let (events_tx, events_rx) = mpsc::channel();
        let next_id = Arc::new(AtomicU64::new(0));

        // `None` (no limit) only if the timeout is too large to represent.
        let deadline = Instant::now().checked_add(handshake_timeout);
        let greeting_line = lines
            .read_line(deadline)
            .map_err(|e| e.into_qmp("the qmp greeting".to_string(), handshake_timeout, true))?;
        let greeting = parse_greeting(greeting_line)?;

        let id = next_id.fetch_add(1, Ordering::Relaxed);
        write_command(&mut writer, "qmp_capabilities", None, id)?;
        // QEMU sends no events before negotiation completes, but forwarding any
        // that do arrive is cheaper than reasoning about why they could not.
        loop {
            let line = lines.read_line(deadline).map_err(|e| {
                e.into_qmp(
                    "the reply to qmp_capabilities".to_string(),
                    handshake_timeout,
                    true,
                )
            })?;
            match classify(line)? {
                Incoming::Event(event) => {
                    let _ = events_tx.send(QmpMessage::Event(event));
                }
                Incoming::Reply {
                    id: Some(got),
                    reply,
                } if got == id => {
                    reply.map_err(|f| QmpError::Command {
                        command: "qmp_capabilities".to_string(),
                        class: f.class,
                        desc: f.desc,
                    })?;
                    break;
                }
                Incoming::Reply { id: got, .. } => {
                    return Err(protocol(format!(
                        "reply with id {got:?} while negotiating capabilities"
                    )))
                }
            }
        }
        // The reader thread blocks until QEMU writes or the socket is shut
        // down; Drop does the latter, so no read timeout is wanted from here on.
        lines.clear_read_timeout().map_err(QmpError::Io)?;

        let shared = Arc::new(Mutex::new(Shared {
            waiters: HashMap::new(),
            closed: false,
        }));
        let reader = {
            let shared = Arc::clone(&shared);
            let next_id = Arc::clone(&next_id);
            thread::Builder::new()
                .name("qmp-reader".to_string())
                .spawn(move || reader_loop(lines, &shared, &next_id, &events_tx))
                .map_err(QmpError::Io)?
        };
        Ok((
            QmpClient {
                writer: Mutex::new(writer),
                shared,
                next_id,
                greeting,
                reader: Some(reader),
            },
            events_rx,
        ))
    }

    /// QEMU's version as announced in the greeting.
    pub fn greeting(&self) -> &QmpGreeting {
        &self.greeting
    }

    /// Sends `{"execute", "arguments"?, "id"}` and waits up to `timeout` for
    /// the reply with that id. Returns the `return` value; an error reply
    /// becomes [`QmpError::Command`].
    pub fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        {
            let mut shared = lock(&self.shared);
            if shared.closed {
                return Err(QmpError::Closed);
            }
            // Registered before writing so a fast reply cannot find no waiter.
            shared.waiters.insert(id, tx);
        }
        if let Err(e) = write_command(&mut lock(&self.writer), command, arguments.as_ref(), id) {
            lock(&self.shared).waiters.remove(&id);
            return Err(e);
        }
        let reply = match rx.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Disconnected) => return Err(QmpError::Closed),
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.shared).waiters.remove(&id);
                // The reply may have been routed between the timeout and the
                // removal; it is a real answer, so use it.
                match rx.try_recv() {
                    Ok(reply) => reply,
                    Err(_) => {
                        return Err(QmpError::Timeout {
                            what: format!("the reply to {command}"),
                            after: timeout,
                        })
                    }
                }
            }
        };
        reply.map_err(|f| QmpError::Command {
            command: command.to_string(),
            class: f.class,
            desc: f.desc,
        })
    }

    /// Sends a command without waiting for its reply, for `quit`, whose reply
    /// races QEMU closing the socket. The command still carries an id, so its
    /// reply, if any, is recognised and dropped.
    pub(crate) fn send(&self, command: &str, arguments: Option<Value>) -> Result<(), QmpError> {
        if lock(&self.shared).closed {
            return Err(QmpError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        write_command(&mut lock(&self.writer), command, arguments.as_ref(), id)
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Shutting down makes the reader's blocking read return end-of-file,
        // so joining cannot hang even if QEMU keeps the connection open.
        let _ = writer.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn protocol(detail: impl Into<String>) -> QmpError {
    QmpError::Protocol {
        detail: detail.into(),
    }
}

fn connect_retrying(socket: &Path, timeout: Duration) -> Result<UnixStream, QmpError> {
    // No deadline when `timeout` is too large to represent: wait indefinitely.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            // QEMU creates the socket some time after it starts; until then the
            // path is missing, or a stale file from an earlier run refuses.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && deadline.is_none_or(|d| {
                    d.saturating_duration_since(Instant::now()) > CONNECT_RETRY_INTERVAL
                }) =>
            {
                thread::sleep(CONNECT_RETRY_INTERVAL);
            }
            Err(source) => {
                return Err(QmpError::Connect {
                    path: socket.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn write_command(
    writer: &mut UnixStream,
    command: &str,
    arguments: Option<&Value>,
    id: u64,
) -> Result<(), QmpError> {
    let mut message = Map::new();
    message.insert("execute".to_string(), Value::from(command));
    if let Some(arguments) = arguments {
        message.insert("arguments".to_string(), arguments.clone());
    }
    message.insert("id".to_string(), Value::from(id));
    let mut bytes = serde_json::to_vec(&Value::Object(message))
        .map_err(|e| protocol(format!("cannot encode {command}: {e}")))?;
    bytes.push(b'\n');
    writer.write_all(&bytes).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => QmpError::Timeout {
            what: format!("qemu to accept {command}"),
            after: WRITE_TIMEOUT,
        },
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => QmpError::Closed,
        _ => QmpError::Io(e),
    })
}

/// Why a line could not be read.
enum LineError {
    Eof,
    TooLong,
    Io(io::Error),
}

impl LineError {
    /// `eof_is_error`: during the handshake an early end of stream is a
    /// refusal, not a clean close.
    fn into_qmp(self, what: String, after: Duration, eof_is_error: bool) -> QmpError {
        match self {
            LineError::Eof if eof_is_error => protocol(format!("stream ended before {what}")),
            LineError::Eof => QmpError::Closed,
            LineError::TooLong => protocol(format!("line longer than {MAX_LINE_BYTES} bytes")),
            LineError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                QmpError::Timeout { what, after }
            }
            LineError::Io(e) => QmpError::Io(e),
        }
    }
}

/// Reads newline-terminated lines without ever holding more than
/// [`MAX_LINE_BYTES`] of one line.
struct LineReader {
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
}

impl LineReader {
    fn new(stream: UnixStream) -> Self {
        LineReader {
            reader: BufReader::new(stream),
            line: Vec::new(),
        }
    }

    fn clear_read_timeout(&self) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(None)
    }

    /// Returns the next non-blank line, without its terminator.
    fn read_line(&mut self, deadline: Option<Instant>) -> Result<&[u8], LineError> {
        loop {
            self.line.clear();
            loop {
                if let Some(deadline) = deadline {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(LineError::Io(io::ErrorKind::TimedOut.into()));
                    }
                    self.reader
                        .get_ref()
                        .set_read_timeout(Some(remaining))
                        .map_err(LineError::Io)?;
                }
                let available = match self.reader.fill_buf() {
                    Ok(available) => available,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Measured against QEMU 7.2: after `quit` it sometimes
                    // resets the connection instead of closing it cleanly.
                    // Either way the peer hung up; that is not a reader fault.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        return Err(LineError::Eof)
                    }
                    Err(e) => return Err(LineError::Io(e)),
                };
                if available.is_empty() {
                    // A partial last line is dropped: QEMU always terminates
                    // its lines, so a fragment carries nothing usable.
                    return Err(LineError::Eof);
                }
                let (take, done) = match available.iter().position(|&b| b == b'\n') {
                    Some(newline) => (newline, true),
                    None => (available.len(), false),
                };
                if self.line.len() + take > MAX_LINE_BYTES {
                    return Err(LineError::TooLong);
                }
                self.line.extend_from_slice(&available[..take]);
                self.reader.consume(if done { take + 1 } else { take });
                if done {
                    break;
                }
            }
            if !self.line.iter().all(u8::is_ascii_whitespace) {
                return Ok(&self.line);
            }
        }
    }
}

#[derive(Deserialize)]
struct GreetingWire {
    #[serde(rename = "QMP")]
    qmp: GreetingBody,
}

#[derive(Deserialize)]
struct GreetingBody {
    version: VersionWire,
}

#[derive(Deserialize)]
struct VersionWire {
    qemu: TripleWire,
    package: String,
}

#[derive(Deserialize)]
struct TripleWire {
    major: u64,
    minor: u64,
    micro: u64,
}

fn parse_greeting(line: &[u8]) -> Result<QmpGreeting, QmpError> {
    let wire: GreetingWire = serde_json::from_slice(line).map_err(|e| {
        protocol(format!(
            "unexpected greeting {}: {e}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ))
    })?;
    Ok(QmpGreeting {
        major: wire.qmp.version.qemu.major,
        minor: wire.qmp.version.qemu.minor,
        micro: wire.qmp.version.qemu.micro,
        package: wire.qmp.version.package,
    })
}

enum Incoming {
    Event(QmpEvent),
    /// `id` is `None` when the reply has none or it is not an integer we
    /// could have issued.
    Reply {
        id: Option<u64>,
        reply: Reply,
    },
}

fn classify(line: &[u8]) -> Result<Incoming, QmpError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| protocol(format!("malformed json from qemu: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(protocol("message is not a json object"));
    };
    if let Some(name) = object.remove("event") {
        let Value::String(name) = name else {
            return Err(protocol("event name is not a string"));
        };
        // A missing or odd timestamp is tolerated: the event itself matters
        // more than when QEMU says it happened.
        let timestamp = object.remove("timestamp");
        let field = |key| {
            timestamp
                .as_ref()
                .and_then(|t| t.get(key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        return Ok(Incoming::Event(QmpEvent {
            name,
            data: object.remove("data").unwrap_or(Value::Null),
            timestamp_micros: field("seconds")
                .saturating_mul(1_000_000)
                .saturating_add(field("microseconds")),
            received: Instant::now(),
        }));
    }
    let id = object.get("id").and_then(Value::as_u64);
    if let Some(value) = object.remove("return") {
        return Ok(Incoming::Reply {
            id,
            reply: Ok(value),
        });
    }
    if let Some(error) = object.get("error") {
        let text = |key| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Ok(Incoming::Reply {
            id,
            reply: Err(CommandFailure {
                class: text("class"),
                desc: text("desc"),
            }),
        });
    }
    if object.contains_key("QMP") {
        return Err(protocol("unexpected greeting after negotiation"));
    }
    Err(protocol(format!(
        "message is neither event nor reply: {}",
        Value::Object(object)
    )))
}

fn reader_loop(
    mut lines: LineReader,
    shared: &Mutex<Shared>,
    next_id: &AtomicU64,
    events: &Sender<QmpMessage>,
) {
    let outcome = loop {
        let line = match lines.read_line(None) {
            Ok(line) => line,
            Err(LineError::Eof) => break None,
            Err(e) => break Some(e.into_qmp("a qmp message".to_string(), Duration::ZERO, false)),
        };
        match classify(line) {
            // A dropped receiver only means nobody watches events any more;
            // replies must still be routed.
            Ok(Incoming::Event(event)) => {
                let _ = events.send(QmpMessage::Event(event));
            }
            Ok(Incoming::Reply { id, reply }) => {
                let Some(id) = id else {
                    break Some(protocol("reply without a usable id"));
                };
                let mut shared = lock(shared);
                if let Some(waiter) = shared.waiters.remove(&id) {
                    let _ = waiter.send(reply);
                } else if id >= next_id.load(Ordering::Relaxed) {
                    break Some(protocol(format!("reply with unknown id {id}")));
                }
                // Otherwise the id was issued but nobody waits: a late reply
                // to a timed-out execute or to send(). Dropping it is correct.
            }
            Err(e) => break Some(e),
        }
    };
    if outcome.is_some() {
        // The stream is out of step with us; hanging up lets QEMU drop the
        // session too instead of feeding a connection nobody reads.
        let _ = lines.reader.get_ref().shutdown(Shutdown::Both);
    }
    {
        let mut shared = lock(shared);
        shared.closed = true;
        // Dropping the senders wakes every waiter with Closed.
        shared.waiters.clear();
    }
    let _ = events.send(QmpMessage::Closed(outcome));
}

pub(crate) mod vcpu;

#[cfg(test)]
mod tests;
