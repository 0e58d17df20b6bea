//! Runs guest-agent requests on their own thread and posts each answer as a message,
//! so the runner waits on one channel for whatever comes first — the agent's answer,
//! a panic event, a console crash report, QEMU going away — instead of blocking in an
//! agent call while the guest is already dead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::poll::ExecPolls;
use super::{AgentClient, AgentError, ExecStatus, ShutdownMode, SHUTDOWN_REPLY_WINDOW};

/// One sync attempt while waiting for the agent to come up. Between attempts the
/// worker checks for cancellation; the runner does not wait on this.
pub(crate) const SYNC_ATTEMPT: Duration = Duration::from_secs(1);
/// Time one agent request may take once the agent is up.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after the agent socket reports closed, before trying again.
const CLOSED_RETRY: Duration = Duration::from_millis(50);
/// Largest file read back from the guest.
pub(crate) const MAX_READ_BYTES: u64 = 64 << 20;

/// What the runner asks of the agent.
#[derive(Debug)]
pub(crate) enum Request {
    /// Sync until the agent answers (the guest is ready).
    WaitReady,
    /// Run a command to completion, or until `timeout`.
    Exec {
        argv: Vec<String>,
        env: Vec<String>,
        timeout: Duration,
    },
    WriteFile {
        path: String,
        data: Vec<u8>,
    },
    ReadFile {
        path: String,
    },
    /// The first `bytes` of a file, however large it is.
    ReadHead {
        path: String,
        bytes: u64,
    },
    /// The guest's clock (`guest-get-time`).
    GuestTime,
    Shutdown(ShutdownMode),
    /// The agent's version and the commands it has enabled (`guest-info`).
    Commands,
}

#[derive(Debug)]
pub(crate) enum Answer {
    Ready,
    Exited(ExecStatus),
    /// The command was still running at its timeout.
    ExecTimedOut,
    Done,
    Data(Vec<u8>),
    Commands(super::AgentInfo),
    /// The guest's clock: nanoseconds since the Unix epoch.
    Time(i64),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("cancelled")]
    Cancelled,
}

/// The answer to request number `id`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub id: u64,
    pub result: Result<Answer, JobError>,
}

struct Job {
    id: u64,
    request: Request,
}

/// Owns the agent connection through a thread; dropping it lets the thread end after
/// its current request (it is never joined: a request stuck on a dead guest ends when
/// QEMU closes the socket).
pub(crate) struct AgentWorker {
    jobs: Sender<Job>,
    /// Jobs with an id below this are cancelled at their next check.
    cancel_below: Arc<AtomicU64>,
    /// How many times the agent has answered (every reply, including each
    /// `guest-exec-status` poll of a running command): the stall detector's sign
    /// that the guest still schedules, even while a long command runs.
    answered: Arc<AtomicU64>,
    next_id: u64,
}

impl AgentWorker {
    pub fn start(
        client: AgentClient,
        post: impl Fn(Reply) + Send + 'static,
    ) -> std::io::Result<AgentWorker> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let cancel_below = Arc::new(AtomicU64::new(0));
        let cancel = Arc::clone(&cancel_below);
        let answered = Arc::new(AtomicU64::new(0));
        let heard = Arc::clone(&answered);
        std::thread::Builder::new()
            .name("agent".into())
            .spawn(move || {
                let mut client = client;
                for job in rx {
                    let cancelled = || job.id < cancel.load(Ordering::SeqCst);
                    let result = if cancelled() {
                        Err(JobError::Cancelled)
                    } else {
                        perform(&mut client, job.request, &cancelled, &heard)
                    };
                    // A refusal is an answer too (a command the agent blocks).
                    let answered = matches!(
                        result,
                        Ok(_) | Err(JobError::Agent(AgentError::Command { .. }))
                    );
                    if answered {
                        heard.fetch_add(1, Ordering::SeqCst);
                    }
                    post(Reply { id: job.id, result });
                }
            })?;
        Ok(AgentWorker {
            jobs,
            cancel_below,
            answered,
            next_id: 1,
        })
    }

    /// How many times the agent has answered so far (see the field).
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Queues a request; its reply carries the returned id.
    pub(crate) fn submit(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        // A send error means the thread is gone; the runner then never gets a reply
        // and ends its wait on QEMU's events or its own deadline.
        let _ = self.jobs.send(Job { id, request });
        id
    }

    /// Cancels every request submitted so far (a crash or a reset made them moot).
    pub(crate) fn cancel_all(&self) {
        self.cancel_below.store(self.next_id, Ordering::SeqCst);
    }
}

fn perform(
    client: &mut AgentClient,
    request: Request,
    cancelled: &dyn Fn() -> bool,
    heard: &AtomicU64,
) -> Result<Answer, JobError> {
    match request {
        Request::WaitReady => loop {
            if cancelled() {
                return Err(JobError::Cancelled);
            }
            match client.sync(SYNC_ATTEMPT) {
                Ok(()) => return Ok(Answer::Ready),
                Err(AgentError::Closed | AgentError::Io(_)) => std::thread::sleep(CLOSED_RETRY),
                // Not up yet (timeout) or stale bytes from an earlier boot: try again.
                Err(_) => {}
            }
        },
        Request::Exec { argv, env, timeout } => {
            let started = Instant::now();
            let pid = client.exec_start(&argv, &env, None, REQUEST_TIMEOUT)?;
            // Asked at once, then after short, growing pauses (agent/poll.rs says why).
            let mut polls = ExecPolls::new();
            loop {
                if cancelled() {
                    return Err(JobError::Cancelled);
                }
                let status = client.exec_status(pid, REQUEST_TIMEOUT)?;
                heard.fetch_add(1, Ordering::SeqCst);
                if status.exited {
                    return Ok(Answer::Exited(status));
                }
                let Some(left) = timeout
                    .checked_sub(started.elapsed())
                    .filter(|l| !l.is_zero())
                else {
                    return Ok(Answer::ExecTimedOut);
                };
                std::thread::sleep(polls.pause(left));
            }
        }
        Request::WriteFile { path, data } => {
            client.write_file(&path, &data, REQUEST_TIMEOUT)?;
            Ok(Answer::Done)
        }
        Request::ReadFile { path } => Ok(Answer::Data(client.read_file(
            &path,
            MAX_READ_BYTES,
            REQUEST_TIMEOUT,
        )?)),
        Request::ReadHead { path, bytes } => Ok(Answer::Data(client.read_file_head(
            &path,
            bytes,
            REQUEST_TIMEOUT,
        )?)),
        Request::GuestTime => Ok(Answer::Time(client.guest_time(REQUEST_TIMEOUT)?)),
        Request::Shutdown(mode) => {
            client.shutdown(mode, SHUTDOWN_REPLY_WINDOW, cancelled)?;
            Ok(Answer::Done)
        }
        Request::Commands => Ok(Answer::Commands(client.info(REQUEST_TIMEOUT)?)),
    }
}
