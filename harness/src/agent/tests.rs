//! These tests script a fake qemu-ga over a real Unix socket. A fake is
//! used because a real agent cannot be made on demand to stay silent, send
//! stale replies or garbage, or answer a sync only after old junk.

use super::*;
use crate::testing::fake_peer::{AgentPeer, FakePeer, Request, AGENT_PARSE_ERROR};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

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
        agent.send(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"No space left on device\"}}\n",
        );
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
    let listen = Duration::from_secs(1);
    client
        .shutdown(ShutdownMode::Powerdown, listen, &|| false)
        .unwrap();
    assert!(started.elapsed() >= listen);
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
    match client.shutdown(ShutdownMode::Halt, SHUTDOWN_REPLY_WINDOW, &|| false) {
        Err(AgentError::Command { command, desc, .. }) => {
            assert_eq!(command, "guest-shutdown");
            assert!(desc.contains("failed to shutdown"));
        }
        other => panic!("expected a command error, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn a_late_shutdown_error_is_still_heard() {
    // qemu-ga answers guest-shutdown only once the guest's shutdown command has
    // exited; systemd's takes seconds to fail without D-Bus.
    let (_dir, mut client, peer) = fake(|mut agent| {
        let _ = agent.command();
        std::thread::sleep(Duration::from_millis(1500));
        agent.send(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"child process has failed to shutdown\"}}\n");
    });
    let err = client
        .shutdown(ShutdownMode::Reboot, SHUTDOWN_REPLY_WINDOW, &|| false)
        .unwrap_err();
    assert!(err.to_string().contains("failed to shutdown"), "{err}");
    peer.join().unwrap();
}

#[test]
fn shutdown_stops_listening_once_the_reboot_is_confirmed() {
    let (_dir, mut client, peer) = fake(|mut agent| {
        let _ = agent.command();
        let _ = agent.next();
    });
    let started = Instant::now();
    let confirmed = || started.elapsed() > Duration::from_millis(300);
    client
        .shutdown(ShutdownMode::Reboot, SHUTDOWN_REPLY_WINDOW, &confirmed)
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "listened {:?} after the reboot was confirmed",
        started.elapsed()
    );
    drop(client);
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

/// A dump's header from a file of any size: the reads stop at `max_bytes` and
/// never ask for more (a big MEMORY.DMP stays in the guest), and the handle closes.
#[test]
fn read_file_head_stops_at_its_count_and_closes() {
    let (_dir, mut client, peer) = fake(|mut agent| {
        let (reads, closed) = serve_read(&mut agent, b"PAGEDU64 and gigabytes more");
        assert_eq!(reads, 3, "three 3-byte pieces for 8 bytes");
        assert!(closed);
    });
    assert_eq!(
        client.read_file_head("/etc/f", 8, TEST_TIMEOUT).unwrap(),
        b"PAGEDU64"
    );
    peer.join().unwrap();
}

#[test]
fn read_file_head_of_a_short_file_ends_at_eof() {
    let (_dir, mut client, peer) = fake(|mut agent| {
        serve_read(&mut agent, b"PAGE");
    });
    assert_eq!(
        client
            .read_file_head("/etc/f", 0x2000, TEST_TIMEOUT)
            .unwrap(),
        b"PAGE"
    );
    peer.join().unwrap();
}

/// `guest-get-time` answers an integer: nanoseconds since the epoch (qga/qapi-schema.json).
#[test]
fn guest_time_is_nanoseconds_since_the_epoch() {
    let (_dir, mut client, peer) = fake(|mut agent| {
        assert_eq!(agent.command()["execute"], "guest-get-time");
        agent.reply(json!(1_721_362_129_551_584_000_i64));
    });
    assert_eq!(
        client.guest_time(TEST_TIMEOUT).unwrap(),
        1_721_362_129_551_584_000
    );
    peer.join().unwrap();
}

/// Starts an agent worker on a fake agent; replies come back on the receiver.
fn fake_worker(
    script: impl FnOnce(AgentPeer) + Send + 'static,
) -> (
    FakePeer,
    worker::AgentWorker,
    mpsc::Receiver<worker::Reply>,
    JoinHandle<()>,
) {
    let (dir, client, peer) = fake(script);
    let (tx, rx) = mpsc::channel();
    let worker = worker::AgentWorker::start(client, move |reply| {
        let _ = tx.send(reply);
    })
    .unwrap();
    (dir, worker, rx, peer)
}

/// Answers `guest-exec` with pid 7, then `running` polls with `exited: false` and
/// the next with an exit; returns how many polls came.
fn serve_exec_running_for(agent: &mut AgentPeer, running: usize) -> usize {
    assert_eq!(agent.command()["execute"], "guest-exec");
    agent.reply(json!({"pid": 7}));
    let mut polls = 0;
    loop {
        let status = agent.command();
        assert_eq!(status["execute"], "guest-exec-status");
        assert_eq!(status["arguments"]["pid"], 7);
        polls += 1;
        if polls <= running {
            agent.reply(json!({"exited": false}));
        } else {
            agent.reply(
                json!({"exited": true, "exitcode": 0, "out-data": BASE64.encode(b"done\n")}),
            );
            return polls;
        }
    }
}

// The fake scripts the agent's answers (running, running, ..., exited) exactly, which
// a real guest command's timing cannot.
#[test]
fn the_worker_polls_a_running_command_until_it_exits() {
    let (polls_tx, polls_rx) = mpsc::channel();
    let (_dir, mut worker, replies, peer) = fake_worker(move |mut agent| {
        polls_tx
            .send(serve_exec_running_for(&mut agent, 8))
            .unwrap();
    });
    let id = worker.submit(worker::Request::Exec {
        argv: vec!["/bin/true".into()],
        env: Vec::new(),
        timeout: TEST_TIMEOUT,
    });
    let reply = replies.recv_timeout(TEST_TIMEOUT).unwrap();
    assert_eq!(reply.id, id);
    let Ok(worker::Answer::Exited(status)) = reply.result else {
        panic!("expected an exit, got {:?}", reply.result)
    };
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(status.stdout, b"done\n");
    peer.join().unwrap();
    // Every poll that found it running was followed by another, up to the exit.
    assert_eq!(polls_rx.recv().unwrap(), 9);
}

#[test]
fn the_worker_stops_polling_at_the_commands_timeout() {
    let (_dir, mut worker, replies, peer) = fake_worker(|mut agent| {
        assert_eq!(agent.command()["execute"], "guest-exec");
        agent.reply(json!({"pid": 7}));
        while let Some(status) = agent.try_command() {
            assert_eq!(status["execute"], "guest-exec-status");
            agent.reply(json!({"exited": false}));
        }
    });
    let id = worker.submit(worker::Request::Exec {
        argv: vec!["/bin/sleep".into(), "60".into()],
        env: Vec::new(),
        timeout: Duration::from_millis(200),
    });
    let reply = replies.recv_timeout(TEST_TIMEOUT).unwrap();
    assert_eq!(reply.id, id);
    assert!(
        matches!(reply.result, Ok(worker::Answer::ExecTimedOut)),
        "expected a timeout, got {:?}",
        reply.result
    );
    drop(worker);
    peer.join().unwrap();
}
