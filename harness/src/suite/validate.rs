//! The checks a suite passes beyond its schema: names, driver files inside the
//! suite's folder, steps that refer to defined drivers, rollout rings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::drill::Drill;
use super::load::RawScenario;
use super::{
    Driver, Expect, RecoverVia, RollbackContentStep, Rollout, Scenario, Step, SuiteError,
    DEFAULT_BOOT_LOOP_BOOTS,
};
use crate::confine::{confine, PathPolicy};
use crate::util::field_offset;

/// What checking a scenario needs: where relative paths start, which may be named,
/// the defined drivers, and how to locate an error in the suite's text.
pub(super) struct Checks<'a> {
    pub(super) dir: &'a Path,
    pub(super) policy: PathPolicy,
    pub(super) drivers: &'a BTreeMap<String, Driver>,
    pub(super) at: &'a dyn Fn(usize, String) -> SuiteError,
    /// The suite's text, to point an error about one field at that field.
    pub(super) text: &'a str,
    /// The suite's `recovery_settle` (or the default), for scenarios without their own.
    pub(super) recovery_settle: std::time::Duration,
}

impl Checks<'_> {
    /// A written `[[scenario]]`, checked; its name is added to `names`, the names
    /// taken so far.
    pub(super) fn scenario(
        &self,
        scenario: Spanned<RawScenario>,
        names: &mut BTreeSet<String>,
    ) -> Result<Scenario, SuiteError> {
        let (at, dir, policy, drivers) = (self.at, self.dir, self.policy, self.drivers);
        let scenario_span = scenario.span();
        let scenario = scenario.into_inner();
        let name_span = scenario.name.span();
        let name = scenario.name.into_inner();
        if !valid_name(&name) {
            return Err(at(name_span.start, name_error("scenario `name`", &name)));
        }
        if !names.insert(name.clone()) {
            return Err(at(
                name_span.start,
                format!("scenario `name` {name:?} is used twice in this suite"),
            ));
        }
        let mut steps = Vec::new();
        for (index, step) in scenario.steps.into_iter().enumerate() {
            let span = step.span();
            let step = step.into_inner();
            self::step(&step, index, drivers, dir, policy)
                .map_err(|p| locate(self.text, span.start, p, &[], at))?;
            steps.push(step);
        }
        let at = |m: String| at(scenario_span.start, m);
        if steps.is_empty() {
            return Err(at(format!("scenario {name:?} has no `steps`: add at least one, e.g. steps = [{{ boot = {{}} }}]")));
        }
        if scenario.expect_title.is_some() && scenario.expect.is_none() {
            return Err(at(format!("scenario {name:?} has `expect_title` without `expect`: add expect = \"crash\" (or \"hang\", \"boot_loop\")")));
        }
        if scenario.expect == Some(Expect::SlowBoot) && scenario.gates.boot_time_limit().is_none() {
            return Err(at(format!("scenario {name:?} expects a slow boot but sets no limit: add max_boot_time to [scenario.gates]")));
        }
        let installs = steps.iter().any(|s| matches!(s, Step::InstallDriver(_)));
        if scenario.expect == Some(Expect::DriverNotLoaded) && !installs {
            return Err(at(format!("scenario {name:?} expects a driver not to be loaded but installs none: add an install_driver step")));
        }
        if scenario.gates.max_boot_time.is_some() && scenario.gates.max_boot_ms.is_some() {
            return Err(at(format!(
                "scenario {name:?} sets both max_boot_time and max_boot_ms: keep one"
            )));
        }
        let boot_loop_boots = scenario.boot_loop_boots.unwrap_or(DEFAULT_BOOT_LOOP_BOOTS);
        if !(2..=MAX_WATCHED_BOOTS).contains(&boot_loop_boots) {
            return Err(at(format!(
                "scenario {name:?}: `boot_loop_boots` must be 2 to {MAX_WATCHED_BOOTS} (got {boot_loop_boots})"
            )));
        }
        let cold_boot = scenario.cold_boot || matches!(steps.first(), Some(Step::Boot(_)));
        Ok(Scenario {
            ignore: scenario.ignore,
            cold_boot,
            name,
            description: scenario.description,
            steps,
            gates: scenario.gates,
            expect: scenario.expect,
            expect_title: scenario.expect_title,
            boot_loop_boots,
            recovery_settle: scenario.recovery_settle.unwrap_or(self.recovery_settle),
        })
    }

    /// The scenarios a `[drill]` (at `offset` in the text) makes, checked like
    /// written ones; their names are added to `names`.
    pub(super) fn drill_scenarios(
        &self,
        drill: &Drill,
        offset: usize,
        names: &mut BTreeSet<String>,
    ) -> Result<Vec<Scenario>, SuiteError> {
        let at = |m: String| (self.at)(offset, m);
        drill.validate().map_err(at)?;
        if self
            .drivers
            .get(&drill.driver)
            .is_some_and(|d| d.reload.is_none())
        {
            return Err(at(format!(
                "[drill] driver {:?} has no `reload` command: the drill applies the update with a live reload",
                drill.driver
            )));
        }
        let mut scenarios = Vec::new();
        for scenario in drill.scenarios() {
            // Generated steps get the same checks as written ones (driver defined,
            // content files present and inside the suite's folder).
            for (index, step) in scenario.steps.iter().enumerate() {
                self::step(step, index, self.drivers, self.dir, self.policy).map_err(|p| {
                    // A generated step's `file` is the drill's `update` or `previous`.
                    let p = Problem {
                        message: format!("[drill]: {}", p.message),
                        ..p
                    };
                    locate(self.text, offset, p, &["update", "previous"], self.at)
                })?;
            }
            if !names.insert(scenario.name.clone()) {
                return Err(at(format!(
                    "[drill] makes a scenario named {:?}, and the suite already has one: rename yours",
                    scenario.name
                )));
            }
            scenarios.push(Scenario {
                recovery_settle: self.recovery_settle,
                ..scenario
            });
        }
        Ok(scenarios)
    }
}

/// A problem with one field: the message, and the key (and the value written)
/// that locate it in the suite's text, when it is about one field.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) key: Option<&'static str>,
    pub(super) value: Option<String>,
    pub(super) message: String,
}

impl From<String> for Problem {
    fn from(message: String) -> Problem {
        Problem {
            key: None,
            value: None,
            message,
        }
    }
}

impl Problem {
    fn at_field(key: &'static str, value: &Path, message: String) -> Problem {
        Problem {
            key: Some(key),
            value: Some(value.display().to_string()),
            message,
        }
    }
}

/// The error for `problem`, pointed at its field when the field is found after
/// `anchor` (under its own key, or one of `aliases`: the key a generated step's
/// field was written under), else at `anchor`.
pub(super) fn locate(
    text: &str,
    anchor: usize,
    problem: Problem,
    aliases: &[&'static str],
    at: &dyn Fn(usize, String) -> SuiteError,
) -> SuiteError {
    locate_among(text, &[anchor], anchor, problem, aliases, at)
}

/// [`locate`] for a field that may stand in any of several tables (a target's
/// `image` in one of the rings): searched after each anchor in turn, else at
/// `fallback`.
pub(super) fn locate_among(
    text: &str,
    anchors: &[usize],
    fallback: usize,
    problem: Problem,
    aliases: &[&'static str],
    at: &dyn Fn(usize, String) -> SuiteError,
) -> SuiteError {
    let value = problem.value.as_deref();
    let offset = anchors
        .iter()
        .find_map(|&anchor| {
            problem
                .key
                .iter()
                .chain(aliases)
                .find_map(|key| field_offset(text, anchor, key, value))
        })
        .unwrap_or(fallback);
    at(offset, problem.message)
}

/// The host path for `written` (the suite's `field`, written under `key`), confined
/// to the suite's folder by the one rule every path follows ([`confine`]).
pub(super) fn inside(
    dir: &Path,
    written: &Path,
    key: &'static str,
    field: &str,
    policy: PathPolicy,
) -> Result<PathBuf, Problem> {
    confine(dir, written, policy, &[])
        .map_err(|outside| Problem::at_field(key, written, outside.message(field)))
}

/// True when a suite's `image` names a manifest file or folder rather than a
/// built-in image: it holds a '/' or ends in ".toml". Built-in names stay names.
pub(crate) fn image_is_path(reference: &str) -> bool {
    reference.contains('/') || reference.ends_with(".toml")
}

pub(super) fn driver(
    name: &str,
    driver: &Driver,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), Problem> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "driver name {name:?} must use only letters, digits and '_' (it is the module's name)"
        )
        .into());
    }
    match (&driver.source, &driver.module) {
        (Some(_), Some(_)) => {
            Err(format!("driver {name:?} takes `source` or `module`, not both").into())
        }
        (None, None) => Err(format!(
            "driver {name:?} needs `source` (a kernel module source folder) or `module` (a built .ko)"
        )
        .into()),
        (Some(_), None) if driver.debug.is_some() => Err(Problem::at_field(
            "debug",
            driver.debug.as_deref().unwrap_or(Path::new("")),
            format!("driver {name:?}: `debug` goes with a prebuilt `module`; a module bootgate builds from `source` keeps its own debug info"),
        )),
        (Some(source), None) => {
            let field = format!("driver {name:?}: `source`");
            let path = inside(dir, source, "source", &field, policy)?;
            if !path.is_dir() {
                return Err(Problem::at_field(
                    "source",
                    source,
                    format!("{field} folder {} does not exist", path.display()),
                ));
            }
            Ok(())
        }
        (None, Some(module)) => {
            if let Some(debug) = &driver.debug {
                existing_file(name, "debug", debug, dir, policy)?;
            }
            existing_file(name, "module", module, dir, policy)
        }
    }
}

/// A driver's file field: inside the suite's folder (by `policy`) and there.
fn existing_file(
    name: &str,
    key: &'static str,
    written: &Path,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), Problem> {
    let field = format!("driver {name:?}: `{key}`");
    let path = inside(dir, written, key, &field, policy)?;
    if !path.is_file() {
        return Err(Problem::at_field(
            key,
            written,
            format!("{field} file {} does not exist", path.display()),
        ));
    }
    Ok(())
}

pub(super) fn rollout(rollout: &Rollout) -> Result<(), String> {
    if rollout.rings.is_empty() {
        return Err("[rollout] has no rings: add [[rollout.ring]] tables (name, targets)".into());
    }
    let mut names = BTreeSet::new();
    for ring in &rollout.rings {
        if !valid_name(&ring.name) {
            return Err(name_error("ring `name`", &ring.name));
        }
        if !names.insert(ring.name.clone()) {
            return Err(format!("ring `name` {:?} is used twice", ring.name));
        }
        if ring.targets.len() > MAX_RING_TARGETS {
            return Err(format!(
                "ring {:?} has {} targets, more than the {MAX_RING_TARGETS} a ring may have: split it into rings",
                ring.name,
                ring.targets.len()
            ));
        }
        if ring.targets.is_empty() {
            return Err(format!(
                "ring {:?} has no `targets`: add at least one, e.g. targets = [{{}}] for the suite's image",
                ring.name
            ));
        }
        let mut labels = BTreeSet::new();
        for target in &ring.targets {
            if !valid_name(&target.label()) {
                return Err(format!(
                    "ring {:?}: {}",
                    ring.name,
                    name_error("target `name`", &target.label())
                ));
            }
            if target.cpus == Some(0) || target.memory_mib == Some(0) {
                return Err(format!(
                    "ring {:?}: `cpus` and `memory_mib` must be at least 1",
                    ring.name
                ));
            }
            if !labels.insert(target.label()) {
                return Err(format!(
                    "ring {:?}: two targets are both named {:?}; give them a `name`",
                    ring.name,
                    target.label()
                ));
            }
        }
    }
    Ok(())
}

/// The images rollout targets name: a path is confined like any other.
pub(super) fn rollout_images(
    rollout: &Rollout,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), Problem> {
    for ring in &rollout.rings {
        for image in ring.targets.iter().filter_map(|t| t.image.as_deref()) {
            if image_is_path(image) {
                let field = format!("ring {:?}: target `image`", ring.name);
                inside(dir, Path::new(image), "image", &field, policy)?;
            }
        }
    }
    Ok(())
}

/// One step, at `index` in its scenario.
fn step(
    step: &Step,
    index: usize,
    drivers: &BTreeMap<String, Driver>,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), Problem> {
    if let Some(name) = step.driver() {
        step_driver(step, name, drivers, dir, policy)?;
    }
    step_shape(step, index).map_err(Problem::from)
}

/// What a step asks for, apart from drivers and files.
fn step_shape(step: &Step, index: usize) -> Result<(), String> {
    match step {
        Step::Boot(_) if index != 0 => Err(
            "a `boot` step may only come first (the first boot is implicit; use `reboot` later)"
                .into(),
        ),
        Step::Reboot(r) if r.times == 0 || r.times > MAX_REBOOT_TIMES => Err(format!(
            "`times` in a reboot step must be 1 to {MAX_REBOOT_TIMES} (got {})",
            r.times
        )),
        Step::RollbackContent(r) if r.boots == 0 || r.boots > MAX_WATCHED_BOOTS => Err(format!(
            "`boots` in a rollback_content step must be 1 to {MAX_WATCHED_BOOTS} (got {})",
            r.boots
        )),
        // A rescue boot with nothing to run still proves the machine comes back
        // through safe mode; a helper VM with nothing to do is a mistake.
        Step::Recover(r)
            if r.via == RecoverVia::HelperVm && r.run.is_empty() && r.remove_content.is_none() =>
        {
            Err("a recover step with `via = \"helper_vm\"` needs something to do: `remove_content = \"DRIVER\"` or `run = [...]`".into())
        }
        Step::Exec(e) => match (&e.run, &e.argv) {
            (Some(_), Some(_)) => Err("an exec step takes `run` or `argv`, not both".into()),
            (None, None) => {
                Err("an exec step needs `run` (a shell command) or `argv` (a list)".into())
            }
            (None, Some(argv)) if argv.is_empty() => Err("`argv` must not be empty".into()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A step that names driver `name`: the driver is defined and has what the step
/// needs, and the content files it names exist inside the suite's folder.
fn step_driver(
    step: &Step,
    name: &str,
    drivers: &BTreeMap<String, Driver>,
    dir: &Path,
    policy: PathPolicy,
) -> Result<(), Problem> {
    let Some(driver) = drivers.get(name) else {
        let known: Vec<&str> = drivers.keys().map(String::as_str).collect();
        return Err(Problem::from(format!(
            "unknown driver {name:?}: define it in a [driver.{name}] table (defined: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let needs_content = matches!(
        step,
        Step::ApplyContent(_)
            | Step::RemoveContent(_)
            | Step::RollbackContent(_)
            | Step::Recover(_)
    );
    if needs_content && driver.content_file.is_none() {
        return Err(Problem::from(format!(
            "driver {name:?} has no `content_file`: say which file in the content folder it reads"
        )));
    }
    if let Step::ApplyContent(apply) = step {
        if apply.reload && driver.reload.is_none() {
            return Err(Problem::from(format!(
                "`reload = true` but driver {name:?} has no `reload` command"
            )));
        }
        content_file(dir, &apply.file, policy)?;
    }
    if let Step::RollbackContent(RollbackContentStep {
        file: Some(file), ..
    }) = step
    {
        content_file(dir, file, policy)?;
    }
    Ok(())
}

/// A content file a step uploads: inside the suite's folder, and there.
fn content_file(dir: &Path, written: &Path, policy: PathPolicy) -> Result<(), Problem> {
    let file = inside(dir, written, "file", "content `file`", policy)?;
    if !file.is_file() {
        return Err(Problem::at_field(
            "file",
            written,
            format!("content `file` {} does not exist", file.display()),
        ));
    }
    Ok(())
}

/// Most reboots one `reboot` step may ask for: each is a real boot (tens of
/// seconds under TCG), so more is a run that does not end in a working day.
pub(crate) const MAX_REBOOT_TIMES: u32 = 100;
/// Most boots watched after a crash (`boot_loop_boots`, a rollback's `boots`, a
/// drill's limits). In July 2024 Microsoft advised up to 15 reboots for the race
/// to fetch the fixed file to be won; 20 covers that with room.
pub(crate) const MAX_WATCHED_BOOTS: u32 = 20;
/// Most targets in one rollout ring.
pub(crate) const MAX_RING_TARGETS: usize = 256;

/// Longest suite, scenario, driver or ring name: names become folder and file names
/// in the results.
pub(crate) const MAX_NAME_CHARS: usize = 64;

/// The one rule for every name a suite gives (suite, scenario, driver, ring): a
/// letter or digit first, then letters, digits, '-', '_' and '.', at most
/// [`MAX_NAME_CHARS`]. So a name is one plain path component: never empty, `.`,
/// `..`, hidden, or holding a separator.
pub(crate) fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_CHARS
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The error for a name that breaks [`valid_name`]'s rule.
pub(super) fn name_error(what: &str, name: &str) -> String {
    format!("{what} {name:?} must start with a letter or digit and use only letters, digits, '-', '_' and '.' (at most {MAX_NAME_CHARS}): names become folder names in the results")
}

/// A written `stall_window`: `"off"` or a zero duration disables the detector;
/// otherwise a duration between [`super::MIN_STALL_WINDOW`] and
/// [`super::MAX_STALL_WINDOW`].
pub(super) fn stall_window(text: &str) -> Result<Option<std::time::Duration>, String> {
    use super::{MAX_STALL_WINDOW, MIN_STALL_WINDOW};
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let window = super::schema::parse_duration(text)
        .map_err(|e| format!("`stall_window`: {e}, or \"off\""))?;
    if window.is_zero() {
        return Ok(None);
    }
    let human = |d| humantime::format_duration(d).to_string();
    if window < MIN_STALL_WINDOW {
        return Err(format!(
            "`stall_window` {} is shorter than the shortest allowed, {}: the detector decides on several vCPU samples",
            human(window),
            human(MIN_STALL_WINDOW)
        ));
    }
    if window > MAX_STALL_WINDOW {
        return Err(format!(
            "`stall_window` {} is longer than the longest allowed, {}: the kernel's own lockup report decides long before",
            human(window),
            human(MAX_STALL_WINDOW)
        ));
    }
    Ok(Some(window))
}
