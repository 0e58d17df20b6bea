//! The dumps a Windows guest wrote of its own crashes (the minidump folder,
//! MEMORY.DMP), collected through the agent at the next ready boot and matched to the
//! crash they belong to by time: only dumps written after a crash count for it,
//! newest first. Windows writes a crash's dump into the page file while it bugchecks
//! and copies it out to MEMORY.DMP / Minidump early in the next boot, so a dump's
//! LastWriteTimeUtc falls after its crash and before the next crash's.
//!
//! The guest's clock is not the host's (Windows reads the RTC as local time unless
//! told otherwise; QEMU's RTC starts at host UTC): the difference is measured with
//! `guest-get-time` when the dumps are listed and taken out before comparing, within
//! [`DUMP_TIME_TOLERANCE`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::evidence::{sanitize_file_name, GUEST_DUMP_TIMEOUT};
use super::machine::Machine;
use super::{StepError, Stop};
use crate::agent::worker::{Answer, Request, MAX_READ_BYTES, REQUEST_TIMEOUT};
use crate::detect;
use crate::detect::boot_watch::bugcheck_line;
use crate::guest::windows::{self, command::GuestDumpFile};
use crate::model::record::BugcheckRecord;

/// How far a dump's time (guest clock, less the measured guest-host difference) may
/// fall before its crash's host time and still count as written after it: the guest
/// clock's drift over the boots between (large under TCG, where guest time lags),
/// the one-second resolution of the crash's instant, and the measurement's round
/// trip.
pub(crate) const DUMP_TIME_TOLERANCE: Duration = Duration::from_secs(120);
/// How much of a dump too large to copy is read: its header, which names the
/// bugcheck (detect/win_dump.rs, the 64-bit header is 0x2000 bytes).
pub(crate) const DUMP_HEADER_BYTES: u64 = detect::win_dump::HEADER64_LEN as u64;

/// Why nothing is collected in a boot loop.
pub(crate) const BOOT_LOOP_NOTE: &str = "not collected: the guest boot-loops, so no boot became ready to list its dumps through the agent; a recover step with via = \"helper_vm\" after the loop copies them off the stopped disk (listed as offline_evidence; images/windows/GUIDE.md section 11)";

/// The guest's dump files split among the crashes still waiting for theirs.
#[derive(Debug, PartialEq)]
pub(crate) struct Attribution {
    /// For each waiting crash (its index), the files written after it and before the
    /// next waiting crash, newest first.
    pub per_crash: Vec<(usize, Vec<GuestDumpFile>)>,
    /// Files written before every waiting crash: an earlier crash's, or older.
    pub stale: Vec<GuestDumpFile>,
}

/// Matches `files` to `crashes` (index, host UTC instant) by time: a file belongs
/// to the latest crash seen before it was written (`skew` = guest clock - host
/// clock is taken out of its time first, [`DUMP_TIME_TOLERANCE`] allowed).
pub(crate) fn attribute(
    files: Vec<GuestDumpFile>,
    crashes: &[(usize, Timestamp)],
    skew: SignedDuration,
) -> Attribution {
    let mut order: Vec<(usize, Timestamp)> = crashes.to_vec();
    order.sort_by_key(|(_, at)| *at);
    let mut per_crash: Vec<(usize, Vec<GuestDumpFile>)> =
        order.iter().map(|(i, _)| (*i, Vec::new())).collect();
    let mut stale = Vec::new();
    for file in files {
        let owner = order
            .iter()
            .rposition(|(_, seen)| written_after(file.modified, *seen, skew));
        match owner {
            Some(k) => per_crash[k].1.push(file),
            None => stale.push(file),
        }
    }
    for (_, files) in &mut per_crash {
        files.sort_by_key(|f| std::cmp::Reverse(f.modified));
    }
    Attribution { per_crash, stale }
}

/// Whether a file written at `modified` (by the guest's clock, `skew` ahead of the
/// host's) was written after a crash the host saw at `seen`, within
/// [`DUMP_TIME_TOLERANCE`]: the one rule for dumps collected through the agent and
/// for those read off the stopped disk.
pub(crate) fn written_after(modified: Timestamp, seen: Timestamp, skew: SignedDuration) -> bool {
    let tolerance = SignedDuration::try_from(DUMP_TIME_TOLERANCE).unwrap_or_default();
    let host_time = modified.checked_sub(skew).unwrap_or(modified);
    seen.checked_sub(tolerance).unwrap_or(seen) <= host_time
}

impl Machine<'_> {
    /// After a crash, the next ready Windows boot has written its own dumps: copy
    /// those written after each crash still waiting for its dumps into that crash's
    /// evidence (a dump too large to copy gives its header), and name the crash from
    /// a dump's bugcheck when nothing else named it. Problems are noted on the
    /// crash; a crash or hang while copying ends the wait as usual.
    pub(super) fn collect_guest_dumps(&mut self) -> Result<(), Stop> {
        let waiting: Vec<(usize, Timestamp)> = self
            .found
            .crashes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.guest_dumps.is_empty() && c.guest_dumps_note.is_none())
            .filter_map(|(i, _)| self.crash_seen_utc.get(i).map(|at| (i, *at)))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let files = match self.list_guest_dumps()? {
            Ok(files) => files,
            Err(note) => {
                for (i, _) in &waiting {
                    self.found.crashes[*i].guest_dumps_note = Some(note.clone());
                }
                return Ok(());
            }
        };
        let (skew, clock_note) = match self.measure_clock_skew()? {
            Ok(skew) => (skew, None),
            Err(why) => (
                SignedDuration::ZERO,
                Some(format!(
                    "the guest's clock could not be read ({why}): its file times were compared with the host's as they are"
                )),
            ),
        };
        let attribution = attribute(files, &waiting, skew);
        let stale = attribution.stale.len();
        for (crash_index, files) in attribution.per_crash {
            let mut copied = Vec::new();
            let mut skipped = Vec::new();
            for (n, file) in files.iter().enumerate() {
                match self.copy_guest_dump(crash_index, n, file)? {
                    Ok(rel) => copied.push(rel),
                    Err(why) => skipped.push(why),
                }
            }
            let mut notes = Vec::new();
            if files.is_empty() {
                notes.push(format!(
                    "the guest wrote no dump after this crash{} (check its crash dump settings: bootgate doctor --image)",
                    if stale > 0 {
                        format!("; {stale} older dump(s), written before it, were left out")
                    } else {
                        String::new()
                    }
                ));
            }
            if !skipped.is_empty() {
                notes.push(format!("not copied: {}", skipped.join("; ")));
            }
            notes.extend(clock_note.clone());
            let crash = &mut self.found.crashes[crash_index];
            crash.guest_dumps = copied;
            crash.guest_dumps_note = (!notes.is_empty()).then(|| notes.join("; "));
        }
        Ok(())
    }

    /// Guest clock minus host clock, measured now and kept for the offline
    /// recovery (which reads file times off a stopped disk, when no guest clock can
    /// be asked), or why it could not be read.
    pub(super) fn measure_clock_skew(&mut self) -> Result<Result<SignedDuration, String>, Stop> {
        let skew = self.guest_clock_skew()?;
        if let Ok(skew) = &skew {
            self.clock_skew = Some(*skew);
        }
        Ok(skew)
    }

    /// Guest clock minus host clock, or why it could not be read.
    fn guest_clock_skew(&mut self) -> Result<Result<SignedDuration, String>, Stop> {
        let before = Timestamp::now();
        let guest_ns = match self.agent(Request::GuestTime, REQUEST_TIMEOUT * 2) {
            Ok(Answer::Time(ns)) => ns,
            Ok(other) => return Ok(Err(format!("guest-get-time answered {other:?}"))),
            Err(StepError::Failed(_, why)) => return Ok(Err(why)),
            Err(StepError::Stopped(stop)) => return Err(stop),
        };
        let after = Timestamp::now();
        // The host instant halfway through the round trip.
        let host = before
            .checked_add(after.duration_since(before) / 2)
            .unwrap_or(after);
        Ok(Timestamp::from_nanosecond(i128::from(guest_ns))
            .map(|guest| guest.duration_since(host))
            .map_err(|e| format!("guest-get-time gave {guest_ns}: {e}")))
    }

    /// The dumps the guest wrote, or the note on why they could not be listed.
    fn list_guest_dumps(&mut self) -> Result<Result<Vec<GuestDumpFile>, String>, Stop> {
        let command = match self.profile.list_crash_dumps() {
            Ok(command) => command,
            Err(e) => return Ok(Err(format!("not collected: {e}"))),
        };
        let listing = match self.agent(
            Request::Exec {
                argv: command.argv,
                env: command.env,
                timeout: GUEST_DUMP_TIMEOUT,
            },
            GUEST_DUMP_TIMEOUT + REQUEST_TIMEOUT * 2,
        ) {
            Ok(Answer::Exited(status)) => String::from_utf8_lossy(&status.stdout).into_owned(),
            Ok(other) => return Ok(Err(format!("listing the guest's dumps: {other:?}"))),
            Err(StepError::Failed(_, why)) => {
                return Ok(Err(format!("listing the guest's dumps: {why}")))
            }
            Err(StepError::Stopped(stop)) => return Err(stop),
        };
        Ok(windows::command::parse_crash_dump_listing(&listing)
            .map_err(|e| format!("listing the guest's dumps: {e}")))
    }

    /// Copies the `n`th guest dump into the crash's evidence: its run-relative path,
    /// or why it was skipped. A dump over the copy limit is not copied, but its
    /// header is read (the first [`DUMP_HEADER_BYTES`]) and kept: it still names
    /// the bugcheck.
    fn copy_guest_dump(
        &mut self,
        crash_index: usize,
        n: usize,
        file: &GuestDumpFile,
    ) -> Result<Result<String, String>, Stop> {
        let too_big = file.bytes > MAX_READ_BYTES;
        let request = if too_big {
            Request::ReadHead {
                path: file.path.clone(),
                bytes: DUMP_HEADER_BYTES,
            }
        } else {
            Request::ReadFile {
                path: file.path.clone(),
            }
        };
        let data = match self.agent(request, GUEST_DUMP_TIMEOUT) {
            Ok(Answer::Data(data)) => data,
            Ok(_) | Err(StepError::Failed(..)) => {
                return Ok(Err(format!("{} (could not be read)", file.path)))
            }
            Err(StepError::Stopped(stop)) => return Err(stop),
        };
        let name = file.path.rsplit('\\').next().unwrap_or("dump.dmp");
        let suffix = if too_big { ".header" } else { "" };
        let (path, rel) = self.evidence_path(&format!(
            "guest-dump-{}-{}-{}{suffix}",
            crash_index + 1,
            n + 1,
            sanitize_file_name(name)
        ));
        if let Err(e) = crate::util::write_atomic(&path, &data) {
            return Ok(Err(format!(
                "{} (cannot write {}: {e})",
                file.path,
                path.display()
            )));
        }
        let crash = &mut self.found.crashes[crash_index];
        if crash.bugcheck.is_none() {
            if let Ok(header) = detect::win_dump::DumpHeader::parse(&data, &path) {
                let bugcheck = header.bugcheck;
                if crash.source != "console" {
                    crash.title = bugcheck.title(None);
                    crash.kind = "bugcheck".into();
                    crash.source = "guest-dump".into();
                    crash.excerpt = vec![bugcheck_line(&bugcheck)];
                }
                crash.signals.push("guest-dump".into());
                crash.bugcheck = Some(BugcheckRecord::of(&bugcheck, "guest-dump"));
            }
        }
        if too_big {
            return Ok(Err(format!(
                "{} ({} MiB, over the {} MiB copy limit: its header is kept as {rel})",
                file.path,
                file.bytes >> 20,
                MAX_READ_BYTES >> 20
            )));
        }
        Ok(Ok(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::windows::command::GuestDumpKind;

    fn file(name: &str, modified: &str) -> GuestDumpFile {
        GuestDumpFile {
            kind: GuestDumpKind::Minidump,
            bytes: 1 << 20,
            modified_utc: modified.into(),
            modified: modified.parse().unwrap(),
            path: format!(r"C:\Windows\Minidump\{name}"),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn names(files: &[GuestDumpFile]) -> Vec<&str> {
        files
            .iter()
            .map(|f| f.path.rsplit('\\').next().unwrap())
            .collect()
    }

    #[test]
    fn only_dumps_written_after_the_crash_count_newest_first() {
        let files = vec![
            file("old-2023.dmp", "2023-01-05T10:00:00Z"),
            file("a.dmp", "2024-07-19T04:10:30Z"),
            file("b.dmp", "2024-07-19T04:12:00.5Z"),
            file("yesterday.dmp", "2024-07-18T04:10:30Z"),
        ];
        let got = attribute(
            files,
            &[(0, at("2024-07-19T04:09:12Z"))],
            SignedDuration::ZERO,
        );
        assert_eq!(got.per_crash.len(), 1);
        assert_eq!(names(&got.per_crash[0].1), ["b.dmp", "a.dmp"]);
        assert_eq!(names(&got.stale), ["old-2023.dmp", "yesterday.dmp"]);
    }

    #[test]
    fn each_dump_goes_to_the_latest_crash_before_it() {
        let files = vec![
            file("first.dmp", "2024-07-19T04:10:00Z"),
            file("second.dmp", "2024-07-19T04:20:00Z"),
        ];
        // Given out of order: the attribution sorts crashes by time.
        let got = attribute(
            files,
            &[
                (3, at("2024-07-19T04:19:00Z")),
                (1, at("2024-07-19T04:09:00Z")),
            ],
            SignedDuration::ZERO,
        );
        assert_eq!(got.per_crash[0].0, 1);
        assert_eq!(names(&got.per_crash[0].1), ["first.dmp"]);
        assert_eq!(got.per_crash[1].0, 3);
        assert_eq!(names(&got.per_crash[1].1), ["second.dmp"]);
        assert!(got.stale.is_empty());
    }

    /// A guest that reads the RTC as local time (UTC+2 here) stamps its files two
    /// hours early in UTC: the measured skew puts them back after the crash.
    #[test]
    fn the_guest_clock_difference_is_taken_out() {
        let files = vec![file("m.dmp", "2024-07-19T02:10:00Z")];
        let crash = [(0, at("2024-07-19T04:09:00Z"))];
        let naive = attribute(files.clone(), &crash, SignedDuration::ZERO);
        assert_eq!(names(&naive.stale), ["m.dmp"], "without the skew: stale");
        let skew = SignedDuration::from_hours(-2);
        let fixed = attribute(files, &crash, skew);
        assert_eq!(names(&fixed.per_crash[0].1), ["m.dmp"]);
    }

    #[test]
    fn the_tolerance_is_stated_and_bounds_the_match() {
        let crash = [(0, at("2024-07-19T04:09:00Z"))];
        let inside = attribute(
            vec![file("drift.dmp", "2024-07-19T04:07:30Z")],
            &crash,
            SignedDuration::ZERO,
        );
        assert_eq!(names(&inside.per_crash[0].1), ["drift.dmp"]);
        let outside = attribute(
            vec![file("before.dmp", "2024-07-19T04:06:00Z")],
            &crash,
            SignedDuration::ZERO,
        );
        assert_eq!(names(&outside.stale), ["before.dmp"]);
        assert_eq!(DUMP_TIME_TOLERANCE, Duration::from_secs(120));
    }

    #[test]
    fn no_files_or_no_crashes_attribute_nothing() {
        let got = attribute(
            Vec::new(),
            &[(0, at("2024-07-19T04:09:00Z"))],
            SignedDuration::ZERO,
        );
        assert_eq!(got.per_crash, vec![(0, Vec::new())]);
        let lone = attribute(
            vec![file("x.dmp", "2024-07-19T04:10:00Z")],
            &[],
            SignedDuration::ZERO,
        );
        assert_eq!(names(&lone.stale), ["x.dmp"]);
    }

    /// A hostile listing: times far out of range, duplicates, and the same second
    /// for several files still sort and split deterministically.
    #[test]
    fn odd_listings_sort_deterministically() {
        let listing = "dump\tmini\t1\t2999-12-31T23:59:59Z\tC:\\W\\Minidump\\future.dmp\n\
                       dump\tmini\t1\t1970-01-01T00:00:00Z\tC:\\W\\Minidump\\epoch.dmp\n\
                       dump\tmemory\t99999999999\t2024-07-19T04:10:00Z\tC:\\W\\MEMORY.DMP\n\
                       dump\tmini\t1\t2024-07-19T04:10:00Z\tC:\\W\\Minidump\\same.dmp\n";
        let files = windows::command::parse_crash_dump_listing(listing).unwrap();
        let got = attribute(
            files,
            &[(0, at("2024-07-19T04:09:00Z"))],
            SignedDuration::ZERO,
        );
        assert_eq!(
            names(&got.per_crash[0].1),
            ["future.dmp", "MEMORY.DMP", "same.dmp"]
        );
        assert_eq!(names(&got.stale), ["epoch.dmp"]);
        assert_eq!(DUMP_HEADER_BYTES, 0x2000);
        // A time past what a timestamp holds is a listing error naming the line,
        // not a panic or a silent skip.
        let beyond = "dump\tmini\t1\t9999-12-31T23:59:59Z\tC:\\W\\x.dmp\n";
        assert!(windows::command::parse_crash_dump_listing(beyond).is_err());
    }
}
