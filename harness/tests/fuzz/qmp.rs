//! QMP: the client against a fake QEMU that sends anything.

use std::io::{BufRead, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use bootgate::qemu::qmp::{QmpClient, QmpError, QmpMessage};
use bootgate::testing::fake_peer::{FakePeer, QmpPeer, QMP_GREETING};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::{json, Value};

use crate::engine::fuzz;
use crate::gen::{self, Edit};

const TARGET: &str = "qmp";

/// Bound on anything the fake QEMU waits for; the client answers in milliseconds.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client may take to connect, negotiate and report the stream
/// closed once the fake QEMU has hung up (well under the 10 s handshake limit,
/// which a hang would run into).
const CASE_TIME_LIMIT: Duration = Duration::from_secs(4);
/// Timeout of the one command a case may issue.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the fake QEMU sends: a greeting, the reply to `qmp_capabilities` (the
/// right one when `None`), then messages, each followed by a line end.
#[derive(Debug, Clone)]
struct Script {
    greeting: Vec<u8>,
    capabilities: Option<Vec<u8>>,
    messages: Vec<(Value, Vec<Edit>)>,
    line_end: &'static str,
    chunk: usize,
    execute: bool,
}

impl Script {
    fn valid_handshake(&self) -> bool {
        self.capabilities.is_none() && self.greeting == greeting().to_string().into_bytes()
    }

    /// The names of the events, if every message is a well-formed event.
    fn events(&self) -> Option<Vec<String>> {
        self.messages
            .iter()
            .map(|(v, edits)| {
                edits
                    .is_empty()
                    .then(|| v.get("event").and_then(Value::as_str).map(str::to_string))
                    .flatten()
            })
            .collect()
    }
}

fn greeting() -> Value {
    serde_json::from_str(QMP_GREETING).expect("the greeting is JSON")
}

/// The greeting, a damaged one, or anything at all.
fn greeting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pointers = prop::sample::select(
        &[
            "/QMP",
            "/QMP/version",
            "/QMP/version/qemu",
            "/QMP/version/qemu/major",
            "/QMP/version/qemu/minor",
            "/QMP/version/qemu/micro",
            "/QMP/version/package",
            "/QMP/capabilities",
        ][..],
    );
    prop_oneof![
        4 => Just(greeting().to_string().into_bytes()),
        2 => (pointers, gen::wrong_type()).prop_map(|(at, v)| {
            let mut g = greeting();
            if let Some(slot) = g.pointer_mut(at) {
                *slot = v;
            }
            g.to_string().into_bytes()
        }),
        2 => gen::wire(Just(greeting())),
        1 => gen::wire(gen::json()),
    ]
}

fn id() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => (0u64..4).prop_map(|n| Some(Value::from(n))),
        1 => Just(Some(Value::from(u64::MAX))),
        1 => gen::wrong_type().prop_map(Some),
        1 => Just(None),
    ]
}

fn with_id(mut object: Value, id: Option<Value>) -> Value {
    if let (Some(id), Some(map)) = (id, object.as_object_mut()) {
        map.insert("id".into(), id);
    }
    object
}

/// Events, replies and errors with right and wrong types, and anything else.
fn message() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        3 => prop::sample::select(
            &["STOP", "RESUME", "RESET", "SHUTDOWN", "GUEST_PANICKED", "DUMP_COMPLETED", ""][..]
        )
        .prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
        1 => gen::wrong_type(),
    ];
    let timestamp = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(s, us)| json!({"seconds": s, "microseconds": us})),
        (0u64..2_000_000_000, 0u64..1_000_000)
            .prop_map(|(s, us)| json!({"seconds": s, "microseconds": us})),
        gen::json(),
    ];
    let event = (
        name,
        prop::option::of(gen::json()),
        prop::option::of(timestamp),
    )
        .prop_map(|(name, data, timestamp)| {
            let mut e = json!({ "event": name });
            if let Some(map) = e.as_object_mut() {
                if let Some(d) = data {
                    map.insert("data".into(), d);
                }
                if let Some(t) = timestamp {
                    map.insert("timestamp".into(), t);
                }
            }
            e
        });
    let reply = (gen::json(), id()).prop_map(|(r, id)| with_id(json!({ "return": r }), id));
    let error = (
        prop_oneof![
            (gen::wrong_type(), gen::wrong_type())
                .prop_map(|(c, d)| json!({"class": c, "desc": d})),
            Just(json!({"class": "GenericError", "desc": "no"})),
            gen::json(),
        ],
        id(),
    )
        .prop_map(|(e, id)| with_id(json!({ "error": e }), id));
    prop_oneof![
        4 => event,
        2 => reply,
        1 => error,
        1 => Just(greeting()),
        1 => gen::json(),
    ]
}

fn message_with_edits() -> impl Strategy<Value = (Value, Vec<Edit>)> {
    (
        message(),
        prop_oneof![
            3 => Just(vec![]),
            1 => prop::collection::vec(gen::edit(), 1..4),
        ],
    )
}

fn script() -> impl Strategy<Value = Script> {
    (
        greeting_bytes(),
        prop_oneof![
            4 => Just(None),
            1 => gen::wire(gen::json()).prop_map(Some),
        ],
        prop::collection::vec(message_with_edits(), 0..12),
        prop::sample::select(&["\n", "\r\n", "\n\n", "\n \n"][..]),
        prop_oneof![Just(1usize << 20), 1usize..64],
        any::<bool>(),
    )
        .prop_map(
            |(greeting, capabilities, messages, line_end, chunk, execute)| Script {
                greeting,
                capabilities,
                messages,
                line_end,
                chunk,
                execute,
            },
        )
}

/// Plays `script` as QEMU would, then hangs up and waits for the client to.
fn play(stream: UnixStream, script: &Script) {
    let _ = stream.set_read_timeout(Some(PEER_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PEER_TIMEOUT));
    let QmpPeer {
        mut reader,
        mut writer,
    } = QmpPeer::new(stream);
    let mut send = |bytes: &[u8]| -> bool {
        bytes
            .chunks(script.chunk.max(1))
            .all(|c| writer.write_all(c).is_ok())
    };
    let mut out = script.greeting.clone();
    out.push(b'\n');
    // A blank greeting line is skipped by the client, which keeps waiting for
    // one, so there is no command to wait for: carry on at once.
    let blank = script.greeting.iter().all(u8::is_ascii_whitespace);
    if send(&out) {
        let mut command = String::new();
        if blank || reader.read_line(&mut command).is_ok() {
            let id = serde_json::from_str::<Value>(&command)
                .ok()
                .and_then(|c| c.get("id").cloned())
                .unwrap_or(Value::Null);
            let mut out = match &script.capabilities {
                Some(bytes) => bytes.clone(),
                None => json!({"return": {}, "id": id}).to_string().into_bytes(),
            };
            out.extend_from_slice(script.line_end.as_bytes());
            for (value, edits) in &script.messages {
                let mut bytes = value.to_string().into_bytes();
                for e in edits {
                    gen::apply(&mut bytes, e);
                }
                out.extend_from_slice(&bytes);
                out.extend_from_slice(script.line_end.as_bytes());
            }
            send(&out);
        }
    }
    let _ = writer.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

/// Connects to the fake QEMU playing `script` and reads until the client reports
/// the stream closed; checks what must hold whatever QEMU sent.
fn run(server: &FakePeer, script: Script) -> TestCaseResult {
    let peer_script = script.clone();
    let peer = server.serve(move |stream| play(stream, &peer_script));
    let started = Instant::now();
    let outcome = check_client(server, &script, started);
    // The client is gone by now, so the peer sees the socket close.
    let joined = peer.join();
    outcome?;
    prop_assert!(joined.is_ok(), "the fake qemu panicked");
    Ok(())
}

fn check_client(server: &FakePeer, script: &Script, started: Instant) -> TestCaseResult {
    let connected = QmpClient::connect(server.path(), PEER_TIMEOUT);
    prop_assert!(
        started.elapsed() < CASE_TIME_LIMIT,
        "connect took {:?}",
        started.elapsed()
    );
    let (client, rx) = match connected {
        Ok(connected) => connected,
        Err(e) => {
            prop_assert!(!script.valid_handshake(), "a valid handshake failed: {e}");
            prop_assert!(
                matches!(
                    e,
                    QmpError::Protocol { .. } | QmpError::Command { .. } | QmpError::Closed
                ),
                "unexpected error kind: {e:?}"
            );
            return Ok(());
        }
    };
    if script.execute {
        let result = client.execute("query-status", None, EXECUTE_TIMEOUT);
        prop_assert!(
            !matches!(result, Err(QmpError::Io(_) | QmpError::Connect { .. })),
            "{result:?}"
        );
    }
    let mut names = Vec::new();
    let closed = loop {
        let left = CASE_TIME_LIMIT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(QmpMessage::Event(event)) => names.push(event.name),
            Ok(QmpMessage::Closed(outcome)) => break outcome,
            Err(RecvTimeoutError::Timeout) => {
                prop_assert!(false, "no Closed within {CASE_TIME_LIMIT:?} of a hang-up")
            }
            Err(RecvTimeoutError::Disconnected) => {
                prop_assert!(
                    false,
                    "the reader thread ended without Closed (it panicked)"
                )
            }
        }
    };
    drop(client);
    prop_assert!(
        matches!(
            rx.recv_timeout(PEER_TIMEOUT),
            Err(RecvTimeoutError::Disconnected)
        ),
        "messages after Closed"
    );
    if let (true, Some(events)) = (script.valid_handshake(), script.events()) {
        prop_assert!(closed.is_none(), "{closed:?}");
        prop_assert_eq!(names, events);
    }
    Ok(())
}

#[test]
fn client_survives_any_qmp_stream() {
    let server = FakePeer::bind("qmp.sock");
    fuzz(
        TARGET,
        "client_survives_any_qmp_stream",
        250,
        script(),
        |script| run(&server, script),
    );
}

#[test]
fn client_survives_raw_bytes() {
    let server = FakePeer::bind("qmp.sock");
    let strategy = (
        prop_oneof![
            Just(greeting().to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..200),
        ],
        prop::collection::vec(any::<u8>(), 0..4000),
        any::<bool>(),
    )
        .prop_map(|(greeting, body, execute)| Script {
            greeting,
            capabilities: Some(body),
            messages: vec![],
            line_end: "",
            chunk: 1 << 20,
            execute,
        });
    fuzz(
        TARGET,
        "client_survives_raw_bytes",
        250,
        strategy,
        |script| run(&server, script),
    );
}
