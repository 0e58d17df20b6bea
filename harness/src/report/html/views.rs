//! The run as a whole: the banner, the counts, the identities of the inputs, the
//! recovery table and the environment.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::cards::ScenarioView;
use super::format::{
    anchor, clean, file_name, input_role, ms_text, shell_command, shell_command_lines, short_hash,
    verdict_class,
};
use crate::model::record::{FileHash, RunOutcome, RunRecord, Summary};

#[derive(Serialize)]
pub(super) struct RunView {
    banner: Banner,
    counts: Vec<Count>,
    run_id: String,
    started_at: String,
    finished_at: String,
    duration: String,
    bootgate_version: String,
    command: String,
    images: Vec<String>,
    identities: Vec<InputView>,
    scenarios: Vec<ScenarioView>,
    /// The recovery table (a drill's paths side by side).
    recovery: Vec<RecoveryView>,
    env: EnvView,
    inputs: Vec<InputView>,
}

#[derive(Serialize)]
struct RecoveryView {
    anchor: Option<String>,
    scenario: String,
    crash: String,
    how: String,
    boots: String,
    seconds: String,
    limit: String,
    verdict: &'static str,
    vclass: &'static str,
}

impl RecoveryView {
    fn rows(run: &RunRecord) -> Vec<RecoveryView> {
        crate::report::recovery::rows(run)
            .into_iter()
            .map(|r| RecoveryView {
                anchor: run
                    .scenarios
                    .iter()
                    .position(|s| s.name == r.scenario)
                    .map(anchor),
                scenario: clean(&r.scenario),
                crash: clean(&r.crash),
                how: clean(&r.how),
                boots: r.boots.map_or_else(|| "—".into(), |b| b.to_string()),
                seconds: r.seconds.map_or_else(|| "—".into(), |s| format!("{s:.1}")),
                limit: r.limit.map_or_else(|| "—".into(), |l| format!("{l} boots")),
                verdict: r.verdict.as_str(),
                vclass: verdict_class(r.verdict),
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Banner {
    word: &'static str,
    class: &'static str,
    line: String,
}

#[derive(Serialize)]
struct Count {
    word: &'static str,
    class: &'static str,
    n: usize,
}

#[derive(Serialize)]
struct InputView {
    role: &'static str,
    name: String,
    path: String,
    sha256: String,
    short: String,
}

#[derive(Serialize)]
struct EnvView {
    qemu_version: String,
    accel: String,
    accel_asked: String,
    accel_notice: Option<String>,
    host: String,
    keep: bool,
    suites: Vec<String>,
    vms: Vec<VmView>,
}

#[derive(Serialize)]
struct VmView {
    scenario: String,
    anchor: Option<String>,
    command: String,
}

impl RunView {
    pub(super) fn build(run: &RunRecord, run_dir: &Path) -> RunView {
        let images: BTreeSet<String> = run.scenarios.iter().map(|s| clean(&s.image)).collect();
        let identities = run
            .inputs
            .iter()
            .filter(|i| matches!(input_role(&i.path), "driver" | "content" | "image"))
            .map(InputView::build)
            .collect();
        let scenarios: Vec<ScenarioView> = run
            .scenarios
            .iter()
            .enumerate()
            .map(|(i, sc)| ScenarioView::build(i, sc, run_dir))
            .collect();
        RunView {
            banner: Banner::build(run),
            counts: Count::all(&run.summary),
            run_id: clean(&run.run_id),
            started_at: clean(&run.started_at),
            finished_at: run
                .finished_at
                .as_deref()
                .map_or_else(|| "not finished".to_string(), clean),
            duration: run_duration(run),
            bootgate_version: clean(&run.bootgate_version),
            command: shell_command(&run.command),
            images: images.into_iter().collect(),
            identities,
            scenarios,
            recovery: RecoveryView::rows(run),
            env: EnvView::build(run),
            inputs: run.inputs.iter().map(InputView::build).collect(),
        }
    }
}

impl Banner {
    fn build(run: &RunRecord) -> Banner {
        let outcome = run.outcome();
        let class = match outcome {
            RunOutcome::Interrupted | RunOutcome::Error => "v-error",
            RunOutcome::Fail => "v-fail",
            RunOutcome::Pass => "v-pass",
        };
        Banner {
            word: outcome.word(),
            class,
            line: if run.scenarios.is_empty() {
                "no scenario was run".to_string()
            } else {
                banner_line(run)
            },
        }
    }
}

impl Count {
    fn all(s: &Summary) -> Vec<Count> {
        vec![
            Count {
                word: "pass",
                class: "v-pass",
                n: s.pass,
            },
            Count {
                word: "fail",
                class: "v-fail",
                n: s.fail,
            },
            Count {
                word: "error",
                class: "v-error",
                n: s.error,
            },
            Count {
                word: "flaky",
                class: "v-flaky",
                n: s.flaky,
            },
        ]
    }
}

impl InputView {
    fn build(i: &FileHash) -> InputView {
        InputView {
            role: input_role(&i.path),
            name: clean(file_name(&i.path)),
            path: clean(&i.path),
            sha256: clean(&i.sha256),
            short: clean(short_hash(&i.sha256)),
        }
    }
}

impl EnvView {
    fn build(run: &RunRecord) -> EnvView {
        let vms = run
            .qemu
            .argv
            .iter()
            .map(|vm| VmView {
                scenario: clean(&vm.scenario),
                anchor: run
                    .scenarios
                    .iter()
                    .position(|s| s.name == vm.scenario)
                    .map(anchor),
                command: shell_command_lines(&vm.argv),
            })
            .collect();
        EnvView {
            qemu_version: run
                .qemu
                .version
                .as_deref()
                .map_or_else(|| "not recorded".to_string(), clean),
            accel: run
                .qemu
                .accel
                .as_deref()
                .map_or_else(|| "not recorded".to_string(), clean),
            accel_asked: clean(&run.settings.accel),
            accel_notice: run.qemu.accel_notice.as_deref().map(clean),
            host: host_line(run),
            keep: run.settings.keep,
            suites: run.settings.suites.iter().map(|s| clean(s)).collect(),
            vms,
        }
    }
}

fn host_line(run: &RunRecord) -> String {
    if run.host.hostname.is_empty() && run.host.kernel.is_empty() {
        "not recorded".to_string()
    } else {
        format!(
            "{} ({}, {} CPU{})",
            clean(&run.host.hostname),
            clean(&run.host.kernel),
            run.host.cpus,
            if run.host.cpus == 1 { "" } else { "s" }
        )
    }
}

/// One sentence under the banner word, so the verdict reads without the table.
fn banner_line(run: &RunRecord) -> String {
    let s = &run.summary;
    let total = run.scenarios.len();
    let mut parts = Vec::new();
    if s.fail > 0 {
        parts.push(format!("{} of {total} scenarios failed", s.fail));
    }
    if s.error > 0 {
        parts.push(format!(
            "{} of {total} could not be judged (harness or host error)",
            s.error
        ));
    }
    if parts.is_empty() {
        parts.push(format!("all {total} scenarios passed"));
    }
    if s.flaky > 0 {
        parts.push(format!(
            "{} flaky (failed, then passed on a retry)",
            s.flaky
        ));
    }
    if run.interrupted {
        parts.push("the run was interrupted before every scenario finished".to_string());
    }
    parts.join("; ")
}

fn run_duration(run: &RunRecord) -> String {
    let Some(finished) = &run.finished_at else {
        return "not finished".to_string();
    };
    let (Ok(start), Ok(end)) = (
        run.started_at.parse::<jiff::Timestamp>(),
        finished.parse::<jiff::Timestamp>(),
    ) else {
        return "unknown".to_string();
    };
    let ms = end.as_millisecond() - start.as_millisecond();
    match u64::try_from(ms) {
        Ok(ms) => ms_text(ms),
        Err(_) => "unknown".to_string(),
    }
}
