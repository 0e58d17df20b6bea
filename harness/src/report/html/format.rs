//! Small formatting helpers shared by the view builders.

use std::time::Duration;

use crate::model::record::{BootOutcome, StepOutcome, Verdict};
use crate::util::{human_duration, shell_quote};

/// Characters of a sha256 shown where space is short; enough to tell inputs apart
/// and to match `sha256sum` output by eye.
const SHORT_HASH: usize = 12;

pub(super) fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "v-pass",
        Verdict::Fail => "v-fail",
        Verdict::Error => "v-error",
        Verdict::Flaky => "v-flaky",
    }
}

pub(super) fn boot_class(o: BootOutcome) -> &'static str {
    match o {
        BootOutcome::Ready => "v-pass",
        BootOutcome::Crash => "v-fail",
        BootOutcome::Hang | BootOutcome::Timeout => "v-flaky",
        BootOutcome::Error => "v-error",
    }
}

pub(super) fn step_class(o: StepOutcome) -> &'static str {
    match o {
        StepOutcome::Ok => "v-pass",
        StepOutcome::Failed | StepOutcome::Crash => "v-fail",
        StepOutcome::Hang | StepOutcome::Timeout => "v-flaky",
        StepOutcome::Error => "v-error",
        StepOutcome::Skipped => "v-skip",
    }
}

pub(super) fn timeline_class(o: BootOutcome) -> &'static str {
    match o {
        BootOutcome::Ready => "t-ready",
        BootOutcome::Crash => "t-crash",
        BootOutcome::Hang | BootOutcome::Timeout => "t-hang",
        BootOutcome::Error => "t-error",
    }
}

pub(super) fn step_timeline_class(o: StepOutcome) -> &'static str {
    match o {
        StepOutcome::Ok => "t-step",
        StepOutcome::Failed | StepOutcome::Crash => "t-crash",
        StepOutcome::Hang | StepOutcome::Timeout => "t-hang",
        StepOutcome::Error => "t-error",
        StepOutcome::Skipped => "t-skip",
    }
}

pub(super) fn anchor(index: usize) -> String {
    format!("scenario-{}", index + 1)
}

pub(super) fn ms_text(ms: u64) -> String {
    human_duration(Duration::from_millis(ms))
}

pub(super) fn short_hash(sha: &str) -> &str {
    sha.get(..SHORT_HASH).unwrap_or(sha)
}

pub(super) fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// What an input is, from its name: the summary lists drivers, content and images
/// by name and hash. The record has no role field, so this is a best guess by
/// extension; the Inputs table still lists every file.
pub(super) fn input_role(path: &str) -> &'static str {
    let name = file_name(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "ko" | "sys" | "inf" | "cat" => "driver",
        "content" => "content",
        "qcow2" | "img" | "raw" | "vhd" | "vhdx" | "vmdk" | "iso" => "image",
        _ if name == "image.toml" || name.starts_with("vmlinuz") || name.starts_with("initrd") => {
            "image"
        }
        "toml" => "suite",
        "c" | "h" | "mk" => "source",
        _ if name == "kbuild" || name == "makefile" => "source",
        _ if path.contains("/content/") => "content",
        _ => "other",
    }
}

/// Guest text may carry terminal escapes and other control bytes; they are not
/// valid in HTML and would garble the page, so they become visible placeholders.
pub(super) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

pub(super) fn shell_command(argv: &[String]) -> String {
    clean(
        &argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// One option per line with `\` continuations: a QEMU command line of 40 words reads
/// as a list and still pastes into a shell.
pub(super) fn shell_command_lines(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push_str(if arg.starts_with('-') {
                " \\\n    "
            } else {
                " "
            });
        }
        out.push_str(&shell_quote(arg));
    }
    clean(&out)
}
