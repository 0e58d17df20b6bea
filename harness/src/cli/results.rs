//! The commands over finished run folders: `show`, `verify`, `report` and `merge`.

use std::path::Path;

use bootgate::model::run_file::{ATTESTATION, REPORT_HTML};
use bootgate::model::ReportError;
use bootgate::report::attestation::{self, verify::Origin};
use bootgate::report::html;
use bootgate::report::manifest;
use bootgate::report::terminal::summary_text;
use bootgate::report::terminal_text;
use bootgate::runner;
use bootgate::util::signing::{self, PublicKey};

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

pub fn verify(run_dir: &Path, key: Option<&Path>) -> Exit {
    // A key that does not load is the caller's to fix, before anything is checked.
    let key = match key.map(PublicKey::read).transpose() {
        Ok(key) => key,
        Err(e) => return fail(&format!("--key: {e}"), Exit::Usage),
    };
    let (findings, checked) = match attestation::verify::verify_run(run_dir, key.as_ref()) {
        Ok(both) => both,
        Err(e) => return fail(&e, e.exit_code()),
    };
    // File names come from the folder: one could carry an escape.
    let say = |text: String| println!("{}", terminal_text::line(&text));
    for finding in &findings {
        say(finding.to_string());
    }
    for problem in &checked.problems {
        say(problem.to_string());
    }
    for note in &checked.notes {
        say(note.clone());
    }
    say(format!("attestation: {}", checked.origin));
    let problems = findings.iter().filter(|f| f.is_problem()).count() + checked.problems.len();
    if problems == 0 {
        println!(
            "ok: every file in {} matches manifest.json{}",
            run_dir.display(),
            match checked.origin {
                Origin::Absent => "",
                _ => " and the attestation",
            }
        );
        Exit::Pass
    } else {
        println!("FAILED: {problems} problem(s) in {}", run_dir.display());
        // The evidence no longer proves what was run: a failed gate.
        Exit::Fail
    }
}

pub fn keygen(prefix: &Path) -> Exit {
    match signing::keygen(prefix) {
        Ok((private, public, keyid)) => {
            println!(
                "private key: {} (mode 0600: keep it secret, e.g. as a CI secret)",
                private.display()
            );
            println!(
                "public key:  {} (give it to whoever verifies)",
                public.display()
            );
            println!("key id:      {keyid}");
            println!(
                "sign:   bootgate run SUITE --sign-key {}   (or {}={})",
                private.display(),
                signing::SIGN_KEY_ENV,
                private.display()
            );
            println!("verify: bootgate verify RUN_DIR --key {}", public.display());
            Exit::Pass
        }
        Err(e @ signing::KeyError::Exists { .. }) => fail(&e, Exit::Usage),
        Err(e @ signing::KeyError::Invalid { .. }) => fail(&e, Exit::Usage),
        Err(e) => fail(&e, Exit::Infra),
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
    let signer = match super::signer(&args.signing) {
        Ok(signer) => signer,
        Err(exit) => return exit,
    };
    let merged = runner::merge::merge_signed(
        &args.dirs,
        &args.out,
        std::env::args().collect(),
        signer.as_deref(),
    );
    match merged {
        Ok((record, dir)) => {
            print!("{}", summary_text(&record));
            println!("merged into {}", dir.display());
            let written = attestation::Written {
                path: dir.join(ATTESTATION),
                keyid: signer.map(|s| s.keyid().to_string()),
            };
            println!("{}", written.line().trim_start());
            record.outcome().exit_code()
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}
