//! The run's dump budget: how much disk the memory dumps of one run may take, shared
//! by every worker. A run of many crashing scenarios would otherwise fill the disk
//! with dumps (each up to the guest's memory size) and then fail on its own results.
//!
//! A dump reserves its worst-case size before QEMU writes it (so two workers cannot
//! both take the last room) and is charged its real size once written; a dump that
//! failed is charged nothing (its partial file is removed). A dump that would fit
//! but for the room other workers' dumps hold right now waits for them (their real
//! sizes are usually far below their worst cases) rather than being skipped.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::util::lock;

const MIB: u64 = 1024 * 1024;

/// What the dumps of a run have taken so far.
#[derive(Debug, Default)]
pub(crate) struct DumpBudget {
    spent: Mutex<Spent>,
    /// Signalled when a reservation ends.
    released: Condvar,
}

#[derive(Debug, Default)]
struct Spent {
    /// Bytes of the dumps written.
    charged: u64,
    /// Dumps written.
    dumps: u32,
    /// Bytes held by dumps being written now.
    reserved: u64,
}

/// Room held for one dump being written: released when dropped uncharged.
#[must_use]
pub(crate) struct Reservation<'a> {
    budget: &'a DumpBudget,
    bytes: u64,
}

/// The most a dump of a guest with `memory_mib` of RAM takes on disk. An ELF dump
/// holds every RAM block QEMU has, the video memory included (the demo guest's
/// 256 MiB give 272 MiB); a kdump file adds a 24-byte descriptor and two bitmap
/// bits per page and keeps a page that does not compress as it is. So: the
/// memory, a sixteenth more for device RAM and descriptors, and 64 MiB of headers
/// and video memory for small guests.
pub(crate) fn worst_case_bytes(memory_mib: u32) -> u64 {
    let mib = u64::from(memory_mib);
    (mib + mib / 16 + 64) * MIB
}

impl DumpBudget {
    /// Holds room for a dump of up to `worst` bytes within `limit_mib` (the suite's
    /// `dump_budget_mib`), waiting up to `wait` for dumps being written by other
    /// workers when only their room is in the way; when the run's dumps leave too
    /// little, the note that says so (what `dump_note` records).
    pub(crate) fn reserve(
        &self,
        limit_mib: u64,
        worst: u64,
        wait: Duration,
    ) -> Result<Reservation<'_>, String> {
        let deadline = Instant::now() + wait;
        let limit = limit_mib.saturating_mul(MIB);
        let mut spent = lock(&self.spent);
        loop {
            let used = spent.charged.saturating_add(spent.reserved);
            if used.saturating_add(worst) <= limit {
                spent.reserved += worst;
                return Ok(Reservation {
                    budget: self,
                    bytes: worst,
                });
            }
            let now = Instant::now();
            let fits_alone = spent.charged.saturating_add(worst) <= limit;
            // Ctrl-C: the run is ending, no dump is worth waiting for.
            if !fits_alone || spent.reserved == 0 || now >= deadline || super::interrupted() {
                break;
            }
            spent = self
                .released
                .wait_timeout(spent, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let held = if spent.reserved > 0 {
            format!(
                ", {} MiB held for dumps being written",
                spent.reserved.div_ceil(MIB)
            )
        } else {
            String::new()
        };
        Err(format!(
            "not dumped: the run's dump budget ({limit_mib} MiB) is used up: {} MiB in {} dumps{held}, and a dump of this guest may take up to {} MiB",
            spent.charged.div_ceil(MIB),
            spent.dumps,
            worst.div_ceil(MIB)
        ))
    }

    /// Bytes and count of the dumps written so far.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only unit tests read the totals")
    )]
    pub(crate) fn spent(&self) -> (u64, u32) {
        let spent = lock(&self.spent);
        (spent.charged, spent.dumps)
    }
}

impl Reservation<'_> {
    /// The dump was written with `bytes` on disk: it counts at its real size (more
    /// than the reservation too: the budget is then used up for the next dump).
    pub(crate) fn charge(self, bytes: u64) {
        let mut spent = lock(&self.budget.spent);
        spent.charged = spent.charged.saturating_add(bytes);
        spent.dumps += 1;
        // Drop (below, after the lock is released) returns the reservation.
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut spent = lock(&self.budget.spent);
        spent.reserved = spent.reserved.saturating_sub(self.bytes);
        self.budget.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    #[test]
    fn dumps_are_taken_while_the_budget_holds_their_worst_case() {
        let budget = DumpBudget::default();
        let worst = worst_case_bytes(256);
        assert_eq!(worst, 336 * MIB);
        // 650 MiB: room for one worst case and a bit; each dump really takes 20 MiB.
        for _ in 0..3 {
            budget
                .reserve(650, worst, NO_WAIT)
                .unwrap()
                .charge(20 * MIB);
        }
        assert_eq!(budget.spent(), (60 * MIB, 3));
        // An ELF-sized dump fills it up.
        budget
            .reserve(650, worst, NO_WAIT)
            .unwrap()
            .charge(300 * MIB);
        let why = budget.reserve(650, worst, NO_WAIT).err().unwrap();
        assert_eq!(
            why,
            "not dumped: the run's dump budget (650 MiB) is used up: 360 MiB in 4 dumps, and a dump of this guest may take up to 336 MiB"
        );
        assert_eq!(budget.spent(), (360 * MIB, 4));
    }

    #[test]
    fn concurrent_dumps_cannot_both_take_the_last_room() {
        let budget = DumpBudget::default();
        let worst = worst_case_bytes(256);
        // 400 MiB: one worst case at a time.
        let first = budget.reserve(400, worst, NO_WAIT).unwrap();
        let why = budget.reserve(400, worst, NO_WAIT).err().unwrap();
        assert!(
            why.contains("336 MiB held for dumps being written"),
            "{why}"
        );
        // A dump that failed gives its room back, charging nothing.
        drop(first);
        assert_eq!(budget.spent(), (0, 0));
        budget.reserve(400, worst, NO_WAIT).unwrap().charge(MIB);
        assert_eq!(budget.spent(), (MIB, 1));
    }

    #[test]
    fn a_dump_waits_for_the_room_another_dump_holds() {
        let budget = DumpBudget::default();
        let worst = worst_case_bytes(256);
        let first = budget.reserve(400, worst, NO_WAIT).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                budget
                    .reserve(400, worst, Duration::from_secs(30))
                    .map(|r| r.charge(2 * MIB))
            });
            std::thread::sleep(Duration::from_millis(50));
            // The first dump really took 20 MiB: 20 + 336 fits in 400.
            first.charge(20 * MIB);
            assert!(waiter.join().unwrap().is_ok());
        });
        assert_eq!(budget.spent(), (22 * MIB, 2));
        // Nothing to wait for when the dumps written leave too little.
        let started = Instant::now();
        assert!(budget.reserve(350, worst, Duration::from_secs(30)).is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_budget_below_one_dump_takes_none() {
        let budget = DumpBudget::default();
        let why = budget
            .reserve(100, worst_case_bytes(256), NO_WAIT)
            .err()
            .unwrap();
        assert!(
            why.contains("(100 MiB) is used up: 0 MiB in 0 dumps"),
            "{why}"
        );
    }
}
