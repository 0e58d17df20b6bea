//! Run records for tests: each function returns a complete record with plain
//! values, and a test changes what it is about with struct update syntax or field
//! assignment, e.g. `BootRecord { start_ms: 5_000, ..records::boot(2, BootOutcome::Ready, Some(4_200)) }`.

use crate::model::record::{
    AttemptRecord, BootOutcome, BootRecord, CrashRecord, HostInfo, QemuInfo, RunRecord,
    RunSettings, ScenarioRecord, StepOutcome, StepRecord, Summary, Verdict, SCHEMA_VERSION,
};

/// A finished-looking run of `scenarios` (its summary counted from them) on a
/// 4-CPU Linux host with QEMU 7.2 under TCG; no inputs, no command line.
pub fn run(scenarios: Vec<ScenarioRecord>) -> RunRecord {
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: "run".into(),
        started_at: String::new(),
        finished_at: None,
        interrupted: false,
        bootgate_version: "0.1.0".into(),
        command: Vec::new(),
        settings: RunSettings {
            accel: "auto".into(),
            ..RunSettings::default()
        },
        host: HostInfo {
            hostname: "host".into(),
            kernel: "Linux 6.1 x86_64".into(),
            cpus: 4,
        },
        qemu: QemuInfo {
            version: Some("QEMU emulator version 7.2.0".into()),
            accel: Some("tcg".into()),
            ..QemuInfo::default()
        },
        inputs: Vec::new(),
        input_kinds: Default::default(),
        summary: Summary::of(&scenarios),
        scenarios,
        timings: Default::default(),
    }
}

/// Scenario `suite/name` of `scenarios/<suite>/suite.toml` on the demo image, with
/// `verdict` and nothing observed; its folder is its name.
pub fn scenario(suite: &str, name: &str, verdict: Verdict) -> ScenarioRecord {
    let full = format!("{suite}/{name}");
    ScenarioRecord {
        name: full.clone(),
        suite: suite.into(),
        suite_file: format!("scenarios/{suite}/suite.toml"),
        image: "demo".into(),
        verdict,
        reason: None,
        duration_ms: 0,
        boots: Vec::new(),
        steps: Vec::new(),
        crashes: Vec::new(),
        hangs: Vec::new(),
        boot_loop: false,
        recovery: None,
        recovers_within: None,
        expect: None,
        artifacts: Vec::new(),
        dir: full.clone(),
        rerun: rerun("run", &full),
        hang_screenshots: Vec::new(),
        queued_ms: 0,
        worker: 0,
        attempts: Vec::new(),
        stalls: Vec::new(),
    }
}

/// The command that reruns `scenario` of the run in `run_dir`.
pub fn rerun(run_dir: &str, scenario: &str) -> Vec<String> {
    ["bootgate", "rerun", run_dir, scenario]
        .map(String::from)
        .to_vec()
}

/// Boot `index`, begun at the scenario's start, with no crash title.
pub fn boot(index: u32, outcome: BootOutcome, ready_ms: Option<u64>) -> BootRecord {
    BootRecord {
        index,
        start_ms: 0,
        outcome,
        ready_ms,
        extra_append: None,
        crash: None,
        restored: false,
        standby: false,
        drivers: None,
        reboot_via: None,
        crashed: None,
        crash_after_ready_ms: None,
    }
}

/// A step begun at the scenario's start that took no time.
pub fn step(kind: &str, outcome: StepOutcome, detail: &str) -> StepRecord {
    StepRecord {
        kind: kind.into(),
        start_ms: 0,
        outcome,
        duration_ms: 0,
        detail: detail.into(),
    }
}

/// A console-reported crash (pvpanic and console signals) in boot `boot_index`,
/// with no excerpt and no evidence.
pub fn crash(boot_index: u32, title: &str) -> CrashRecord {
    CrashRecord {
        title: title.into(),
        kind: "BUG".into(),
        source: "console".into(),
        signals: vec!["pvpanic".into(), "console".into()],
        boot_index,
        excerpt: Vec::new(),
        detect_ms: 1,
        screenshot: None,
        dump: None,
        dump_format: None,
        dump_bytes: None,
        dump_ms: None,
        dump_note: None,
        bugcheck: None,
        guest_dumps: Vec::new(),
        guest_dumps_note: None,
        offline_evidence: Vec::new(),
        console: None,
        capture: None,
        capture_note: None,
        triage: None,
    }
}

/// Earlier attempt `attempt` of scenario `s/a`, ended with `verdict` for `reason`.
pub fn attempt(attempt: u32, verdict: Verdict, reason: &str) -> AttemptRecord {
    AttemptRecord {
        attempt,
        verdict,
        reason: Some(reason.into()),
        duration_ms: 1,
        dir: format!("s/a.attempt-{attempt}"),
        crashes: Vec::new(),
        artifacts: Vec::new(),
    }
}
