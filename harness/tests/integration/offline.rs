//! `bootgate offline` on a real NTFS disk laid out as a Windows system drive, made
//! on the host with the distribution's NTFS tools (ntfs-3g's mkntfs and ntfscp: no
//! loop mount, no FUSE, no privileges), edited by the real ntfs-helper VM under QEMU.
//!
//! The host tools cannot make folders (ntfs-3g ships no mkdir tool, and mounting
//! needs FUSE on the host), so the folders are made by the helper VM itself
//! (`bootgate offline --partition 1 --put`, which creates missing folders) and then
//! checked with the host's `ntfsls`; every file that matters is put in with
//! `ntfscp` on the host and compared on the host afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The disk: an MBR with one NTFS partition (type 0x07) at 1 MiB, as Windows'
/// setup lays out a BIOS system drive.
const DISK_MIB: u64 = 80;
const PART_START: u64 = 1 << 20;
const SECTOR: u64 = 512;

fn need_ntfs_tools() {
    for tool in [
        "mkntfs", "ntfscp", "ntfsfix", "ntfsinfo", "ntfsls", "ntfscat",
    ] {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /sbin/{tool} || test -x /usr/sbin/{tool}"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: this test needs the distribution's NTFS tools on the host: apt-get install ntfs-3g (or run tools/host-setup)"
        );
    }
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw disk of DISK_MIB with an MBR naming one partition from PART_START to the end.
fn write_mbr_disk(path: &Path) {
    let size = DISK_MIB << 20;
    let mut mbr = vec![0u8; SECTOR as usize];
    let entry = &mut mbr[446..462];
    entry[0] = 0x80; // active
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: use LBA
    entry[4] = 0x07; // NTFS/exFAT
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&((PART_START / SECTOR) as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&(((size - PART_START) / SECTOR) as u32).to_le_bytes());
    mbr[440..444].copy_from_slice(&0x6f0c_8a52_u32.to_le_bytes()); // disk signature
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut disk = mbr;
    disk.resize(size as usize, 0);
    std::fs::write(path, disk).unwrap();
}

/// Copies the partition out of a raw disk into its own file, or back into it.
fn extract_partition(disk: &Path, part: &Path) {
    let bytes = std::fs::read(disk).unwrap();
    std::fs::write(part, &bytes[PART_START as usize..]).unwrap();
}
fn splice_partition(part: &Path, disk: &Path) {
    let mut bytes = std::fs::read(disk).unwrap();
    let volume = std::fs::read(part).unwrap();
    bytes[PART_START as usize..PART_START as usize + volume.len()].copy_from_slice(&volume);
    std::fs::write(disk, bytes).unwrap();
}

fn qcow2_to_raw(qcow2: &Path, raw: &Path) {
    tool("qemu-img", &["convert", "-O", "raw", s(qcow2), s(raw)]);
}
fn raw_to_qcow2(raw: &Path, qcow2: &Path) {
    tool("qemu-img", &["convert", "-O", "qcow2", s(raw), s(qcow2)]);
}
fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A minidump as QEMU's win-dmp and Windows write it (WinDumpHeader64, QEMU's
/// include/qemu/win_dump_defs.h; the offsets detect/win_dump.rs reads): "PAGE",
/// "DU64", BugcheckCode at 0x38, its four parameters at 0x40..0x58, then payload.
fn win_dump(code: u32, len: usize, seed: u8) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    d[..4].copy_from_slice(b"PAGE");
    d[4..8].copy_from_slice(b"DU64");
    d[0x38..0x3c].copy_from_slice(&code.to_le_bytes());
    for (i, p) in [0xffff_9e8a_0000_0000_u64, 0, 0xffff_f806_1234_5678, 0xc]
        .iter()
        .enumerate()
    {
        d[0x40 + 8 * i..0x48 + 8 * i].copy_from_slice(&p.to_le_bytes());
    }
    d
}

struct Fixture {
    dir: tempfile::TempDir,
    disk: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

/// Builds the Windows-layout disk (qcow2) and returns it with the files put in.
fn windows_disk() -> Fixture {
    need_ntfs_tools();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk.raw");
    let part = d.join("part.raw");
    write_mbr_disk(&raw);
    std::fs::write(&part, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&part)
        .unwrap()
        .set_len((DISK_MIB << 20) - PART_START)
        .unwrap();
    // -F: a plain file, not a block device; -Q: no zeroing; -p: the partition's
    // start sector, as Windows' boot code wants it in the boot sector.
    tool(
        "mkntfs",
        &[
            "-F",
            "-Q",
            "-q",
            "-L",
            "Windows",
            "-p",
            &(PART_START / SECTOR).to_string(),
            s(&part),
        ],
    );
    splice_partition(&part, &raw);
    let qcow2 = d.join("layout.qcow2");
    raw_to_qcow2(&raw, &qcow2);
    let placeholder = d.join("placeholder.txt");
    std::fs::write(&placeholder, b"folder placeholder\n").unwrap();
    let put = |win: &str| format!("{}={win}", placeholder.display());
    let out = run(&[
        "offline",
        "--disk",
        s(&qcow2),
        "--in-place",
        "--partition",
        "1",
        "--accel",
        "tcg",
        "--put",
        &put(r"C:\Windows\System32\drivers\CrowdStrike\placeholder.txt"),
        "--put",
        &put(r"C:\Windows\Minidump\placeholder.txt"),
        "--put",
        &put(r"C:\Windows\System32\winevt\Logs\placeholder.txt"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "making the folders: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    qcow2_to_raw(&qcow2, &raw);
    extract_partition(&raw, &part);
    // The host's own tools see the folders the helper made.
    let listing = tool("ntfsls", &["-f", "-R", s(&part)]);
    for folder in [
        "/Windows/System32/drivers/CrowdStrike:",
        "/Windows/Minidump:",
        "/Windows/System32/winevt/Logs:",
    ] {
        assert!(listing.contains(folder), "{folder} missing:\n{listing}");
    }
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "/Windows/System32/drivers/CrowdStrike/C-00000291-00000000-00000032.sys",
            vec![0xaa; 4096],
        ),
        (
            "/Windows/System32/drivers/CrowdStrike/C-00000290-00000000-00000001.sys",
            b"a good channel file\n".to_vec(),
        ),
        (
            "/Windows/System32/drivers/CrowdStrike/csagent.sys",
            vec![0x4d; 9000],
        ),
        (
            "/Windows/Minidump/070124-10000-01.dmp",
            win_dump(0x50, 300_000, 1),
        ),
        (
            "/Windows/Minidump/070124-10015-02.dmp",
            win_dump(0x7e, 70_000, 2),
        ),
        ("/Windows/MEMORY.DMP", win_dump(0x50, 600_000, 3)),
        ("/Windows/System32/winevt/Logs/System.evtx", {
            let mut e = b"ElfFile\0".to_vec();
            e.resize(200_000, 0x11);
            e
        }),
    ];
    for (n, (path, data)) in files.iter().enumerate() {
        let host = d.join(format!("file-{n}"));
        std::fs::write(&host, data).unwrap();
        tool("ntfscp", &["-f", s(&part), s(&host), path]);
    }
    splice_partition(&part, &raw);
    let disk = d.join("vm.qcow2");
    raw_to_qcow2(&raw, &disk);
    Fixture { dir, disk, files }
}

fn file<'a>(f: &'a Fixture, suffix: &str) -> &'a [u8] {
    &f.files.iter().find(|(p, _)| p.ends_with(suffix)).unwrap().1
}

#[test]
fn offline_removes_the_channel_file_and_copies_dumps_and_event_log_from_a_windows_disk() {
    let f = windows_disk();
    let d = f.dir.path();
    let before = sha256(&f.disk);
    let evidence = d.join("evidence");
    let overlay = d.join("fixed.qcow2");
    // Another case than on the volume, and a wildcard: as Windows would take it.
    let out = run(&[
        "offline",
        "--disk",
        s(&f.disk),
        "--accel",
        "tcg",
        "--overlay",
        s(&overlay),
        "--remove",
        r"c:\WINDOWS\system32\Drivers\crowdstrike\C-00000291*.SYS",
        "--collect",
        s(&evidence),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            r"removed: \Windows\System32\drivers\CrowdStrike\C-00000291-00000000-00000032.sys"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("processed successfully"),
        "the helper's ntfsfix -n: {stdout}"
    );
    assert_eq!(
        sha256(&f.disk),
        before,
        "the named disk is never written without --in-place"
    );

    // Evidence, byte for byte; the memory dump's header only.
    for name in ["070124-10000-01.dmp", "070124-10015-02.dmp"] {
        assert_eq!(
            std::fs::read(evidence.join("Minidump").join(name)).unwrap(),
            file(&f, name),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(evidence.join("MEMORY.DMP.header")).unwrap(),
        &file(&f, "MEMORY.DMP")[..8192]
    );
    assert_eq!(
        std::fs::read(evidence.join("System.evtx")).unwrap(),
        file(&f, "System.evtx")
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(evidence.join("offline.json")).unwrap()).unwrap();
    assert_eq!(
        report["report"]["evidence"].as_array().unwrap().len(),
        4,
        "{report}"
    );
    assert_eq!(report["report"]["device"], "/dev/vdb1");
    assert!(
        evidence
            .join("helper-vm")
            .read_dir()
            .unwrap()
            .next()
            .is_some(),
        "helper logs kept"
    );

    // The result, read by the host's tools: the channel file gone, the rest intact,
    // and the volume valid.
    let raw = d.join("fixed.raw");
    let part = d.join("fixed.part");
    qcow2_to_raw(&overlay, &raw);
    extract_partition(&raw, &part);
    let listing = tool(
        "ntfsls",
        &[
            "-f",
            "-p",
            "/Windows/System32/drivers/CrowdStrike",
            s(&part),
        ],
    );
    assert!(!listing.contains("C-00000291"), "{listing}");
    for (path, data) in &f.files {
        if path.contains("C-00000291") {
            continue;
        }
        let out = Command::new("ntfscat")
            .args([s(&part), path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&out.stdout, data, "{path} changed");
    }
    let check = tool("ntfsfix", &["-n", s(&part)]);
    assert!(check.contains("processed successfully"), "{check}");
    let info = tool("ntfsinfo", &["-m", s(&part)]);
    assert!(info.contains("Volume Name: Windows"), "{info}");
}

#[test]
fn offline_refuses_bad_input_before_booting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("vm.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&disk), "16M"],
    );
    let cases: [(&[&str], &str); 4] = [
        (&["--remove", r"D:\x.sys"], "not D:"),
        (&["--remove", r"C:\a*\b.sys"], "file name only"),
        (&["--put", "nofile"], "HOST_FILE=WINPATH"),
        (&[], "nothing to do"),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["offline", "--disk", s(&disk)];
        args.extend_from_slice(extra);
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(expect), "{extra:?}: {stderr}");
    }
    assert!(
        !dir.path().join("vm.offline.qcow2").exists(),
        "no overlay for refused input"
    );
}

/// A disk with no partition table, one NTFS volume over all of it (as some cloud
/// images and `qemu-img convert`ed partitions are): found without `--partition`,
/// and `--in-place` writes the disk itself.
#[test]
fn offline_finds_windows_on_a_whole_disk_volume_and_edits_it_in_place() {
    need_ntfs_tools();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("whole.raw");
    std::fs::write(&raw, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    tool("mkntfs", &["-F", "-Q", "-q", "-L", "Whole", s(&raw)]);
    let disk = d.join("whole.qcow2");
    raw_to_qcow2(&raw, &disk);
    let placeholder = d.join("p.txt");
    std::fs::write(&placeholder, b"p\n").unwrap();
    let out = run(&[
        "offline",
        "--disk",
        s(&disk),
        "--in-place",
        "--partition",
        "0",
        "--accel",
        "tcg",
        "--put",
        &format!(
            "{}=\\Windows\\System32\\drivers\\p.txt",
            placeholder.display()
        ),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    qcow2_to_raw(&disk, &raw);
    let content = d.join("content.sys");
    std::fs::write(&content, vec![0x29; 1000]).unwrap();
    tool(
        "ntfscp",
        &[
            "-f",
            s(&raw),
            s(&content),
            "/Windows/System32/drivers/C-00000291-1.sys",
        ],
    );
    raw_to_qcow2(&raw, &disk);
    let out = run(&[
        "offline",
        "--disk",
        s(&disk),
        "--in-place",
        "--accel",
        "tcg",
        "--remove",
        r"%SystemRoot%\system32\drivers\c-00000291*",
        "--remove",
        r"C:\Windows\System32\drivers\not-there.sys",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a --remove that matched nothing is exit 1: {stdout}{stderr}"
    );
    assert!(stdout.contains("volume: /dev/vdb\n"), "{stdout}");
    assert!(
        stderr.contains(r"nothing matched --remove \Windows\System32\drivers\not-there.sys"),
        "{stderr}"
    );
    assert!(
        !d.join("whole.offline.qcow2").exists(),
        "--in-place makes no overlay"
    );
    qcow2_to_raw(&disk, &raw);
    let listing = tool(
        "ntfsls",
        &["-f", "-p", "/Windows/System32/drivers", s(&raw)],
    );
    assert!(
        !listing.contains("C-00000291") && listing.contains("p.txt"),
        "{listing}"
    );
    assert!(tool("ntfsfix", &["-n", s(&raw)]).contains("processed successfully"));
}
