//! Serial console capture: reads the guest's serial port from QEMU's socket, writes a
//! size-capped log file and hands each line to the detectors.
//!
//! The guest is hostile: it may print without end or without newlines. The log keeps
//! the first `CONSOLE_HEAD_BYTES` and the last `CONSOLE_TAIL_BYTES` with a marker
//! saying how much was dropped between; lines handed on are cut at `MAX_LINE_BYTES`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

/// Bytes of the console kept from the start of a VM's life.
pub const CONSOLE_HEAD_BYTES: u64 = 8 << 20;
/// Bytes of the console kept from the end once the head is full.
pub const CONSOLE_TAIL_BYTES: usize = 2 << 20;
/// Longest console line handed to the detectors; the rest of the line is dropped.
pub const MAX_LINE_BYTES: usize = 4096;

/// One line the guest printed.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    pub text: String,
    pub at: Instant,
}

/// What the capture thread reports when the console closes.
#[derive(Debug, Default, Clone)]
pub struct ConsoleSummary {
    pub bytes_seen: u64,
    pub bytes_dropped: u64,
}

/// A running capture; join it after QEMU has exited to flush the log.
pub struct ConsoleCapture {
    handle: Option<JoinHandle<io::Result<ConsoleSummary>>>,
    pub path: PathBuf,
}

impl ConsoleCapture {
    /// Starts capturing `stream` into `path`, handing each complete line to `on_line`.
    pub fn start(
        stream: UnixStream,
        path: &Path,
        on_line: impl Fn(ConsoleLine) + Send + 'static,
    ) -> io::Result<ConsoleCapture> {
        let file = File::create(path)?;
        let handle = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || capture(stream, file, on_line))?;
        Ok(ConsoleCapture {
            handle: Some(handle),
            path: path.to_path_buf(),
        })
    }

    /// Waits for the capture to end (the socket closes when QEMU exits).
    pub fn finish(mut self) -> io::Result<ConsoleSummary> {
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("console capture thread panicked")),
            None => Ok(ConsoleSummary::default()),
        }
    }
}

fn capture(
    mut stream: UnixStream,
    file: File,
    on_line: impl Fn(ConsoleLine),
) -> io::Result<ConsoleSummary> {
    // Unbuffered on purpose: the log must be current while the VM runs (a user tails
    // it, a crash may end bootgate itself); each read is one write.
    let mut out = file;
    let mut summary = ConsoleSummary::default();
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        let head_room = CONSOLE_HEAD_BYTES.saturating_sub(summary.bytes_seen) as usize;
        let (to_head, to_tail) = chunk.split_at(head_room.min(chunk.len()));
        out.write_all(to_head)?;
        if !to_tail.is_empty() {
            tail.extend(to_tail);
            let excess = tail.len().saturating_sub(CONSOLE_TAIL_BYTES);
            tail.drain(..excess);
            summary.bytes_dropped += excess as u64;
        }
        summary.bytes_seen += n as u64;
        for &byte in chunk {
            match byte {
                b'\n' => {
                    let text = String::from_utf8_lossy(&line);
                    on_line(ConsoleLine {
                        text: clip(text.trim_end_matches('\r'), MAX_LINE_BYTES).to_string(),
                        at: Instant::now(),
                    });
                    line.clear();
                }
                _ if line.len() < MAX_LINE_BYTES => line.push(byte),
                _ => {}
            }
        }
    }
    if !line.is_empty() {
        on_line(ConsoleLine {
            text: clip(&String::from_utf8_lossy(&line), MAX_LINE_BYTES).to_string(),
            at: Instant::now(),
        });
    }
    if !tail.is_empty() {
        if summary.bytes_dropped > 0 {
            writeln!(
                out,
                "\n[bootgate: {} bytes of console output dropped here; the log keeps the first {} and the last {} bytes]",
                summary.bytes_dropped, CONSOLE_HEAD_BYTES, CONSOLE_TAIL_BYTES
            )?;
        }
        let (a, b) = tail.as_slices();
        out.write_all(a)?;
        out.write_all(b)?;
    }
    out.flush()?;
    Ok(summary)
}

/// At most `max` bytes of `text`, cut on a character boundary. Needed after decoding
/// as well as before: each invalid byte becomes a 3-byte U+FFFD, so a line of
/// `MAX_LINE_BYTES` raw bytes can decode to three times that.
fn clip(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn lines_are_delivered_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut guest, host) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let path = dir.path().join("console.log");
        let capture = ConsoleCapture::start(host, &path, move |l| tx.send(l).unwrap()).unwrap();
        guest.write_all(b"hello\r\nworld\npartial").unwrap();
        drop(guest);
        let summary = capture.finish().unwrap();
        let got: Vec<String> = rx.try_iter().map(|l| l.text).collect();
        assert_eq!(got, ["hello", "world", "partial"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\r\nworld\npartial");
        assert_eq!(summary.bytes_seen, 20);
        assert_eq!(summary.bytes_dropped, 0);
    }

    #[test]
    fn flood_is_capped_keeping_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut guest, host) = UnixStream::pair().unwrap();
        let path = dir.path().join("console.log");
        let capture = ConsoleCapture::start(host, &path, |_| {}).unwrap();
        let total = CONSOLE_HEAD_BYTES as usize + CONSOLE_TAIL_BYTES + 1_000_000;
        let writer = std::thread::spawn(move || {
            let block = vec![b'x'; 65536];
            let mut sent = 0;
            while sent < total {
                let n = block.len().min(total - sent);
                guest.write_all(&block[..n]).unwrap();
                sent += n;
            }
            guest.write_all(b"THE-END").unwrap();
        });
        writer.join().unwrap();
        let summary = capture.finish().unwrap();
        let log = std::fs::read(&path).unwrap();
        assert!(log.len() < CONSOLE_HEAD_BYTES as usize + CONSOLE_TAIL_BYTES + 1024);
        assert!(log.ends_with(b"THE-END"));
        assert_eq!(summary.bytes_dropped, 1_000_007);
        let text = String::from_utf8_lossy(&log);
        assert!(text.contains("bytes of console output dropped"));
    }
}
