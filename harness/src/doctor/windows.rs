//! The Windows half of `bootgate doctor --image`: one PowerShell probe run through the
//! guest agent, its JSON report, and the judges that turn it into report lines.
//!
//! Why one probe and JSON: every check used to be its own program whose localized
//! text was parsed (`pnputil /enum-devices /deviceid`, which only newer builds have:
//! Microsoft's "PnPUtil Command Syntax" lists `/enum-devices` from Windows 10 1903 and
//! no `/deviceid` filter among its flags; `bcdedit`'s "Yes"/"No"). The probe reads only
//! language-independent data (registry numbers, WMI/CIM numeric properties, hardware
//! IDs) and writes it as JSON, escaped to ASCII, on one tagged line; the host parses
//! that. A PowerShell cold start takes seconds (minutes under TCG), so one probe
//! instead of eight also keeps the doctor quick.
//!
//! Nothing here has run on a real Windows guest on this project's machines: the
//! script follows Microsoft's documentation of each cmdlet, class and registry value
//! (named where used), and the parser and judges are tested against reports built
//! from those documented formats (`testdata/`).

use serde_json::Value;

use super::image::Level;
use crate::guest::windows::command::{powershell_argv, ps_quote};
use crate::guest::windows::ServiceStart;
use crate::guest::DumpFormat;

/// The tag in front of the probe's JSON line; lines without it (warnings, a profile's
/// chatter) are not the report.
pub(crate) const REPORT_TAG: &str = "bootgate-doctor-report ";

/// Hardware IDs of QEMU's pvpanic devices, as virtio-win's INFs match them:
/// pvpanic/pvpanic/pvpanic.inf (`ACPI\QEMU0001`, the ISA `-device pvpanic` bootgate
/// adds) and pvpanic-pci.inf (`PCI\VEN_1B36&DEV_0011&SUBSYS_11001AF4&REV_01`, matched
/// here by its vendor and device prefix).
const PVPANIC_IDS: &[&str] = &["ACPI\\QEMU0001", "PCI\\VEN_1B36&DEV_0011"];
/// QEMU's fw_cfg device, as fwcfg64/fwcfg.inf matches it.
const FWCFG_IDS: &[&str] = &["ACPI\\QEMU0002"];

/// Win32_DeviceGuard SecurityServicesRunning value for hypervisor-enforced code
/// integrity (memory integrity); Microsoft's "Enable memory integrity" page, and the
/// DeviceGuardSoftwareSecure enum (1 Credential Guard, 2 HVCI).
const HVCI_SERVICE: i64 = 2;

/// The probe. Values (the manifest's folders) are assigned as single-quoted literals
/// ahead of this constant text, so they are data, never code.
const PROBE: &[&str] = &[
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
    // A registry value, or $null when the key or value is absent (Get-ItemProperty
    // throws then). Numbers stay numbers: DWORDs come back as Int32.
    "function Get-BgValue($key, $name) { try { (Get-ItemProperty -LiteralPath $key -Name $name).$name } catch { $null } }",
    "$bgCv = 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion'",
    "$bgCc = 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\CrashControl'",
    // Win32_PnPEntity (Windows 10 and later carry HardwareID): ConfigManagerErrorCode
    // 0 is "working properly"; Status is a CIM keyword (OK, Error, Degraded...), not
    // localized text. Filtered here to QEMU's devices; the host classifies them.
    "$bgDevices = @(Get-CimInstance -ClassName Win32_PnPEntity | Where-Object { $_.PNPDeviceID -like 'ACPI\\QEMU000*' -or $_.PNPDeviceID -like 'PCI\\VEN_1B36&DEV_0011*' } | ForEach-Object { $bgD = $_; [ordered]@{ instance = [string]$bgD.PNPDeviceID; hardware = @($bgD.HardwareID | ForEach-Object { [string]$_ }); error = $bgD.ConfigManagerErrorCode; status = [string]$bgD.Status; service = [string]$bgD.Service } })",
    // Win32_DeviceGuard exists from Windows 10 / Server 2016; absent, the entry is null.
    "$bgDg = $null",
    "try { $bgG = Get-CimInstance -Namespace 'root\\Microsoft\\Windows\\DeviceGuard' -ClassName Win32_DeviceGuard; $bgDg = [ordered]@{ vbs = $bgG.VirtualizationBasedSecurityStatus; running = @($bgG.SecurityServicesRunning); configured = @($bgG.SecurityServicesConfigured); ci = $bgG.CodeIntegrityPolicyEnforcementStatus } } catch { }",
    // The boot entry's AutoRecoveryEnabled (BcdLibraryBoolean_AutoRecoveryEnabled,
    // 0x16000009) through the documented BCD WMI provider (root\\wmi BcdStore) rather
    // than bcdedit's localized text; {fa926493-...} is the {current} entry's alias.
    "$bgRec = 'unread'",
    "try { $bgSt = (Invoke-CimMethod -Namespace 'root\\wmi' -ClassName BcdStore -MethodName OpenStore -Arguments @{ File = '' }).Store; $bgOb = (Invoke-CimMethod -InputObject $bgSt -MethodName OpenObject -Arguments @{ Id = '{fa926493-6f1c-4193-a414-58f0b2456d1e}' }).Object; $bgEl = Invoke-CimMethod -InputObject $bgOb -MethodName GetElement -Arguments @{ Type = [uint32]0x16000009 }; if ($bgEl.ReturnValue) { $bgRec = [bool]$bgEl.Element.Boolean } else { $bgRec = 'unset' } } catch { }",
    "$bgReport = [ordered]@{",
    "  build = Get-BgValue $bgCv 'CurrentBuildNumber'",
    "  product = Get-BgValue $bgCv 'ProductName'",
    "  installation = Get-BgValue $bgCv 'InstallationType'",
    "  devices = $bgDevices",
    "  crashDumpEnabled = Get-BgValue $bgCc 'CrashDumpEnabled'",
    "  autoReboot = Get-BgValue $bgCc 'AutoReboot'",
    "  deviceGuard = $bgDg",
    // 1 when this boot ran with Secure Boot; absent under BIOS.
    "  secureBoot = Get-BgValue 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecureBoot\\State' 'UEFISecureBootEnabled'",
    // The options the loader started this boot with (TESTSIGNING among them when
    // test signing is in effect): the running state, in fixed keywords.
    "  startOptions = Get-BgValue 'HKLM:\\SYSTEM\\CurrentControlSet\\Control' 'SystemStartOptions'",
    "  recovery = $bgRec",
    "  dirs = @($bgDirs | ForEach-Object { [ordered]@{ path = $_; exists = (Test-Path -LiteralPath $_ -PathType Container) } })",
    "}",
    // -InputObject, not the pipeline, so an array of one stays an array; escape
    // everything beyond ASCII so the console code page cannot mangle a localized name.
    "$bgJson = ConvertTo-Json -InputObject $bgReport -Depth 6 -Compress",
    // An explicit MatchEvaluator: no reliance on PowerShell converting a bare
    // script block to the delegate. A character outside the BMP is two UTF-16 units,
    // each escaped, which JSON reads back as the one character.
    "$bgJson = [regex]::Replace($bgJson, '[^\\x00-\\x7F]', [Text.RegularExpressions.MatchEvaluator]{ param($m) '\\u{0:x4}' -f [int][char]$m.Value })",
    "[Console]::Out.Write($bgTag + $bgJson + [char]10)",
    "exit 0",
];

/// The probe's argv: PowerShell with the folders to check and the report tag as
/// quoted literals, then [`PROBE`].
pub(crate) fn probe_argv(dirs: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = dirs.iter().map(|d| ps_quote(d)).collect();
    // `@(...)` keeps one folder an array; no folder is the empty array.
    let dirs = if quoted.is_empty() {
        "@()".to_string()
    } else {
        format!("@({})", quoted.join(", "))
    };
    let mut lines = vec![
        format!("$bgDirs = {dirs}"),
        format!("$bgTag = {}", ps_quote(REPORT_TAG)),
    ];
    lines.extend(PROBE.iter().map(|s| s.to_string()));
    powershell_argv(&lines.join("\n"))
}

/// One PnP device the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PnpDevice {
    pub instance: String,
    pub hardware: Vec<String>,
    /// Win32_PnPEntity ConfigManagerErrorCode; `None` when the guest reported none.
    pub error: Option<i64>,
    pub status: String,
    pub service: String,
}

/// A manifest folder and whether it exists in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestDir {
    pub path: String,
    pub exists: bool,
}

/// The boot entry's recovery setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    Enabled,
    Disabled,
    /// The entry has no AutoRecoveryEnabled element.
    Unset,
    /// The BCD provider could not be read.
    Unread,
}

/// Win32_DeviceGuard's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceGuard {
    /// VirtualizationBasedSecurityStatus: 0 off, 1 enabled but not running, 2 running.
    pub vbs: Option<i64>,
    pub running: Vec<i64>,
    pub configured: Vec<i64>,
}

/// What the probe reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub build: Option<u32>,
    pub product: Option<String>,
    pub installation: Option<String>,
    pub devices: Vec<PnpDevice>,
    pub crash_dump_enabled: Option<i64>,
    pub auto_reboot: Option<i64>,
    pub device_guard: Option<DeviceGuard>,
    pub secure_boot: Option<i64>,
    pub start_options: Option<String>,
    pub recovery: Recovery,
    pub dirs: Vec<GuestDir>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("the probe printed no report line (\"{REPORT_TAG}...\"){}", shown(.output))]
    NoReport { output: String },
    #[error("the probe's report is not JSON: {why}")]
    NotJson { why: String },
    #[error("the probe's report field {field}: {why}")]
    Field { field: &'static str, why: String },
}

/// Most bytes of guest output quoted in an error.
const QUOTED_OUTPUT_BYTES: usize = 400;

fn shown(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", quoted(output))
    }
}

/// Guest output quoted in a report line: trimmed, cut to [`QUOTED_OUTPUT_BYTES`] and
/// escaped, so it stays one line whatever the guest wrote.
pub(crate) fn quoted(output: &str) -> String {
    let output = output.trim();
    let mut end = output.len().min(QUOTED_OUTPUT_BYTES);
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &output[..end])
}

/// The items of what ConvertTo-Json made of a collection. Windows PowerShell 5.1 writes
/// a one-item collection reached through the pipeline as the item itself, nothing as
/// `null`, and an array wrapped in a PSObject as `{"value": [...], "Count": n}`; all
/// mean the same list.
fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("value") && o.contains_key("Count") => {
            items(&o["value"])
        }
        other => vec![other],
    }
}

/// An integer the guest wrote as a number or as a decimal string (a registry value
/// someone created as REG_SZ); `None` for null or absent.
fn int(value: Option<&Value>, field: &'static str) -> Result<Option<i64>, ProbeError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| ProbeError::Field {
            field,
            why: format!("{n} is not an integer"),
        }),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ProbeError::Field {
            field,
            why: format!("{s:?} is not an integer"),
        }),
        Some(other) => Err(ProbeError::Field {
            field,
            why: format!("{other} is not an integer"),
        }),
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn ints(value: Option<&Value>, field: &'static str) -> Result<Vec<i64>, ProbeError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    items(value)
        .into_iter()
        .map(|v| int(Some(v), field).map(|n| n.unwrap_or(0)))
        .collect()
}

impl Probe {
    /// Finds the tagged line in the probe's stdout and parses it.
    pub(crate) fn parse(stdout: &str) -> Result<Probe, ProbeError> {
        let line = stdout
            .lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(REPORT_TAG))
            .ok_or_else(|| ProbeError::NoReport {
                output: stdout.to_string(),
            })?;
        let report: Value =
            serde_json::from_str(line).map_err(|e| ProbeError::NotJson { why: e.to_string() })?;
        let Value::Object(report) = report else {
            return Err(ProbeError::NotJson {
                why: "the report is not a JSON object".into(),
            });
        };
        let get = |k: &str| report.get(k);
        let mut devices = Vec::new();
        for d in get("devices").map(items).unwrap_or_default() {
            devices.push(PnpDevice {
                instance: text(d.get("instance")).unwrap_or_default(),
                hardware: d
                    .get("hardware")
                    .map(items)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|h| text(Some(h)))
                    .collect(),
                error: int(d.get("error"), "devices.error")?,
                status: text(d.get("status")).unwrap_or_default(),
                service: text(d.get("service")).unwrap_or_default(),
            });
        }
        let device_guard = match get("deviceGuard") {
            None | Some(Value::Null) => None,
            Some(g) => Some(DeviceGuard {
                vbs: int(g.get("vbs"), "deviceGuard.vbs")?,
                running: ints(g.get("running"), "deviceGuard.running")?,
                configured: ints(g.get("configured"), "deviceGuard.configured")?,
            }),
        };
        let recovery = match get("recovery") {
            Some(Value::Bool(true)) => Recovery::Enabled,
            Some(Value::Bool(false)) => Recovery::Disabled,
            Some(Value::String(s)) if s == "unset" => Recovery::Unset,
            _ => Recovery::Unread,
        };
        let mut dirs = Vec::new();
        for d in get("dirs").map(items).unwrap_or_default() {
            dirs.push(GuestDir {
                path: text(d.get("path")).unwrap_or_default(),
                exists: d.get("exists").and_then(Value::as_bool).unwrap_or(false),
            });
        }
        let build = int(get("build"), "build")?.and_then(|b| u32::try_from(b).ok());
        Ok(Probe {
            build,
            product: text(get("product")),
            installation: text(get("installation")),
            devices,
            crash_dump_enabled: int(get("crashDumpEnabled"), "crashDumpEnabled")?,
            auto_reboot: int(get("autoReboot"), "autoReboot")?,
            device_guard,
            secure_boot: int(get("secureBoot"), "secureBoot")?,
            start_options: text(get("startOptions")),
            recovery,
            dirs,
        })
    }

    fn devices_matching(&self, ids: &[&str]) -> Vec<&PnpDevice> {
        let matches = |id: &str| {
            let id = id.to_ascii_uppercase();
            ids.iter().any(|want| {
                id == *want
                    || id.starts_with(&format!("{want}&"))
                    || id.starts_with(&format!("{want}\\"))
            })
        };
        self.devices
            .iter()
            .filter(|d| d.hardware.iter().any(|h| matches(h)) || matches(&d.instance))
            .collect()
    }
}

/// How a crash reaches the host in this configuration (issue 16's one model per
/// accelerator, as QEMU and virtio-win behave).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaptureModel {
    /// KVM with `hv-crash`: Windows writes its stop code to the Hyper-V crash MSRs
    /// and stops there (QEMU's docs/system/i386/hyperv.rst); the host dumps.
    HvCrash,
    /// pvpanic alone (TCG, or no Hyper-V enlightenments).
    Pvpanic,
}

/// The capture model a run of `manifest` under `accel` gets: qemu/command.rs adds
/// the Hyper-V flags (hv-crash among them) only under KVM with `machine.hyperv`.
pub(crate) fn capture_model(
    manifest: &crate::image::manifest::Manifest,
    accel: crate::qemu::accel::Accel,
) -> CaptureModel {
    if manifest.machine.hyperv && accel == crate::qemu::accel::Accel::Kvm {
        CaptureModel::HvCrash
    } else {
        CaptureModel::Pvpanic
    }
}

/// What the judges need from the manifest and the host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub model: CaptureModel,
    pub dump_format: DumpFormat,
    /// The manifest's boot.secure_boot.
    pub secure_boot: bool,
    /// The manifest's service start type, for service drivers.
    pub service_start: Option<ServiceStart>,
}

impl Context {
    /// The context a run of `manifest` under `accel` has. The boot-start caveat is
    /// about service drivers: a PnP package loads when Plug and Play starts it.
    pub(crate) fn of(
        manifest: &crate::image::manifest::Manifest,
        accel: crate::qemu::accel::Accel,
    ) -> Context {
        let service_start = match manifest.guest.driver_kind {
            Some(crate::guest::windows::DriverKind::Service) | None => manifest.guest.service_start,
            Some(_) => None,
        };
        Context {
            model: capture_model(manifest, accel),
            dump_format: manifest.guest.dump_format,
            secure_boot: manifest.boot.secure_boot,
            service_start,
        }
    }
}

/// One report line.
pub(crate) type Finding = (Level, &'static str, String);

/// Device Manager's error codes (Microsoft's "Device Manager error messages"), the
/// ones a missing or rejected virtio-win driver shows.
fn device_error_meaning(code: i64) -> &'static str {
    match code {
        1 => "not configured correctly",
        3 => "driver may be corrupted",
        10 => "cannot start",
        18 | 39 => "driver missing or corrupted: reinstall it",
        22 => "disabled",
        24 => "not present or not working",
        28 => "no driver installed",
        31 => "not working properly: Windows cannot load the driver",
        37 | 43 => "the driver reported a failure",
        52 => "the driver's signature cannot be verified",
        _ => "not working",
    }
}

fn judge_device(
    probe: &Probe,
    what: &'static str,
    ids: &[&str],
    missing: Level,
    inf: &str,
    working_note: &str,
) -> Finding {
    let devices = probe.devices_matching(ids);
    if devices.is_empty() {
        return (
            missing,
            what,
            format!(
                "Windows lists no {} device: QEMU's device is missing or Windows has not enumerated it",
                ids.join(" / ")
            ),
        );
    }
    if let Some(ok) = devices.iter().find(|d| d.error == Some(0)) {
        let service = if ok.service.is_empty() {
            String::new()
        } else {
            format!(", driver service {}", ok.service)
        };
        return (
            Level::Ok,
            what,
            format!("{} working{service}{working_note}", ok.instance),
        );
    }
    let d = devices[0];
    let code = d
        .error
        .map(|c| format!("ConfigManagerErrorCode {c}: {}", device_error_meaning(c)))
        .unwrap_or_else(|| format!("status {:?}", d.status));
    (
        missing,
        what,
        format!(
            "{} is not working ({code}): install virtio-win's {inf} (`pnputil /add-driver {inf} /install`, images/windows/GUIDE.md §3)",
            d.instance
        ),
    )
}

/// CrashDumpEnabled's values (Microsoft's "Overview of memory dump file options").
fn dump_kind(value: i64) -> &'static str {
    match value {
        0 => "none",
        1 => "complete (or active)",
        2 => "kernel",
        3 => "small (minidump)",
        7 => "automatic",
        _ => "unknown kind",
    }
}

fn judge_crash_capture(probe: &Probe, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(dumps) = probe.crash_dump_enabled else {
        out.push((
            Level::Note,
            "crash dumps",
            "CrashDumpEnabled could not be read (HKLM\\SYSTEM\\CurrentControlSet\\Control\\CrashControl)".into(),
        ));
        return out;
    };
    let kind = dump_kind(dumps);
    let auto_reboot = probe.auto_reboot.unwrap_or(1);
    match ctx.model {
        CaptureModel::HvCrash => {
            out.push((
                Level::Ok,
                "crash dumps",
                format!(
                    "hv-crash (KVM): the stop code arrives in GUEST_PANICKED, the guest is paused and bootgate dumps it from the host; Windows writes no dump of its own then (CrashDumpEnabled = {dumps}, {kind}, matters only without hv-crash)"
                ),
            ));
        }
        CaptureModel::Pvpanic if dumps == 0 => {
            let host = match ctx.dump_format {
                DumpFormat::WinDmp => "a WinDbg dump (needs the fwcfg driver)",
                _ => "an ELF dump",
            };
            out.push((
                Level::Ok,
                "crash dumps",
                format!("CrashDumpEnabled = 0: a bugcheck reaches QEMU as GUEST_PANICKED, the guest is paused and bootgate takes {host} from the host"),
            ));
        }
        CaptureModel::Pvpanic => {
            out.push((
                Level::Ok,
                "crash dumps",
                format!(
                    "CrashDumpEnabled = {dumps} ({kind}): virtio-win's pvpanic sends GUEST_CRASHLOADED as Windows starts writing its own dump; bootgate lets it finish, and collects it after the guest reboots"
                ),
            ));
            if auto_reboot != 1 {
                out.push((
                    Level::Fail,
                    "auto reboot",
                    format!(
                        "AutoReboot = {auto_reboot}: after writing its dump Windows stays at the stop screen, so the crash never ends and the dump is never collected; set CrashControl AutoReboot = 1 (GUIDE.md §5)"
                    ),
                ));
            }
        }
    }
    let guest_writes_dump = ctx.model == CaptureModel::Pvpanic && dumps != 0;
    if guest_writes_dump && auto_reboot == 1 {
        out.push((
            Level::Ok,
            "auto reboot",
            "AutoReboot = 1: the guest reboots once its dump is written".into(),
        ));
    } else if !guest_writes_dump {
        // bootgate resets a paused guest itself; AutoReboot only matters once
        // Windows writes its own dump.
        let level = if auto_reboot == 1 {
            Level::Ok
        } else {
            Level::Note
        };
        out.push((
            level,
            "auto reboot",
            format!("AutoReboot = {auto_reboot}: bootgate resets the paused crashed guest itself; set 1 in case the image later runs with dumps enabled"),
        ));
    }
    if ctx.model == CaptureModel::Pvpanic && ctx.service_start == Some(ServiceStart::Boot) {
        out.push((
            Level::Note,
            "boot-start crashes",
            "pvpanic is a demand-start PnP driver (pvpanic.inf StartType 3): a boot-start driver that crashes in DriverEntry bugchecks before it loads, so that crash reaches the host only as a reset (recorded as a crashing boot with an unknown code; the dump Windows writes, if any, is collected afterwards)".into(),
        ));
    }
    out
}

fn judge_security(probe: &Probe, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let test_signing = probe.start_options.as_deref().map(|o| {
        o.split_whitespace()
            .any(|w| w.eq_ignore_ascii_case("TESTSIGNING"))
    });
    match test_signing {
        Some(true) => out.push((
            Level::Ok,
            "test signing",
            "TESTSIGNING is in this boot's start options: test-signed drivers load".into(),
        )),
        Some(false) => out.push((
            Level::Note,
            "test signing",
            "not in effect (no TESTSIGNING in SystemStartOptions): only production- or attestation-signed drivers load (`bcdedit /set testsigning on`, not possible under Secure Boot)".into(),
        )),
        None => out.push((
            Level::Fail,
            "test signing",
            "SystemStartOptions could not be read: does the agent run as LocalSystem?".into(),
        )),
    }
    let secure = probe.secure_boot == Some(1);
    let secure_text = match (probe.secure_boot, secure) {
        (None, _) => "not reported (a BIOS boot has no UEFI Secure Boot state)".to_string(),
        (_, true) => "on: test signing cannot be turned on; candidate drivers must be production- or attestation-signed".to_string(),
        (Some(v), false) => format!("off (UEFISecureBootEnabled = {v})"),
    };
    let level = if secure != ctx.secure_boot {
        Level::Note
    } else {
        Level::Ok
    };
    let mismatch = if secure != ctx.secure_boot {
        format!("; the manifest says boot.secure_boot = {}", ctx.secure_boot)
    } else {
        String::new()
    };
    out.push((level, "secure boot", format!("{secure_text}{mismatch}")));
    match &probe.device_guard {
        None => out.push((
            Level::Note,
            "vbs/hvci",
            "Win32_DeviceGuard is not available: no virtualization-based security on this build"
                .into(),
        )),
        Some(g) => {
            let hvci = g.running.contains(&HVCI_SERVICE);
            let vbs = match g.vbs {
                Some(0) => "off",
                Some(1) => "enabled, not running",
                Some(2) => "running",
                _ => "unknown",
            };
            if hvci {
                out.push((
                    Level::Note,
                    "vbs/hvci",
                    format!("VBS {vbs}, memory integrity (HVCI) running: code integrity may refuse a test-signed or HVCI-incompatible driver (CodeIntegrity events 3033/3087); turn HVCI off in a test image, or test that the driver is HVCI-compatible"),
                ));
            } else {
                let configured = if g.configured.contains(&HVCI_SERVICE) {
                    " (configured, starts after a reboot)"
                } else {
                    ""
                };
                out.push((
                    Level::Ok,
                    "vbs/hvci",
                    format!("VBS {vbs}, memory integrity (HVCI) not running{configured}"),
                ));
            }
        }
    }
    out
}

fn judge_recovery(probe: &Probe) -> Finding {
    match probe.recovery {
        Recovery::Disabled => (
            Level::Ok,
            "recovery",
            "recoveryenabled No: a boot loop stays visible".into(),
        ),
        Recovery::Enabled | Recovery::Unset => (
            Level::Note,
            "recovery",
            "WinRE may take over a looping guest: `bcdedit /set {default} recoveryenabled No`".into(),
        ),
        Recovery::Unread => (
            Level::Note,
            "recovery",
            "the boot entry could not be read through the BCD WMI provider; check `bcdedit /enum {current}` shows recoveryenabled No".into(),
        ),
    }
}

/// Every report line the probe's output gives.
pub(crate) fn judge(probe: &Probe, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let build = probe
        .build
        .map_or("unknown build".to_string(), |b| format!("build {b}"));
    // ProductName says "Windows 10" on Windows 11 too; the build tells them apart.
    let family = match (probe.build, probe.installation.as_deref()) {
        (_, Some(kind)) if kind.starts_with("Server") => "Windows Server",
        (Some(b), _) if b >= 22000 => "Windows 11",
        (Some(_), _) => "Windows 10",
        _ => "Windows",
    };
    out.push((
        Level::Ok,
        "windows",
        format!(
            "{family}, {build} ({})",
            probe.product.as_deref().unwrap_or("product not reported")
        ),
    ));
    let pvpanic_note = match ctx.model {
        CaptureModel::HvCrash => ": bugchecks reach QEMU through hv-crash and pvpanic",
        CaptureModel::Pvpanic => ": bugchecks reach QEMU as panic events",
    };
    out.push(judge_device(
        probe,
        "pvpanic",
        PVPANIC_IDS,
        Level::Fail,
        "pvpanic.inf",
        pvpanic_note,
    ));
    let fwcfg_missing = if ctx.dump_format == DumpFormat::WinDmp {
        Level::Fail
    } else {
        Level::Note
    };
    out.push(judge_device(
        probe,
        "fwcfg",
        FWCFG_IDS,
        fwcfg_missing,
        "fwcfg.inf",
        ": QEMU's win-dmp dumps can read the guest's kernel data",
    ));
    out.extend(judge_crash_capture(probe, ctx));
    out.extend(judge_security(probe, ctx));
    out.push(judge_recovery(probe));
    out
}

/// The report line for a manifest folder, found by its guest path.
pub(crate) fn judge_dir(probe: &Probe, field: &'static str, path: &str) -> Finding {
    match probe.dirs.iter().find(|d| d.path == path) {
        Some(d) if d.exists => (Level::Ok, field, format!("{path} exists")),
        Some(_) => (
            Level::Fail,
            field,
            format!(
                "{path} is missing in the guest: the agent does not create folders (GUIDE.md §7)"
            ),
        ),
        None => (
            Level::Fail,
            field,
            format!("the probe did not report {path}"),
        ),
    }
}

#[cfg(test)]
mod tests;
