//! `bootgate offline`: the NTFS helper VM on a Windows VM's disk.

use std::path::PathBuf;

use bootgate::runner::offline::{offline_disk, OfflineOptions, WindowsEdit};

use super::args::OfflineArgs;
use super::exit::{fail, Exit};

pub fn offline(args: OfflineArgs) -> Exit {
    // Ctrl-C stops the helper VM cleanly: no QEMU left, no half-edited overlay.
    super::install_interrupt_handler();
    let mut put = Vec::new();
    for item in &args.put {
        match item.split_once('=') {
            Some((host, guest)) if !host.is_empty() && !guest.is_empty() => {
                put.push((PathBuf::from(host), guest.to_string()))
            }
            _ => {
                return fail(
                    &format!("--put {item:?}: write it as HOST_FILE=WINPATH, like good.sys='C:\\Windows\\System32\\drivers\\x.sys'"),
                    Exit::Usage,
                )
            }
        }
    }
    let opts = OfflineOptions {
        disk: args.disk,
        image: args.image,
        edit: WindowsEdit {
            remove: args.remove,
            put,
            collect: args.collect,
            partition: args.partition,
        },
        in_place: args.in_place,
        overlay: args.overlay,
        accel: args.accel,
    };
    let mut notify = |text: &str| eprintln!("bootgate: {text}");
    let outcome = match offline_disk(&opts, &mut notify) {
        Ok(outcome) => outcome,
        Err(e) => {
            let code = match e.exit_code() {
                2 => Exit::Usage,
                130 => Exit::Interrupted,
                _ => Exit::Infra,
            };
            return fail(&e, code);
        }
    };
    let report = &outcome.report;
    println!("volume: {}", report.device);
    for r in &report.removed {
        println!("removed: {r}");
    }
    for w in &report.written {
        println!("wrote: {w}");
    }
    for e in &report.evidence {
        println!(
            "copied: {} -> {} ({} bytes)",
            e.guest_path,
            e.file.display(),
            e.bytes
        );
    }
    for n in &report.evidence_notes {
        println!("note: {n}");
    }
    println!(
        "check: ntfsfix -n: {}",
        report.volume_check.lines().last().unwrap_or("")
    );
    if opts.in_place {
        println!(
            "disk: {} (written in place)",
            outcome.written_disk.display()
        );
    } else {
        println!(
            "disk: {} (an overlay on {}; boot it, or merge it with: qemu-img commit {})",
            outcome.written_disk.display(),
            opts.disk.display(),
            outcome.written_disk.display()
        );
    }
    if let Some(file) = &outcome.report_file {
        println!("report: {}", file.display());
    }
    if report.unmatched.is_empty() {
        Exit::Pass
    } else {
        for u in &report.unmatched {
            eprintln!("bootgate: nothing matched --remove {u}");
        }
        Exit::Fail
    }
}
