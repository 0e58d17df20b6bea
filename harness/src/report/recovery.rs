//! The recovery table: for every scenario that crashed and has a `recovers_within`
//! gate or came back, how it came back, in how many boots and seconds, against its
//! limit. A recovery drill's paths are such scenarios, so the table is the drill's
//! side-by-side comparison; the terminal, `bootgate show` and report.html all print
//! this one table.

use serde::Serialize;

use crate::model::record::{RunRecord, ScenarioRecord, Verdict};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecoveryRow {
    pub scenario: String,
    pub verdict: Verdict,
    /// The first crash's title.
    pub crash: String,
    /// What brought the guest back, or why it did not come back.
    pub how: String,
    pub boots: Option<u32>,
    pub seconds: Option<f64>,
    pub limit: Option<u32>,
    /// Whether the recovery (or its absence) passes the gate.
    pub within: Option<bool>,
}

/// One row per scenario with a crash and either a recovery gate or a recovery.
pub(crate) fn rows(run: &RunRecord) -> Vec<RecoveryRow> {
    run.scenarios.iter().filter_map(row).collect()
}

fn row(sc: &ScenarioRecord) -> Option<RecoveryRow> {
    if sc.recovers_within.is_none() && sc.recovery.is_none() {
        return None;
    }
    let crash = match sc.crashes.first() {
        Some(crash) => crash.title.clone(),
        // Nothing to recover from: a drill whose update did not crash says so in its
        // verdict; a gated scenario that never crashed has no row.
        None if sc.verdict == Verdict::Pass => return None,
        None => "no crash".into(),
    };
    let recovery = sc.recovery.as_ref();
    let how = match recovery {
        Some(r) => r.how.clone(),
        None if sc.crashes.is_empty() => "-".into(),
        None => "did not come back".into(),
    };
    let within = sc
        .recovers_within
        .map(|limit| recovery.is_some_and(|r| r.boots <= limit));
    Some(RecoveryRow {
        scenario: sc.name.clone(),
        verdict: sc.verdict,
        crash,
        how,
        boots: recovery.map(|r| r.boots),
        seconds: recovery.map(|r| r.seconds),
        limit: sc.recovers_within,
        within,
    })
}

/// The table as aligned text, or None when there are no rows.
pub(crate) fn text(rows: &[RecoveryRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let header = [
        "scenario".to_string(),
        "how it came back".into(),
        "boots".into(),
        "seconds".into(),
        "limit".into(),
        "verdict".into(),
    ];
    let mut table = vec![header];
    for r in rows {
        table.push([
            r.scenario.clone(),
            r.how.clone(),
            r.boots.map_or_else(|| "-".into(), |b| b.to_string()),
            r.seconds.map_or_else(|| "-".into(), |s| format!("{s:.1}")),
            r.limit.map_or_else(|| "-".into(), |l| format!("{l} boots")),
            r.verdict.as_str().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::from(
        "recovery (boots and seconds from the first crash to a ready normal boot that stayed up):",
    );
    for row in &table {
        out.push_str("\n  ");
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, width))| {
                // Numbers right-aligned, words left.
                if (2..4).contains(&c) {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
    }
    Some(out)
}
