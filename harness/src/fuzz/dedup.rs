//! Crash de-duplication: a crash title (kind and first non-generic frame, addresses
//! stripped) names one bug, so only its first sighting is kept. That input is
//! minimized (smaller variants that still crash with the same title) and stored
//! with its evidence under `crashes/<n>-<slug>/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::campaign::{io, FoundCrash, FuzzError};
use super::format::ContentFormat;
use super::minimize;
use super::worker::{Outcome, Rig};
use crate::runner::interrupted;
use crate::util::write_atomic;

/// Executions spent at most on minimizing one crash.
pub(crate) const MINIMIZE_BUDGET: u32 = 60;

/// The crashes of a campaign: every title seen, and those stored.
#[derive(Default)]
pub(super) struct Crashes {
    titles: BTreeSet<String>,
    found: Vec<FoundCrash>,
}

impl Crashes {
    /// Whether `title` is seen for the first time; from now on it is known.
    pub(super) fn first_sighting(&mut self, title: &str) -> bool {
        self.titles.insert(title.to_string())
    }

    /// Stored crashes (a title whose storing failed is known but not counted).
    pub(super) fn len(&self) -> usize {
        self.found.len()
    }

    pub(super) fn push(&mut self, crash: FoundCrash) {
        self.found.push(crash);
    }

    pub(super) fn found(&self) -> &[FoundCrash] {
        &self.found
    }
}

/// The first input seen crashing with a new title.
pub(super) struct Sighting {
    pub title: String,
    pub bytes: Vec<u8>,
    /// What the mutator did to get it.
    pub mutation: String,
    /// Its execution's folder (console log, screenshot).
    pub evidence: PathBuf,
}

/// The smallest input found that still crashes with the sighting's title.
struct Minimized {
    bytes: Vec<u8>,
    evidence: PathBuf,
    execs: u32,
}

/// A folder-safe name for a crash title.
fn slug(title: &str, n: usize) -> String {
    let mut s: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    format!("{n}-{}", &s[..s.len().min(60)])
}

/// Minimizes a new crash and stores it as crash number `n`: first and minimized
/// inputs, and the minimized input's evidence (else the first one's).
pub(super) fn save_crash(
    rig: &Rig,
    format: &ContentFormat,
    out: &Path,
    sighting: &Sighting,
    n: usize,
) -> Result<FoundCrash, FuzzError> {
    let min = minimize_crash(rig, format, sighting);
    let rel = PathBuf::from("crashes").join(slug(&sighting.title, n));
    let dir = out.join(&rel);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let first_path = dir.join("first.content");
    write_atomic(&first_path, &sighting.bytes).map_err(io(&first_path))?;
    let min_path = dir.join("minimized.content");
    write_atomic(&min_path, &min.bytes).map_err(io(&min_path))?;
    let evidence_dir = dir.join("evidence");
    std::fs::rename(&min.evidence, &evidence_dir).map_err(io(&min.evidence))?;
    if min.evidence != sighting.evidence {
        let _ = std::fs::remove_dir_all(&sighting.evidence);
    }
    let title_path = dir.join("title.txt");
    write_atomic(&title_path, format!("{}\n", sighting.title).as_bytes())
        .map_err(io(&title_path))?;
    Ok(FoundCrash {
        title: sighting.title.clone(),
        found_at_exec: 0,
        seconds_to_find: 0.0,
        mutation: sighting.mutation.clone(),
        input_bytes: sighting.bytes.len(),
        minimized_bytes: min.bytes.len(),
        minimize_execs: min.execs,
        input: rel.join("first.content").display().to_string(),
        minimized: rel.join("minimized.content").display().to_string(),
        evidence: rel.join("evidence").display().to_string(),
    })
}

/// Tries the minimizer's candidates, smallest-first as it offers them, within
/// [`MINIMIZE_BUDGET`] executions; restarts from each smaller input that still
/// crashes the same way.
fn minimize_crash(rig: &Rig, format: &ContentFormat, sighting: &Sighting) -> Minimized {
    let mut min = Minimized {
        bytes: sighting.bytes.clone(),
        evidence: sighting.evidence.clone(),
        execs: 0,
    };
    'shrink: while min.execs < MINIMIZE_BUDGET && !interrupted() {
        for candidate in minimize::candidates(format, &min.bytes) {
            if min.execs >= MINIMIZE_BUDGET || interrupted() {
                break 'shrink;
            }
            if !minimize::is_smaller(&candidate.bytes, &min.bytes) {
                continue;
            }
            min.execs += 1;
            match rig.execute(&candidate.bytes, None) {
                Outcome::Crash { title, evidence } if title == sighting.title => {
                    // Keep the first input's evidence and the latest only.
                    if min.evidence != sighting.evidence {
                        let _ = std::fs::remove_dir_all(&min.evidence);
                    }
                    min.bytes = candidate.bytes;
                    min.evidence = evidence;
                    continue 'shrink;
                }
                Outcome::Crash { evidence, .. } => {
                    let _ = std::fs::remove_dir_all(evidence);
                }
                _ => {}
            }
        }
        break;
    }
    min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_folder_safe_and_numbered() {
        assert_eq!(
            slug("BUG: unable to handle page fault in sensor_match_fields", 1),
            "1-bug-unable-to-handle-page-fault-in-sensor-match-fields"
        );
        assert_eq!(slug("../../x", 2), "2-x");
    }

    #[test]
    fn a_title_is_new_once_and_counts_when_stored() {
        let mut crashes = Crashes::default();
        assert!(crashes.first_sighting("BUG: a"));
        assert!(!crashes.first_sighting("BUG: a"), "the same bug again");
        assert!(crashes.first_sighting("BUG: b"));
        assert_eq!(crashes.len(), 0, "seen, not yet stored");
    }
}
