//! Just enough of ELF to tell whether a file carries DWARF: its section names.
//! Read with positioned reads, so a 600 MiB debug vmlinux costs a few KiB.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Most sections looked at: a kernel module has ~60, a vmlinux ~80.
const MAX_SECTIONS: u64 = 4096;
/// Largest section-name table read.
const MAX_NAMES_BYTES: u64 = 1 << 20;

/// Whether `path` is an ELF file with a `.debug_info` section (plain or compressed).
/// Any file that cannot be read as ELF has none.
pub(crate) fn has_debug_info(path: &Path) -> bool {
    section_names(path).is_some_and(|names| {
        names
            .iter()
            .any(|n| n == ".debug_info" || n == ".zdebug_info")
    })
}

fn section_names(path: &Path) -> Option<Vec<String>> {
    let file = File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    // 64-bit little-endian ELF: what every x86-64 kernel and module is.
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at =
        |b: &[u8], at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let shoff = u64_at(&header, 0x28)?;
    let shentsize = u64::from(u16_at(&header, 0x3a)?);
    let shnum = u64::from(u16_at(&header, 0x3c)?);
    let shstrndx = u64::from(u16_at(&header, 0x3e)?);
    if shentsize < 64 || shnum == 0 || shnum > MAX_SECTIONS || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; usize::try_from(shentsize * shnum).ok()?];
    file.read_exact_at(&mut table, shoff).ok()?;
    let entry = |i: u64| table.get(usize::try_from(i * shentsize).ok()?..);
    let names_header = entry(shstrndx)?;
    let names_offset = u64_at(names_header, 0x18)?;
    let names_size = u64_at(names_header, 0x20)?.min(MAX_NAMES_BYTES);
    let mut names = vec![0u8; usize::try_from(names_size).ok()?];
    file.read_exact_at(&mut names, names_offset).ok()?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let at = usize::try_from(u32_at(entry(i)?, 0)?).ok()?;
        let rest = names.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiled_object_with_and_without_debug_info() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f.c");
        std::fs::write(&source, "int f(int x) { return x + 1; }\n").unwrap();
        let build = |flags: &[&str], out: &str| {
            let out = dir.path().join(out);
            let status = std::process::Command::new("cc")
                .args(flags)
                .arg("-c")
                .arg(&source)
                .arg("-o")
                .arg(&out)
                .status()
                .unwrap();
            assert!(status.success());
            out
        };
        assert!(has_debug_info(&build(&["-g"], "with.o")));
        assert!(!has_debug_info(&build(&[], "without.o")));
        assert!(!has_debug_info(&source), "not ELF");
        assert!(!has_debug_info(&dir.path().join("missing")));
        std::fs::write(dir.path().join("short"), b"\x7fELF\x02\x01").unwrap();
        assert!(!has_debug_info(&dir.path().join("short")));
    }
}
