//! `[drill]`: a recovery drill. For one crashing content update it measures each way
//! back the image and driver offer, each as its own scenario on its own VM:
//!
//! - `guard`: the driver's own boot-loop guard (its parameters turn it on) skips the
//!   content after crashed boots;
//! - `rescue_boot`: after `intervene_after` reboots that crash again, a rescue boot
//!   (drivers skipped) deletes the content;
//! - `offline`: after as many crashed reboots, the harness stops the VM and deletes the
//!   content from its disk through a helper VM (no host privileges);
//! - `agent_rollback`: the previous content is put back through the agent as soon as
//!   the guest answers, on every boot until one stays up.
//!
//! Every path starts the same way: the driver installed and loaded, the previous
//! content live, then the update applied with a live reload, which must crash. Each
//! path's scenario carries the drill's `recovers_within` gate; its run record holds
//! boots and seconds from the crash to the first ready normal boot that stayed up.
//!
//! "Stayed up" is the scenario's `recovery_settle` window past ready (the suite's,
//! default 20 s), the same rule as any scenario: the guard path holds it in the
//! watch after the crash; the rescue and offline paths hold it through their
//! `observe` step and, for what is left, at the scenario's end; the agent rollback
//! gets the first boot that answers at once (its driver crashes `boot_delay_ms`
//! after load, and the rollback must win that race), holds its own `settle`, and
//! its recovery counts once the window has gone by as well.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::suite::{
    ApplyContentStep, Expect, Gates, InstallDriverStep, ObserveStep, RecoverStep, RecoverVia,
    RollbackContentStep, Scenario, Step,
};

/// Default reboots that crash again before an outside path (rescue boot, helper VM)
/// steps in: one, the way an operator sees a machine that will not come back.
pub(crate) const DEFAULT_INTERVENE_AFTER: u32 = 1;
/// Default time a recovered guest must stay up.
pub(crate) const DEFAULT_SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    /// The driver under test (a `[driver.NAME]` of this suite with `content_file` and
    /// `reload`).
    pub driver: String,
    /// The crashing content update, relative to the suite file.
    pub update: PathBuf,
    /// The content before the update: live before it, and what a rollback restores.
    /// Without it a rollback removes the update.
    pub previous: Option<PathBuf>,
    /// Module parameters on every path (a path's own are added).
    #[serde(default)]
    pub params: String,
    /// Boots from the crash to the first ready normal boot that every path must
    /// stay within.
    pub recovers_within: u32,
    /// Reboots after the crash that crash again before an outside path steps in.
    #[serde(default = "default_intervene_after")]
    pub intervene_after: u32,
    /// A recovered guest must stay up this long.
    #[serde(
        default = "default_settle",
        deserialize_with = "crate::suite::duration"
    )]
    pub settle: Duration,
    /// Text the update's crash title must contain.
    pub expect_title: Option<String>,
    /// The paths to measure: `[drill.path.guard]`, `[drill.path.rescue_boot]`,
    /// `[drill.path.offline]`, `[drill.path.agent_rollback]`.
    #[serde(default)]
    pub path: DrillPaths,
}

fn default_intervene_after() -> u32 {
    DEFAULT_INTERVENE_AFTER
}

fn default_settle() -> Duration {
    DEFAULT_SETTLE
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillPaths {
    pub guard: Option<PathOptions>,
    pub rescue_boot: Option<PathOptions>,
    pub offline: Option<PathOptions>,
    pub agent_rollback: Option<PathOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathOptions {
    /// Module parameters for this path, after the drill's (the guard's switch, say).
    #[serde(default)]
    pub params: String,
}

/// One way back, in the order the report shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecoveryPath {
    Guard,
    RescueBoot,
    Offline,
    AgentRollback,
}

impl RecoveryPath {
    /// The scenario that measures this path.
    pub(crate) fn scenario_name(self) -> &'static str {
        match self {
            RecoveryPath::Guard => "recover-by-guard",
            RecoveryPath::RescueBoot => "recover-by-rescue-boot",
            RecoveryPath::Offline => "recover-by-offline-removal",
            RecoveryPath::AgentRollback => "recover-by-agent-rollback",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RecoveryPath::Guard => "the driver's own boot-loop guard skips the content after crashed boots",
            RecoveryPath::RescueBoot => "a rescue boot (drivers skipped) deletes the content, then a normal boot",
            RecoveryPath::Offline => "the harness stops the VM and deletes the content from its disk through a helper VM, then a normal boot",
            RecoveryPath::AgentRollback => "the previous content is put back through the agent as soon as the guest answers, on every boot until one stays up",
        }
    }
}

impl Drill {
    /// The paths the drill measures, each with its options.
    pub(crate) fn paths(&self) -> Vec<(RecoveryPath, &PathOptions)> {
        let p = &self.path;
        [
            (RecoveryPath::Guard, &p.guard),
            (RecoveryPath::RescueBoot, &p.rescue_boot),
            (RecoveryPath::Offline, &p.offline),
            (RecoveryPath::AgentRollback, &p.agent_rollback),
        ]
        .into_iter()
        .filter_map(|(path, options)| options.as_ref().map(|o| (path, o)))
        .collect()
    }

    /// Mistakes the schema cannot catch; file checks happen on the generated steps.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.paths().is_empty() {
            return Err("[drill] measures no recovery path: add one or more of [drill.path.guard], [drill.path.rescue_boot], [drill.path.offline], [drill.path.agent_rollback]".into());
        }
        let most = super::validate::MAX_WATCHED_BOOTS;
        if self.recovers_within == 0 || self.recovers_within > most {
            return Err(format!("[drill] `recovers_within` must be 1 to {most} (boots from the crash to a ready boot)"));
        }
        if self.intervene_after == 0 || self.intervene_after > most {
            return Err(format!("[drill] `intervene_after` must be 1 to {most} (reboots that crash again before a rescue boot or the helper VM steps in)"));
        }
        Ok(())
    }

    /// One scenario per path.
    pub(crate) fn scenarios(&self) -> Vec<Scenario> {
        self.paths()
            .into_iter()
            .map(|(path, options)| self.scenario(path, options))
            .collect()
    }

    fn scenario(&self, path: RecoveryPath, options: &PathOptions) -> Scenario {
        let params = format!("{} {}", self.params, options.params)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let (steps, boot_loop_boots) = self.steps(path, &params);
        let with = if params.is_empty() {
            String::new()
        } else {
            format!(" (driver parameters: {params})")
        };
        Scenario {
            name: path.scenario_name().into(),
            description: Some(format!(
                "Recovery drill: {} crashes {}{with}; {}.",
                self.update.display(),
                self.driver,
                path.describe()
            )),
            steps,
            gates: Gates {
                no_crash: Some(false),
                // Outside paths begin with the loop; the others are judged by the
                // recovery gate, which says more than "boot loop".
                no_boot_loop: Some(false),
                recovers_within: Some(self.recovers_within),
                ..Gates::default()
            },
            expect: Some(Expect::Crash),
            expect_title: self.expect_title.clone(),
            boot_loop_boots,
            // The suite's own, when it sets one, replaces this once the suite is read.
            recovery_settle: crate::suite::DEFAULT_RECOVERY_SETTLE,
            cold_boot: false,
            ignore: false,
        }
    }

    /// The steps of `path`'s scenario, with the scenario's `boot_loop_boots`.
    fn steps(&self, path: RecoveryPath, params: &str) -> (Vec<Step>, u32) {
        let mut steps = vec![Step::InstallDriver(InstallDriverStep {
            driver: self.driver.clone(),
            params: params.to_string(),
            load_now: true,
            initramfs: false,
            timeout: None,
        })];
        if let Some(previous) = &self.previous {
            steps.push(Step::ApplyContent(ApplyContentStep {
                driver: self.driver.clone(),
                file: previous.clone(),
                reload: true,
                timeout: None,
            }));
        }
        steps.push(Step::ApplyContent(ApplyContentStep {
            driver: self.driver.clone(),
            file: self.update.clone(),
            reload: true,
            timeout: None,
        }));
        let settle = Step::Observe(ObserveStep {
            duration: self.settle,
        });
        let recover = |via| {
            Step::Recover(RecoverStep {
                via,
                remove_content: Some(self.driver.clone()),
                run: Vec::new(),
            })
        };
        // The live crash happens in a boot that was ready, so boot_loop_boots counts
        // the reboots after it that crash again. The guard and the rollback are
        // watched one boot past the gate's limit (a recovery there is reported as
        // over the limit rather than missing); the outside paths step in after
        // `intervene_after`.
        let watch_to_limit = self.recovers_within + 1;
        let boot_loop_boots = match path {
            RecoveryPath::Guard => {
                steps.push(settle);
                watch_to_limit
            }
            RecoveryPath::RescueBoot => {
                steps.extend([recover(RecoverVia::RescueBoot), settle]);
                self.intervene_after
            }
            RecoveryPath::Offline => {
                steps.extend([recover(RecoverVia::HelperVm), settle]);
                self.intervene_after
            }
            RecoveryPath::AgentRollback => {
                steps.push(Step::RollbackContent(RollbackContentStep {
                    driver: self.driver.clone(),
                    file: self.previous.clone(),
                    settle: self.settle,
                    boots: self.recovers_within,
                    timeout: None,
                }));
                watch_to_limit
            }
        };
        (steps, boot_loop_boots)
    }
}
