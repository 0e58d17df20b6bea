//! Image manifests (`image.toml`): what an image is and how to boot and drive it.
//!
//! A manifest describes the OS family, the system disk, how to boot (firmware alone,
//! or a kernel and initrd), the machine size, what "ready" means, and the guest paths
//! the driver and content steps use. Relative paths resolve against the manifest's
//! own folder, so an image folder can be moved or shared as a whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::confine::{confine, PathPolicy};
use crate::guest::{windows, GuestProfile};
pub(crate) use crate::guest::{GuestPaths, LinuxProfile, OsFamily};
use crate::image::firmware;
use crate::image::kernel::Kernel;
use crate::util::{field_offset, line_col, snippet};

/// Host folders that hold firmware packages (OVMF, SeaBIOS, QEMU's own): an
/// image may name its UEFI files there.
const FIRMWARE_ROOTS: &[&str] = &["/usr/share"];
/// Host folders where distributions install kernel build headers: an image may
/// name its `[kernel] headers` there (they are read only, by the sandboxed build).
const HEADERS_ROOTS: &[&str] = &["/usr/src", "/lib/modules", "/usr/lib/modules"];
/// Host folders where distributions install kernel debug files: an image may name
/// its `[kernel] debug_vmlinux` there (read only, by the crash tool on the host).
const DEBUG_ROOTS: &[&str] = &["/usr/lib/debug", "/lib/modules", "/usr/lib/modules"];

/// Ready timeout used when a manifest does not give one.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read image manifest {path}: {source} (a relative image path is resolved from the suite file's folder)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    #[error(
        "{manifest}: {field} names {path}, which does not exist: install the UEFI firmware (`apt-get install {pkg}`, or run tools/host-setup) or set {field} in the manifest",
        pkg = firmware::OVMF_PACKAGE
    )]
    MissingFirmware {
        manifest: PathBuf,
        field: &'static str,
        path: PathBuf,
    },
    #[error("{manifest}: {field}: {message}")]
    Inconsistent {
        manifest: PathBuf,
        field: &'static str,
        message: String,
    },
    #[error(
        "{manifest}: {field} names {path}, which does not exist: build the image or fix the path"
    )]
    MissingFile {
        manifest: PathBuf,
        field: &'static str,
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    Bios,
    /// OVMF: read-only code plus a per-VM copy of the variable store.
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// A loaded manifest with every path made absolute.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file itself.
    pub path: PathBuf,
    pub name: String,
    pub os: OsFamily,
    /// Linux: how the guest loads drivers (Windows: unused). Given as `profile`, or
    /// inferred: `demo` when the manifest names a `drivers_registry`, else `distro`.
    pub linux_profile: LinuxProfile,
    pub boot: Boot,
    pub disk: Disk,
    pub machine: Machine,
    pub ready: Ready,
    pub guest: GuestPaths,
    pub kernel: Kernel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    #[serde(default = "bios")]
    pub firmware: Firmware,
    /// UEFI only: Secure Boot on, with Microsoft's keys enrolled (Windows 11 needs
    /// it). Needs `machine.type = "q35"` (the firmware runs in SMM).
    #[serde(default)]
    pub secure_boot: bool,
    /// UEFI only: the firmware code and the variable-store template. Default: the
    /// host's OVMF (package `ovmf`), the Secure Boot build when `secure_boot`.
    pub uefi_code: Option<PathBuf>,
    pub uefi_vars: Option<PathBuf>,
    /// Direct kernel boot: kernel image, optional initrd, command line.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub append: String,
}

fn bios() -> Firmware {
    Firmware::Bios
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// QEMU machine type (`pc`, `q35`).
    #[serde(rename = "type", default = "pc")]
    pub machine_type: String,
    pub memory_mib: u32,
    #[serde(default = "one_cpu")]
    pub cpus: u32,
    /// A software TPM 2.0 (swtpm, one per VM, its state in the VM's folder).
    #[serde(default)]
    pub tpm: bool,
    /// Hyper-V enlightenments for Windows guests (hv-relaxed, hv-vapic, hv-time,
    /// hv-crash, ...). KVM only: under TCG they are left out; hv-crash is what
    /// puts the bugcheck code into the panic event.
    #[serde(default)]
    pub hyperv: bool,
}

fn pc() -> String {
    "pc".into()
}

fn one_cpu() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// Ready means the guest agent answers a sync. The only readiness bootgate trusts
    /// today: a console line alone does not prove the guest can run steps.
    #[serde(default = "yes")]
    pub agent: bool,
    /// A console line the guest prints when ready; recorded in the timeline.
    pub console_line: Option<String>,
    #[serde(
        default = "default_ready_timeout",
        deserialize_with = "crate::suite::duration"
    )]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_ready_timeout() -> Duration {
    DEFAULT_READY_TIMEOUT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    os: OsFamily,
    profile: Option<LinuxProfile>,
    boot: Boot,
    disk: Disk,
    machine: Machine,
    ready: Ready,
    guest: GuestPaths,
    #[serde(default)]
    kernel: Kernel,
}

impl Manifest {
    /// What the steps of a suite mean in this image's guest.
    pub(crate) fn guest_profile(&self) -> GuestProfile {
        GuestProfile::new(self.os, self.linux_profile, &self.path, &self.guest)
    }

    /// Loads a manifest whose own files must lie in its folder (or the host's
    /// package folders, [`system_roots`]), quoting its text in errors: a manifest
    /// the user names, or one bootgate built.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::load_with(path, PathPolicy::InsideSuite, true)
    }

    /// [`Manifest::load`] with a path policy for its files (`--allow-outside-paths`
    /// lets them be anywhere) and whether its text may be quoted in a parse error:
    /// not when the file is outside the suite's folder, so a suite cannot make
    /// bootgate print a host file (`image = "/etc/passwd"`).
    pub fn load_with(
        path: &Path,
        policy: PathPolicy,
        quote: bool,
    ) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |offset: usize, message: String| {
            let (line, column) = line_col(&text, offset);
            ManifestError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
                snippet: if quote {
                    snippet(&text, line, column)
                } else {
                    String::new()
                },
            }
        };
        let raw: RawManifest = toml::from_str(&text).map_err(|e| {
            let message = if quote {
                e.message().trim().to_string()
            } else {
                // toml's own message can quote the file ("invalid type: string ..."),
                // so only the place is told.
                "not a valid image manifest (the file is outside the suite's folder, so its text is not shown)".to_string()
            };
            invalid(e.span().map_or(0, |s| s.start), message)
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let cache = crate::cache::images_root();
        // Every file the manifest names, by the one rule (crate::confine): in the
        // manifest's folder, or below the host folders that hold only package
        // files of that kind, or bootgate's own image cache.
        let place = |table: &str, key: &'static str, written: PathBuf, roots: &[&str]| {
            let mut allowed = vec![cache.as_path()];
            allowed.extend(roots.iter().map(Path::new));
            confine(dir, &written, policy, &allowed).map_err(|outside| {
                let header = text.find(&format!("[{table}]")).unwrap_or(0);
                let offset = field_offset(&text, header, key, None).unwrap_or(header);
                invalid(offset, outside.message(&format!("{table}.{key}")))
            })
        };
        let place_opt =
            |table: &str, key: &'static str, written: Option<PathBuf>, roots: &[&str]| {
                written.map(|w| place(table, key, w, roots)).transpose()
            };
        let mut boot = raw.boot;
        boot.kernel = place_opt("boot", "kernel", boot.kernel, &[])?;
        boot.initrd = place_opt("boot", "initrd", boot.initrd, &[])?;
        boot.uefi_code = place_opt("boot", "uefi_code", boot.uefi_code, FIRMWARE_ROOTS)?;
        boot.uefi_vars = place_opt("boot", "uefi_vars", boot.uefi_vars, FIRMWARE_ROOTS)?;
        let mut disk = raw.disk;
        disk.path = place("disk", "path", disk.path, &[])?;
        let mut kernel = raw.kernel;
        kernel.headers = place_opt("kernel", "headers", kernel.headers, HEADERS_ROOTS)?;
        kernel.debug_vmlinux =
            place_opt("kernel", "debug_vmlinux", kernel.debug_vmlinux, DEBUG_ROOTS)?;
        let mut guest = raw.guest;
        if let Some(helper) = guest.offline_helper.clone() {
            let header = text.find("[guest]").unwrap_or(0);
            let offset = field_offset(&text, header, "offline_helper", None).unwrap_or(header);
            if raw.os != OsFamily::Windows {
                return Err(invalid(
                    offset,
                    "guest.offline_helper: only windows images take this field (a linux image's helper VM is the image itself, with guest.offline_mount)".into(),
                ));
            }
            if super::builtin::find(&helper).is_none() {
                if !crate::suite::image_is_path(&helper) {
                    return Err(invalid(
                        offset,
                        format!(
                            "guest.offline_helper: {helper:?} is neither a built-in image ({}) nor a path to an image.toml",
                            super::BUILT_IN.join(", ")
                        ),
                    ));
                }
                let placed = place("guest", "offline_helper", PathBuf::from(&helper), &[])?;
                let manifest_file = if placed.is_dir() {
                    placed.join("image.toml")
                } else {
                    placed
                };
                if !manifest_file.is_file() {
                    return Err(invalid(
                        offset,
                        format!(
                            "guest.offline_helper: {} does not exist (name a helper image's image.toml, or leave the field out for the built-in \"ntfs-helper\")",
                            manifest_file.display()
                        ),
                    ));
                }
                guest.offline_helper = Some(manifest_file.display().to_string());
            }
        }
        let inferred = match guest.drivers_registry {
            Some(_) => LinuxProfile::Demo,
            None => LinuxProfile::Distro,
        };
        let mut manifest = Manifest {
            path: path.to_path_buf(),
            name: raw.name,
            os: raw.os,
            linux_profile: raw.profile.unwrap_or(inferred),
            boot,
            disk,
            machine: raw.machine,
            ready: raw.ready,
            guest,
            kernel,
        };
        manifest.check_profile(raw.profile.is_some())?;
        manifest.check_platform()?;
        // Guest paths are the guest's: Windows paths for a Windows image, and no field
        // of the other OS family (it would be ignored, hiding a mistake).
        windows::path::check_guest(manifest.os, &manifest.guest).map_err(|p| {
            ManifestError::Inconsistent {
                manifest: manifest.path.clone(),
                field: p.field,
                message: p.message,
            }
        })?;
        manifest.resolve_firmware();
        manifest.check_files()?;
        Ok(manifest)
    }

    /// The Linux profile's fields: the demo's registry belongs to the demo profile,
    /// and a Windows image has no Linux profile.
    fn check_profile(&self, given: bool) -> Result<(), ManifestError> {
        let inconsistent = |field, message: &str| ManifestError::Inconsistent {
            manifest: self.path.clone(),
            field,
            message: message.to_string(),
        };
        match (self.os, self.linux_profile) {
            (OsFamily::Windows, _) if given => Err(inconsistent(
                "profile",
                "only linux images take a profile (\"demo\" or \"distro\"): remove it",
            )),
            (OsFamily::Windows, _) => Ok(()),
            (OsFamily::Linux, LinuxProfile::Demo) if self.guest.drivers_registry.is_none() => {
                Err(inconsistent(
                    "guest.drivers_registry",
                    "the demo profile registers boot drivers in a registry file: name it, or use profile = \"distro\" (modules-load.d, modprobe.d, depmod)",
                ))
            }
            (OsFamily::Linux, LinuxProfile::Distro) if self.guest.drivers_registry.is_some() => {
                Err(inconsistent(
                    "guest.drivers_registry",
                    "a distribution loads modules through modules-load.d and modprobe.d, not the demo's registry file: remove drivers_registry (or use profile = \"demo\")",
                ))
            }
            (OsFamily::Linux, LinuxProfile::Demo) if self.guest.initramfs_update.is_some() => {
                Err(inconsistent(
                    "guest.initramfs_update",
                    "the demo guest's initramfs is the host's file: only profile = \"distro\" images rebuild theirs",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Combinations that QEMU would reject, said in the manifest's own terms.
    fn check_platform(&self) -> Result<(), ManifestError> {
        let inconsistent = |field, message: &str| ManifestError::Inconsistent {
            manifest: self.path.clone(),
            field,
            message: message.to_string(),
        };
        let uefi = self.boot.firmware == Firmware::Uefi;
        if !uefi && (self.boot.uefi_code.is_some() || self.boot.uefi_vars.is_some()) {
            return Err(inconsistent(
                "boot.uefi_code",
                "UEFI firmware files are given but boot.firmware is not \"uefi\"",
            ));
        }
        if self.boot.secure_boot && !uefi {
            return Err(inconsistent(
                "boot.secure_boot",
                "Secure Boot needs boot.firmware = \"uefi\"",
            ));
        }
        if self.boot.secure_boot && !self.machine.machine_type.starts_with("q35") {
            return Err(inconsistent(
                "boot.secure_boot",
                "Secure Boot needs machine.type = \"q35\" (its firmware runs in SMM)",
            ));
        }
        if self.boot.uefi_code.is_some() != self.boot.uefi_vars.is_some() {
            return Err(inconsistent(
                "boot.uefi_vars",
                "give both boot.uefi_code and boot.uefi_vars (a matched pair), or neither",
            ));
        }
        Ok(())
    }

    /// Fills in the host's OVMF for a UEFI image that names no firmware files.
    fn resolve_firmware(&mut self) {
        if self.boot.firmware != Firmware::Uefi || self.boot.uefi_code.is_some() {
            return;
        }
        let (code, vars) = firmware::default_pair(self.boot.secure_boot, Path::is_file);
        self.boot.uefi_code = Some(code);
        self.boot.uefi_vars = Some(vars);
    }

    /// Whether a VM of this image can start from a saved ready state. Only plain BIOS
    /// machines without a TPM: a TPM's state lives in swtpm, outside QEMU's stream,
    /// and a UEFI variable store would have to be saved alongside; those boot cold.
    pub(crate) fn supports_saved_state(&self) -> bool {
        self.boot.firmware == Firmware::Bios && !self.machine.tpm
    }

    fn check_files(&self) -> Result<(), ManifestError> {
        let files = [
            ("disk.path", Some(&self.disk.path)),
            ("boot.kernel", self.boot.kernel.as_ref()),
            ("boot.initrd", self.boot.initrd.as_ref()),
            ("boot.uefi_code", self.boot.uefi_code.as_ref()),
            ("boot.uefi_vars", self.boot.uefi_vars.as_ref()),
        ];
        for (field, path) in files {
            if let Some(path) = path {
                if field.starts_with("boot.uefi") && !path.is_file() {
                    return Err(ManifestError::MissingFirmware {
                        manifest: self.path.clone(),
                        field,
                        path: path.clone(),
                    });
                }
                if !path.is_file() {
                    return Err(ManifestError::MissingFile {
                        manifest: self.path.clone(),
                        field,
                        path: path.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every file the image is made of, for provenance hashes.
    pub(crate) fn input_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone(), self.disk.path.clone()];
        files.extend(self.boot.kernel.clone());
        files.extend(self.boot.initrd.clone());
        // The firmware is part of the machine: a different OVMF is different evidence.
        files.extend(self.boot.uefi_code.clone());
        files.extend(self.boot.uefi_vars.clone());
        files
    }

    /// The release the guest kernel runs, when the manifest or build record says.
    pub(crate) fn kernel_release(&self) -> Option<String> {
        crate::image::kernel::release(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../../images/demo/image.toml");

    fn write_image(dir: &Path, text: &str) -> PathBuf {
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let path = dir.join("image.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Each file a manifest names, pointed outside its folder: refused at the
    /// field's own line, with the flag named; allowed with it.
    #[test]
    fn manifest_files_outside_its_folder_are_refused_at_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::create_dir(&image).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), image.join("link")).unwrap();
        let secret = dir.path().join("secret").display().to_string();
        for (field, was) in [
            ("kernel", "kernel = \"vmlinuz\""),
            ("initrd", "initrd = \"initrd.img\""),
            ("path", "path = \"system.qcow2\""),
        ] {
            for written in [secret.as_str(), "../secret", "link"] {
                let key = was.split(' ').next().unwrap();
                let text = DEMO.replace(was, &format!("{key} = {written:?}"));
                let path = write_image(&image, &text);
                let want = text
                    .lines()
                    .position(|l| l.starts_with(&format!("{key} =")))
                    .unwrap()
                    + 1;
                match Manifest::load(&path) {
                    Err(ManifestError::Invalid {
                        line,
                        column,
                        message,
                        ..
                    }) => {
                        assert_eq!((line, column), (want, 1), "{field} {written}: {message}");
                        assert!(message.contains("--allow-outside-paths"), "{message}");
                    }
                    other => panic!("{field} {written}: expected Invalid, got {other:?}"),
                }
                assert!(
                    Manifest::load_with(&path, PathPolicy::Anywhere, true).is_ok(),
                    "{field} {written} with the flag"
                );
            }
        }
        // [kernel] headers: the manifest's folder or the host's header folders only.
        let text =
            format!("{DEMO}\n[kernel]\nrelease = \"6.1.0-1-amd64\"\nheaders = \"/home/x/hdrs\"\n");
        let err = Manifest::load(&write_image(&image, &text))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kernel.headers") && err.contains("is an absolute path"),
            "{err}"
        );
        let text = text.replace("/home/x/hdrs", "/usr/src/linux-headers-6.1.0-1-amd64");
        assert!(Manifest::load(&write_image(&image, &text)).is_ok());
    }

    #[test]
    fn an_outside_manifest_that_does_not_parse_is_located_but_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let quiet = Manifest::load_with(&path, PathPolicy::Anywhere, false)
            .unwrap_err()
            .to_string();
        assert!(quiet.contains("passwd:1:"), "{quiet}");
        assert!(!quiet.contains("root:x"), "the file's text leaked: {quiet}");
        let own = Manifest::load(&path).unwrap_err().to_string();
        assert!(own.contains("root:x"), "a user's own file is quoted: {own}");
    }

    #[test]
    fn demo_manifest_parses_and_paths_are_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::load(&write_image(dir.path(), DEMO)).unwrap();
        assert_eq!(m.os, OsFamily::Linux);
        assert_eq!(m.disk.path, dir.path().join("system.qcow2"));
        assert_eq!(
            m.boot.kernel.as_deref(),
            Some(dir.path().join("vmlinuz").as_path())
        );
        assert!(m.ready.agent);
        assert_eq!(m.guest.shell[0], "/bin/sh");
    }

    #[test]
    fn unknown_key_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let text = DEMO.replace("memory_mib", "memory_mb");
        match Manifest::load(&write_image(dir.path(), &text)) {
            Err(ManifestError::Invalid { message, line, .. }) => {
                assert!(message.contains("memory_mb"), "{message}");
                assert!(line > 1);
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn dump_format_defaults_to_auto_and_a_bad_one_is_located() {
        use crate::guest::DumpFormat;
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::load(&write_image(dir.path(), DEMO)).unwrap();
        assert_eq!(m.guest.dump_format, DumpFormat::Auto);
        for (written, format) in [
            ("elf", DumpFormat::Elf),
            ("kdump-zlib", DumpFormat::KdumpZlib),
            ("kdump-lzo", DumpFormat::KdumpLzo),
            ("kdump-snappy", DumpFormat::KdumpSnappy),
        ] {
            let text = DEMO.replace(
                "[guest]\n",
                &format!("[guest]\ndump_format = {written:?}\n"),
            );
            let m = Manifest::load(&write_image(dir.path(), &text)).unwrap();
            assert_eq!(m.guest.dump_format, format, "{written}");
        }
        let text = DEMO.replace("[guest]\n", "[guest]\ndump_format = \"kdump-xz\"\n");
        match Manifest::load(&write_image(dir.path(), &text)) {
            Err(ManifestError::Invalid { message, line, .. }) => {
                assert!(
                    message.contains("kdump-xz") && message.contains("kdump-lzo"),
                    "{message}"
                );
                let at = DEMO.lines().position(|l| l == "[guest]").unwrap() + 2;
                assert_eq!(line, at, "{message}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn uefi_fills_in_a_matched_firmware_pair_or_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let text = DEMO.replace("firmware = \"bios\"", "firmware = \"uefi\"");
        assert_ne!(text, DEMO);
        let path = write_image(dir.path(), &text);
        match Manifest::load(&path) {
            Ok(m) => {
                let code = m.boot.uefi_code.clone().unwrap();
                assert!(code.is_file() && !code.to_string_lossy().contains("secboot"));
                assert!(m.input_files().contains(&code), "firmware is hashed");
                assert!(!m.supports_saved_state());
            }
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("boot.uefi_code") && e.contains("apt-get install ovmf"),
                    "{e}"
                );
            }
        }
        // Given explicitly, relative to the manifest.
        std::fs::write(dir.path().join("code.fd"), b"c").unwrap();
        std::fs::write(dir.path().join("vars.fd"), b"v").unwrap();
        let text = text.replace(
            "[disk]",
            "uefi_code = \"code.fd\"\nuefi_vars = \"vars.fd\"\n\n[disk]",
        );
        let m = Manifest::load(&write_image(dir.path(), &text)).unwrap();
        assert_eq!(m.boot.uefi_vars, Some(dir.path().join("vars.fd")));
    }

    #[test]
    fn platform_contradictions_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let secure_on_bios = DEMO.replace("[disk]", "secure_boot = true\n\n[disk]");
        let err = Manifest::load(&write_image(dir.path(), &secure_on_bios))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("boot.secure_boot") && err.contains("uefi"),
            "{err}"
        );
        let secure_on_pc = secure_on_bios.replace("firmware = \"bios\"", "firmware = \"uefi\"");
        let err = Manifest::load(&write_image(dir.path(), &secure_on_pc))
            .unwrap_err()
            .to_string();
        assert!(err.contains("q35"), "{err}");
        let half_pair = DEMO
            .replace("firmware = \"bios\"", "firmware = \"uefi\"")
            .replace("[disk]", "uefi_code = \"vmlinuz\"\n\n[disk]");
        let err = Manifest::load(&write_image(dir.path(), &half_pair))
            .unwrap_err()
            .to_string();
        assert!(err.contains("boot.uefi_vars"), "{err}");
        let m = Manifest::load(&write_image(dir.path(), DEMO)).unwrap();
        assert!(m.supports_saved_state());
    }

    use crate::testing::images::{write_windows_image, WINDOWS_TEMPLATE as WINDOWS};

    #[test]
    fn windows_profile_from_the_template_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_windows_image(dir.path(), WINDOWS);
        let p = Manifest::load(&path).unwrap().guest_profile();
        assert_eq!(p.os, OsFamily::Windows);
        assert_eq!(
            p.driver_path("sensor").unwrap(),
            r"C:\Windows\System32\drivers\sensor.sys"
        );
        let cmd = p.register_driver("sensor", "", false, false).unwrap();
        assert!(cmd.argv[6].contains("$bgStart = 'boot'"), "{}", cmd.argv[6]);
        assert!(
            cmd.argv[6].contains("$bgDrives = @('C')"),
            "{}",
            cmd.argv[6]
        );
        assert_eq!(
            p.list_crash_dumps().unwrap().argv[6]
                .matches("%SystemRoot%")
                .count(),
            2
        );
    }

    #[test]
    fn windows_template_loads_with_its_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::load(&write_windows_image(dir.path(), WINDOWS)).unwrap();
        assert_eq!(m.os, OsFamily::Windows);
        assert_eq!(m.disk.path, dir.path().join("windows.qcow2"));
        assert_eq!(m.disk.format, DiskFormat::Qcow2);
        assert_eq!(m.boot.kernel, None);
        assert!(
            m.machine.hyperv,
            "hv-crash puts the bugcheck into the panic event"
        );
        assert!(m.ready.agent);
        // The template's shell is exactly the prefix the Windows commands are built
        // and tested with.
        assert_eq!(m.guest.shell, windows::command::POWERSHELL);
        assert_eq!(
            m.guest.drivers_dir.as_deref(),
            Some(r"C:\Windows\System32\drivers")
        );
        assert_eq!(m.guest.driver_kind, Some(windows::DriverKind::Service));
        assert_eq!(m.guest.service_start, Some(windows::ServiceStart::Boot));
        assert_eq!(
            m.guest.minidump_dir.as_deref(),
            Some(windows::DEFAULT_MINIDUMP_DIR)
        );
        assert_eq!(
            m.guest.memory_dump_path.as_deref(),
            Some(windows::DEFAULT_MEMORY_DUMP)
        );
        assert_eq!(m.guest.drivers_registry, None);
        std::fs::remove_file(dir.path().join("windows.qcow2")).unwrap();
        let err = Manifest::load(&dir.path().join("image.toml")).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::MissingFile {
                    field: "disk.path",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// The template's commented options are real: uncommented as written, the
    /// manifest loads and means what the comments say.
    #[test]
    fn windows_template_commented_options_load_as_written() {
        let mut text = String::new();
        let mut minifilter = String::new();
        let options = [
            "# service_type",
            "# load_order_group",
            "# install_timeout",
            "# command_timeout",
            "# system_root",
            "# offline_helper",
        ];
        let mut in_table = false;
        for line in WINDOWS.lines() {
            in_table = line == "#   [guest.minifilter]"
                || (in_table && line.starts_with("#   ") && !line.starts_with("#    "));
            if in_table {
                minifilter.push_str(&line[4..]);
                minifilter.push('\n');
            } else if options.iter().any(|p| line.starts_with(p)) {
                text.push_str(&line[2..]);
                text.push('\n');
            } else {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str(&minifilter);
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::load(&write_windows_image(dir.path(), &text)).unwrap();
        assert_eq!(m.guest.service_type, Some(windows::ServiceType::Filesys));
        assert_eq!(
            m.guest.load_order_group.as_deref(),
            Some("FSFilter Activity Monitor")
        );
        assert_eq!(
            m.guest.minifilter.as_ref().map(|f| f.altitude.as_str()),
            Some("385200")
        );
        assert_eq!(
            m.guest.install_timeout,
            Some(std::time::Duration::from_secs(30 * 60))
        );
        assert_eq!(
            m.guest.command_timeout,
            Some(std::time::Duration::from_secs(5 * 60))
        );
        assert_eq!(m.guest.system_root.as_deref(), Some(r"C:\Windows"));
    }

    #[test]
    fn windows_manifest_with_unix_paths_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let text = WINDOWS.replace(
            r"drivers_dir = 'C:\Windows\System32\drivers'",
            r#"drivers_dir = "/system/drivers""#,
        );
        assert_ne!(text, WINDOWS, "the template's drivers_dir line changed");
        let path = write_windows_image(dir.path(), &text);
        let err = Manifest::load(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::Inconsistent {
                    field: "guest.drivers_dir",
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}: guest.drivers_dir: ", path.display()))
                && message.contains("\"/system/drivers\" is not a windows path"),
            "{message}"
        );
    }

    /// guest.offline_helper: a built-in name or an image.toml path, Windows only,
    /// errors at its line; %SystemRoot% (system_root) a Windows path.
    #[test]
    fn offline_helper_names_a_built_in_or_a_manifest_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let with = |extra: &str| WINDOWS.replace("[guest]\n", &format!("[guest]\n{extra}\n"));
        let ok = Manifest::load(&write_windows_image(
            dir.path(),
            &with("offline_helper = \"ntfs-helper\""),
        ))
        .unwrap();
        assert_eq!(ok.guest_profile().offline_helper().unwrap(), "ntfs-helper");
        let default = Manifest::load(&write_windows_image(dir.path(), WINDOWS)).unwrap();
        assert_eq!(
            default.guest_profile().offline_helper().unwrap(),
            "ntfs-helper"
        );
        assert_eq!(default.guest_profile().windows_system_root(), r"C:\Windows");
        std::fs::create_dir_all(dir.path().join("helper")).unwrap();
        std::fs::write(dir.path().join("helper/image.toml"), "x").unwrap();
        let path = Manifest::load(&write_windows_image(
            dir.path(),
            &with("offline_helper = \"./helper\""),
        ))
        .unwrap();
        assert!(path
            .guest_profile()
            .offline_helper()
            .unwrap()
            .ends_with("helper/image.toml"));
        for (extra, expect) in [
            (
                "offline_helper = \"ntfs-helpr\"",
                "neither a built-in image",
            ),
            ("offline_helper = \"nothere/image.toml\"", "does not exist"),
        ] {
            let text = with(extra);
            let line = text.lines().position(|l| l == extra).unwrap() + 1;
            let err = Manifest::load(&write_windows_image(dir.path(), &text))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(":{line}:"))
                    && err.contains("guest.offline_helper")
                    && err.contains(expect),
                "{err}"
            );
        }
        let linux = DEMO.replace("[guest]\n", "[guest]\noffline_helper = \"ntfs-helper\"\n");
        let err = Manifest::load(&write_image(dir.path(), &linux))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only windows images take this field"), "{err}");
        let err = Manifest::load(&write_windows_image(
            dir.path(),
            &with("system_root = '/windows'"),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("guest.system_root"), "{err}");
    }

    #[test]
    fn windows_and_linux_only_fields_stay_on_their_side() {
        let dir = tempfile::tempdir().unwrap();
        let text = DEMO.replace("[guest]\n", "[guest]\ndriver_kind = \"pnp\"\n");
        assert_ne!(text, DEMO);
        let err = Manifest::load(&write_image(dir.path(), &text)).unwrap_err();
        assert!(
            err.to_string()
                .contains("guest.driver_kind: only windows images take this field"),
            "{err}"
        );
        let text = WINDOWS.replace("[guest]\n", "[guest]\nsafe_mode_append = \"x\"\n");
        assert_ne!(text, WINDOWS);
        let err = Manifest::load(&write_windows_image(dir.path(), &text)).unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::Inconsistent {
                    field: "guest.safe_mode_append",
                    ..
                }
            ),
            "{err}"
        );
        let text = WINDOWS.replace(
            r"minidump_dir = '%SystemRoot%\Minidump'",
            r"minidump_dir = 'Minidump'",
        );
        assert_ne!(text, WINDOWS);
        let err = Manifest::load(&write_windows_image(dir.path(), &text)).unwrap_err();
        assert!(err.to_string().contains("guest.minidump_dir"), "{err}");
        let text = WINDOWS.replace("driver_kind = \"service\"", "driver_kind = \"wdm\"");
        assert_ne!(text, WINDOWS);
        assert!(matches!(
            Manifest::load(&write_windows_image(dir.path(), &text)),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn missing_disk_names_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_image(dir.path(), DEMO);
        std::fs::remove_file(dir.path().join("system.qcow2")).unwrap();
        let err = Manifest::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("disk.path") && err.contains("system.qcow2"),
            "{err}"
        );
    }

    #[test]
    fn windows_budgets_and_service_options_are_read_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let with = |extra: &str| {
            let text = WINDOWS.replace(
                r"drivers_dir = 'C:\Windows\System32\drivers'",
                &format!("drivers_dir = 'C:\\Windows\\System32\\drivers'\n{extra}"),
            );
            assert_ne!(text, WINDOWS, "the template's drivers_dir line changed");
            Manifest::load(&write_windows_image(dir.path(), &text))
        };
        let m = with("command_timeout = \"3m\"\ninstall_timeout = \"30m\"\nservice_type = \"filesys\"\nload_order_group = \"FSFilter Activity Monitor\"\nminifilter = { altitude = \"370030\" }").unwrap();
        assert_eq!(m.guest.command_timeout, Some(Duration::from_secs(180)));
        assert_eq!(m.guest.install_timeout, Some(Duration::from_secs(1800)));
        match with("install_timeout = \"soon\"") {
            Err(ManifestError::Invalid { line, message, .. }) => {
                assert!(line > 1 && message.contains("soon"), "{line}: {message}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        match with("minifilter = { altitude = \"37x\" }\nservice_type = \"filesys\"") {
            Err(ManifestError::Inconsistent { field, message, .. }) => {
                assert_eq!(field, "guest.minifilter.altitude", "{message}");
            }
            other => panic!("expected Inconsistent, got {other:?}"),
        }
        let outside = WINDOWS.replace(
            r"drivers_dir = 'C:\Windows\System32\drivers'",
            r"drivers_dir = 'D:\vendor\drivers'",
        );
        match Manifest::load(&write_windows_image(dir.path(), &outside)) {
            Err(ManifestError::Inconsistent { field, message, .. }) => {
                assert_eq!(field, "guest.service_start");
                assert!(message.contains("%SystemRoot%"), "{message}");
            }
            other => panic!("expected Inconsistent, got {other:?}"),
        }
    }
}
