//! The wire protocol under every agent call: time budgets, syncing with
//! `guest-sync-delimited` (discarding everything before the 0xFF that precedes its
//! reply), sending a command and reading one JSON value back as bytes.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::*;

/// The time budget of one public call.
#[derive(Clone, Copy)]
pub(super) struct Budget {
    /// `None` when the timeout is too large to represent: no limit.
    deadline: Option<Instant>,
    total: Duration,
}

impl Budget {
    pub(super) fn new(total: Duration) -> Self {
        Budget {
            deadline: Instant::now().checked_add(total),
            total,
        }
    }

    /// Time left (`None`: unlimited), or the timeout error naming `command`.
    pub(super) fn remaining(&self, command: &str) -> Result<Option<Duration>, AgentError> {
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

    pub(super) fn timeout(&self, command: &str) -> AgentError {
        AgentError::Timeout {
            command: command.to_string(),
            after: self.total,
        }
    }
}

pub(super) fn protocol(detail: impl Into<String>) -> AgentError {
    AgentError::Protocol {
        detail: detail.into(),
    }
}

impl AgentClient {
    /// One command and its reply, syncing first if the stream is suspect.
    pub(super) fn call(
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

    pub(super) fn sync_within(&mut self, budget: Budget) -> Result<(), AgentError> {
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

    pub(super) fn send_command(
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

    pub(super) fn write_all(
        &mut self,
        bytes: &[u8],
        command: &str,
        budget: Budget,
    ) -> Result<(), AgentError> {
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
    pub(super) fn fill(&mut self, command: &str, budget: Budget) -> Result<usize, AgentError> {
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
    pub(super) fn read_value(
        &mut self,
        command: &str,
        budget: Budget,
    ) -> Result<Value, AgentError> {
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
pub(super) fn reply_result(command: &str, reply: Value) -> Result<Value, AgentError> {
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

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    command: &str,
    value: Value,
) -> Result<T, AgentError> {
    serde_json::from_value(value)
        .map_err(|e| protocol(format!("unexpected reply to {command}: {e}")))
}

pub(super) fn decode_base64(command: &str, text: &str) -> Result<Vec<u8>, AgentError> {
    BASE64
        .decode(text)
        .map_err(|e| protocol(format!("bad base64 in reply to {command}: {e}")))
}

/// Sync ids only need to differ from those of earlier clients on the same
/// socket (whose replies may still be queued), so time and pid suffice.
/// Kept below 2^53 so any JSON implementation round-trips them exactly.
pub(super) fn initial_sync_id() -> u64 {
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
