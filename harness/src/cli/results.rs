//! The commands over finished run folders: `show`, `verify`, `report` and `merge`.

use std::path::Path;

use bootgate::model::run_file::REPORT_HTML;
use bootgate::model::ReportError;
use bootgate::report::html;
use bootgate::report::manifest;
use bootgate::report::terminal::summary_text;
use bootgate::report::terminal_text;
use bootgate::runner;

use super::args::MergeArgs;
use super::exit::{fail, Exit};

pub fn show(run_dir: &Path) -> Exit {
    match runner::rerun::read_record(run_dir) {
        Ok(record) => {
            print!("{}", summary_text(&record));
            Exit::Pass
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}

pub fn verify(run_dir: &Path) -> Exit {
    match manifest::verify(run_dir) {
        Ok(findings) => {
            for finding in &findings {
                // File names come from the folder: one could carry an escape.
                println!("{}", terminal_text::line(&finding.to_string()));
            }
            let problems = findings.iter().filter(|f| f.is_problem()).count();
            if problems == 0 {
                println!(
                    "ok: every file in {} matches manifest.json",
                    run_dir.display()
                );
                Exit::Pass
            } else {
                println!("FAILED: {problems} problem(s) in {}", run_dir.display());
                // The evidence no longer proves what was run: a failed gate.
                Exit::Fail
            }
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}

pub fn report(run_dir: &Path) -> Exit {
    let record = match runner::rerun::read_record(run_dir) {
        Ok(record) => record,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let path = run_dir.join(REPORT_HTML);
    let written = html::render(&record, run_dir).and_then(|text| {
        bootgate::util::write_atomic(&path, text.as_bytes()).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })
    });
    // The report is a listed artifact: refresh its own manifest entry only, so verify
    // still flags a change to anything else (run.json included).
    match written.and_then(|()| manifest::refresh_entry(run_dir, REPORT_HTML)) {
        Ok(()) => {
            println!("{}", path.display());
            Exit::Pass
        }
        // The run record read fine, so a report that cannot be written is the host's.
        Err(e) => fail(&e, Exit::Infra),
    }
}

pub fn merge(args: MergeArgs) -> Exit {
    match runner::merge::merge(&args.dirs, &args.out, std::env::args().collect()) {
        Ok((record, dir)) => {
            print!("{}", summary_text(&record));
            println!("merged into {}", dir.display());
            record.outcome().exit_code()
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}
