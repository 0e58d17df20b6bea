//! These tests script a fake QMP peer over a real Unix socket. A fake is
//! used because real QEMU cannot be made to send garbage, oversized lines,
//! unknown ids or to stall on demand; `real_qemu_round_trip` checks the
//! client against the real thing.

use super::*;
use crate::testing::fake_peer::{FakePeer, QmpPeer};
use serde_json::json;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens on a fresh socket and runs `script` against the first client.
fn fake(script: impl FnOnce(QmpPeer) + Send + 'static) -> (FakePeer, PathBuf, JoinHandle<()>) {
    let server = FakePeer::bind("qmp.sock");
    let handle = server.serve(|stream| script(QmpPeer::new(stream)));
    let path = server.path().to_path_buf();
    (server, path, handle)
}

fn next_message(rx: &Receiver<QmpMessage>) -> QmpMessage {
    rx.recv_timeout(TEST_TIMEOUT).unwrap()
}

#[test]
fn client_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<QmpClient>();
}

#[test]
fn greeting_is_parsed_and_capabilities_negotiated() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let cmd = peer.command();
        assert_eq!(cmd["execute"], "query-status");
        assert!(cmd.get("arguments").is_none());
        peer.reply(&cmd["id"], json!({"running": false, "status": "prelaunch"}));
    });
    let (client, _rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    assert_eq!(
        client.greeting(),
        &QmpGreeting {
            major: 7,
            minor: 2,
            micro: 3,
            package: "Debian 1:7.2+dfsg-7".to_string()
        }
    );
    let status = client.execute("query-status", None, TEST_TIMEOUT).unwrap();
    assert_eq!(status["status"], "prelaunch");
    peer.join().unwrap();
}

#[test]
fn events_before_a_reply_reach_the_channel_and_the_reply_is_still_matched() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let cmd = peer.command();
        assert_eq!(cmd["arguments"], json!({"device": "x"}));
        peer.line(r#"{"event": "STOP", "timestamp": {"seconds": 12, "microseconds": 345}}"#);
        peer.line(
            r#"{"event": "GUEST_PANICKED", "data": {"action": "pause"}, "timestamp": {"seconds": 1, "microseconds": 2}}"#,
        );
        peer.reply(&cmd["id"], json!(7));
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    let value = client
        .execute("anything", Some(json!({"device": "x"})), TEST_TIMEOUT)
        .unwrap();
    assert_eq!(value, json!(7));
    let QmpMessage::Event(stop) = next_message(&rx) else {
        panic!("expected an event")
    };
    assert_eq!(stop.name, "STOP");
    assert_eq!(stop.data, Value::Null);
    assert_eq!(stop.timestamp_micros, 12_000_345);
    let QmpMessage::Event(panicked) = next_message(&rx) else {
        panic!("expected an event")
    };
    assert_eq!(panicked.name, "GUEST_PANICKED");
    assert_eq!(panicked.data, json!({"action": "pause"}));
    assert_eq!(panicked.timestamp_micros, 1_000_002);
    peer.join().unwrap();
}

#[test]
fn concurrent_replies_out_of_order_go_to_their_own_callers() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let first = peer.command();
        let second = peer.command();
        // Answer in reverse order, each with its command's name.
        peer.reply(&second["id"], second["execute"].clone());
        peer.reply(&first["id"], first["execute"].clone());
    });
    let (client, _rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    let client = Arc::new(client);
    let threads: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            let client = Arc::clone(&client);
            thread::spawn(move || {
                let got = client.execute(name, None, TEST_TIMEOUT).unwrap();
                assert_eq!(got, json!(name));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    peer.join().unwrap();
}

#[test]
fn unrepresentable_timeouts_mean_no_limit_not_a_panic() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let cmd = peer.command();
        peer.reply(&cmd["id"], json!(1));
    });
    let (client, _rx) = QmpClient::connect_with(&path, Duration::MAX, Duration::MAX).unwrap();
    assert_eq!(client.execute("x", None, Duration::MAX).unwrap(), json!(1));
    peer.join().unwrap();
}

#[test]
fn error_reply_becomes_command_error() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let cmd = peer.command();
        peer.line(
            &json!({"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": cmd["id"]})
                .to_string(),
        );
    });
    let (client, _rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    match client.execute("nope", None, TEST_TIMEOUT) {
        Err(QmpError::Command {
            command,
            class,
            desc,
        }) => {
            assert_eq!(command, "nope");
            assert_eq!(class, "CommandNotFound");
            assert!(desc.contains("not been found"));
        }
        other => panic!("expected a command error, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn garbage_line_closes_with_protocol_error_and_fails_the_waiter() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let _cmd = peer.command();
        peer.line("this is not json {");
        // Hold the socket open so only the garbage can end the reader.
        let mut rest = Vec::new();
        let _ = peer.reader.read_to_end(&mut rest);
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    let result = client.execute("query-status", None, TEST_TIMEOUT);
    assert!(matches!(result, Err(QmpError::Closed)), "{result:?}");
    match next_message(&rx) {
        QmpMessage::Closed(Some(QmpError::Protocol { detail })) => {
            assert!(detail.contains("malformed json"), "{detail}")
        }
        other => panic!("expected closed with a protocol error, got {other:?}"),
    }
    // Later calls fail fast instead of waiting out their timeout.
    let started = Instant::now();
    assert!(matches!(
        client.execute("query-status", None, TEST_TIMEOUT),
        Err(QmpError::Closed)
    ));
    assert!(started.elapsed() < TEST_TIMEOUT);
    drop(client);
    peer.join().unwrap();
}

#[test]
fn oversized_line_is_a_protocol_error_not_an_allocation() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let chunk = vec![b'a'; 1024 * 1024];
        // The client stops reading once over the limit, so writes fail
        // when it shuts the socket; that is expected.
        for _ in 0..=MAX_LINE_BYTES / chunk.len() {
            if peer.writer.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = peer.writer.write_all(b"\n");
        let mut rest = Vec::new();
        let _ = peer.reader.read_to_end(&mut rest);
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    match next_message(&rx) {
        QmpMessage::Closed(Some(QmpError::Protocol { detail })) => {
            assert!(detail.contains("longer than"), "{detail}")
        }
        other => panic!("expected closed with a protocol error, got {other:?}"),
    }
    drop(client);
    peer.join().unwrap();
}

#[test]
fn reply_with_unknown_id_is_a_protocol_error() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let _cmd = peer.command();
        peer.reply(&json!(999_999), json!({}));
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    assert!(matches!(
        client.execute("query-status", None, TEST_TIMEOUT),
        Err(QmpError::Closed)
    ));
    match next_message(&rx) {
        QmpMessage::Closed(Some(QmpError::Protocol { detail })) => {
            assert!(detail.contains("unknown id 999999"), "{detail}")
        }
        other => panic!("expected closed with a protocol error, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn peer_closing_mid_wait_reports_closed() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let _cmd = peer.command();
        // Dropping the peer closes the socket without a reply.
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    let started = Instant::now();
    let result = client.execute("quit", None, TEST_TIMEOUT);
    assert!(matches!(result, Err(QmpError::Closed)), "{result:?}");
    assert!(started.elapsed() < TEST_TIMEOUT);
    assert!(matches!(next_message(&rx), QmpMessage::Closed(None)));
    assert!(matches!(client.send("quit", None), Err(QmpError::Closed)));
    peer.join().unwrap();
}

#[test]
fn silent_peer_times_out_and_the_late_reply_is_dropped() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let slow = peer.command();
        let next = peer.command();
        // The reply to the timed-out command arrives late, then the next.
        peer.reply(&slow["id"], json!("late"));
        peer.reply(&next["id"], json!("fresh"));
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    let after = Duration::from_millis(200);
    match client.execute("slow", None, after) {
        Err(QmpError::Timeout { what, after: got }) => {
            assert_eq!(got, after);
            assert!(what.contains("slow"), "{what}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        client.execute("next", None, TEST_TIMEOUT).unwrap(),
        json!("fresh")
    );
    peer.join().unwrap();
    // The late reply must not count as a protocol error: the stream ends
    // only because the peer hung up.
    let closed = next_message(&rx);
    assert!(matches!(closed, QmpMessage::Closed(None)), "{closed:?}");
}

#[test]
fn send_does_not_wait_and_its_reply_is_ignored() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.handshake();
        let sent = peer.command();
        assert_eq!(sent["execute"], "system_reset");
        assert!(sent["id"].is_u64());
        peer.reply(&sent["id"], json!({}));
        let cmd = peer.command();
        peer.reply(&cmd["id"], json!("ok"));
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    client.send("system_reset", None).unwrap();
    assert_eq!(
        client.execute("next", None, TEST_TIMEOUT).unwrap(),
        json!("ok")
    );
    peer.join().unwrap();
    // The reply to send() must not count as a protocol error: the stream ends
    // only because the peer hung up.
    let closed = next_message(&rx);
    assert!(matches!(closed, QmpMessage::Closed(None)), "{closed:?}");
}

#[test]
fn silent_peer_times_out_the_greeting() {
    let (_dir, path, peer) = fake(|mut peer| {
        let mut rest = Vec::new();
        let _ = peer.reader.read_to_end(&mut rest);
    });
    let after = Duration::from_millis(200);
    match QmpClient::connect_with(&path, TEST_TIMEOUT, after) {
        Err(QmpError::Timeout { what, after: got }) => {
            assert_eq!(got, after);
            assert!(what.contains("greeting"), "{what}");
        }
        Err(other) => panic!("expected a timeout, got {other:?}"),
        Ok(_) => panic!("expected a timeout, got a client"),
    }
    peer.join().unwrap();
}

#[test]
fn unexpected_greeting_is_a_protocol_error() {
    let (_dir, path, peer) = fake(|mut peer| {
        peer.line(r#"{"hello": "world"}"#);
    });
    match QmpClient::connect(&path, TEST_TIMEOUT) {
        Err(QmpError::Protocol { detail }) => assert!(detail.contains("greeting"), "{detail}"),
        Err(other) => panic!("expected a protocol error, got {other:?}"),
        Ok(_) => panic!("expected a protocol error, got a client"),
    }
    peer.join().unwrap();
}

#[test]
fn connect_waits_for_the_socket_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let bind_path = path.clone();
    let peer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let listener = UnixListener::bind(&bind_path).unwrap();
        let (stream, _) = listener.accept().unwrap();
        QmpPeer::new(stream).handshake();
    });
    let (client, _rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    assert_eq!(client.greeting().major, 7);
    peer.join().unwrap();
}

#[test]
fn connect_gives_up_when_the_socket_never_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.sock");
    let started = Instant::now();
    match QmpClient::connect(&path, Duration::from_millis(200)) {
        Err(QmpError::Connect { path: got, source }) => {
            assert_eq!(got, path);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(_) => panic!("expected a connect error, got a client"),
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn drop_does_not_hang_while_the_peer_stays_connected() {
    let (done_tx, done_rx) = mpsc::channel();
    let (_dir, path, peer) = fake(move |mut peer| {
        peer.handshake();
        // The peer never closes; only the client's shutdown can end this.
        let mut rest = Vec::new();
        let n = peer.reader.read_to_end(&mut rest).unwrap();
        done_tx.send(n).unwrap();
    });
    let (client, rx) = QmpClient::connect(&path, TEST_TIMEOUT).unwrap();
    let started = Instant::now();
    drop(client);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(done_rx.recv_timeout(TEST_TIMEOUT).unwrap(), 0);
    assert!(matches!(next_message(&rx), QmpMessage::Closed(None)));
    peer.join().unwrap();
}

/// Kills QEMU even when an assertion fails first.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs qemu-system-x86_64"]
fn real_qemu_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let mut qemu = Child(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-nodefaults", "-display", "none", "-S"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", path.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (client, rx) = QmpClient::connect(&path, Duration::from_secs(20)).unwrap();
    assert_eq!((client.greeting().major, client.greeting().minor), (7, 2));
    let status = client.execute("query-status", None, TEST_TIMEOUT).unwrap();
    assert_eq!(status["status"], "prelaunch");
    assert_eq!(status["running"], false);
    let version = client.execute("query-version", None, TEST_TIMEOUT).unwrap();
    assert_eq!(version["qemu"]["major"], 7);
    match client.execute("no-such-command", None, TEST_TIMEOUT) {
        Err(QmpError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
        other => panic!("expected a command error, got {other:?}"),
    }
    client.execute("cont", None, TEST_TIMEOUT).unwrap();
    client.send("quit", None).unwrap();
    let mut names = Vec::new();
    loop {
        match next_message(&rx) {
            QmpMessage::Event(event) => names.push(event.name),
            QmpMessage::Closed(outcome) => {
                assert!(outcome.is_none(), "{outcome:?}");
                break;
            }
        }
    }
    assert!(names.contains(&"SHUTDOWN".to_string()), "{names:?}");
    let exit = qemu.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
