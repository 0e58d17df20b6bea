//! The doctor's Windows checks against reports of Windows 10, Server 2022 and
//! Windows 11 built from Microsoft's documented formats (`../testdata/`, each file
//! says how it was made; none was captured from a real machine).

use super::*;

const WIN10: &str = include_str!("../testdata/win10-22h2.txt");
const WIN10_DE: &str = include_str!("../testdata/win10-22h2-de-de.txt");
const SERVER2022: &str = include_str!("../testdata/server2022.txt");
const WIN11: &str = include_str!("../testdata/win11-23h2.txt");
const PS51_SINGLE: &str = include_str!("../testdata/ps51-single-objects.txt");

/// The template's situation: pvpanic without hv-crash (TCG), win-dmp host dumps,
/// a boot-start service driver, no Secure Boot.
fn tcg() -> Context {
    Context {
        model: CaptureModel::Pvpanic,
        dump_format: DumpFormat::WinDmp,
        secure_boot: false,
        service_start: Some(ServiceStart::Boot),
    }
}

fn level_of(findings: &[Finding], what: &str) -> Level {
    let found: Vec<&Finding> = findings.iter().filter(|f| f.1 == what).collect();
    assert_eq!(found.len(), 1, "one {what:?} line in {findings:#?}");
    found[0].0
}

fn text_of<'a>(findings: &'a [Finding], what: &str) -> &'a str {
    &findings.iter().find(|f| f.1 == what).unwrap().2
}

#[test]
fn windows_10_with_dumps_and_test_signing_is_ready() {
    let probe = Probe::parse(WIN10).unwrap();
    assert_eq!(probe.build, Some(19045));
    assert_eq!(probe.devices.len(), 2);
    let f = judge(&probe, &tcg());
    assert!(text_of(&f, "windows").starts_with("Windows 10, build 19045"));
    for what in [
        "pvpanic",
        "fwcfg",
        "crash dumps",
        "auto reboot",
        "test signing",
        "secure boot",
        "vbs/hvci",
        "recovery",
    ] {
        assert_eq!(level_of(&f, what), Level::Ok, "{what}: {f:#?}");
    }
    assert!(text_of(&f, "pvpanic").contains("ACPI\\QEMU0001\\0 working, driver service PVPanic"));
    // Dumps enabled without hv-crash: the guest writes its own dump.
    assert!(
        text_of(&f, "crash dumps").contains("GUEST_CRASHLOADED"),
        "{f:#?}"
    );
    // Defect 5: a boot-start driver's early crash reaches the host only as a reset.
    assert_eq!(level_of(&f, "boot-start crashes"), Level::Note);
    assert!(text_of(&f, "boot-start crashes").contains("only as a reset"));
    assert_eq!(
        judge_dir(&probe, "content_dir", "C:\\ProgramData\\bootgate\\content").0,
        Level::Ok
    );
}

#[test]
fn server_2022_reports_the_missing_fwcfg_driver_and_folder() {
    let probe = Probe::parse(SERVER2022).unwrap();
    let f = judge(&probe, &tcg());
    assert!(text_of(&f, "windows").starts_with("Windows Server, build 20348"));
    assert_eq!(level_of(&f, "pvpanic"), Level::Ok);
    // win-dmp needs fwcfg: code 28 (no driver installed) blocks.
    assert_eq!(level_of(&f, "fwcfg"), Level::Fail);
    let fwcfg = text_of(&f, "fwcfg");
    assert!(
        fwcfg.contains("ConfigManagerErrorCode 28: no driver installed")
            && fwcfg.contains("fwcfg.inf"),
        "{fwcfg}"
    );
    // With ELF host dumps fwcfg is only worth knowing about.
    let elf = Context {
        dump_format: DumpFormat::Elf,
        ..tcg()
    };
    assert_eq!(level_of(&judge(&probe, &elf), "fwcfg"), Level::Note);
    // Dumps disabled: GUEST_PANICKED and a host dump; AutoReboot 0 is no blocker then.
    assert_eq!(level_of(&f, "crash dumps"), Level::Ok);
    assert!(text_of(&f, "crash dumps").contains("GUEST_PANICKED"));
    assert_eq!(level_of(&f, "auto reboot"), Level::Note);
    assert_eq!(level_of(&f, "test signing"), Level::Note);
    assert_eq!(level_of(&f, "recovery"), Level::Note);
    assert_eq!(probe.recovery, Recovery::Unset);
    assert_eq!(
        judge_dir(&probe, "content_dir", "C:\\ProgramData\\bootgate\\content").0,
        Level::Fail
    );
    assert_eq!(judge_dir(&probe, "drivers_dir", "D:\\other").0, Level::Fail);
}

#[test]
fn windows_11_with_secure_boot_and_hvci() {
    let probe = Probe::parse(WIN11).unwrap();
    let secure = Context {
        secure_boot: true,
        ..tcg()
    };
    let f = judge(&probe, &secure);
    // ProductName says Windows 10; the build says 11.
    assert!(text_of(&f, "windows").starts_with("Windows 11, build 22631 (Windows 10 Pro)"));
    // The PCI pvpanic matches by its vendor/device prefix.
    assert_eq!(level_of(&f, "pvpanic"), Level::Ok);
    assert!(text_of(&f, "pvpanic").starts_with("PCI\\VEN_1B36&DEV_0011"));
    // Dumps enabled but AutoReboot 0: the guest would sit at its stop screen.
    assert_eq!(level_of(&f, "auto reboot"), Level::Fail);
    assert_eq!(level_of(&f, "secure boot"), Level::Ok);
    assert!(text_of(&f, "secure boot").contains("production- or attestation-signed"));
    assert_eq!(level_of(&f, "vbs/hvci"), Level::Note);
    assert!(text_of(&f, "vbs/hvci").contains("VBS running, memory integrity (HVCI) running"));
    assert_eq!(level_of(&f, "test signing"), Level::Note);
    assert_eq!(level_of(&f, "recovery"), Level::Note);
    // A manifest that does not ask for Secure Boot is told that the image has it.
    let f = judge(&probe, &tcg());
    assert_eq!(level_of(&f, "secure boot"), Level::Note);
    assert!(text_of(&f, "secure boot").contains("boot.secure_boot = false"));
}

#[test]
fn a_localized_windows_gives_the_same_verdicts() {
    let english = Probe::parse(WIN10).unwrap();
    let german = Probe::parse(WIN10_DE).unwrap();
    let verdicts = |p: &Probe| -> Vec<(Level, &'static str)> {
        judge(p, &tcg())
            .into_iter()
            .map(|(l, w, _)| (l, w))
            .collect()
    };
    assert_eq!(verdicts(&english), verdicts(&german));
    // The \u escapes come back as the folder's real name.
    let name = "C:\\ProgramData\\bootgate\\Inhalt für Prüfungen";
    assert_eq!(judge_dir(&german, "content_dir", name).0, Level::Ok);
}

#[test]
fn powershell_5_1_single_objects_and_wrapped_arrays_parse_as_lists() {
    let probe = Probe::parse(PS51_SINGLE).unwrap();
    assert_eq!(probe.devices.len(), 1);
    assert_eq!(probe.devices[0].hardware, ["ACPI\\QEMU0001", "*QEMU0001"]);
    assert_eq!(probe.crash_dump_enabled, Some(1));
    assert_eq!(probe.auto_reboot, Some(1));
    let guard = probe.device_guard.clone().unwrap();
    assert_eq!(guard.running, [0]);
    assert!(guard.configured.is_empty());
    assert_eq!(probe.dirs.len(), 1);
    let f = judge(&probe, &tcg());
    assert!(text_of(&f, "windows").starts_with("Windows Server, build 17763"));
    assert_eq!(level_of(&f, "pvpanic"), Level::Ok);
    // No fwcfg device listed at all, and the run wants win-dmp.
    assert_eq!(level_of(&f, "fwcfg"), Level::Fail);
    assert!(text_of(&f, "fwcfg").contains("lists no ACPI\\QEMU0002 device"));
    assert_eq!(level_of(&f, "test signing"), Level::Ok);
}

#[test]
fn hv_crash_expects_no_in_guest_dump_and_no_boot_start_caveat() {
    let probe = Probe::parse(WIN11).unwrap();
    let kvm = Context {
        model: CaptureModel::HvCrash,
        ..tcg()
    };
    let f = judge(&probe, &kvm);
    assert_eq!(level_of(&f, "crash dumps"), Level::Ok);
    assert!(text_of(&f, "crash dumps").contains("Windows writes no dump of its own"));
    // The host resets a paused guest: AutoReboot 0 is only a note here.
    assert_eq!(level_of(&f, "auto reboot"), Level::Note);
    assert!(!f.iter().any(|x| x.1 == "boot-start crashes"), "{f:#?}");
    // Demand-start and PnP drivers load after pvpanic: no caveat either.
    let demand = Context {
        service_start: Some(ServiceStart::Demand),
        ..tcg()
    };
    assert!(!judge(&probe, &demand)
        .iter()
        .any(|x| x.1 == "boot-start crashes"));
}

#[test]
fn unreadable_or_missing_values_are_said_so() {
    let report = format!(
        "{REPORT_TAG}{}",
        r#"{"build":null,"devices":null,"crashDumpEnabled":null,"deviceGuard":null,"startOptions":null,"recovery":"unread","dirs":null}"#
    );
    let probe = Probe::parse(&report).unwrap();
    let f = judge(&probe, &tcg());
    assert_eq!(level_of(&f, "pvpanic"), Level::Fail);
    assert_eq!(level_of(&f, "crash dumps"), Level::Note);
    assert_eq!(level_of(&f, "test signing"), Level::Fail);
    assert_eq!(level_of(&f, "vbs/hvci"), Level::Note);
    assert_eq!(level_of(&f, "recovery"), Level::Note);
    assert!(text_of(&f, "recovery").contains("BCD WMI provider"));
}

#[test]
fn a_device_with_a_problem_code_names_it() {
    let report = format!(
        "{REPORT_TAG}{}",
        r#"{"devices":[{"instance":"ACPI\\QEMU0001\\0","hardware":["ACPI\\QEMU0001"],"error":52,"status":"Error","service":"PVPanic"}]}"#
    );
    let f = judge(&Probe::parse(&report).unwrap(), &tcg());
    assert_eq!(level_of(&f, "pvpanic"), Level::Fail);
    assert!(
        text_of(&f, "pvpanic").contains("ErrorCode 52: the driver's signature cannot be verified")
    );
}

#[test]
fn a_probe_without_its_report_line_or_with_bad_json_is_an_error() {
    let err = Probe::parse("WARNUNG: something\r\n").unwrap_err();
    assert!(matches!(err, ProbeError::NoReport { .. }));
    assert!(err.to_string().contains("WARNUNG: something"), "{err}");
    assert!(matches!(Probe::parse(""), Err(ProbeError::NoReport { .. })));
    let err = Probe::parse(&format!("{REPORT_TAG}{{\"build\": ")).unwrap_err();
    assert!(matches!(err, ProbeError::NotJson { .. }), "{err}");
    let err = Probe::parse(&format!("{REPORT_TAG}[1, 2]")).unwrap_err();
    assert!(matches!(err, ProbeError::NotJson { .. }), "{err}");
    let err = Probe::parse(&format!("{REPORT_TAG}{{\"crashDumpEnabled\": \"lots\"}}")).unwrap_err();
    assert!(err.to_string().contains("crashDumpEnabled"), "{err}");
    // CRLF line ends, as a Windows console writes them, are fine.
    let crlf = WIN10.replace('\n', "\r\n");
    assert_eq!(Probe::parse(&crlf).unwrap(), Probe::parse(WIN10).unwrap());
}

#[test]
fn hostile_folder_names_stay_data_in_the_probe() {
    let hostile = "C:\\it's ’here’; Remove-Item C:\\ -Recurse #";
    let argv = probe_argv(&[hostile, "C:\\plain"]);
    assert_eq!(&argv[..6], crate::guest::windows::command::POWERSHELL);
    assert_eq!(argv.len(), 7);
    let script = &argv[6];
    // Every quote in the value doubled inside one literal: the first line assigns
    // exactly the two folders and nothing runs from them.
    let first = script.lines().next().unwrap();
    assert_eq!(
        first,
        "$bgDirs = @('C:\\it''s ’’here’’; Remove-Item C:\\ -Recurse #', 'C:\\plain')"
    );
    // The rest is the constant probe, whatever the values.
    let constant = probe_argv(&[]);
    let tail = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(tail(script), tail(&constant[6]));
    assert!(constant[6].starts_with("$bgDirs = @()\n"));
    // glib escapes '"' as '\"' on its way into the command line; the probe has none,
    // and it asks for the hardware IDs virtio-win's INFs match.
    assert!(!script.contains('"'));
    assert!(script.contains("'ACPI\\QEMU000*'") && script.contains("'PCI\\VEN_1B36&DEV_0011*'"));
    assert!(script.contains("ConvertTo-Json -InputObject $bgReport"));
}

#[test]
fn items_accepts_every_shape_convertto_json_writes() {
    let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    assert_eq!(items(&v("null")).len(), 0);
    assert_eq!(items(&v("[]")).len(), 0);
    assert_eq!(items(&v("[1,2]")).len(), 2);
    assert_eq!(items(&v(r#"{"a":1}"#)).len(), 1);
    assert_eq!(items(&v(r#"{"value":[1,2,3],"Count":3}"#)).len(), 3);
    assert_eq!(items(&v("7")).len(), 1);
}

#[test]
fn capture_model_follows_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    crate::testing::images::write_windows_image(
        dir.path(),
        crate::testing::images::WINDOWS_TEMPLATE,
    );
    let mut m = crate::image::manifest::Manifest::load(&dir.path().join("image.toml")).unwrap();
    use crate::qemu::accel::Accel;
    assert!(m.machine.hyperv);
    assert_eq!(capture_model(&m, Accel::Kvm), CaptureModel::HvCrash);
    assert_eq!(capture_model(&m, Accel::Tcg), CaptureModel::Pvpanic);
    m.machine.hyperv = false;
    assert_eq!(capture_model(&m, Accel::Kvm), CaptureModel::Pvpanic);
    // The template: a boot-start service driver, win-dmp host dumps, BIOS.
    let ctx = Context::of(&m, Accel::Tcg);
    assert_eq!(ctx.service_start, Some(ServiceStart::Boot));
    assert_eq!(ctx.dump_format, DumpFormat::WinDmp);
    assert!(!ctx.secure_boot);
    // A PnP package is started by Plug and Play: no boot-start caveat.
    m.guest.driver_kind = Some(crate::guest::windows::DriverKind::Pnp);
    assert_eq!(Context::of(&m, Accel::Tcg).service_start, None);
}
