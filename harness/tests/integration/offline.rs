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
/// Runs `bootgate offline ARGS`, asserting it succeeds (saying `what` it was
/// for, with its output, when not); its stdout.
fn offline_ok(what: &str, args: &[&str]) -> String {
    let mut argv = vec!["offline"];
    argv.extend_from_slice(args);
    let out = run(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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
    offline_ok(
        "making the folders",
        &[
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
        ],
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
    let stdout = offline_ok(
        "offline",
        &[
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
        ],
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
    // Each file's last write time comes off the volume (the fixture wrote them
    // minutes ago): what lets a recovery tell this crash's dumps from older ones.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for e in report["report"]["evidence"].as_array().unwrap() {
        let at = e["modified_unix"].as_i64().unwrap_or_default();
        assert!((now - at).abs() < 3600, "{e}: {at} is not about {now}");
    }
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

/// `offline --help` teaches the command: the disk is not written unless asked, where
/// the changes go, and the Channel File 291 fix as an example that keeps its lines.
#[test]
fn offline_help_teaches_the_overlay_in_place_and_the_cf291_example() {
    let out = run(&["offline", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for expect in [
        "never written unless --in-place",
        "qemu-img commit OVERLAY",
        "\n  bootgate offline --disk vm.qcow2 \\\n",
        "--remove 'C:\\Windows\\System32\\drivers\\CrowdStrike\\C-00000291*.sys'",
    ] {
        assert!(help.contains(expect), "{expect:?} not in:\n{help}");
    }
}

/// How long the helper VM may take to answer (a cold image build comes first when
/// the cache is empty).
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Ctrl-C while the helper works: exit 130 saying the disk is unchanged, the
/// unfinished overlay removed, and no QEMU left with the disk open.
#[test]
fn ctrl_c_during_offline_leaves_the_disk_unchanged_and_no_overlay() {
    need_ntfs_tools();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("w.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    tool("mkntfs", &["-F", "-Q", "-q", s(&raw)]);
    let disk = d.join("w.qcow2");
    raw_to_qcow2(&raw, &disk);
    let before = std::fs::read(&disk).unwrap();
    let file = d.join("x.txt");
    std::fs::write(&file, b"x\n").unwrap();
    let collect = d.join("col");
    let overlay = d.join("w.offline.qcow2");
    let mut guard = ChildGuard(
        bootgate()
            .args([
                "offline",
                "--disk",
                s(&disk),
                "--partition",
                "0",
                "--accel",
                "tcg",
                "--overlay",
                s(&overlay),
                "--collect",
                s(&collect),
                "--put",
                &format!("{}=C:\\x.txt", file.display()),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    // Interrupt once the helper VM is booting: its kernel has printed. (Not its
    // init's ready line: the agent may answer, and the work finish, before the
    // init gets to print it.)
    let console = collect.join("helper-vm/console.log");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|t| t.contains("Linux version")) {
        assert!(started.elapsed() < READY_WAIT, "the helper never booted");
        assert!(child.try_wait().unwrap().is_none(), "bootgate ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("is unchanged and the unfinished overlay was removed"),
        "{stderr}"
    );
    assert!(!overlay.exists(), "the unfinished overlay is gone");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        before,
        "the disk is unchanged"
    );
    let names = [disk.display().to_string(), overlay.display().to_string()];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !(cmdline.contains("qemu-system") && names.iter().any(|n| cmdline.contains(n))),
            "a QEMU outlived the interrupt: {cmdline}"
        );
    }
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
    offline_ok(
        "offline",
        &[
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
        ],
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

/// CRC-32 (IEEE 802.3, reflected), which GPT headers and partition arrays carry.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A GUID in GPT's mixed-endian byte order.
fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g[8..].copy_from_slice(&b[8..]);
    g
}

/// A raw GPT disk (UEFI spec 2.10, chapter 5) with the layout Windows setup makes,
/// shortened: partition 1 an empty "Microsoft reserved" range, partition 2 a "basic
/// data" range for NTFS. Primary header and array only (Linux uses the primary when
/// it is valid). Returns the NTFS partition's byte range.
fn write_gpt_disk(path: &Path, mib: u64) -> (u64, u64) {
    let size = mib << 20;
    let sectors = size / SECTOR;
    let mut disk = vec![0u8; size as usize];
    // Protective MBR: one 0xEE partition over the disk.
    let e = &mut disk[446..462];
    e[4] = 0xee;
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&((sectors - 1).min(u64::from(u32::MAX)) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let ranges = [(2048u64, 4095u64), (4096u64, sectors - 2048)];
    let types = [
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    ];
    let mut array = vec![0u8; 128 * 128];
    for (i, ((first, last), kind)) in ranges.iter().zip(types).enumerate() {
        let entry = &mut array[128 * i..128 * (i + 1)];
        entry[..16].copy_from_slice(&guid(kind));
        entry[16..32].copy_from_slice(&guid(&format!("6F0C8A52-4B1E-4C47-9D0A-B0079A7E010{i}")));
        entry[32..40].copy_from_slice(&first.to_le_bytes());
        entry[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let mut header = vec![0u8; 92];
    header[..8].copy_from_slice(b"EFI PART");
    header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    header[12..16].copy_from_slice(&92u32.to_le_bytes());
    header[24..32].copy_from_slice(&1u64.to_le_bytes());
    header[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
    header[40..48].copy_from_slice(&34u64.to_le_bytes());
    header[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
    header[56..72].copy_from_slice(&guid("6F0C8A52-4B1E-4C47-9D0A-B0079A7E0200"));
    header[72..80].copy_from_slice(&2u64.to_le_bytes());
    header[80..84].copy_from_slice(&128u32.to_le_bytes());
    header[84..88].copy_from_slice(&128u32.to_le_bytes());
    header[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
    let crc = crc32(&header);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    disk[512..512 + 92].copy_from_slice(&header);
    disk[1024..1024 + array.len()].copy_from_slice(&array);
    std::fs::write(path, disk).unwrap();
    let (first, last) = ranges[1];
    (first * SECTOR, (last + 1) * SECTOR)
}

/// GPT, as a UEFI Windows install is laid out: the volume holding Windows is found
/// past a partition that is not NTFS.
#[test]
fn offline_finds_windows_in_the_second_partition_of_a_gpt_disk() {
    need_ntfs_tools();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("gpt.raw");
    let (start, end) = write_gpt_disk(&raw, 64);
    let part = d.join("part.raw");
    let mut bytes = std::fs::read(&raw).unwrap();
    std::fs::write(&part, &bytes[start as usize..end as usize]).unwrap();
    tool("mkntfs", &["-F", "-Q", "-q", "-L", "Windows", s(&part)]);
    bytes[start as usize..end as usize].copy_from_slice(&std::fs::read(&part).unwrap());
    std::fs::write(&raw, &bytes).unwrap();
    let disk = d.join("gpt.qcow2");
    raw_to_qcow2(&raw, &disk);
    let placeholder = d.join("p.txt");
    std::fs::write(&placeholder, b"p\n").unwrap();
    offline_ok(
        "offline",
        &[
            "--disk",
            s(&disk),
            "--in-place",
            "--partition",
            "2",
            "--accel",
            "tcg",
            "--put",
            &format!(
                "{}=C:\\Windows\\System32\\drivers\\CrowdStrike\\p.txt",
                placeholder.display()
            ),
        ],
    );
    let stdout = offline_ok(
        "offline",
        &[
            "--disk",
            s(&disk),
            "--in-place",
            "--accel",
            "tcg",
            "--remove",
            r"C:\Windows\System32\drivers\CrowdStrike\p.txt",
        ],
    );
    assert!(stdout.contains("volume: /dev/vdb2\n"), "{stdout}");
    qcow2_to_raw(&disk, &raw);
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::write(&part, &bytes[start as usize..end as usize]).unwrap();
    let listing = tool(
        "ntfsls",
        &[
            "-f",
            "-p",
            "/Windows/System32/drivers/CrowdStrike",
            s(&part),
        ],
    );
    assert!(!listing.contains("p.txt"), "{listing}");
    assert!(tool("ntfsfix", &["-n", s(&part)]).contains("processed successfully"));
}
