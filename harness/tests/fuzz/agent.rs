//! Guest agent: the client against a fake agent, correct or hostile.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bootgate::agent::{self as ga, AgentClient, AgentError, ExecStatus, ShutdownMode, SENTINEL};
use bootgate::testing::fake_peer::{agent_return, AgentPeer, FakePeer, Request, AGENT_PARSE_ERROR};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::{json, Value};

use crate::engine::fuzz;
use crate::gen;

const TARGET: &str = "agent";

/// Timeout given to each client call. Cases end long before it: the fake agent
/// hangs up once it has nothing more to say.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a shutdown listens for its error reply in these cases (the harness
/// listens up to a minute; a second keeps a case inside its time limit).
const SHUTDOWN_LISTEN: Duration = Duration::from_secs(1);
/// Silence after which a hostile fake agent hangs up: the client is waiting for
/// bytes that will never come, and the hang-up must end that wait. A correct
/// one waits for the client's next command up to [`CALL_TIMEOUT`] instead (the
/// client hangs up when done), so a slow client never loses its reply.
const PEER_IDLE: Duration = Duration::from_millis(20);
/// How long one case may take: a call plus the cleanup close that follows a
/// failed file transfer, both cut short by the hang-up.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(2);
/// Largest file a case reads back.
const READ_LIMIT: u64 = 1 << 20;

/// One part of the fake agent's answer to `guest-sync-delimited`.
#[derive(Debug, Clone)]
enum SyncPart {
    Junk(Vec<u8>),
    Sentinel,
    /// The reply to an older sync.
    Stale(u64),
    /// `{"return": <the id asked for>}`.
    Ours,
    /// Anything else where the reply should be.
    Odd(Vec<u8>),
}

/// The client call a case makes.
#[derive(Debug, Clone)]
enum Op {
    Ping,
    Info,
    ExecStart,
    ExecStatus,
    ReadFile,
    WriteFile(Vec<u8>),
    Shutdown,
    Sync,
}

/// What the client must return when the agent behaves.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Done,
    Names(Vec<String>),
    Pid(i64),
    Status(ExecStatus),
    Data(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Script {
    op: Op,
    /// Answer our 0xFF with the parse error qemu-ga sends.
    parse_error: bool,
    sync: Vec<SyncPart>,
    /// One reply per command after the sync, in order.
    replies: Vec<Vec<u8>>,
    chunk: usize,
    /// `None` for a hostile script, whose outcome is anything but a panic or hang.
    want: Option<Want>,
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A well-behaved sync answer: junk, older replies, then ours.
fn good_sync() -> impl Strategy<Value = Vec<SyncPart>> {
    (
        prop::collection::vec(
            any::<u8>().prop_filter("not the sentinel", |b| *b != SENTINEL),
            0..40,
        ),
        prop::collection::vec(0u64..1000, 0..3),
    )
        .prop_map(|(junk, stale)| {
            let mut parts = vec![SyncPart::Junk(junk)];
            for id in stale {
                parts.push(SyncPart::Sentinel);
                parts.push(SyncPart::Stale(id));
            }
            parts.push(SyncPart::Sentinel);
            parts.push(SyncPart::Ours);
            parts
        })
}

fn exec_status() -> impl Strategy<Value = (Value, ExecStatus)> {
    (
        any::<bool>(),
        prop::option::of(any::<i32>()),
        prop::option::of(any::<i32>()),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        any::<bool>(),
    )
        .prop_map(|(exited, code, signal, out, err, truncated)| {
            let mut v = json!({ "exited": exited, "out-truncated": truncated });
            if let Some(map) = v.as_object_mut() {
                if let Some(c) = code {
                    map.insert("exitcode".into(), c.into());
                }
                if let Some(s) = signal {
                    map.insert("signal".into(), s.into());
                }
                if let Some(o) = &out {
                    map.insert("out-data".into(), b64(o).into());
                }
                if let Some(e) = &err {
                    map.insert("err-data".into(), b64(e).into());
                }
            }
            let status = ExecStatus {
                exited,
                exit_code: code,
                signal,
                stdout: out.unwrap_or_default(),
                stderr: err.unwrap_or_default(),
                stdout_truncated: truncated,
                stderr_truncated: false,
            };
            (v, status)
        })
}

/// A call, the replies a correct agent gives to it, and what it must return.
fn good_exchange() -> impl Strategy<Value = (Op, Vec<Vec<u8>>, Want)> {
    let commands = prop::collection::vec(("[a-z-]{1,20}", any::<bool>()), 0..20);
    let chunks = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..500), 1..5);
    prop_oneof![
        Just((Op::Ping, vec![agent_return(json!({}))], Want::Done)),
        commands.prop_map(|cs| {
            let list: Vec<Value> = cs
                .iter()
                .map(|(n, e)| json!({"name": n, "enabled": e, "success-response": true}))
                .collect();
            let names = cs
                .iter()
                .filter(|(_, e)| *e)
                .map(|(n, _)| n.clone())
                .collect();
            (
                Op::Info,
                vec![agent_return(
                    json!({"version": "7.2", "supported_commands": list}),
                )],
                Want::Names(names),
            )
        }),
        any::<i64>().prop_map(|pid| (
            Op::ExecStart,
            vec![agent_return(json!({ "pid": pid }))],
            Want::Pid(pid)
        )),
        exec_status().prop_map(|(v, s)| (Op::ExecStatus, vec![agent_return(v)], Want::Status(s))),
        (any::<i64>(), chunks).prop_map(|(handle, chunks)| {
            let mut replies = vec![agent_return(json!(handle))];
            for (i, c) in chunks.iter().enumerate() {
                let eof = i + 1 == chunks.len();
                replies.push(agent_return(
                    json!({"count": c.len(), "buf-b64": b64(c), "eof": eof}),
                ));
            }
            replies.push(agent_return(json!({})));
            (Op::ReadFile, replies, Want::Data(chunks.concat()))
        }),
        (any::<i64>(), prop::collection::vec(any::<u8>(), 0..2000)).prop_map(|(handle, data)| {
            let mut replies = vec![agent_return(json!(handle))];
            if !data.is_empty() {
                replies.push(agent_return(json!({"count": data.len(), "eof": false})));
            }
            replies.push(agent_return(json!({})));
            (Op::WriteFile(data), replies, Want::Done)
        }),
        Just((Op::Shutdown, vec![], Want::Done)),
        Just((Op::Sync, vec![], Want::Done)),
    ]
}

fn good_script() -> impl Strategy<Value = Script> {
    (
        good_exchange(),
        any::<bool>(),
        good_sync(),
        prop_oneof![Just(1usize << 20), 1usize..32],
    )
        .prop_map(|((op, replies, want), parse_error, sync, chunk)| Script {
            op,
            parse_error,
            sync,
            replies,
            chunk,
            want: Some(want),
        })
}

/// A reply of the right shape with one value of the wrong type, an error reply,
/// a huge one, or anything.
fn odd_reply() -> impl Strategy<Value = Vec<u8>> {
    let pointers = prop::sample::select(
        &[
            "/return",
            "/return/pid",
            "/return/exited",
            "/return/exitcode",
            "/return/out-data",
            "/return/count",
            "/return/buf-b64",
            "/return/eof",
            "/return/supported_commands",
            "/error",
            "/error/class",
        ][..],
    );
    let shaped = prop_oneof![
        Just(
            json!({"return": {"pid": 7, "exited": true, "exitcode": 0, "out-data": "aGk=", "count": 2, "buf-b64": "aGk=", "eof": true, "supported_commands": []}})
        ),
        Just(json!({"error": {"class": "GenericError", "desc": "no"}})),
        Just(json!({"return": 1})),
    ];
    prop_oneof![
        3 => (shaped, pointers, gen::wrong_type()).prop_map(|(mut v, at, odd)| {
            if let Some(slot) = v.pointer_mut(at) {
                *slot = odd;
            }
            agent_return(v.get("return").cloned().unwrap_or(v))
        }),
        1 => gen::huge_string(100_000).prop_map(|s| agent_return(json!({"out-data": s, "exited": true, "buf-b64": "", "count": 0, "eof": false}))),
        1 => prop::collection::vec(any::<u8>(), 0..2000)
            .prop_map(|b| agent_return(json!({"exited": true, "out-data": b64(&b), "pid": 1}))),
        3 => gen::wire(gen::json()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn hostile_script() -> impl Strategy<Value = Script> {
    let part = prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..60).prop_map(SyncPart::Junk),
        3 => Just(SyncPart::Sentinel),
        1 => (0u64..1000).prop_map(SyncPart::Stale),
        3 => Just(SyncPart::Ours),
        2 => gen::wire(gen::json()).prop_map(SyncPart::Odd),
    ];
    let op = prop_oneof![
        Just(Op::Ping),
        Just(Op::Info),
        Just(Op::ExecStart),
        Just(Op::ExecStatus),
        Just(Op::ReadFile),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(Op::WriteFile),
        Just(Op::Shutdown),
        Just(Op::Sync),
    ];
    (
        op,
        any::<bool>(),
        prop_oneof![good_sync(), prop::collection::vec(part, 0..8)],
        prop::collection::vec(odd_reply(), 0..5),
        prop_oneof![Just(1usize << 20), 1usize..32],
    )
        .prop_map(|(op, parse_error, sync, replies, chunk)| Script {
            op,
            parse_error,
            sync,
            replies,
            chunk,
            want: None,
        })
}

/// Plays `script` as the guest agent: answers the 0xFF and every sync, and each
/// other command with the next reply; hangs up when out of replies or when the
/// client goes quiet.
fn play(stream: UnixStream, script: &Script) {
    let idle = if script.want.is_some() {
        CALL_TIMEOUT
    } else {
        PEER_IDLE
    };
    let _ = stream.set_read_timeout(Some(idle));
    let _ = stream.set_write_timeout(Some(CALL_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut send = |bytes: &[u8]| -> bool {
        bytes
            .chunks(script.chunk.max(1))
            .all(|c| writer.write_all(c).is_ok())
    };
    let requests = AgentPeer::new(stream);
    let mut replies = script.replies.iter();
    for request in requests {
        let ok = match request {
            Request::Sentinel if script.parse_error => send(AGENT_PARSE_ERROR),
            Request::Sentinel => true,
            Request::Command(cmd) if cmd["execute"] == "guest-sync-delimited" => {
                let id = cmd["arguments"]["id"].clone();
                let mut out = Vec::new();
                for part in &script.sync {
                    match part {
                        SyncPart::Junk(b) | SyncPart::Odd(b) => out.extend_from_slice(b),
                        SyncPart::Sentinel => out.push(SENTINEL),
                        SyncPart::Stale(n) => out.extend(agent_return(json!(n))),
                        SyncPart::Ours => out.extend(agent_return(id.clone())),
                    }
                }
                send(&out)
            }
            Request::Command(_) => match replies.next() {
                Some(reply) => send(reply),
                None => false,
            },
        };
        if !ok {
            break;
        }
    }
}

fn call(client: &mut AgentClient, op: &Op) -> Result<Want, AgentError> {
    let argv = ["/bin/true".to_string()];
    Ok(match op {
        Op::Ping => client.ping(CALL_TIMEOUT).map(|()| Want::Done)?,
        Op::Info => Want::Names(client.info_commands(CALL_TIMEOUT)?),
        Op::ExecStart => Want::Pid(client.exec_start(&argv, &[], None, CALL_TIMEOUT)?),
        Op::ExecStatus => Want::Status(client.exec_status(1, CALL_TIMEOUT)?),
        Op::ReadFile => Want::Data(client.read_file("/x", READ_LIMIT, CALL_TIMEOUT)?),
        Op::WriteFile(data) => client
            .write_file("/x", data, CALL_TIMEOUT)
            .map(|()| Want::Done)?,
        Op::Shutdown => client
            .shutdown(ShutdownMode::Reboot, SHUTDOWN_LISTEN, &|| false)
            .map(|()| Want::Done)?,
        Op::Sync => client.sync(CALL_TIMEOUT).map(|()| Want::Done)?,
    })
}

fn run(server: &FakePeer, script: Script) -> TestCaseResult {
    let peer_script = script.clone();
    let peer = server.serve(move |stream| play(stream, &peer_script));
    let started = Instant::now();
    let result = AgentClient::connect(server.path(), CALL_TIMEOUT)
        .and_then(|mut client| call(&mut client, &script.op));
    let took = started.elapsed();
    let joined = peer.join();
    prop_assert!(joined.is_ok(), "the fake agent panicked");
    prop_assert!(took < CASE_TIME_LIMIT, "the call took {took:?}: {result:?}");
    match (&script.want, result) {
        (Some(want), got) => prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got),
        (None, Ok(_)) => {}
        (None, Err(e)) => prop_assert!(
            matches!(
                e,
                AgentError::Protocol { .. }
                    | AgentError::Command { .. }
                    | AgentError::Closed
                    | AgentError::Timeout { .. }
                    | AgentError::FileTooLarge { .. }
            ),
            "unexpected error kind: {e:?}"
        ),
    }
    Ok(())
}

#[test]
fn client_decodes_what_a_correct_agent_sends() {
    let server = FakePeer::bind("qga.sock");
    fuzz(
        TARGET,
        "client_decodes_what_a_correct_agent_sends",
        200,
        good_script(),
        |s| run(&server, s),
    );
}

#[test]
fn client_survives_a_hostile_agent() {
    let server = FakePeer::bind("qga.sock");
    fuzz(
        TARGET,
        "client_survives_a_hostile_agent",
        300,
        hostile_script(),
        |s| run(&server, s),
    );
}

// ---- limits and regressions ----

/// Answers the client's first sync, then runs `rest` on the stream.
fn after_sync(
    rest: impl FnOnce(&mut UnixStream) + Send + 'static,
) -> (FakePeer, thread::JoinHandle<()>) {
    let server = FakePeer::bind("qga.sock");
    let peer = server.serve(move |stream| {
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let requests = AgentPeer::new(stream);
        let _ = requests.stream.set_read_timeout(Some(CALL_TIMEOUT));
        for request in requests {
            if let Request::Command(cmd) = request {
                let id = cmd["arguments"]["id"].clone();
                let mut out = vec![SENTINEL];
                out.extend(agent_return(id));
                if writer.write_all(&out).is_ok() {
                    rest(&mut writer);
                }
                return;
            }
        }
    });
    (server, peer)
}

/// Bytes sent by one `write_all` of the floods below.
const FLOOD_BLOCK: usize = 1 << 16;

#[test]
fn endless_reply_is_a_protocol_error_at_the_reply_limit() {
    let (server, peer) = after_sync(|s| {
        let _ = s.write_all(b"{\"return\": \"");
        let block = vec![b'a'; FLOOD_BLOCK];
        // Stops when the client gives up and hangs up.
        while s.write_all(&block).is_ok() {}
    });
    let mut client = AgentClient::connect(server.path(), CALL_TIMEOUT).expect("connect");
    match client.ping(Duration::from_secs(60)) {
        Err(AgentError::Protocol { detail }) => {
            assert!(
                detail.contains(&ga::MAX_REPLY_BYTES.to_string()),
                "{detail}"
            )
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    drop(client);
    peer.join().expect("peer");
}

#[test]
fn sync_through_endless_junk_ends_at_its_timeout() {
    let (server, peer) = after_sync(|s| {
        let block = vec![b'x'; FLOOD_BLOCK];
        while s.write_all(&block).is_ok() {}
    });
    let mut client = AgentClient::connect(server.path(), CALL_TIMEOUT).expect("connect");
    client.sync(CALL_TIMEOUT).expect("first sync");
    // The second sync reads nothing but junk (no 0xFF): it must neither buffer
    // it all nor outlast its timeout.
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let result = client.sync(timeout);
    assert!(
        matches!(result, Err(AgentError::Timeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
    drop(client);
    peer.join().expect("peer");
}

/// Size of the reply below: big enough that re-parsing it on every read (the
/// bug) takes tens of seconds, small enough that one parse takes a fraction.
const BRACES_REPLY_BYTES: usize = 16 << 20;
/// Time allowed for that reply: a linear parse takes well under a second.
const BRACES_TIME_LIMIT: Duration = Duration::from_secs(8);

#[test]
fn reply_full_of_braces_is_parsed_in_linear_time() {
    let (server, peer) = after_sync(|s| {
        let _ = s.write_all(b"{\"return\": {\"s\": \"");
        let block = vec![b'}'; FLOOD_BLOCK];
        for _ in 0..BRACES_REPLY_BYTES / FLOOD_BLOCK {
            if s.write_all(&block).is_err() {
                return;
            }
        }
        let _ = s.write_all(b"\", \"nested\": [{}, {\"a\": [{}]}]}}\n");
    });
    let mut client = AgentClient::connect(server.path(), CALL_TIMEOUT).expect("connect");
    let started = Instant::now();
    let result = client.ping(Duration::from_secs(120));
    let took = started.elapsed();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        took < BRACES_TIME_LIMIT,
        "a {BRACES_REPLY_BYTES}-byte reply took {took:?}"
    );
    drop(client);
    peer.join().expect("peer");
}

#[test]
fn stray_sentinel_inside_an_unfinished_reply_still_resyncs() {
    let server = FakePeer::bind("qga.sock");
    let peer = server.serve(move |stream| {
        let mut writer = stream.try_clone().expect("clone");
        let requests = AgentPeer::new(stream);
        let _ = requests.stream.set_read_timeout(Some(CALL_TIMEOUT));
        for request in requests {
            if let Request::Command(cmd) = request {
                if cmd["execute"] == "guest-sync-delimited" {
                    // An unfinished string, cut by a 0xFF that starts our reply.
                    // No line end after it: nothing but the 0xFF shows that the
                    // string (which would swallow our reply) is broken.
                    let mut out = b"\xff{\"return\": \"half".to_vec();
                    out.push(SENTINEL);
                    out.extend(
                        json!({"return": cmd["arguments"]["id"]})
                            .to_string()
                            .bytes(),
                    );
                    writer.write_all(&out).expect("write");
                } else {
                    writer.write_all(&agent_return(json!({}))).expect("write");
                }
            }
        }
    });
    let mut client = AgentClient::connect(server.path(), CALL_TIMEOUT).expect("connect");
    let started = Instant::now();
    client.ping(CALL_TIMEOUT).expect("ping");
    assert!(
        started.elapsed() < CALL_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    drop(client);
    peer.join().expect("peer");
}
