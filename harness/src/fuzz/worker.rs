//! The campaign's VM loop: each worker takes a mutant of a corpus entry, applies it
//! in a VM restored from the driver-loaded state ([`Rig`]), and records what it did
//! ([`Campaign`]): new driver messages grow the corpus, a new crash title is
//! minimized and stored, infrastructure errors in a row stop the campaign.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::campaign::FuzzError;
use super::dedup::{save_crash, Crashes, Sighting};
use super::format::ContentFormat;
use super::mutate::{Mutation, Mutator};
use crate::image::Manifest;
use crate::model::event::FuzzCounters;
use crate::model::record::Verdict;
use crate::model::{Emitter, Event};
use crate::qemu::accel::Accel;
use crate::qemu::snapshot::SavedState;
use crate::qemu::QemuTools;
use crate::runner::driver::BuiltDriver;
use crate::runner::dump_budget::DumpBudget;
use crate::runner::interrupted;
use crate::runner::scenario::persistent::{PersistentRun, PersistentVm};
use crate::runner::scenario::{self, ScenarioContext, StandbySlot};
use crate::suite::{ApplyContentStep, Gates, Scenario, Step, Suite, DEFAULT_BOOT_LOOP_BOOTS};
use crate::util::{lock, write_atomic};

/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Infrastructure errors in a row after which the run stops (the host, not the
/// driver, is broken).
const MAX_ERRORS_IN_A_ROW: u32 = 5;

/// What one execution showed.
pub(super) enum Outcome {
    Crash {
        title: String,
        evidence: PathBuf,
    },
    Hang(String),
    /// Ran through; the driver's messages on the console, normalized.
    Survived(String),
    Error(String),
}

/// Everything an execution needs, shared by the worker threads.
pub(super) struct Rig<'a> {
    pub(super) tools: &'a QemuTools,
    pub(super) manifest: &'a Manifest,
    pub(super) accel: Accel,
    pub(super) suite: &'a Suite,
    pub(super) driver: &'a str,
    pub(super) drivers: &'a BTreeMap<String, Result<BuiltDriver, String>>,
    pub(super) state: &'a SavedState,
    pub(super) work: &'a Path,
    /// Takes the scenario events of every execution, which nobody needs to see.
    pub(super) silent: &'a Emitter,
    pub(super) counter: AtomicU64,
    /// The campaign's dump budget (its executions take no dumps: `memory_dumps` is
    /// "none" for them, but the machine asks).
    pub(super) dumps: DumpBudget,
    /// Executions between restores (1: restore before every execution).
    pub(super) restore_every: u32,
}

/// A kept guest of one worker, and the folder and names its machine borrows.
pub(super) struct Session<'a> {
    vm: PersistentVm<'a>,
    dir: PathBuf,
    input: PathBuf,
    /// Executions run in it so far.
    pub(super) runs: u32,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What an execution in a kept guest showed.
pub(super) enum KeptOutcome {
    Survived(String),
    /// The guest stopped (crash, hang, error): what stopped it; the input is replayed
    /// alone before anything is concluded.
    Ended(String),
}

impl Rig<'_> {
    /// The content step that applies `file` through the driver's reload.
    fn apply_step(&self, file: PathBuf) -> Step {
        Step::ApplyContent(ApplyContentStep {
            driver: self.driver.to_string(),
            file,
            reload: true,
            timeout: None,
        })
    }

    /// A guest restored from the driver-loaded state and kept for later executions;
    /// takes the worker's standby when it has one.
    pub(super) fn open_session<'s>(
        &'s self,
        scenario: &'s Scenario,
        names: &'s (String, PathBuf),
        standby: Option<&'s StandbySlot>,
    ) -> Result<Session<'s>, String> {
        let (name, dir) = names;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ctx = ScenarioContext {
            tools: self.tools,
            manifest: self.manifest,
            accel: self.accel,
            suite: self.suite,
            scenario,
            dir,
            keep_overlay: false,
            emitter: self.silent,
            full_name: name,
            rel_dir: name,
            drivers: self.drivers,
            saved: Some(self.state),
            watch_after_crash: false,
            standby,
            refill_standby: false,
            dump_budget: &self.dumps,
        };
        let vm = PersistentVm::start(&ctx)?;
        Ok(Session {
            vm,
            dir: dir.clone(),
            input: dir.join("input.content"),
            runs: 0,
        })
    }

    /// The folder and name of a new session, and the empty scenario its machine is
    /// made for (no steps: each execution's step is given to it as it comes).
    pub(super) fn session_names(&self) -> (Scenario, (String, PathBuf)) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let name = format!("session-{n}");
        let scenario = self.scenario(name.clone(), Vec::new());
        let dir = self.work.join(&name);
        (scenario, (name, dir))
    }

    /// Applies `bytes` in the kept guest.
    pub(super) fn execute_kept(&self, session: &mut Session, bytes: &[u8]) -> KeptOutcome {
        session.runs += 1;
        if let Err(e) = write_atomic(&session.input, bytes) {
            return KeptOutcome::Ended(format!("cannot write {}: {e}", session.input.display()));
        }
        match session.vm.run(&self.apply_step(session.input.clone())) {
            PersistentRun::Survived(lines) => {
                KeptOutcome::Survived(signature(lines.iter().map(String::as_str), self.driver))
            }
            PersistentRun::Ended(why) => KeptOutcome::Ended(why),
        }
    }

    fn scenario(&self, name: String, steps: Vec<Step>) -> Scenario {
        Scenario {
            name,
            description: None,
            steps,
            gates: Gates::default(),
            expect: None,
            expect_title: None,
            boot_loop_boots: DEFAULT_BOOT_LOOP_BOOTS,
            // Content fuzzing stops at the crash (`watch_after_crash` is off).
            recovery_settle: crate::suite::DEFAULT_RECOVERY_SETTLE,
            ignore: false,
            cold_boot: false,
        }
    }

    /// Restores the driver-loaded VM, applies `bytes` through the driver's reload and
    /// says what happened. The evidence folder is removed unless it shows a crash.
    pub(super) fn execute(&self, bytes: &[u8], standby: Option<&scenario::StandbySlot>) -> Outcome {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let dir = self.work.join(format!("exec-{n}"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Outcome::Error(format!("cannot create {}: {e}", dir.display()));
        }
        let input = dir.join("input.content");
        if let Err(e) = write_atomic(&input, bytes) {
            return Outcome::Error(format!("cannot write {}: {e}", input.display()));
        }
        let scenario = self.scenario(format!("exec-{n}"), vec![self.apply_step(input.clone())]);
        let rel = format!("exec-{n}");
        let outcome = scenario::run(ScenarioContext {
            tools: self.tools,
            manifest: self.manifest,
            accel: self.accel,
            suite: self.suite,
            scenario: &scenario,
            dir: &dir,
            keep_overlay: false,
            emitter: self.silent,
            full_name: &rel,
            rel_dir: &rel,
            drivers: self.drivers,
            saved: Some(self.state),
            watch_after_crash: false,
            standby,
            refill_standby: true,
            dump_budget: &self.dumps,
        });
        let result = if let Some(crash) = outcome.crashes.first() {
            Outcome::Crash {
                title: crash.title.clone(),
                evidence: dir.clone(),
            }
        } else if let Some(hang) = outcome.hangs.first() {
            Outcome::Hang(hang.clone())
        } else if outcome.verdict == Verdict::Error {
            Outcome::Error(outcome.reason.unwrap_or_default())
        } else {
            Outcome::Survived(driver_messages(&dir.join("console.log"), self.driver))
        };
        if !matches!(result, Outcome::Crash { .. }) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }
}

/// What an input that stopped a kept guest counts as: its replay alone from the
/// saved state. A crash in the kept guest that the replay does not show is counted
/// as unconfirmed under its title, never as the input's crash (earlier inputs may
/// have built the state it needed); a replay that crashes is the input's crash,
/// with the replay's own title and evidence.
fn judge_replay(p: &mut Progress, kept: &str, replay: Outcome) -> Outcome {
    if let Some(title) = kept.strip_prefix("crash: ") {
        if !matches!(replay, Outcome::Crash { .. }) {
            *p.unconfirmed.entry(title.to_string()).or_default() += 1;
        }
    }
    replay
}

/// The driver's own console lines with numbers replaced, as a coarse signature of
/// the path an input took through the parser (accepted, rejected and why, matched).
fn driver_messages(console: &Path, driver: &str) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    signature(text.lines(), driver)
}

/// [`driver_messages`] of lines already read (a kept guest's, per execution).
fn signature<'l>(console: impl Iterator<Item = &'l str>, driver: &str) -> String {
    let prefix = format!("{driver}:");
    let mut lines = BTreeSet::new();
    for line in console {
        let Some(at) = line.find(&prefix) else {
            continue;
        };
        let normalized: String = line[at..]
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        lines.insert(normalized);
    }
    lines.into_iter().collect::<Vec<_>>().join("\n")
}

/// When a campaign stops, apart from an interrupt or a fatal error.
pub(super) struct Limits {
    pub duration: Duration,
    pub max_execs: Option<u64>,
    pub stop_after_crashes: Option<usize>,
}

/// The inputs, the crashes and the counters, under one lock.
pub(super) struct Progress {
    mutator: Mutator,
    pub corpus: Vec<Vec<u8>>,
    signatures: BTreeSet<String>,
    pub crashes: Crashes,
    pub execs: u64,
    pub minimize_execs: u64,
    pub errors: u64,
    pub hangs: u64,
    /// Inputs replayed alone after they stopped a kept guest.
    pub replays: u64,
    /// Crash titles seen in a kept guest that the input alone did not reproduce.
    pub unconfirmed: BTreeMap<String, u64>,
    errors_in_a_row: u32,
    last_error: String,
    pick: u64,
}

impl Progress {
    pub(super) fn new(corpus: Vec<Vec<u8>>, rng_seed: u64) -> Progress {
        Progress {
            mutator: Mutator::new(rng_seed),
            corpus,
            signatures: BTreeSet::new(),
            crashes: Crashes::default(),
            execs: 0,
            minimize_execs: 0,
            errors: 0,
            hangs: 0,
            replays: 0,
            unconfirmed: BTreeMap::new(),
            errors_in_a_row: 0,
            last_error: String::new(),
            pick: rng_seed | 1,
        }
    }

    /// A parent from the corpus (newer entries a little more often) and its mutant.
    fn next_input(&mut self, format: &ContentFormat) -> Mutation {
        // xorshift for the pick: the mutator's own generator stays its own.
        self.pick ^= self.pick << 13;
        self.pick ^= self.pick >> 7;
        self.pick ^= self.pick << 17;
        let len = self.corpus.len().max(1) as u64;
        let index = if self.pick.is_multiple_of(3) {
            len - 1 - (self.pick / 3) % len.min(4)
        } else {
            self.pick % len
        } as usize;
        let parent = self.corpus.get(index).cloned().unwrap_or_default();
        self.mutator.mutate(format, &parent)
    }

    /// Counts an infrastructure error; too many in a row is fatal.
    fn error(&mut self, why: String) -> Option<FuzzError> {
        self.errors += 1;
        self.errors_in_a_row += 1;
        self.last_error = why.clone();
        (self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW).then_some(FuzzError::Infrastructure {
            count: self.errors_in_a_row,
            last: why,
        })
    }

    fn counters(&self, elapsed: Duration) -> FuzzCounters {
        let secs = elapsed.as_secs_f64().max(0.001);
        FuzzCounters {
            execs: self.execs,
            execs_per_second: self.execs as f64 / secs,
            unique_crashes: self.crashes.len(),
            corpus: self.corpus.len(),
            hangs: self.hangs,
            errors: self.errors,
        }
    }
}

/// Progress events, at most one per [`PROGRESS_EVERY`], and new-crash events.
pub(super) struct Reporter<'a> {
    emitter: &'a Emitter,
    enabled: bool,
    last: Mutex<Instant>,
}

impl Reporter<'_> {
    pub(super) fn new(emitter: &Emitter, enabled: bool) -> Reporter<'_> {
        Reporter {
            emitter,
            enabled,
            last: Mutex::new(Instant::now()),
        }
    }

    /// The counters, if a report is due (they are read only then).
    fn due(&self, counters: impl FnOnce() -> FuzzCounters) -> Option<FuzzCounters> {
        if !self.enabled {
            return None;
        }
        let mut last = lock(&self.last);
        if last.elapsed() < PROGRESS_EVERY {
            return None;
        }
        *last = Instant::now();
        Some(counters())
    }

    fn crash_found(&self, title: &str, execs: u64, seconds: f64) {
        if self.enabled {
            self.emitter.emit(&Event::FuzzCrashFound {
                title,
                execs,
                seconds,
            });
        }
    }
}

/// One campaign's shared state: the workers take inputs from it and record what
/// each execution showed.
pub(super) struct Campaign<'a> {
    rig: Rig<'a>,
    format: &'a ContentFormat,
    /// The output folder (crashes/ goes there).
    out: &'a Path,
    limits: Limits,
    started: Instant,
    progress: Mutex<Progress>,
    reporter: Reporter<'a>,
    /// The error that stops every worker, once there is one.
    fatal: Mutex<Option<FuzzError>>,
}

impl<'a> Campaign<'a> {
    pub(super) fn new(
        rig: Rig<'a>,
        format: &'a ContentFormat,
        out: &'a Path,
        limits: Limits,
        progress: Progress,
        reporter: Reporter<'a>,
    ) -> Campaign<'a> {
        Campaign {
            rig,
            format,
            out,
            limits,
            started: Instant::now(),
            progress: Mutex::new(progress),
            reporter,
            fatal: Mutex::new(None),
        }
    }

    /// Runs `jobs` workers until a limit, an interrupt or a fatal error; returns
    /// the final progress, or the fatal error.
    pub(super) fn run(self, jobs: usize) -> Result<Progress, FuzzError> {
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| self.work());
            }
        });
        if let Some(e) = lock(&self.fatal).take() {
            return Err(e);
        }
        Ok(self
            .progress
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// One worker, with its own standby VM: the next execution's QEMU, started
    /// while the current one runs.
    fn work(&self) {
        let standby = StandbySlot::default();
        if self.rig.restore_every > 1 {
            return self.work_kept(&standby);
        }
        while let Some(input) = self.next_input() {
            let outcome = self.rig.execute(&input.bytes, Some(&standby));
            self.record(input, outcome);
            self.report_progress();
        }
    }

    /// One worker that keeps its guest between executions: restored once, it takes
    /// input after input until one stops it or `restore_every` have run. An input
    /// that stops it is replayed alone from the saved state, and only that replay's
    /// outcome counts (see [`judge_replay`]).
    fn work_kept(&self, standby: &StandbySlot) {
        let mut pending = None;
        loop {
            let Some(first) = pending.take().or_else(|| self.next_input()) else {
                return;
            };
            let (scenario, names) = self.rig.session_names();
            let mut session = match self.rig.open_session(&scenario, &names, Some(standby)) {
                Ok(session) => session,
                Err(why) => {
                    self.record(first, Outcome::Error(why));
                    continue;
                }
            };
            let mut input = first;
            loop {
                match self.rig.execute_kept(&mut session, &input.bytes) {
                    KeptOutcome::Survived(signature) => {
                        self.record(input, Outcome::Survived(signature))
                    }
                    KeptOutcome::Ended(_) if interrupted() => return,
                    KeptOutcome::Ended(why) => {
                        drop(session);
                        let replay = self.rig.execute(&input.bytes, Some(standby));
                        let outcome = {
                            let mut p = lock(&self.progress);
                            p.replays += 1;
                            judge_replay(&mut p, &why, replay)
                        };
                        self.record(input, outcome);
                        self.report_progress();
                        break;
                    }
                }
                self.report_progress();
                let Some(next) = self.next_input() else {
                    return;
                };
                if session.runs >= self.rig.restore_every {
                    pending = Some(next);
                    break;
                }
                input = next;
            }
        }
    }

    fn done(&self, p: &Progress) -> bool {
        let limits = &self.limits;
        interrupted()
            || self.started.elapsed() >= limits.duration
            || limits.max_execs.is_some_and(|max| p.execs >= max)
            || limits
                .stop_after_crashes
                .is_some_and(|n| p.crashes.len() >= n)
    }

    /// The next input and how it was made, counted as an execution; None once the
    /// campaign is over.
    fn next_input(&self) -> Option<Mutation> {
        let mut p = lock(&self.progress);
        if self.done(&p) || lock(&self.fatal).is_some() {
            return None;
        }
        p.execs += 1;
        Some(p.next_input(self.format))
    }

    /// What an execution showed, into the corpus, the counters or the crashes.
    fn record(&self, input: Mutation, outcome: Outcome) {
        let mut p = lock(&self.progress);
        match outcome {
            Outcome::Survived(signature) => {
                p.errors_in_a_row = 0;
                if p.signatures.insert(signature) {
                    p.corpus.push(input.bytes);
                }
            }
            Outcome::Hang(why) => {
                p.errors_in_a_row = 0;
                p.hangs += 1;
                p.last_error = why;
            }
            Outcome::Error(why) => {
                if let Some(fatal) = p.error(why) {
                    *lock(&self.fatal) = Some(fatal);
                }
            }
            Outcome::Crash { title, evidence } => {
                p.errors_in_a_row = 0;
                if !p.crashes.first_sighting(&title) {
                    let _ = std::fs::remove_dir_all(&evidence);
                    return;
                }
                let found_at_exec = p.execs;
                // Minimizing takes many executions: the other workers go on meanwhile.
                drop(p);
                let sighting = Sighting {
                    title,
                    bytes: input.bytes,
                    mutation: input.description,
                    evidence,
                };
                self.new_crash(&sighting, found_at_exec);
            }
        }
    }

    /// Minimizes and stores a crash seen for the first time.
    fn new_crash(&self, sighting: &Sighting, found_at_exec: u64) {
        let seconds_to_find = self.started.elapsed().as_secs_f64();
        self.reporter
            .crash_found(&sighting.title, found_at_exec, seconds_to_find);
        let n = lock(&self.progress).crashes.len() + 1;
        let found = save_crash(&self.rig, self.format, self.out, sighting, n);
        let mut p = lock(&self.progress);
        match found {
            Ok(mut crash) => {
                crash.found_at_exec = found_at_exec;
                crash.seconds_to_find = seconds_to_find;
                p.minimize_execs += u64::from(crash.minimize_execs);
                p.crashes.push(crash);
            }
            Err(e) => p.last_error = e.to_string(),
        }
    }

    fn report_progress(&self) {
        let due = self
            .reporter
            .due(|| lock(&self.progress).counters(self.started.elapsed()));
        if let Some(counters) = due {
            self.reporter.emitter.emit(&Event::FuzzProgress(&counters));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_ignore_numbers_and_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(
            &console,
            "[    1.2] demo_sensor: content rejected: truncated (12 bytes)\n[ 3.4] other: 5\n[ 9.9] demo_sensor: content rejected: truncated (40 bytes)\n",
        )
        .unwrap();
        assert_eq!(
            driver_messages(&console, "demo_sensor"),
            "demo_sensor: content rejected: truncated (## bytes)"
        );
    }

    #[test]
    fn a_kept_guests_crash_counts_only_when_its_input_crashes_alone() {
        let mut p = Progress::new(vec![b"x".to_vec()], 1);
        let kept = "crash: BUG: unable to handle page fault in f";
        // Confirmed: the replay's crash, with the replay's own title and evidence.
        let confirmed = judge_replay(
            &mut p,
            kept,
            Outcome::Crash {
                title: "BUG: unable to handle page fault in f".into(),
                evidence: PathBuf::from("exec-7"),
            },
        );
        assert!(
            matches!(&confirmed, Outcome::Crash { evidence, .. } if evidence == Path::new("exec-7"))
        );
        assert!(p.unconfirmed.is_empty());
        // Not confirmed: the input alone ran through; it is recorded as what its
        // replay showed, and the kept guest's title only as unconfirmed.
        let alone = judge_replay(&mut p, kept, Outcome::Survived("sig".into()));
        assert!(matches!(alone, Outcome::Survived(ref s) if s == "sig"));
        let again = judge_replay(&mut p, kept, Outcome::Hang("stalled".into()));
        assert!(matches!(again, Outcome::Hang(_)));
        assert_eq!(
            p.unconfirmed.get("BUG: unable to handle page fault in f"),
            Some(&2)
        );
        // A kept guest stopped by something else (a hang, QEMU gone) is no crash to
        // confirm: only the replay's outcome counts.
        let hang = judge_replay(&mut p, "hang: no progress", Outcome::Survived("s".into()));
        assert!(matches!(hang, Outcome::Survived(_)));
        assert_eq!(p.unconfirmed.len(), 1);
    }

    #[test]
    fn a_kept_guests_lines_give_the_same_signature_as_its_console_file() {
        let lines = [
            "[    1.2] demo_sensor: content rejected: truncated (12 bytes)",
            "[ 3.4] other: 5",
        ];
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        std::fs::write(&console, lines.join("\n")).unwrap();
        assert_eq!(
            signature(lines.iter().copied(), "demo_sensor"),
            driver_messages(&console, "demo_sensor")
        );
    }

    #[test]
    fn errors_in_a_row_become_fatal_and_reset() {
        let mut p = Progress::new(vec![b"x".to_vec()], 1);
        for _ in 1..MAX_ERRORS_IN_A_ROW {
            assert!(p.error("QEMU went away".into()).is_none());
        }
        assert!(matches!(
            p.error("QEMU went away".into()),
            Some(FuzzError::Infrastructure { count, .. }) if count == MAX_ERRORS_IN_A_ROW
        ));
        assert_eq!(p.errors, u64::from(MAX_ERRORS_IN_A_ROW));
    }
}
