//! Windows bugchecks: the stop code and its four parameters, their names, and a crash
//! title that stays the same across runs.
//!
//! QEMU reports a bugcheck in GUEST_PANICKED (and GUEST_CRASHLOADED) when the guest
//! runs with `-cpu ...,hv-crash` (KVM only): Windows writes the stop code and its
//! parameters to the Hyper-V crash MSRs and QEMU puts them in the event's `data.info`
//! as `{"type": "hyper-v", "arg1".."arg5"}`, arg1 the code (qapi/run-state.json,
//! GuestPanicInformationHyperV). A WinDbg dump header holds the same five values
//! (see [`crate::detect::win_dump`]).

use std::fmt;

use serde_json::Value;

use crate::model::record::BugcheckRecord;

/// A Windows stop: its code and the four parameters whose meaning depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Bugcheck {
    pub code: u32,
    pub params: [u64; 4],
}

/// Bugcheck names, sorted by code. The names are bugcodes.h's; the set is the common
/// ones plus those a faulty driver or content update tends to cause. A code not here
/// is reported by number only: a guessed name would be worse than none.
const NAMES: &[(u32, &str)] = &[
    (0x01, "APC_INDEX_MISMATCH"),
    (0x0A, "IRQL_NOT_LESS_OR_EQUAL"),
    (0x12, "TRAP_CAUSE_UNKNOWN"),
    (0x19, "BAD_POOL_HEADER"),
    (0x1A, "MEMORY_MANAGEMENT"),
    (0x1E, "KMODE_EXCEPTION_NOT_HANDLED"),
    (0x24, "NTFS_FILE_SYSTEM"),
    (0x3B, "SYSTEM_SERVICE_EXCEPTION"),
    (0x3D, "INTERRUPT_EXCEPTION_NOT_HANDLED"),
    (0x4E, "PFN_LIST_CORRUPT"),
    (0x50, "PAGE_FAULT_IN_NONPAGED_AREA"),
    (0x7A, "KERNEL_DATA_INPAGE_ERROR"),
    (0x7B, "INACCESSIBLE_BOOT_DEVICE"),
    (0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
    (0x7F, "UNEXPECTED_KERNEL_MODE_TRAP"),
    (0x8E, "KERNEL_MODE_EXCEPTION_NOT_HANDLED"),
    (0x9F, "DRIVER_POWER_STATE_FAILURE"),
    (0xA5, "ACPI_BIOS_ERROR"),
    (0xBE, "ATTEMPTED_WRITE_TO_READONLY_MEMORY"),
    (0xC1, "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION"),
    (0xC2, "BAD_POOL_CALLER"),
    (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION"),
    (0xC5, "DRIVER_CORRUPTED_EXPOOL"),
    (0xC9, "DRIVER_VERIFIER_IOMANAGER_VIOLATION"),
    (
        0xCE,
        "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
    ),
    (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"),
    (0xD5, "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL"),
    (0xD6, "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION"),
    (0xE2, "MANUALLY_INITIATED_CRASH"),
    (0xEA, "THREAD_STUCK_IN_DEVICE_DRIVER"),
    (0xED, "UNMOUNTABLE_BOOT_VOLUME"),
    (0xEF, "CRITICAL_PROCESS_DIED"),
    (0xF4, "CRITICAL_OBJECT_TERMINATION"),
    (0xF7, "DRIVER_OVERRAN_STACK_BUFFER"),
    (0xFC, "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY"),
    (0x101, "CLOCK_WATCHDOG_TIMEOUT"),
    (0x109, "CRITICAL_STRUCTURE_CORRUPTION"),
    (0x10D, "WDF_VIOLATION"),
    (0x116, "VIDEO_TDR_FAILURE"),
    (0x124, "WHEA_UNCORRECTABLE_ERROR"),
    (0x133, "DPC_WATCHDOG_VIOLATION"),
    (0x139, "KERNEL_SECURITY_CHECK_FAILURE"),
    (0x13A, "KERNEL_MODE_HEAP_CORRUPTION"),
    (0x154, "UNEXPECTED_STORE_EXCEPTION"),
    // What QEMU's win-dmp writes when the guest has not crashed (a live dump).
    (0x161, "LIVE_SYSTEM_DUMP"),
    (0x1C4, "DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP"),
    // The `_M` codes: the base code with bit 28 set, "the same meaning and parameters
    // as" the base code (Microsoft's "Bug Check Code Reference" lists 0x1000007E,
    // 0x1000007F, 0x1000008E and 0x100000EA; the SDK's bugcodes.h also defines
    // 0x10000050). Windows reports either for the same bug.
    (0x1000_0050, "PAGE_FAULT_IN_NONPAGED_AREA_M"),
    (0x1000_007E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"),
    (0x1000_007F, "UNEXPECTED_KERNEL_MODE_TRAP_M"),
    (0x1000_008E, "KERNEL_MODE_EXCEPTION_NOT_HANDLED_M"),
    (0x1000_00EA, "THREAD_STUCK_IN_DEVICE_DRIVER_M"),
];

/// The bit that makes a `_M` code of a base code.
const M_VARIANT_BIT: u32 = 0x1000_0000;

/// 0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION (and its live-dump twin 0x1C4): parameter 1
/// is the violation (Microsoft's "Bug Check 0xC4" page; 0x1C4's page lists the same
/// subclasses). The common ones, in the page's words, shortened; sorted by value.
const VERIFIER_VIOLATIONS: &[(u64, &str)] = &[
    (0x00, "zero-byte pool allocation"),
    (0x01, "paged pool allocated at IRQL > APC_LEVEL"),
    (0x02, "nonpaged pool allocated at IRQL > DISPATCH_LEVEL"),
    (0x10, "freed an address no allocation returned"),
    (0x11, "paged pool freed at IRQL > APC_LEVEL"),
    (0x12, "nonpaged pool freed at IRQL > DISPATCH_LEVEL"),
    (0x13, "pool freed twice"),
    (0x14, "pool freed twice"),
    (0x15, "freed pool holds an active timer"),
    (0x16, "pool freed at a bad address"),
    (0x17, "freed pool holds an active ERESOURCE"),
    (0x30, "bad IRQL passed to KeRaiseIrql"),
    (0x31, "bad IRQL passed to KeLowerIrql"),
    (0x32, "KeReleaseSpinLock not at DISPATCH_LEVEL"),
    (0x33, "fast mutex acquired at IRQL > APC_LEVEL"),
    (0x34, "fast mutex released not at APC_LEVEL"),
    (0x3C, "ObReferenceObjectByHandle with a bad handle"),
    (0x3E, "KeLeaveCriticalRegion outside a critical region"),
    (
        0x3F,
        "object referenced or dereferenced at reference count zero",
    ),
    (0x40, "KeAcquireSpinLockAtDpcLevel below DISPATCH_LEVEL"),
    (0x41, "KeReleaseSpinLockFromDpcLevel below DISPATCH_LEVEL"),
    (0x42, "KeAcquireSpinLock above DISPATCH_LEVEL"),
    (
        0x51,
        "freed memory after writing past the end of the allocation",
    ),
    (
        0x52,
        "freed memory after writing past the end of the allocation",
    ),
    (
        0x53,
        "freed memory after writing past the end of the allocation",
    ),
    (
        0x54,
        "freed memory after writing past the end of the allocation",
    ),
    (
        0x59,
        "freed memory after writing past the end of the allocation",
    ),
    (
        0x60,
        "driver unloading without freeing its pool allocations",
    ),
    (0x61, "pool allocated while the driver unloads"),
    (
        0x62,
        "driver unloading without freeing its pool allocations",
    ),
    (0x70, "MmProbeAndLockPages at IRQL > DISPATCH_LEVEL"),
    (0x91, "unsupported kernel stack switch"),
    (0x1000, "self-deadlock: resource acquired recursively"),
    (0x1001, "deadlock: lock hierarchy violation"),
    (0x1002, "uninitialized resource acquired"),
    (0x1003, "resource released out of order"),
    (0x1004, "resource released by the wrong thread"),
    (0x1005, "resource initialized twice"),
    (0x1007, "resource released before it was acquired"),
    (0x1008, "lock acquired with an API mismatched to its type"),
    (0x1009, "lock released with an API mismatched to its type"),
    (0x100A, "terminated thread owns a lock"),
    (0x100B, "deleted lock still owned by a thread"),
    (0x2_0002, "DDI compliance rule IrqlApcLte"),
    (0x2_0003, "DDI compliance rule IrqlDispatch"),
    (0x2_0004, "DDI compliance rule IrqlExAllocatePool"),
    (0x2_0005, "DDI compliance rule IrqlExApcLte1"),
    (0x2_0006, "DDI compliance rule IrqlExApcLte2"),
];

/// 0xC1 SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION: Microsoft's "Bug Check 0xC1" page
/// says *parameter 4* holds the type of violation (parameters 1..3 are addresses and
/// sizes), so the subtype comes from there, not from parameter 1 as for 0xC4.
const SPECIAL_POOL_VIOLATIONS: &[(u64, &str)] = &[
    (0x20, "freed pool that was not allocated"),
    (0x21, "freed a bad address"),
    (0x22, "freed a bad address"),
    (0x23, "bytes near a freed address corrupted"),
    (
        0x24,
        "bytes after the end of a freed allocation overwritten",
    ),
    (0x30, "pool allocated at an incorrect IRQL"),
    (0x31, "pool freed at an incorrect IRQL"),
    (0x32, "single-bit error near a freed address"),
];

/// The parameter that says which violation a verifier bugcheck is, and the table
/// naming its values.
fn violation_table(code: u32) -> Option<(usize, &'static [(u64, &'static str)])> {
    match code {
        0xC4 | 0x1C4 => Some((0, VERIFIER_VIOLATIONS)),
        0xC1 => Some((3, SPECIAL_POOL_VIOLATIONS)),
        _ => None,
    }
}

/// The name of a bugcheck code, if it is one this table knows.
pub(crate) fn name_of(code: u32) -> Option<&'static str> {
    NAMES
        .binary_search_by_key(&code, |&(c, _)| c)
        .ok()
        .map(|i| NAMES[i].1)
}

/// Most bytes of a module name kept in a title: module file names are short, and a
/// title must stay one readable line whatever the source hands us.
const MAX_MODULE_BYTES: usize = 64;

impl Bugcheck {
    /// Decodes a GUEST_PANICKED or GUEST_CRASHLOADED event's `data.info`. Anything but
    /// a complete Hyper-V record with a 32-bit code gives `None`: pvpanic events carry
    /// no info, s390 info is not a bugcheck, and a half-read record must not become a
    /// crash title.
    pub(crate) fn from_hyperv(info: &Value) -> Option<Bugcheck> {
        if info.get("type")?.as_str()? != "hyper-v" {
            return None;
        }
        let arg = |name: &str| info.get(name)?.as_u64();
        let code = u32::try_from(arg("arg1")?).ok()?;
        Some(Bugcheck {
            code,
            params: [arg("arg2")?, arg("arg3")?, arg("arg4")?, arg("arg5")?],
        })
    }

    /// Decodes a whole QMP event object (one line of the QMP stream): only
    /// GUEST_PANICKED and GUEST_CRASHLOADED carry a bugcheck.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
        )
    )]
    pub fn from_event(event: &Value) -> Option<Bugcheck> {
        match event.get("event")?.as_str()? {
            "GUEST_PANICKED" | "GUEST_CRASHLOADED" => {
                Bugcheck::from_hyperv(event.get("data")?.get("info")?)
            }
            _ => None,
        }
    }

    pub(crate) fn name(&self) -> Option<&'static str> {
        name_of(self.code)
    }

    /// The code whose meaning and parameters this one has: 0x7E for 0x1000007E (a
    /// `_M` code this table names), the code itself otherwise.
    pub(crate) fn meaning_code(&self) -> u32 {
        let base = self.code & !M_VARIANT_BIT;
        let is_m_variant = self.code != base
            && matches!((name_of(self.code), name_of(base)),
                (Some(m), Some(b)) if m.strip_suffix("_M") == Some(b));
        if is_m_variant {
            base
        } else {
            self.code
        }
    }

    /// A verifier bugcheck's violation: the subtype value and, for the common ones,
    /// what it means. The value is a code, not an address, so it keeps a title stable.
    pub(crate) fn violation(&self) -> Option<(u64, Option<&'static str>)> {
        let (param, table) = violation_table(self.meaning_code())?;
        let value = self.params[param];
        let meaning = table
            .binary_search_by_key(&value, |&(v, _)| v)
            .ok()
            .map(|i| table[i].1);
        Some((value, meaning))
    }

    /// A title for de-duplication: `0x50 PAGE_FAULT_IN_NONPAGED_AREA in sensor.sys`.
    /// The parameters are left out on purpose: they hold addresses, which change from
    /// boot to boot, so the same bug would otherwise get a new title every run. The
    /// module is reduced to its lowercased file name for the same reason (Windows
    /// names are case-insensitive and paths vary).
    ///
    /// A verifier bugcheck (0xC4, 0xC1) adds its violation subtype, which is a code:
    /// `0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x62 (driver unloading without
    /// freeing its pool allocations) in sensor.sys`.
    pub(crate) fn title(&self, module: Option<&str>) -> String {
        let mut title = match self.name() {
            Some(name) => format!("0x{:X} {name}", self.code),
            None => format!("0x{:X} (unknown bugcheck)", self.code),
        };
        match self.violation() {
            Some((value, Some(meaning))) => title.push_str(&format!(" {value:#x} ({meaning})")),
            Some((value, None)) => title.push_str(&format!(" {value:#x}")),
            None => {}
        }
        if let Some(module) = module.and_then(module_file_name) {
            title.push_str(" in ");
            title.push_str(&module);
        }
        title
    }
}

/// `\SystemRoot\System32\drivers\CSAgent.sys` -> `csagent.sys`; `None` when nothing
/// printable is left.
fn module_file_name(module: &str) -> Option<String> {
    let file = module.rsplit(['\\', '/']).next().unwrap_or(module);
    let mut name: String = file
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_lowercase();
    if name.len() > MAX_MODULE_BYTES {
        let mut end = MAX_MODULE_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    (!name.is_empty()).then_some(name)
}

/// `0x50 PAGE_FAULT_IN_NONPAGED_AREA (0xffff840500000074, 0x0, 0xfffff8022ffd35b1, 0x2)`:
/// the title with the parameters, for a report a person reads.
impl fmt::Display for Bugcheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [p1, p2, p3, p4] = self.params;
        write!(
            f,
            "{} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x})",
            self.title(None)
        )
    }
}

// The record lives in the model (below this layer); making one from a decoded
// bugcheck is the decoder's business.
impl BugcheckRecord {
    pub(crate) fn of(bugcheck: &Bugcheck, from: &str) -> BugcheckRecord {
        BugcheckRecord {
            code: format!("0x{:X}", bugcheck.code),
            name: bugcheck.name().map(str::to_string),
            parameters: bugcheck.params.iter().map(|p| format!("{p:#x}")).collect(),
            from: from.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A QMP transcript as QEMU writes it: one JSON object per line, CRLF, keys in
    /// QEMU's QDict hash order. The greeting and the capabilities reply were captured
    /// from this machine's QEMU 7.2; the RESUME/GUEST_PANICKED/STOP lines follow the
    /// same writer, the `info` key order computed with QEMU's own tdb_hash over 512
    /// buckets (the model reproduces every captured line's key order). The bugcheck
    /// values are illustrative, shaped like the July 2024 sensor crash.
    const TRANSCRIPT: &[u8] = include_bytes!("testdata/guest_panicked_hyperv.qmp");

    fn transcript_lines() -> Vec<&'static str> {
        let text = std::str::from_utf8(TRANSCRIPT).unwrap();
        let body = text
            .strip_suffix("\r\n")
            .expect("transcript ends with CRLF");
        body.split("\r\n").collect()
    }

    #[test]
    fn transcript_keeps_the_wire_format() {
        // Guards the fixture itself: a checkout that rewrote CRLF to LF would let
        // the decoding test pass on a format QEMU never sends.
        let text = std::str::from_utf8(TRANSCRIPT).unwrap();
        let lf = text.matches('\n').count();
        let crlf = text.matches("\r\n").count();
        assert!(crlf >= 5, "{crlf} CRLF line ends");
        assert_eq!(lf, crlf, "every line must end in CRLF");
        for line in transcript_lines() {
            assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
            serde_json::from_str::<Value>(line).unwrap();
        }
        let panic_line = transcript_lines()
            .into_iter()
            .find(|l| l.contains("GUEST_PANICKED"))
            .unwrap();
        assert!(
            panic_line.starts_with(r#"{"timestamp": {"seconds": "#),
            "{panic_line}"
        );
        assert!(
            panic_line.contains(r#""info": {"arg5": 2, "arg4": "#)
                && panic_line.ends_with(r#""arg1": 80, "type": "hyper-v"}}}"#),
            "{panic_line}"
        );
    }

    #[test]
    fn decodes_the_bugcheck_from_a_recorded_qmp_transcript() {
        let found: Vec<Bugcheck> = transcript_lines()
            .into_iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter_map(|event| Bugcheck::from_event(&event))
            .collect();
        assert_eq!(
            found,
            [Bugcheck {
                code: 0x50,
                params: [0xffff_8405_0000_0074, 0, 0xffff_f802_2ffd_35b1, 2],
            }]
        );
        let bugcheck = found[0];
        assert_eq!(bugcheck.name(), Some("PAGE_FAULT_IN_NONPAGED_AREA"));
        assert_eq!(
            bugcheck.title(Some(r"\SystemRoot\System32\drivers\CSAgent.sys")),
            "0x50 PAGE_FAULT_IN_NONPAGED_AREA in csagent.sys"
        );
        assert_eq!(
            bugcheck.to_string(),
            "0x50 PAGE_FAULT_IN_NONPAGED_AREA (0xffff840500000074, 0x0, 0xfffff8022ffd35b1, 0x2)"
        );
    }

    #[test]
    fn crashloaded_carries_the_same_record() {
        let event = json!({"event": "GUEST_CRASHLOADED", "data": {"action": "run",
            "info": {"type": "hyper-v", "arg1": 0xD1, "arg2": 8, "arg3": 2, "arg4": 0, "arg5": 0x1234}}});
        assert_eq!(
            Bugcheck::from_event(&event).map(|b| b.title(None)),
            Some("0xD1 DRIVER_IRQL_NOT_LESS_OR_EQUAL".to_string())
        );
    }

    #[test]
    fn anything_but_a_complete_hyperv_record_is_not_a_bugcheck() {
        let full =
            json!({"type": "hyper-v", "arg1": 80, "arg2": 1, "arg3": 2, "arg4": 3, "arg5": 4});
        assert!(Bugcheck::from_hyperv(&full).is_some());
        let rejected = [
            // pvpanic events carry no info at all.
            Value::Null,
            json!({}),
            json!({"type": "s390", "core": 0, "psw-mask": 0, "psw-addr": 0, "reason": "disabled-wait"}),
            json!({"arg1": 80, "arg2": 1, "arg3": 2, "arg4": 3, "arg5": 4}),
            json!({"type": "hyper-v", "arg1": 80, "arg2": 1, "arg3": 2, "arg4": 3}),
            json!({"type": "hyper-v", "arg1": "80", "arg2": 1, "arg3": 2, "arg4": 3, "arg5": 4}),
            json!({"type": "hyper-v", "arg1": -1, "arg2": 1, "arg3": 2, "arg4": 3, "arg5": 4}),
            json!({"type": "hyper-v", "arg1": 80, "arg2": 1.5, "arg3": 2, "arg4": 3, "arg5": 4}),
            // A stop code is 32 bits; a wider arg1 is not a Windows bugcheck.
            json!({"type": "hyper-v", "arg1": 0x1_0000_0050_u64, "arg2": 1, "arg3": 2, "arg4": 3, "arg5": 4}),
        ];
        for info in rejected {
            assert_eq!(Bugcheck::from_hyperv(&info), None, "{info}");
        }
        let not_a_panic = json!({"event": "STOP", "data": {"info": full}});
        assert_eq!(Bugcheck::from_event(&not_a_panic), None);
        let pvpanic = json!({"event": "GUEST_PANICKED", "data": {"action": "pause"}});
        assert_eq!(Bugcheck::from_event(&pvpanic), None);
    }

    #[test]
    fn table_is_sorted_unique_and_covers_the_common_codes() {
        // binary_search needs the order; a duplicate would make a name ambiguous.
        for pair in NAMES.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{:#x} !< {:#x}",
                pair[0].0,
                pair[1].0
            );
        }
        let required = [
            (0x0A, "IRQL_NOT_LESS_OR_EQUAL"),
            (0x19, "BAD_POOL_HEADER"),
            (0x1E, "KMODE_EXCEPTION_NOT_HANDLED"),
            (0x3B, "SYSTEM_SERVICE_EXCEPTION"),
            (0x50, "PAGE_FAULT_IN_NONPAGED_AREA"),
            (0x7A, "KERNEL_DATA_INPAGE_ERROR"),
            (0x7B, "INACCESSIBLE_BOOT_DEVICE"),
            (0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
            (0x7F, "UNEXPECTED_KERNEL_MODE_TRAP"),
            (0x8E, "KERNEL_MODE_EXCEPTION_NOT_HANDLED"),
            (0x9F, "DRIVER_POWER_STATE_FAILURE"),
            (0xBE, "ATTEMPTED_WRITE_TO_READONLY_MEMORY"),
            (0xC2, "BAD_POOL_CALLER"),
            (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION"),
            (0xC5, "DRIVER_CORRUPTED_EXPOOL"),
            (
                0xCE,
                "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
            ),
            (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"),
            (0xD5, "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL"),
            (0xD6, "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION"),
            (0xE2, "MANUALLY_INITIATED_CRASH"),
            (0xED, "UNMOUNTABLE_BOOT_VOLUME"),
            (0xEF, "CRITICAL_PROCESS_DIED"),
            (0xF4, "CRITICAL_OBJECT_TERMINATION"),
            (0xFC, "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY"),
            (0x101, "CLOCK_WATCHDOG_TIMEOUT"),
            (0x10D, "WDF_VIOLATION"),
            (0x124, "WHEA_UNCORRECTABLE_ERROR"),
            (0x133, "DPC_WATCHDOG_VIOLATION"),
            (0x139, "KERNEL_SECURITY_CHECK_FAILURE"),
            (0x161, "LIVE_SYSTEM_DUMP"),
        ];
        for (code, name) in required {
            assert_eq!(name_of(code), Some(name), "{code:#x}");
        }
    }

    fn bugcheck(code: u32, params: [u64; 4]) -> Bugcheck {
        Bugcheck { code, params }
    }

    #[test]
    fn m_variants_are_named_and_mean_their_base_code() {
        // Microsoft's Bug Check Code Reference: each `_M` code "has the same meaning
        // and parameters as" its base code; the title keeps the code Windows reported.
        for (m, base) in [
            (0x1000_007E, 0x7E),
            (0x1000_007F, 0x7F),
            (0x1000_008E, 0x8E),
            (0x1000_00EA, 0xEA),
            (0x1000_0050, 0x50),
        ] {
            let b = bugcheck(m, [0xC000_0005, 0xffff_f802_1234_5678, 0, 0]);
            let base_name = name_of(base).unwrap();
            assert_eq!(b.name().unwrap(), format!("{base_name}_M"), "{m:#x}");
            assert_eq!(b.meaning_code(), base, "{m:#x}");
            assert_eq!(
                b.title(Some(r"\SystemRoot\System32\drivers\Sensor.sys")),
                format!("0x{m:X} {base_name}_M in sensor.sys")
            );
        }
        assert_eq!(
            bugcheck(0x1000_007E, [0; 4]).title(None),
            "0x1000007E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"
        );
        // Bit 28 on a code with no documented `_M` twin is not guessed at.
        let odd = bugcheck(0x1000_00D1, [0; 4]);
        assert_eq!(odd.name(), None);
        assert_eq!(odd.meaning_code(), 0x1000_00D1);
        assert_eq!(bugcheck(0x7E, [0; 4]).meaning_code(), 0x7E);
    }

    #[test]
    fn verifier_violations_title_their_subtype_from_parameter_1() {
        // Bug Check 0xC4: parameter 1 identifies the violation; the others are
        // addresses and counts, which must stay out of the title.
        let leak = bugcheck(0xC4, [0x62, 0xffff_a001_2345_6780, 0, 0x11]);
        assert_eq!(
            leak.title(Some("sensor.sys")),
            "0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x62 (driver unloading without freeing its pool allocations) in sensor.sys"
        );
        let other_addresses = bugcheck(0xC4, [0x62, 0xffff_b00b_0000_0000, 0, 0x3]);
        assert_eq!(leak.title(None), other_addresses.title(None));
        assert_eq!(
            bugcheck(0xC4, [0x1001, 0xffff_8000_0000_1000, 0, 0]).title(None),
            "0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x1001 (deadlock: lock hierarchy violation)"
        );
        assert_eq!(
            bugcheck(0xC4, [0x2_0004, 0xfffff, 0, 0]).title(None),
            "0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x20004 (DDI compliance rule IrqlExAllocatePool)"
        );
        assert_eq!(
            bugcheck(0xC4, [0, 2, 0, 0]).title(None),
            "0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x0 (zero-byte pool allocation)"
        );
        // A subtype not in the table keeps its number, so the title is still stable.
        assert_eq!(
            bugcheck(0xC4, [0x2_0019, 0, 0, 0]).title(None),
            "0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x20019"
        );
        // The live-dump twin carries the same subclasses.
        assert_eq!(
            bugcheck(0x1C4, [0x1001, 0, 0, 0]).violation(),
            Some((0x1001, Some("deadlock: lock hierarchy violation")))
        );
    }

    #[test]
    fn special_pool_corruption_titles_its_subtype_from_parameter_4() {
        // Bug Check 0xC1: "Parameter 4 indicates the type of violation".
        let overrun = bugcheck(
            0xC1,
            [0xffff_c000_1234_5ff0, 0xffff_c000_1234_6000, 0, 0x24],
        );
        assert_eq!(
            overrun.title(Some("Sensor.SYS")),
            "0xC1 SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION 0x24 (bytes after the end of a freed allocation overwritten) in sensor.sys"
        );
        assert_eq!(
            bugcheck(0xC1, [0xffff_0000_dead_0000, 0, 0, 0x20]).violation(),
            Some((0x20, Some("freed pool that was not allocated")))
        );
        // Other bugchecks have no subtype, whatever their first parameter.
        assert_eq!(bugcheck(0x50, [0x62, 0, 0, 0]).violation(), None);
    }

    #[test]
    fn violation_tables_are_sorted_and_unique() {
        for table in [VERIFIER_VIOLATIONS, SPECIAL_POOL_VIOLATIONS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].0 < pair[1].0,
                    "{:#x} !< {:#x}",
                    pair[0].0,
                    pair[1].0
                );
            }
        }
    }

    #[test]
    fn unknown_codes_get_a_stable_numeric_title() {
        let b = Bugcheck {
            code: 0x1234,
            params: [0; 4],
        };
        assert_eq!(b.name(), None);
        assert_eq!(b.title(None), "0x1234 (unknown bugcheck)");
        assert_eq!(
            b.title(Some("Sensor.SYS")),
            "0x1234 (unknown bugcheck) in sensor.sys"
        );
        assert_eq!(name_of(0), None);
        assert_eq!(name_of(u32::MAX), None);
    }

    #[test]
    fn module_names_are_reduced_to_one_clean_line() {
        let b = Bugcheck {
            code: 0x7E,
            params: [0; 4],
        };
        assert_eq!(
            b.title(Some("  ")),
            "0x7E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"
        );
        assert_eq!(
            b.title(Some(r"C:\x\")),
            "0x7E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"
        );
        assert_eq!(
            b.title(Some("evil\r\n.sys")),
            "0x7E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED in evil.sys"
        );
        let long = "ü".repeat(100);
        let title = b.title(Some(&long));
        let module = title.rsplit(" in ").next().unwrap();
        assert!(
            module.len() <= MAX_MODULE_BYTES && !module.is_empty(),
            "{title}"
        );
    }
}
