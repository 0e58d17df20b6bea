//! The structure-aware content fuzzer (`bootgate fuzz-content`): format descriptions
//! (`format.toml`, [`format`]), a mutator that knows the layout ([`mutate`]), a
//! minimizer for crashing inputs ([`minimize`]), and the campaign that applies inputs
//! in VMs restored from a saved state ([`campaign`]: its VM loop in `worker`, crash
//! de-duplication by title in `dedup`, the regression suite it leaves in
//! `regression`). Only the campaign boots guests; the rest is pure and unit-tested.
//!
//! Why structure-aware: the July 2024 content update was well-formed (every length
//! added up) and crashed only because a template declared one more field than the
//! interpreter supplied. Blind byte flips almost never produce such a file, since
//! changing a count without growing what it counts gets rejected by the validator;
//! growing a count together with its dependents is one mutation here.

pub mod campaign;
mod dedup;
pub(crate) mod format;
pub(crate) mod minimize;
pub(crate) mod mutate;
mod regression;
mod worker;

pub use format::{ContentFormat, FormatError, ParseError, Parsed};

/// Executions between restores of the VM by default (`--restore-every`). In between,
/// each input is reloaded in the same guest, which is what makes a campaign fast: a
/// restore plus its first command cost ~0.25 s under TCG, a reload in a kept guest
/// a few tens of ms. What bounds K is state that builds up across reloads and could
/// hide a crash or make one that a fresh guest would not have: leaked memory, a
/// kernel log that wraps, counters in the driver. Measured on the demo driver under
/// TCG (2026-12-02): 200 live reloads of good.content in one guest (an
/// `apply_content` of 35 ms each) moved MemAvailable by -236 kB, the slab by +220 kB
/// and vmalloc by -12 kB; a second run of 1600 reloads moved MemAvailable by -64 kB
/// and the slab by +36 kB, while the kernel log grew ~280 bytes a reload and wrapped
/// after ~400. Nothing the demo keeps grows with reloads. 64 stays far below that
/// wrap (the kernel log is what an oops report is read from) and keeps a
/// restore's cost (~0.25 s, the time of ~7 kept executions) near a tenth of a
/// session, and bounds what an unknown driver can accumulate to 64 inputs. A crash in
/// a kept guest is never reported from it: its input is replayed alone from the
/// saved state first.
pub const DEFAULT_RESTORE_EVERY: u32 = 64;

/// Helpers for tests: the demo format, its seeds, and an oracle of the demo driver.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    use super::ContentFormat;

    pub(crate) fn demo_content_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/demo/content")
    }

    pub(crate) fn demo_format_path() -> PathBuf {
        demo_content_dir().join("format.toml")
    }

    pub(crate) fn demo_format() -> ContentFormat {
        ContentFormat::load(&demo_format_path()).unwrap()
    }

    pub(crate) fn seed_bytes(name: &str) -> Vec<u8> {
        std::fs::read(demo_content_dir().join(name)).unwrap()
    }

    /// What demo_sensor with `fixed=0` does with a content file.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Outcome {
        /// `content rejected: REASON`.
        Rejected(String),
        /// Loaded; these instances matched.
        Loaded { matched: Vec<usize> },
        /// The interpreter read `input[index]` (index >= 20) while matching `instance`:
        /// the oops in sensor_match_fields.
        Crash {
            instance: usize,
            index: usize,
            matched_before: Vec<usize>,
        },
    }

    impl Outcome {
        pub(crate) fn crashed(&self) -> bool {
            matches!(self, Outcome::Crash { .. })
        }
    }

    /// A host-side model of demo_sensor.c with `fixed=0`: dsc_read, dsc_parse and
    /// dsc_evaluate, written from the driver source and FORMAT.md's validation table
    /// (in the driver's order), independent of the format.toml machinery under test.
    pub(crate) fn fixed0(bytes: &[u8]) -> Outcome {
        const INPUTS: usize = 20;
        const INPUT_BASE: u32 = 0x1000;
        const WILDCARD: u32 = 0xFFFF_FFFF;
        const MAX_SIZE: usize = 64 * 1024;
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let reject = |why: String| Outcome::Rejected(why);
        let size = bytes.len();

        // dsc_read: kernel_read_file refuses empty and oversized files.
        if size == 0 {
            return reject("empty or not a regular file".into());
        }
        if size > MAX_SIZE {
            return reject(format!("larger than {MAX_SIZE} bytes"));
        }
        // dsc_parse.
        if size < 12 {
            return reject(format!("truncated header ({size} bytes)"));
        }
        if &bytes[..4] != b"DSC1" {
            return reject("bad magic".into());
        }
        let total = u32_at(4) as usize;
        if total > size {
            return reject(format!(
                "truncated: header claims {total} bytes, file has {size}"
            ));
        }
        if total < size {
            return reject(format!(
                "length mismatch: header claims {total} bytes, file has {size}"
            ));
        }
        let (nt, ni) = (u16_at(8), u16_at(10));
        if nt > 64 || ni > 1024 {
            return reject(format!(
                "too many templates/instances ({nt}/{ni}, limits 64/1024)"
            ));
        }
        let mut off = 12;
        if size - off < nt * 4 {
            return reject("truncated template table".into());
        }
        let mut templates: Vec<(usize, usize)> = Vec::new();
        for _ in 0..nt {
            let (id, fields) = (u16_at(off), u16_at(off + 2));
            if templates.iter().any(|&(t, _)| t == id) {
                return reject(format!("duplicate template id {id}"));
            }
            templates.push((id, fields));
            off += 4;
        }
        let mut instances: Vec<(usize, usize, usize)> = Vec::new(); // (template, fields, offset)
        for i in 0..ni {
            if size - off < 4 {
                return reject(format!("truncated instance {i} header"));
            }
            let tid = u16_at(off);
            // The driver keeps the last match; ids are unique by now anyway.
            let Some(&(_, fields)) = templates.iter().rev().find(|&&(t, _)| t == tid) else {
                return reject(format!("instance {i} references unknown template {tid}"));
            };
            off += 4;
            if size - off < fields * 4 {
                return reject(format!("truncated instance {i}"));
            }
            instances.push((tid, fields, off));
            off += fields * 4;
        }
        if off != size {
            return reject(format!(
                "{} trailing bytes after the instance table",
                size - off
            ));
        }
        // dsc_evaluate / sensor_match_fields: every criterion is evaluated, no early
        // exit, and nothing bounds the index by the 20 inputs.
        let mut matched = Vec::new();
        for (i, &(_, fields, at)) in instances.iter().enumerate() {
            let mut all = true;
            for k in 0..fields {
                let want = u32_at(at + 4 * k);
                if want == WILDCARD {
                    continue;
                }
                if k >= INPUTS {
                    return Outcome::Crash {
                        instance: i,
                        index: k,
                        matched_before: matched,
                    };
                }
                if INPUT_BASE + k as u32 != want {
                    all = false;
                }
            }
            if all {
                matched.push(i);
            }
        }
        Outcome::Loaded { matched }
    }

    #[test]
    fn oracle_agrees_with_format_md_on_the_seeds() {
        assert_eq!(
            fixed0(&seed_bytes("good.content")),
            Outcome::Loaded {
                matched: vec![0, 2, 3]
            }
        );
        assert_eq!(
            fixed0(&seed_bytes("cf291-21-fields.content")),
            Outcome::Crash {
                instance: 1,
                index: 20,
                matched_before: vec![0]
            }
        );
        assert_eq!(
            fixed0(&seed_bytes("truncated.content")),
            Outcome::Rejected("truncated: header claims 356 bytes, file has 148".into())
        );
    }

    #[test]
    fn oracle_crashes_only_on_a_non_wildcard_past_the_inputs() {
        // cf291 with its 21st criterion turned into a wildcard: 21 fields, no read past.
        let mut bytes = seed_bytes("cf291-21-fields.content");
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&[0xff; 4]);
        assert_eq!(
            fixed0(&bytes),
            Outcome::Loaded {
                matched: vec![0, 1]
            }
        );
        // A wrong value at index 20 still reads input[20]: no early exit.
        bytes[n - 4..].copy_from_slice(&0u32.to_le_bytes());
        assert!(fixed0(&bytes).crashed());
    }

    #[test]
    fn oracle_never_panics_on_garbage() {
        let mut rng = super::mutate::Rng::new(11);
        for _ in 0..20_000 {
            let len = rng.below(300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len >= 4 {
                bytes[..4].copy_from_slice(b"DSC1");
            }
            if len >= 8 {
                bytes[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            }
            let _ = fixed0(&bytes);
        }
    }
}
