//! The NTFS helper VM at work on a stopped Windows VM's disk: it boots the helper
//! image (images/ntfs-helper) with that disk as its second disk, mounts the volume
//! holding `%SystemRoot%` with ntfs-3g, deletes or writes files by Windows path (each
//! name looked up without case, [`crate::guest::windows::offline`]), copies the crash
//! evidence out through the guest agent, unmounts (ntfs-3g writes its caches back)
//! and checks the volume with `ntfsfix -n` before the disk is handed back.
//!
//! Used by the `helper_vm` recovery of a Windows scenario (recovery.rs) and by
//! `bootgate offline`, which works on any VM disk ([`offline_disk`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::machine::{Machine, MachineSetup};
use super::StepError;
use crate::agent::worker::{Answer, Request, MAX_READ_BYTES};
use crate::guest::windows::offline::{
    self as off, helper_argv, helper_path, select, Entry, VolumePath,
};
use crate::guest::{GuestCommand, GuestProfile};
use crate::image::manifest::Manifest;
use crate::model::Emitter;
use crate::qemu::accel::Accel;
use crate::qemu::vm::VmDir;
use crate::qemu::QemuTools;

/// Time one helper command (mount, a folder listing, a delete, unmount and check)
/// may take; ntfs-3g's first mount of a large volume under TCG takes seconds.
const NTFS_COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// Where the helper stages the memory dump's header before it is read back.
const HEADER_STAGING: &str = "/run/bootgate-memory-dump-header";

/// What to do on the Windows volume.
#[derive(Debug, Clone, Default)]
pub struct WindowsEdit {
    /// Windows paths to delete; the file name may hold `*` and `?`.
    pub remove: Vec<String>,
    /// Host files to write at Windows paths (missing folders are created).
    pub put: Vec<(PathBuf, String)>,
    /// Copy the minidumps, the memory dump's header and the System event log into
    /// this folder.
    pub collect: Option<PathBuf>,
    /// The partition to edit (1-based; 0 the whole disk), instead of the one that
    /// holds `%SystemRoot%\System32`.
    pub partition: Option<u32>,
}

/// What the helper did, for the step's detail, run.json and `offline.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OfflineReport {
    /// The helper's device of the Windows volume (`/dev/vdb2`).
    pub device: String,
    /// Files deleted, as Windows paths from the volume's root.
    pub removed: Vec<String>,
    /// `remove` paths that matched no file.
    pub unmatched: Vec<String>,
    /// Files written.
    pub written: Vec<String>,
    /// Evidence copied out.
    pub evidence: Vec<EvidenceCopy>,
    /// Evidence not found or not copied, and why.
    pub evidence_notes: Vec<String>,
    /// `ntfsfix -n`'s report on the volume after the unmount.
    pub volume_check: String,
}

/// One evidence file copied out of the Windows volume.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceCopy {
    /// "minidump", "memory-dump-header" or "event-log".
    pub kind: &'static str,
    /// Where it is on the volume.
    pub guest_path: String,
    /// Where it was written (under the collect folder).
    pub file: PathBuf,
    /// Bytes copied (a memory dump: its header only).
    pub bytes: u64,
    /// The file's size on the volume.
    pub guest_bytes: u64,
    /// Its last write time on the volume (UTC by the guest's own clock when Windows
    /// wrote it), in seconds since the epoch.
    pub modified_unix: i64,
}

impl OfflineReport {
    /// One line for a step's detail.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for r in &self.removed {
            parts.push(format!("removed {r}"));
        }
        for u in &self.unmatched {
            parts.push(format!("nothing matched {u}"));
        }
        for w in &self.written {
            parts.push(format!("wrote {w}"));
        }
        if !self.evidence.is_empty() {
            parts.push(format!("copied {} evidence file(s)", self.evidence.len()));
        }
        format!(
            "{} on {}: {}",
            parts.join(", "),
            self.device,
            "volume checked clean"
        )
    }
}

fn text(e: StepError) -> String {
    super::recovery::step_error_text(e)
}

impl Machine<'_> {
    /// `bootgate-ntfs SUBCOMMAND ARGS...` in the helper; its standard output.
    fn ntfs(&mut self, subcommand: &str, args: &[&str]) -> Result<String, String> {
        let command = GuestCommand {
            argv: helper_argv(subcommand, args),
            env: Vec::new(),
        };
        self.exec_output(command, NTFS_COMMAND_TIMEOUT)
            .map(|out| String::from_utf8_lossy(&out).into_owned())
            .map_err(|e| format!("bootgate-ntfs {subcommand}: {}", text(e)))
    }

    fn list(&mut self, names: &[String]) -> Result<Vec<Entry>, String> {
        let listing = self.ntfs("list", &[&helper_path(names)])?;
        off::parse_listing(&listing)
    }

    /// The entries `path` names on the volume (exact names from the root, and
    /// whether each is a folder); empty when a folder on the way is missing.
    fn resolve(&mut self, path: &VolumePath) -> Result<Vec<(Vec<String>, bool)>, String> {
        let mut here: Vec<String> = Vec::new();
        let (last, folders) = path.names.split_last().ok_or("an empty path")?;
        for name in folders {
            let entries = self.list(&here)?;
            match select(&entries, name).first() {
                Some(e) if e.is_dir => here.push(e.name.clone()),
                _ => return Ok(Vec::new()),
            }
        }
        let entries = self.list(&here)?;
        Ok(select(&entries, last)
            .into_iter()
            .map(|e| {
                let mut names = here.clone();
                names.push(e.name.clone());
                (names, e.is_dir)
            })
            .collect())
    }

    /// The folder `names` on the volume, made where missing; its exact names.
    fn make_folders(&mut self, names: &[String]) -> Result<Vec<String>, String> {
        let mut here: Vec<String> = Vec::new();
        for name in names {
            let entries = self.list(&here)?;
            match select(&entries, name).first() {
                Some(e) if e.is_dir => here.push(e.name.clone()),
                Some(e) => {
                    return Err(format!(
                        "{} is a file, not a folder",
                        VolumePath {
                            names: [here.clone(), vec![e.name.clone()]].concat()
                        }
                    ))
                }
                None => {
                    here.push(name.clone());
                    self.ntfs("mkdir", &[&helper_path(&here)])?;
                }
            }
        }
        Ok(here)
    }

    /// Mounts, edits, collects, unmounts and checks: the helper's whole job on a
    /// booted helper. After a successful mount the volume is unmounted even when a
    /// later part fails, so the disk is never left half-written.
    pub(super) fn edit_windows_volume(
        &mut self,
        windows: &GuestProfile,
        edit: &WindowsEdit,
    ) -> Result<OfflineReport, String> {
        // Every path is checked before the volume is touched.
        let remove = edit
            .remove
            .iter()
            .map(|p| windows.offline_volume_path(p, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let put = edit
            .put
            .iter()
            .map(|(host, p)| Ok((host.clone(), windows.offline_volume_path(p, false)?)))
            .collect::<Result<Vec<_>, crate::guest::GuestError>>()
            .map_err(|e| e.to_string())?;
        let plan = windows.offline_evidence().map_err(|e| e.to_string())?;
        let root =
            off::helper_system_root(windows.windows_system_root()).map_err(|e| e.to_string())?;

        let device = edit.partition.map(off::helper_device);
        let mut args = vec![root.as_str()];
        args.extend(device.as_deref());
        let mounted = self.ntfs("mount", &args)?;
        let mut report = OfflineReport {
            device: mounted
                .lines()
                .find_map(|l| l.strip_prefix("device "))
                .unwrap_or("?")
                .to_string(),
            ..OfflineReport::default()
        };
        let work = self.edit_mounted(&remove, &put, &plan, edit.collect.as_deref(), &mut report);
        let unmounted = self.ntfs("unmount", &[]);
        work?;
        report.volume_check = unmounted?.trim().to_string();
        Ok(report)
    }

    fn edit_mounted(
        &mut self,
        remove: &[VolumePath],
        put: &[(PathBuf, VolumePath)],
        plan: &off::EvidencePlan,
        collect: Option<&Path>,
        report: &mut OfflineReport,
    ) -> Result<(), String> {
        // Evidence first: a delete must not destroy what explains the crash.
        if let Some(dir) = collect {
            self.collect_evidence(plan, dir, report)?;
        }
        for path in remove {
            let hits: Vec<_> = self
                .resolve(path)?
                .into_iter()
                .filter(|(_, is_dir)| !is_dir)
                .collect();
            if hits.is_empty() {
                report.unmatched.push(path.to_string());
            }
            for (names, _) in hits {
                self.ntfs("remove", &[&helper_path(&names)])?;
                report.removed.push(VolumePath { names }.to_string());
            }
        }
        for (host, path) in put {
            let (file, folders) = path.names.split_last().ok_or("an empty path")?;
            let mut names = self.make_folders(folders)?;
            let entries = self.list(&names)?;
            let exact = match select(&entries, file).first() {
                Some(e) if e.is_dir => return Err(format!("{path} is a folder")),
                Some(e) => e.name.clone(),
                None => file.clone(),
            };
            names.push(exact);
            self.write_guest_file(host, helper_path(&names))
                .map_err(|e| format!("writing {path}: {}", text(e)))?;
            report.written.push(VolumePath { names }.to_string());
        }
        Ok(())
    }

    fn collect_evidence(
        &mut self,
        plan: &off::EvidencePlan,
        dir: &Path,
        report: &mut OfflineReport,
    ) -> Result<(), String> {
        std::fs::create_dir_all(dir.join("Minidump"))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let dumps = self.resolve(&plan.minidumps)?;
        if dumps.is_empty() {
            report
                .evidence_notes
                .push(format!("no minidump ({})", plan.minidumps));
        }
        for (names, is_dir) in dumps {
            if !is_dir {
                let name = off::host_file_name(names.last().map_or("x.dmp", |n| n));
                self.copy_out("minidump", &names, &dir.join("Minidump").join(name), report)?;
            }
        }
        for (kind, path) in [
            ("memory-dump-header", &plan.memory_dump),
            ("event-log", &plan.event_log),
        ] {
            let Some((names, _)) = self.resolve(path)?.into_iter().find(|(_, d)| !d) else {
                report.evidence_notes.push(format!("no {kind} ({path})"));
                continue;
            };
            let name = off::host_file_name(names.last().map_or("x", |n| n));
            let host = match kind {
                "memory-dump-header" => dir.join(format!("{name}.header")),
                _ => dir.join(name),
            };
            self.copy_out(kind, &names, &host, report)?;
        }
        Ok(())
    }

    /// Copies one file out of the volume (a memory dump: its header only).
    fn copy_out(
        &mut self,
        kind: &'static str,
        names: &[String],
        host: &Path,
        report: &mut OfflineReport,
    ) -> Result<(), String> {
        let guest = helper_path(names);
        let shown = VolumePath {
            names: names.to_vec(),
        }
        .to_string();
        let (size, modified_unix) = parse_size_and_time(&self.ntfs("size", &[&guest])?)
            .ok_or_else(|| format!("no size and time for {shown}"))?;
        let source = if kind == "memory-dump-header" {
            let bytes = off::MEMORY_DUMP_HEADER_BYTES.to_string();
            self.ntfs("head", &[&guest, &bytes, HEADER_STAGING])?;
            HEADER_STAGING.to_string()
        } else if size > MAX_READ_BYTES {
            report.evidence_notes.push(format!(
                "{shown} not copied: {} MiB, over the guest agent's {} MiB read limit",
                size >> 20,
                MAX_READ_BYTES >> 20
            ));
            return Ok(());
        } else {
            guest
        };
        let data = match self.agent(Request::ReadFile { path: source }, NTFS_COMMAND_TIMEOUT) {
            Ok(Answer::Data(data)) => data,
            Ok(other) => return Err(format!("reading {shown}: unexpected answer {other:?}")),
            Err(e) => return Err(format!("reading {shown}: {}", text(e))),
        };
        crate::util::write_atomic(host, &data)
            .map_err(|e| format!("cannot write {}: {e}", host.display()))?;
        report.evidence.push(EvidenceCopy {
            kind,
            guest_path: shown,
            file: host.to_path_buf(),
            bytes: data.len() as u64,
            guest_bytes: size,
            modified_unix,
        });
        Ok(())
    }
}

/// The helper's `size` answer, "SIZE MTIME" (bytes, seconds since the epoch).
fn parse_size_and_time(answer: &str) -> Option<(u64, i64)> {
    let mut words = answer.split_whitespace();
    let size = words.next()?.parse().ok()?;
    let modified = words.next()?.parse().ok()?;
    words.next().is_none().then_some((size, modified))
}

/// What a helper VM is booted with.
pub(crate) struct HelperSetup<'a> {
    pub tools: &'a QemuTools,
    pub helper: &'a Manifest,
    pub accel: Accel,
    /// The helper's console and QEMU logs go here.
    pub logs: &'a Path,
    pub rel_dir: &'a str,
    pub name: &'a str,
    pub boot_timeout: Duration,
}

/// Boots the NTFS helper with `disk` (a qcow2 file) as its second disk, runs `edit`
/// for the Windows image `windows`, powers the helper off. Returns the report and
/// the helper's QEMU command lines (evidence of what ran).
pub(crate) fn run_helper(
    setup: &HelperSetup,
    disk: &Path,
    windows: &GuestProfile,
    edit: &WindowsEdit,
) -> (Result<OfflineReport, String>, Vec<Vec<String>>) {
    let vmdir = match VmDir::create(&setup.tools.img, setup.helper, None, None) {
        Ok(dir) => dir,
        Err(e) => {
            return (
                Err(format!("could not prepare the helper VM: {e}")),
                Vec::new(),
            )
        }
    };
    // The helper's own dumps (of a crash of the helper) count on their own: the
    // command it works for may not be a run.
    let budget = crate::runner::dump_budget::DumpBudget::default();
    let mut helper = Machine::new(
        MachineSetup {
            tools: setup.tools,
            manifest: setup.helper,
            accel: setup.accel,
            artifacts: setup.logs,
            rel_dir: setup.rel_dir,
            evidence: crate::suite::Evidence::default(),
            dump_budget: &budget,
            name: setup.name,
            boot_timeout: setup.boot_timeout,
            follow_crash: false,
            recovery_settle: Duration::ZERO,
            // A helper VM runs the harness's own work: its waits have their
            // timeouts, and a stall there is no verdict on the product.
            stall_window: None,
        },
        vmdir,
    );
    helper.qemu.data_disk = Some(disk.to_path_buf());
    let silent = Emitter::new(Vec::new());
    let result = (|| {
        helper
            .power_on(None, None)
            .map_err(|e| format!("did not start: {}", text(e.into())))?;
        helper
            .wait_ready(setup.boot_timeout, &silent)
            .map_err(|e| format!("did not become ready: {}", text(e.into())))?;
        helper.edit_windows_volume(windows, edit)
    })();
    helper.power_off();
    let argvs = std::mem::take(&mut helper.qemu.argvs);
    (result, argvs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helpers_size_answer_gives_bytes_and_time_or_nothing() {
        assert_eq!(
            parse_size_and_time("8192 1764676800\n"),
            Some((8192, 1_764_676_800))
        );
        for bad in ["", "8192", "8192 x", "x 1", "1 2 3", "-1 2"] {
            assert_eq!(parse_size_and_time(bad), None, "{bad:?}");
        }
    }
}
