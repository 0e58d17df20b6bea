//! The listening end of a fake peer over a real Unix socket: QEMU's QMP or the
//! guest agent. A test scripts what the peer says with a closure on the accepted
//! stream; [`QmpPeer`] and [`AgentPeer`] speak enough of each protocol to do that
//! in a few lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use serde_json::{json, Value};

use crate::agent::SENTINEL;

/// A socket in a folder of its own; gone with the value.
pub struct FakePeer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl FakePeer {
    /// Listens on `socket` (a file name) in a fresh temporary folder.
    pub fn bind(socket: &str) -> FakePeer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(socket);
        let listener = UnixListener::bind(&path).expect("bind");
        FakePeer {
            _dir: dir,
            path,
            listener,
        }
    }

    /// Where a client connects.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next connection on a thread of its own and runs `script` on it;
    /// the thread panics (and so does joining it) if accepting fails. Call once per
    /// connection: a property test serves one per case.
    pub fn serve(&self, script: impl FnOnce(UnixStream) + Send + 'static) -> JoinHandle<()> {
        let listener = self.listener.try_clone().expect("clone the listener");
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            script(stream);
        })
    }
}

// ---- QMP ----

/// QEMU 7.2's QMP greeting, as Debian's build sends it.
pub const QMP_GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 3, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#;

/// The QEMU side of a QMP connection: lines out, commands in.
pub struct QmpPeer {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl QmpPeer {
    pub fn new(stream: UnixStream) -> QmpPeer {
        QmpPeer {
            reader: BufReader::new(stream.try_clone().expect("clone the stream")),
            writer: stream,
        }
    }

    /// Sends `text` and a line end, as QEMU does.
    pub fn line(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
    }

    /// The next command the client sent.
    pub fn command(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Greets and accepts `qmp_capabilities`.
    pub fn handshake(&mut self) {
        self.line(QMP_GREETING);
        let caps = self.command();
        assert_eq!(caps["execute"], "qmp_capabilities");
        self.line(&json!({"return": {}, "id": caps["id"]}).to_string());
    }

    pub fn reply(&mut self, id: &Value, value: Value) {
        self.line(&json!({"return": value, "id": id}).to_string());
    }
}

// ---- guest agent ----

/// What qemu-ga answers to the client's 0xFF: it is not JSON.
pub const AGENT_PARSE_ERROR: &[u8] =
    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid JSON syntax\"}}\n";

/// A reply line `{"return": value}`.
pub fn agent_return(value: Value) -> Vec<u8> {
    format!("{}\n", json!({ "return": value })).into_bytes()
}

/// What the client sent the agent.
pub enum Request {
    /// The raw 0xFF byte.
    Sentinel,
    Command(Value),
}

/// The guest side of an agent connection: requests in, bytes out.
pub struct AgentPeer {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl AgentPeer {
    pub fn new(stream: UnixStream) -> AgentPeer {
        AgentPeer {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn reply(&mut self, value: Value) {
        self.send(&agent_return(value));
    }

    /// Answers the sentinel and a sync as qemu-ga does; returns the next other
    /// command. Panics if the client hangs up first.
    pub fn command(&mut self) -> Value {
        self.try_command().unwrap()
    }

    /// [`AgentPeer::command`], or `None` if the client hangs up first.
    pub fn try_command(&mut self) -> Option<Value> {
        loop {
            match self.next()? {
                Request::Sentinel => self.send(AGENT_PARSE_ERROR),
                Request::Command(cmd) if cmd["execute"] == "guest-sync-delimited" => {
                    let id = cmd["arguments"]["id"].clone();
                    self.send(&[SENTINEL]);
                    self.reply(id);
                }
                Request::Command(cmd) => return Some(cmd),
            }
        }
    }
}

/// The client's requests, in order, until it hangs up.
impl Iterator for AgentPeer {
    type Item = Request;

    /// The next request, or `None` once the client hangs up (or, with a read
    /// timeout set on the stream, goes quiet).
    fn next(&mut self) -> Option<Request> {
        loop {
            let skip = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..skip);
            if self.buf.first() == Some(&SENTINEL) {
                self.buf.remove(0);
                return Some(Request::Sentinel);
            }
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            if let Some(Ok(value)) = values.next() {
                let used = values.byte_offset();
                self.buf.drain(..used);
                return Some(Request::Command(value));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
