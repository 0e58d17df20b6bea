//! Guest profiles: what a step means in a given guest OS. The image manifest says
//! which OS family an image is and where its paths are; this module turns suite steps
//! into agent requests for that family. Values never become script text, so suite
//! strings are never code: Linux scripts get them through the environment; Windows
//! commands take them as argv items or as quoted PowerShell literals ahead of
//! constant script text, because on Windows the agent's `env` would replace the whole
//! environment (see [`windows::command`]).

pub(crate) mod paths;
pub(crate) mod windows;

use std::path::Path;

pub(crate) use paths::{DumpFormat, GuestPaths, OsFamily};

use crate::suite::ExecStep;
use windows::command::{self as wincmd, CommandError};
use windows::{path as winpath, DriverKind, ServiceStart};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("the image manifest {manifest} has no guest.{field}: add it to say where {what}")]
    MissingPath {
        manifest: String,
        field: &'static str,
        what: &'static str,
    },
    #[error("the image manifest {manifest} has no guest.{field}, which offline recovery needs: add {what} (images/demo/image.toml shows all four offline fields)")]
    MissingOfflineField {
        manifest: String,
        field: &'static str,
        what: &'static str,
    },
    #[error("{manifest}: {path} is not under guest.system_root {root:?}, so it is not on the system disk a helper VM can mount")]
    OutsideSystemRoot {
        manifest: String,
        path: String,
        root: String,
    },
    #[error("{0} images do not support this step yet")]
    Unsupported(&'static str),
    #[error("{manifest}: windows drivers take no load parameters (got {params:?}): a windows driver reads its settings from its registry key, so write them there with an exec step")]
    WindowsParams { manifest: String, params: String },
    #[error("cannot build the windows command: {0}")]
    Command(#[source] CommandError),
}

impl From<CommandError> for GuestError {
    fn from(e: CommandError) -> GuestError {
        GuestError::Command(e)
    }
}

/// A command for the guest agent: argv plus environment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GuestCommand {
    pub argv: Vec<String>,
    pub env: Vec<String>,
}

/// How to drive one kind of guest.
#[derive(Debug, Clone)]
pub(crate) struct GuestProfile {
    pub os: OsFamily,
    manifest: String,
    shell: Vec<String>,
    drivers_dir: Option<String>,
    drivers_registry: Option<String>,
    content_dir: Option<String>,
    safe_mode_append: Option<String>,
    /// Offline recovery through a helper VM (see the manifest's `offline_*` fields).
    system_root: Option<String>,
    offline_mount: Option<String>,
    offline_root: Option<String>,
    offline_unmount: Option<String>,
    /// Windows only: how drivers are installed and when service drivers load.
    driver_kind: DriverKind,
    service_start: ServiceStart,
    /// Windows only: where the guest writes crash dumps (may hold %SystemRoot%).
    minidump_dir: String,
    memory_dump_path: String,
}

/// Registers a driver in the Linux demo guest's boot-start registry (one
/// `NAME PARAMS` line per driver), then optionally loads it now.
const LINUX_REGISTER: &str = r#"set -euf
touch "$BG_REGISTRY"
grep -v "^$BG_NAME\( \|\$\)" "$BG_REGISTRY" > "$BG_REGISTRY.tmp" || true
printf '%s %s\n' "$BG_NAME" "$BG_PARAMS" >> "$BG_REGISTRY.tmp"
mv "$BG_REGISTRY.tmp" "$BG_REGISTRY"
sync
if [ "$BG_LOAD" = 1 ]; then insmod "$BG_MODULE" $BG_PARAMS; fi"#;

/// Unloads (if loaded), unregisters and deletes a driver in the Linux demo guest.
const LINUX_UNREGISTER: &str = r#"set -uf
rmmod "$BG_NAME" 2>/dev/null
touch "$BG_REGISTRY"
grep -v "^$BG_NAME\( \|\$\)" "$BG_REGISTRY" > "$BG_REGISTRY.tmp"
mv "$BG_REGISTRY.tmp" "$BG_REGISTRY" && rm -f "$BG_MODULE" && sync"#;

impl GuestProfile {
    /// The profile of an image whose manifest is `manifest` (named in errors).
    pub fn new(os: OsFamily, manifest: &Path, guest: &GuestPaths) -> GuestProfile {
        GuestProfile {
            os,
            manifest: manifest.display().to_string(),
            shell: guest.shell.clone(),
            drivers_dir: guest.drivers_dir.clone(),
            drivers_registry: guest.drivers_registry.clone(),
            content_dir: guest.content_dir.clone(),
            safe_mode_append: guest.safe_mode_append.clone(),
            system_root: guest.system_root.clone(),
            offline_mount: guest.offline_mount.clone(),
            offline_root: guest.offline_root.clone(),
            offline_unmount: guest.offline_unmount.clone(),
            driver_kind: guest.driver_kind.unwrap_or_default(),
            service_start: guest.service_start.unwrap_or_default(),
            minidump_dir: guest
                .minidump_dir
                .clone()
                .unwrap_or_else(|| windows::DEFAULT_MINIDUMP_DIR.into()),
            memory_dump_path: guest
                .memory_dump_path
                .clone()
                .unwrap_or_else(|| windows::DEFAULT_MEMORY_DUMP.into()),
        }
    }

    fn need<'a>(
        &self,
        value: &'a Option<String>,
        field: &'static str,
        what: &'static str,
    ) -> Result<&'a str, GuestError> {
        value.as_deref().ok_or_else(|| GuestError::MissingPath {
            manifest: self.manifest.clone(),
            field,
            what,
        })
    }

    /// The argv the guest agent runs for an exec step: `argv` as given, or the shell
    /// with the command line as its last argument. The host never interprets it.
    pub(crate) fn exec_argv(&self, step: &ExecStep) -> Vec<String> {
        match (&step.argv, &step.run) {
            (Some(argv), _) => argv.clone(),
            (None, Some(run)) => self.shell_argv(run),
            (None, None) => Vec::new(),
        }
    }

    /// A command line for the guest's shell.
    pub(crate) fn shell_argv(&self, line: &str) -> Vec<String> {
        let mut argv = self.shell.clone();
        argv.push(line.to_string());
        argv
    }

    fn script(&self, script: &str, env: Vec<String>) -> GuestCommand {
        GuestCommand {
            argv: self.shell_argv(script),
            env,
        }
    }

    /// A Windows command: argv only (an `env` would replace the guest process's whole
    /// environment, SystemRoot and PATH included).
    fn windows(argv: Vec<String>) -> GuestCommand {
        GuestCommand {
            argv,
            env: Vec::new(),
        }
    }

    /// Where a driver's module goes on the system disk: Linux `DIR/NAME.ko`; Windows
    /// `DIR\NAME.sys` for a service driver, `DIR\NAME.zip` (the driver package) for PnP.
    pub(crate) fn driver_path(&self, name: &str) -> Result<String, GuestError> {
        let dir = self.need(&self.drivers_dir, "drivers_dir", "drivers are installed")?;
        Ok(match (self.os, self.driver_kind) {
            (OsFamily::Linux, _) => format!("{dir}/{name}.ko"),
            (OsFamily::Windows, DriverKind::Service) => winpath::join(dir, &format!("{name}.sys")),
            (OsFamily::Windows, DriverKind::Pnp) => winpath::join(dir, &format!("{name}.zip")),
        })
    }

    /// Windows, PnP: the folder a driver package zip is expanded into.
    fn package_dir(&self, name: &str) -> Result<String, GuestError> {
        let dir = self.need(&self.drivers_dir, "drivers_dir", "drivers are installed")?;
        Ok(winpath::join(dir, name))
    }

    /// Windows: the drives whose caches a command flushes (besides the system drive,
    /// which every flush covers): those of the driver and content folders.
    fn drives(&self) -> Vec<char> {
        [&self.drivers_dir, &self.content_dir]
            .into_iter()
            .flatten()
            .filter_map(|p| winpath::drive_letter(p))
            .collect()
    }

    /// The boot-start driver registry file in the guest.
    fn registry(&self) -> Result<&str, GuestError> {
        self.need(
            &self.drivers_registry,
            "drivers_registry",
            "boot-start drivers are registered",
        )
    }

    /// Registers an installed driver to load at boot (and loads it now if asked).
    /// Windows: a service driver is created (or reconfigured) with sc.exe and started
    /// if `load_now`; a PnP package is expanded and added with pnputil, installed on
    /// matching devices if `load_now` (otherwise only staged in the driver store).
    pub(crate) fn register_driver(
        &self,
        name: &str,
        params: &str,
        load_now: bool,
    ) -> Result<GuestCommand, GuestError> {
        if self.os == OsFamily::Windows {
            if !params.trim().is_empty() {
                return Err(GuestError::WindowsParams {
                    manifest: self.manifest.clone(),
                    params: params.into(),
                });
            }
            let file = self.driver_path(name)?;
            let argv = match self.driver_kind {
                DriverKind::Service => wincmd::install_service(
                    name,
                    &file,
                    self.service_start,
                    load_now,
                    &self.drives(),
                )?,
                DriverKind::Pnp => wincmd::install_pnp_package(
                    &file,
                    &self.package_dir(name)?,
                    load_now,
                    &self.drives(),
                )?,
            };
            return Ok(Self::windows(argv));
        }
        let registry = self.registry()?;
        Ok(self.script(
            LINUX_REGISTER,
            vec![
                format!("BG_NAME={name}"),
                format!("BG_PARAMS={params}"),
                format!("BG_REGISTRY={registry}"),
                format!("BG_MODULE={}", self.driver_path(name)?),
                format!("BG_LOAD={}", u8::from(load_now)),
            ],
        ))
    }

    /// Unloads, unregisters and deletes a driver. Windows: stops and deletes the
    /// service and its file, or uninstalls the package's INFs with pnputil and deletes
    /// the package.
    pub(crate) fn unregister_driver(&self, name: &str) -> Result<GuestCommand, GuestError> {
        if self.os == OsFamily::Windows {
            let file = self.driver_path(name)?;
            let argv = match self.driver_kind {
                DriverKind::Service => wincmd::uninstall_service(name, &file, &self.drives())?,
                DriverKind::Pnp => {
                    wincmd::uninstall_pnp_package(&file, &self.package_dir(name)?, &self.drives())?
                }
            };
            return Ok(Self::windows(argv));
        }
        let registry = self.registry()?;
        Ok(self.script(
            LINUX_UNREGISTER,
            vec![
                format!("BG_NAME={name}"),
                format!("BG_REGISTRY={registry}"),
                format!("BG_MODULE={}", self.driver_path(name)?),
            ],
        ))
    }

    /// Where a driver's content file goes.
    pub(crate) fn content_path(&self, content_file: &str) -> Result<String, GuestError> {
        let dir = self.need(&self.content_dir, "content_dir", "content files go")?;
        Ok(match self.os {
            OsFamily::Linux => format!("{dir}/{content_file}"),
            OsFamily::Windows => winpath::join(dir, content_file),
        })
    }

    /// Deletes a content file.
    pub(crate) fn remove_file(&self, path: &str) -> Result<GuestCommand, GuestError> {
        if self.os == OsFamily::Windows {
            return Ok(Self::windows(wincmd::remove_file(path, &self.drives())?));
        }
        Ok(self.script(
            r#"rm -f "$BG_PATH" && sync"#,
            vec![format!("BG_PATH={path}")],
        ))
    }

    /// Flushes the guest's disk writes (before power-cycling it from outside).
    /// Windows: the registry hives and the file system caches.
    pub(crate) fn sync_disks(&self) -> Result<GuestCommand, GuestError> {
        if self.os == OsFamily::Windows {
            return Ok(Self::windows(wincmd::flush_volumes(&self.drives())?));
        }
        Ok(self.script("sync", Vec::new()))
    }

    /// Windows: lists the crash dumps the guest wrote (minidumps and the memory
    /// dump); parse the output with [`wincmd::parse_crash_dump_listing`].
    pub(crate) fn list_crash_dumps(&self) -> Result<GuestCommand, GuestError> {
        match self.os {
            OsFamily::Windows => Ok(Self::windows(wincmd::list_crash_dumps(
                &self.minidump_dir,
                &self.memory_dump_path,
            )?)),
            OsFamily::Linux => Err(GuestError::Unsupported("linux")),
        }
    }

    /// Kernel parameters of the rescue boot that skips third-party drivers.
    pub(crate) fn safe_mode_append(&self) -> Result<&str, GuestError> {
        // A Windows rescue boot is a bcdedit safeboot setting inside the guest, not
        // kernel parameters; asking the manifest for them would be wrong advice.
        if self.os == OsFamily::Windows {
            return Err(GuestError::Unsupported("windows"));
        }
        self.need(
            &self.safe_mode_append,
            "safe_mode_append",
            "the rescue boot is selected",
        )
    }

    /// Offline recovery: the helper VM's command that mounts the stopped VM's disk.
    pub(crate) fn offline_mount(&self) -> Result<GuestCommand, GuestError> {
        let line = self.offline_field(
            &self.offline_mount,
            "offline_mount",
            "the command line a helper VM of this image runs to mount a stopped VM's system disk (its second disk)",
        )?;
        Ok(self.shell_command(line))
    }

    /// Offline recovery: the helper VM's command that unmounts it again.
    pub(crate) fn offline_unmount(&self) -> Result<GuestCommand, GuestError> {
        let line = self.offline_field(
            &self.offline_unmount,
            "offline_unmount",
            "the command line that unmounts it again",
        )?;
        Ok(self.shell_command(line))
    }

    /// Where the helper VM mounts the stopped VM's disk.
    pub(crate) fn offline_root(&self) -> Result<&str, GuestError> {
        self.offline_field(
            &self.offline_root,
            "offline_root",
            "the folder offline_mount mounts the stopped VM's disk on",
        )
    }

    /// A command line run by the guest's shell, with no environment of its own.
    pub(crate) fn shell_command(&self, line: &str) -> GuestCommand {
        GuestCommand {
            argv: self.shell_argv(line),
            env: Vec::new(),
        }
    }

    /// A field offline recovery needs; Linux guests only.
    fn offline_field<'a>(
        &self,
        value: &'a Option<String>,
        field: &'static str,
        what: &'static str,
    ) -> Result<&'a str, GuestError> {
        if self.os == OsFamily::Windows {
            return Err(GuestError::Unsupported("windows"));
        }
        value
            .as_deref()
            .ok_or_else(|| GuestError::MissingOfflineField {
                manifest: self.manifest.clone(),
                field,
                what,
            })
    }

    /// Where a path of the stopped VM (one under `system_root`) is in the helper VM
    /// that mounted its disk: `/system/content/x` becomes `/target/content/x`.
    pub(crate) fn offline_path(&self, guest_path: &str) -> Result<String, GuestError> {
        let root = self.offline_field(
            &self.system_root,
            "system_root",
            "the folder a normal boot mounts the system disk on",
        )?;
        let offline = self.offline_root()?;
        let root = root.trim_end_matches('/');
        match guest_path.strip_prefix(root) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                Ok(format!("{}{rest}", offline.trim_end_matches('/')))
            }
            _ => Err(GuestError::OutsideSystemRoot {
                manifest: self.manifest.clone(),
                path: guest_path.to_string(),
                root: root.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::OsFamily;

    fn profile() -> GuestProfile {
        GuestProfile {
            os: OsFamily::Linux,
            manifest: "image.toml".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            drivers_dir: Some("/system/drivers".into()),
            drivers_registry: Some("/system/etc/drivers.conf".into()),
            content_dir: None,
            safe_mode_append: Some("bootgate.safe=1".into()),
            system_root: Some("/system".into()),
            offline_mount: Some("mount /dev/vdb /target".into()),
            offline_root: Some("/target/".into()),
            offline_unmount: Some("umount /target".into()),
            driver_kind: DriverKind::Service,
            service_start: ServiceStart::Boot,
            minidump_dir: String::new(),
            memory_dump_path: String::new(),
        }
    }

    fn windows_profile(kind: DriverKind) -> GuestProfile {
        GuestProfile {
            os: OsFamily::Windows,
            manifest: "windows/image.toml".into(),
            shell: wincmd::POWERSHELL.iter().map(|s| s.to_string()).collect(),
            drivers_dir: Some(r"D:\Program Files\Vendor Ünïcode\drivers".into()),
            drivers_registry: None,
            content_dir: Some(r"C:\ProgramData\bootgate\content".into()),
            safe_mode_append: None,
            system_root: None,
            offline_mount: None,
            offline_root: None,
            offline_unmount: None,
            driver_kind: kind,
            service_start: ServiceStart::System,
            minidump_dir: windows::DEFAULT_MINIDUMP_DIR.into(),
            memory_dump_path: windows::DEFAULT_MEMORY_DUMP.into(),
        }
    }

    #[test]
    fn offline_paths_map_the_system_root_onto_the_helper_mount() {
        let p = profile();
        assert_eq!(
            p.offline_path("/system/content/demo_sensor.content")
                .unwrap(),
            "/target/content/demo_sensor.content"
        );
        assert_eq!(p.offline_path("/system").unwrap(), "/target");
        // A sibling that merely starts with the same letters is not on the disk.
        let err = p.offline_path("/systemd/x").unwrap_err().to_string();
        assert!(err.contains("not under guest.system_root"), "{err}");
        assert!(p.offline_path("/etc/passwd").is_err());
        assert_eq!(
            p.offline_mount().unwrap().argv,
            ["/bin/sh", "-c", "mount /dev/vdb /target"]
        );
        let mut bare = profile();
        bare.offline_unmount = None;
        let err = bare.offline_unmount().unwrap_err().to_string();
        assert!(err.contains("guest.offline_unmount"), "{err}");
        assert!(windows_profile(DriverKind::Service)
            .offline_path(r"C:\x")
            .is_err());
    }

    #[test]
    fn run_goes_through_the_manifest_shell() {
        let step = ExecStep {
            run: Some("echo $((1+1)); exit 3".into()),
            argv: None,
            expect_exit: 3,
            timeout: None,
        };
        assert_eq!(
            profile().exec_argv(&step),
            ["/bin/sh", "-c", "echo $((1+1)); exit 3"]
        );
        let step = ExecStep {
            run: None,
            argv: Some(vec!["/bin/true".into()]),
            expect_exit: 0,
            timeout: None,
        };
        assert_eq!(profile().exec_argv(&step), ["/bin/true"]);
    }

    #[test]
    fn driver_values_travel_in_the_environment_not_the_script() {
        let cmd = profile()
            .register_driver("demo_sensor", "fixed=1; reboot", true)
            .unwrap();
        assert_eq!(cmd.argv[2], LINUX_REGISTER);
        assert!(cmd.env.contains(&"BG_PARAMS=fixed=1; reboot".to_string()));
        assert!(cmd
            .env
            .contains(&"BG_MODULE=/system/drivers/demo_sensor.ko".to_string()));
        assert!(cmd.env.contains(&"BG_LOAD=1".to_string()));
    }

    #[test]
    fn linux_commands_are_unchanged() {
        // The Linux side must not move when Windows support grows: exact argv and env.
        let p = profile();
        assert_eq!(
            p.driver_path("demo_sensor").unwrap(),
            "/system/drivers/demo_sensor.ko"
        );
        let cmd = p.unregister_driver("demo_sensor").unwrap();
        assert_eq!(cmd.argv, ["/bin/sh", "-c", LINUX_UNREGISTER]);
        assert_eq!(
            cmd.env,
            [
                "BG_NAME=demo_sensor",
                "BG_REGISTRY=/system/etc/drivers.conf",
                "BG_MODULE=/system/drivers/demo_sensor.ko",
            ]
        );
        let cmd = p.remove_file("/system/content/a b").unwrap();
        assert_eq!(cmd.argv, ["/bin/sh", "-c", r#"rm -f "$BG_PATH" && sync"#]);
        assert_eq!(cmd.env, ["BG_PATH=/system/content/a b"]);
        assert_eq!(p.sync_disks().unwrap().argv, ["/bin/sh", "-c", "sync"]);
        assert_eq!(p.safe_mode_append().unwrap(), "bootgate.safe=1");
        assert!(matches!(
            p.list_crash_dumps(),
            Err(GuestError::Unsupported("linux"))
        ));
    }

    #[test]
    fn windows_service_driver_goes_through_sc_with_quoted_values() {
        let p = windows_profile(DriverKind::Service);
        let sys = r"D:\Program Files\Vendor Ünïcode\drivers\sensor.sys";
        assert_eq!(p.driver_path("sensor").unwrap(), sys);
        let cmd = p.register_driver("sensor", "", true).unwrap();
        assert!(
            cmd.env.is_empty(),
            "an env would replace the whole windows environment"
        );
        assert_eq!(
            cmd.argv,
            wincmd::install_service("sensor", sys, ServiceStart::System, true, &['D', 'C'])
                .unwrap()
        );
        assert!(
            cmd.argv[6].contains(&format!("$bgSys = '{sys}'")),
            "{}",
            cmd.argv[6]
        );
        assert!(
            cmd.argv[6].contains("$bgDrives = @('D', 'C')"),
            "{}",
            cmd.argv[6]
        );
        let cmd = p.unregister_driver("sensor").unwrap();
        assert_eq!(
            cmd.argv,
            wincmd::uninstall_service("sensor", sys, &['D', 'C']).unwrap()
        );
        let err = p
            .register_driver("sensor", "fixed=1", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("windows/image.toml") && err.contains("registry"),
            "{err}"
        );
    }

    #[test]
    fn windows_pnp_driver_is_a_package_zip_expanded_next_to_it() {
        let p = windows_profile(DriverKind::Pnp);
        let zip = r"D:\Program Files\Vendor Ünïcode\drivers\sensor.zip";
        let dir = r"D:\Program Files\Vendor Ünïcode\drivers\sensor";
        assert_eq!(p.driver_path("sensor").unwrap(), zip);
        let cmd = p.register_driver("sensor", "  ", false).unwrap();
        assert_eq!(
            cmd.argv,
            wincmd::install_pnp_package(zip, dir, false, &['D', 'C']).unwrap()
        );
        let cmd = p.unregister_driver("sensor").unwrap();
        assert_eq!(
            cmd.argv,
            wincmd::uninstall_pnp_package(zip, dir, &['D', 'C']).unwrap()
        );
    }

    #[test]
    fn windows_content_sync_shell_and_dumps() {
        let p = windows_profile(DriverKind::Service);
        let path = p.content_path("C-00000291-00000000-00000032.sys").unwrap();
        assert_eq!(
            path,
            r"C:\ProgramData\bootgate\content\C-00000291-00000000-00000032.sys"
        );
        let cmd = p.remove_file(&path).unwrap();
        assert!(cmd.env.is_empty());
        assert_eq!(cmd.argv, wincmd::remove_file(&path, &['D', 'C']).unwrap());
        assert_eq!(
            p.sync_disks().unwrap().argv,
            wincmd::flush_volumes(&['D', 'C']).unwrap()
        );
        let line = r#"Get-Content 'C:\x y\log.txt' | Select-String "error""#;
        assert_eq!(p.shell_argv(line), wincmd::powershell_argv(line));
        let step = ExecStep {
            run: Some(line.into()),
            argv: None,
            expect_exit: 0,
            timeout: None,
        };
        assert_eq!(p.exec_argv(&step), wincmd::powershell_argv(line));
        assert_eq!(
            p.list_crash_dumps().unwrap().argv,
            wincmd::list_crash_dumps(r"%SystemRoot%\Minidump", r"%SystemRoot%\MEMORY.DMP").unwrap()
        );
        assert!(matches!(
            p.safe_mode_append(),
            Err(GuestError::Unsupported("windows"))
        ));
    }

    #[test]
    fn missing_manifest_path_says_which_field() {
        let err = profile().content_path("x").unwrap_err().to_string();
        assert!(err.contains("guest.content_dir"), "{err}");
    }
}
