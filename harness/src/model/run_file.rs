//! The names of the files every run folder holds, and writing run.json.

use std::path::Path;

use super::record::RunRecord;
use super::sink::ReportError;
use crate::util::write_atomic;

/// The machine-readable record of a run.
pub const RUN_JSON: &str = "run.json";
/// JUnit XML for CI systems.
pub const JUNIT_XML: &str = "junit.xml";
/// The self-contained page for reviewers.
pub const REPORT_HTML: &str = "report.html";
/// sha256 of every input and every file of the run.
pub const MANIFEST_JSON: &str = "manifest.json";
/// The in-toto attestation (a DSSE envelope when signed); written after manifest.json,
/// which never lists it.
pub const ATTESTATION: &str = "attestation.intoto.jsonl";

/// Writes `dir/run.json` atomically: a reader sees the old file or the new one, never
/// half of one.
pub(crate) fn write_run_json(dir: &Path, run: &RunRecord) -> Result<(), ReportError> {
    let path = dir.join(RUN_JSON);
    let mut text = serde_json::to_vec_pretty(run).map_err(|e| ReportError::Encode {
        what: RUN_JSON,
        message: e.to_string(),
    })?;
    text.push(b'\n');
    write_atomic(&path, &text).map_err(|source| ReportError::Write { path, source })
}
