//! The header of a 64-bit WinDbg kernel dump ("PAGEDU64"): which bugcheck it records.
//!
//! QEMU's `dump-guest-memory` format `win-dmp` writes this header (WinDumpHeader64 in
//! QEMU's include/qemu/win_dump_defs.h), and so does Windows itself for MEMORY.DMP and
//! for kernel minidumps in %SystemRoot%\Minidump. Layout, little-endian, packed:
//!
//! | offset | field |
//! |--------|-------|
//! | 0x000  | Signature "PAGE" |
//! | 0x004  | ValidDump "DU64" ("DUMP" in a 32-bit dump, whose layout differs) |
//! | 0x008  | MajorVersion u32 (0xF free build, 0xC checked build) |
//! | 0x00C  | MinorVersion u32 (the Windows build number) |
//! | 0x030  | MachineImageType u32 (0x8664 for x64) |
//! | 0x034  | NumberProcessors u32 |
//! | 0x038  | BugcheckCode u32 |
//! | 0x040..0x058 | BugcheckParameter1..4 u64 |
//! | 0xF98  | DumpType u32 (1 full, 2 summary, 3 header, 4 triage = minidump, 5 bitmap full, 6 bitmap kernel, 7 automatic) |
//! | 0x2000 | end of the header |
//!
//! Only the header is read, never the rest of a file that may be many GiB.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::bugcheck::Bugcheck;

/// Length of the 64-bit dump header.
pub(crate) const HEADER64_LEN: usize = 0x2000;

const SIGNATURE: &[u8; 4] = b"PAGE";
const VALID_DUMP64: &[u8; 4] = b"DU64";
const VALID_DUMP32: &[u8; 4] = b"DUMP";
const MAJOR_VERSION: usize = 0x08;
const MINOR_VERSION: usize = 0x0C;
const MACHINE_IMAGE_TYPE: usize = 0x30;
const NUMBER_PROCESSORS: usize = 0x34;
const BUGCHECK_CODE: usize = 0x38;
const BUGCHECK_PARAMETERS: usize = 0x40;
const DUMP_TYPE: usize = 0xF98;

/// Bytes needed to read the bugcheck: up to the end of BugcheckParameter4. A dump cut
/// short after that (a guest reset mid-write) still names its crash; DumpType is then
/// unknown.
pub(crate) const MIN_LEN: usize = BUGCHECK_PARAMETERS + 4 * 8;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    #[error("cannot read windows dump {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {len} bytes is too short for a windows dump header (need at least {need})")]
    TooShort {
        path: PathBuf,
        len: usize,
        need: usize,
    },
    #[error(
        "{path}: not a windows kernel dump: it starts with \"{found}\", not \"PAGEDU64\"{hint}"
    )]
    BadSignature {
        path: PathBuf,
        found: String,
        hint: &'static str,
    },
    #[error("{path}: a 32-bit windows dump (\"PAGEDUMP\"); only 64-bit (\"PAGEDU64\") dumps are supported")]
    Dump32 { path: PathBuf },
}

/// What a dump header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DumpHeader {
    pub bugcheck: Bugcheck,
    pub major_version: u32,
    /// The Windows build number (19045, 22631...).
    pub minor_version: u32,
    pub machine_image_type: u32,
    pub processors: u32,
    /// `None` when the file ends before the DumpType field.
    pub dump_type: Option<u32>,
}

impl DumpHeader {
    /// Parses a header from the start of a dump. `path` only names the dump in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<DumpHeader, DumpError> {
        let too_short = || DumpError::TooShort {
            path: path.to_path_buf(),
            len: bytes.len(),
            need: MIN_LEN,
        };
        let magic = bytes.get(..8).ok_or_else(too_short)?;
        match (&magic[..4], &magic[4..]) {
            (sig, valid) if sig == SIGNATURE && valid == VALID_DUMP64 => {}
            (sig, valid) if sig == SIGNATURE && valid == VALID_DUMP32 => {
                return Err(DumpError::Dump32 {
                    path: path.to_path_buf(),
                })
            }
            _ => {
                return Err(DumpError::BadSignature {
                    path: path.to_path_buf(),
                    found: magic.escape_ascii().to_string(),
                    hint: signature_hint(magic),
                })
            }
        }
        if bytes.len() < MIN_LEN {
            return Err(too_short());
        }
        let params = [0, 1, 2, 3].map(|i| u64_at(bytes, BUGCHECK_PARAMETERS + 8 * i).unwrap_or(0));
        Ok(DumpHeader {
            bugcheck: Bugcheck {
                code: u32_at(bytes, BUGCHECK_CODE).unwrap_or(0),
                params,
            },
            major_version: u32_at(bytes, MAJOR_VERSION).unwrap_or(0),
            minor_version: u32_at(bytes, MINOR_VERSION).unwrap_or(0),
            machine_image_type: u32_at(bytes, MACHINE_IMAGE_TYPE).unwrap_or(0),
            processors: u32_at(bytes, NUMBER_PROCESSORS).unwrap_or(0),
            dump_type: u32_at(bytes, DUMP_TYPE),
        })
    }

    /// Reads and parses the header of a dump file (its first [`HEADER64_LEN`] bytes).
    pub(crate) fn read(path: &Path) -> Result<DumpHeader, DumpError> {
        let io = |source| DumpError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut head = Vec::with_capacity(HEADER64_LEN);
        file.take(HEADER64_LEN as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        DumpHeader::parse(&head, path)
    }

    /// What kind of dump DumpType says this is.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
        )
    )]
    pub fn dump_type_name(&self) -> Option<&'static str> {
        Some(match self.dump_type? {
            1 => "full",
            2 => "summary",
            3 => "header only",
            4 => "triage (minidump)",
            5 => "bitmap full",
            6 => "bitmap kernel",
            7 => "automatic",
            _ => return None,
        })
    }
}

/// The bugcheck a dump file records.
pub(crate) fn read_bugcheck(path: &Path) -> Result<Bugcheck, DumpError> {
    DumpHeader::read(path).map(|h| h.bugcheck)
}

/// A hint for the files people most often hand over by mistake.
fn signature_hint(magic: &[u8]) -> &'static str {
    if magic.starts_with(b"MDMP") {
        " (a user-mode minidump, not a kernel dump)"
    } else if magic.starts_with(b"\x7fELF") {
        " (an ELF core: the image's dump_format is elf, read it with gdb or crash)"
    } else if magic.starts_with(b"KDUMP") {
        " (a kdump-compressed dump: dump_format auto or kdump-*, read it with crash)"
    } else {
        ""
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset + 4)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset + 8)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full header built byte by byte to the documented layout, with every other
    /// byte set to 0xAA so a read at a wrong offset shows.
    fn header(code: u32, params: [u64; 4], dump_type: u32) -> Vec<u8> {
        let mut h = vec![0xAA_u8; HEADER64_LEN];
        h[0..4].copy_from_slice(b"PAGE");
        h[4..8].copy_from_slice(b"DU64");
        h[0x08..0x0C].copy_from_slice(&0xF_u32.to_le_bytes());
        h[0x0C..0x10].copy_from_slice(&19045_u32.to_le_bytes());
        h[0x30..0x34].copy_from_slice(&0x8664_u32.to_le_bytes());
        h[0x34..0x38].copy_from_slice(&2_u32.to_le_bytes());
        h[0x38..0x3C].copy_from_slice(&code.to_le_bytes());
        for (i, p) in params.iter().enumerate() {
            let at = 0x40 + 8 * i;
            h[at..at + 8].copy_from_slice(&p.to_le_bytes());
        }
        h[0xF98..0xF9C].copy_from_slice(&dump_type.to_le_bytes());
        h
    }

    const PARAMS: [u64; 4] = [0xffff_8405_0000_0074, 0, 0xffff_f802_2ffd_35b1, 2];

    #[test]
    fn reads_bugcheck_and_fields_at_their_offsets() {
        let h = DumpHeader::parse(&header(0x50, PARAMS, 1), Path::new("crash.dmp")).unwrap();
        assert_eq!(
            h,
            DumpHeader {
                bugcheck: Bugcheck {
                    code: 0x50,
                    params: PARAMS
                },
                major_version: 0xF,
                minor_version: 19045,
                machine_image_type: 0x8664,
                processors: 2,
                dump_type: Some(1),
            }
        );
        assert_eq!(h.dump_type_name(), Some("full"));
        assert_eq!(h.bugcheck.title(None), "0x50 PAGE_FAULT_IN_NONPAGED_AREA");
    }

    #[test]
    fn a_verifier_minidump_is_titled_with_its_violation() {
        // A Driver Verifier minidump (DumpType 4): parameter 1 of 0xC4 is the
        // violation, the rest are addresses that change from boot to boot.
        let a = DumpHeader::parse(
            &header(0xC4, [0x62, 0xffff_a001_0000_0000, 0, 7], 4),
            Path::new("Mini1.dmp"),
        )
        .unwrap();
        let b = DumpHeader::parse(
            &header(0xC4, [0x62, 0xffff_b002_0000_0000, 0, 9], 4),
            Path::new("Mini2.dmp"),
        )
        .unwrap();
        assert_eq!(a.bugcheck.title(None), b.bugcheck.title(None));
        assert_eq!(
            a.bugcheck.title(None),
            "0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION 0x62 (driver unloading without freeing its pool allocations)"
        );
        let m = DumpHeader::parse(&header(0x1000_008E, PARAMS, 4), Path::new("Mini3.dmp")).unwrap();
        assert_eq!(
            m.bugcheck.title(None),
            "0x1000008E KERNEL_MODE_EXCEPTION_NOT_HANDLED_M"
        );
        assert_eq!(m.bugcheck.meaning_code(), 0x8E);
    }

    #[test]
    fn reads_only_the_header_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("MEMORY.DMP");
        let mut bytes = header(0x161, [1, 2, 3, 4], 4);
        // Memory after the header must not be read or matter.
        bytes.resize(4 * HEADER64_LEN, 0x55);
        std::fs::write(&path, &bytes).unwrap();
        let h = DumpHeader::read(&path).unwrap();
        assert_eq!(h.bugcheck.name(), Some("LIVE_SYSTEM_DUMP"));
        assert_eq!(h.dump_type_name(), Some("triage (minidump)"));
        assert_eq!(read_bugcheck(&path).unwrap().params, [1, 2, 3, 4]);
    }

    #[test]
    fn a_dump_cut_after_the_parameters_still_names_its_crash() {
        let full = header(0xD1, PARAMS, 6);
        let h = DumpHeader::parse(&full[..MIN_LEN], Path::new("x.dmp")).unwrap();
        assert_eq!(h.bugcheck.code, 0xD1);
        assert_eq!(h.bugcheck.params, PARAMS);
        assert_eq!(h.dump_type, None);
        let h = DumpHeader::parse(&full[..DUMP_TYPE + 4], Path::new("x.dmp")).unwrap();
        assert_eq!(h.dump_type_name(), Some("bitmap kernel"));
    }

    #[test]
    fn truncated_input_is_too_short_with_the_path() {
        let full = header(0x50, PARAMS, 1);
        for len in [0, 3, 8, 0x38, MIN_LEN - 1] {
            let err =
                DumpHeader::parse(&full[..len], Path::new("/results/crash-1.dmp")).unwrap_err();
            assert!(
                matches!(err, DumpError::TooShort { len: l, .. } if l == len),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("/results/crash-1.dmp") && message.contains("too short"),
                "{message}"
            );
        }
    }

    #[test]
    fn bad_and_32_bit_signatures_are_named() {
        let mut dump32 = header(0x50, PARAMS, 1);
        dump32[4..8].copy_from_slice(b"DUMP");
        let err = DumpHeader::parse(&dump32, Path::new("old.dmp")).unwrap_err();
        assert!(matches!(err, DumpError::Dump32 { .. }), "{err}");
        assert!(err.to_string().contains("old.dmp") && err.to_string().contains("32-bit"));

        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        let err = DumpHeader::parse(&elf, Path::new("crash-1.elf")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(r#""\x7fELF\x00\x00\x00\x00""#),
            "{message}"
        );
        assert!(
            message.contains("ELF core") && message.contains("crash-1.elf"),
            "{message}"
        );

        let err =
            DumpHeader::parse(b"MDMP\x93\xa7\0\0 and more", Path::new("app.dmp")).unwrap_err();
        assert!(err.to_string().contains("user-mode minidump"), "{err}");
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator: every length up to past the header, and
        // "PAGEDU64" followed by noise, must give Ok or a typed error.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for len in (0..HEADER64_LEN + 16).step_by(7) {
            let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            let _ = DumpHeader::parse(&bytes, Path::new("noise"));
            if len >= 8 {
                bytes[..8].copy_from_slice(b"PAGEDU64");
                let parsed = DumpHeader::parse(&bytes, Path::new("noise"));
                assert_eq!(parsed.is_ok(), len >= MIN_LEN, "len {len}");
            }
        }
    }

    #[test]
    fn missing_file_is_an_io_error_with_the_path() {
        let err = DumpHeader::read(Path::new("/nonexistent/bootgate/MEMORY.DMP")).unwrap_err();
        assert!(matches!(err, DumpError::Io { .. }));
        assert!(
            err.to_string().contains("/nonexistent/bootgate/MEMORY.DMP"),
            "{err}"
        );
    }
}
