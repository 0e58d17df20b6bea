//! Reading suites: files and folders, the path policy, errors located at
//! file:line:column.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::schema::{opt_duration, opt_recovery_settle, opt_stall_window};
use super::validate;
use super::{
    Drill, Driver, Evidence, Expect, Gates, Rollout, Step, Suite, SuiteError,
    DEFAULT_RECOVERY_SETTLE, MAX_SUITE_BYTES,
};
use crate::util::{line_col, snippet};

pub use crate::confine::PathPolicy;

/// Loads one suite file, or every `*.toml` in a folder (sorted by name), with
/// paths confined to the suite's folder.
pub fn load_path(path: &Path) -> Result<Vec<Suite>, SuiteError> {
    load_path_with(path, PathPolicy::InsideSuite)
}

/// [`load_path`] with an explicit path policy.
pub fn load_path_with(path: &Path, policy: PathPolicy) -> Result<Vec<Suite>, SuiteError> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| SuiteError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SuiteError::EmptyFolder(path.to_path_buf()));
        }
        // A folder is the plain suites in it: rollout suites are gates of their own,
        // run by `bootgate rollout FILE`, and recovery drills (minutes of crashing
        // boots per path) and `standalone` suites (another image's minutes of
        // boots) run when named: `bootgate run FILE.toml`.
        let mut suites = Vec::new();
        for file in &files {
            let suite = load_file_with(file, policy)?;
            if suite.rollout.is_none() && suite.drill.is_none() && !suite.standalone {
                suites.push(suite);
            }
        }
        if suites.is_empty() {
            return Err(SuiteError::EmptyFolder(path.to_path_buf()));
        }
        Ok(suites)
    } else {
        Ok(vec![load_file_with(path, policy)?])
    }
}

/// Loads one suite file with paths confined to its folder.
pub fn load_file(path: &Path) -> Result<Suite, SuiteError> {
    load_file_with(path, PathPolicy::InsideSuite)
}

/// [`load_file`] with an explicit path policy.
pub fn load_file_with(path: &Path, policy: PathPolicy) -> Result<Suite, SuiteError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SUITE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| SuiteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SUITE_BYTES {
        return Err(SuiteError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_SUITE_BYTES,
        });
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse_with(path, &text, policy),
        Err(e) => {
            // Located like any other mistake; the lossy text keeps every byte before
            // the bad one where it was, so the offset holds in it.
            let offset = e.utf8_error().valid_up_to();
            let byte = e.as_bytes().get(offset).copied().unwrap_or_default();
            let text = String::from_utf8_lossy(e.as_bytes());
            Err(located(
                path,
                &text,
                offset,
                format!("invalid UTF-8 (byte {byte:#04x}): a suite file must be UTF-8 text"),
            ))
        }
    }
}

/// A suite error at byte `offset` of `text`.
fn located(path: &Path, text: &str, offset: usize, message: String) -> SuiteError {
    let (line, column) = line_col(text, offset);
    SuiteError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
        snippet: snippet(text, line, column),
    }
}

/// Parses suite text; `path` is used for messages and to resolve relative paths,
/// which must stay inside its folder.
pub fn parse(path: &Path, text: &str) -> Result<Suite, SuiteError> {
    parse_with(path, text, PathPolicy::InsideSuite)
}

/// [`parse`] with an explicit path policy.
pub fn parse_with(path: &Path, text: &str, policy: PathPolicy) -> Result<Suite, SuiteError> {
    let at = |offset: usize, message: String| located(path, text, offset, message);
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, describe_toml_error(&e, text.get(offset..)))
    })?;

    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut drivers = BTreeMap::new();
    for (name, driver) in raw.driver {
        let span = driver.span();
        let driver = driver.into_inner();
        let header = [format!("[driver.{name}]"), format!("[driver.\"{name}\"]")]
            .iter()
            .find_map(|h| text.find(h.as_str()))
            .unwrap_or(span.start);
        if !validate::valid_name(&name) {
            return Err(at(header, validate::name_error("driver", &name)));
        }
        validate::driver(&name, &driver, dir, policy)
            .map_err(|p| validate::locate(text, header, p, &[], &at))?;
        drivers.insert(name, driver);
    }
    let image_span = raw.suite.image.span();
    let image = raw.suite.image.into_inner();
    if validate::image_is_path(&image) {
        let table = text.find("[suite]").unwrap_or(0);
        validate::inside(dir, Path::new(&image), "image", "[suite] `image`", policy)
            .map_err(|p| validate::locate_among(text, &[table], image_span.start, p, &[], &at))?;
    }
    let checks = validate::Checks {
        text,
        dir,
        policy,
        drivers: &drivers,
        at: &at,
        recovery_settle: raw.suite.recovery_settle.unwrap_or(DEFAULT_RECOVERY_SETTLE),
    };

    let mut names = BTreeSet::new();
    let mut scenarios = Vec::new();
    if raw.scenario.is_empty() && raw.drill.is_none() {
        return Err(at(
            0,
            "the suite has no scenarios: add a [[scenario]] table with a name and steps (or a [drill])".into(),
        ));
    }
    for scenario in raw.scenario {
        scenarios.push(checks.scenario(scenario, &mut names)?);
    }
    let name = match raw.suite.name {
        Some(name) => {
            let span = name.span();
            let name = name.into_inner();
            if !validate::valid_name(&name) {
                return Err(at(span.start, validate::name_error("suite `name`", &name)));
            }
            name
        }
        None => {
            let stem = path
                .file_stem()
                .map_or_else(|| "suite".into(), |s| s.to_string_lossy().into_owned());
            if !validate::valid_name(&stem) {
                let message = validate::name_error("the suite's file name", &stem);
                return Err(at(0, format!("{message}; or give [suite] a `name`")));
            }
            stem
        }
    };
    if let Some(rollout) = &raw.rollout {
        let offset = text
            .find("[rollout")
            .or_else(|| text.find("[[rollout"))
            .unwrap_or(0);
        validate::rollout(rollout).map_err(|m| at(offset, m))?;
        // Each ring's header, so a target's image is found in its own ring.
        let rings: Vec<usize> = text
            .match_indices("[[rollout.ring]]")
            .map(|(i, _)| i)
            .collect();
        validate::rollout_images(rollout, dir, policy)
            .map_err(|p| validate::locate_among(text, &rings, offset, p, &[], &at))?;
    }
    if let Some(drill) = &raw.drill {
        let offset = text.find("[drill").unwrap_or(0);
        scenarios.extend(checks.drill_scenarios(drill, offset, &mut names)?);
    }
    let rollout = raw.rollout;
    Ok(Suite {
        path: path.to_path_buf(),
        name,
        image,
        boot_timeout: raw.suite.boot_timeout,
        recovery_settle: raw.suite.recovery_settle,
        stall_window: raw
            .suite
            .stall_window
            .unwrap_or(Some(super::DEFAULT_STALL_WINDOW)),
        evidence: raw.suite.evidence,
        standalone: raw.suite.standalone,
        drivers,
        scenarios,
        rollout,
        drill: raw.drill,
        path_policy: policy,
    })
}

/// toml's own message, without its location header (we print ours) and with a hint
/// for the mistakes people make most. `rest` is the text from the error on.
fn describe_toml_error(e: &toml::de::Error, rest: Option<&str>) -> String {
    let message = e.message().trim().to_string();
    if message.starts_with("missing field `suite`") {
        return "missing [suite] table: add `[suite]` with `image = \"demo\"`".into();
    }
    if message.is_empty() {
        // toml says nothing for some characters no token starts with (a carriage
        // return without its newline): name the character instead.
        return match rest.and_then(|r| r.chars().next()) {
            Some(c) => format!("unexpected character {c:?}"),
            None => "invalid TOML".into(),
        };
    }
    message
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    suite: RawSuite,
    #[serde(default)]
    driver: BTreeMap<String, Spanned<Driver>>,
    #[serde(default)]
    scenario: Vec<Spanned<RawScenario>>,
    // Not Spanned: the toml crate cannot span a table made only of dotted
    // `[[rollout.ring]]` headers; its errors point at the first `[rollout` instead.
    rollout: Option<Rollout>,
    drill: Option<Drill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSuite {
    name: Option<Spanned<String>>,
    image: Spanned<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    boot_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_recovery_settle")]
    recovery_settle: Option<Duration>,
    /// Outer None: not written (the default); `Some(None)`: off.
    #[serde(default, deserialize_with = "opt_stall_window")]
    stall_window: Option<Option<Duration>>,
    #[serde(default)]
    evidence: Evidence,
    #[serde(default)]
    standalone: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: Spanned<String>,
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) steps: Vec<Spanned<Step>>,
    #[serde(default)]
    pub(super) gates: Gates,
    pub(super) expect: Option<Expect>,
    pub(super) expect_title: Option<String>,
    pub(super) boot_loop_boots: Option<u32>,
    #[serde(default, deserialize_with = "opt_recovery_settle")]
    pub(super) recovery_settle: Option<Duration>,
    #[serde(default)]
    pub(super) cold_boot: bool,
    #[serde(default)]
    pub(super) ignore: bool,
}
