//! Guest profiles: what a step means in a given guest OS. The image manifest says
//! which OS family an image is and where its paths are; this module turns suite steps
//! into agent requests for that family. Values never become script text, so suite
//! strings are never code: Linux scripts get them through the environment; Windows
//! commands take them as argv items or as quoted PowerShell literals ahead of
//! constant script text, because on Windows the agent's `env` would replace the whole
//! environment (see [`windows::command`]).

pub(crate) mod budget;
pub(crate) mod demo;
pub(crate) mod distro;
pub(crate) mod linux;
pub(crate) mod paths;
pub(crate) mod windows;

use std::path::Path;
use std::time::Duration;

pub(crate) use paths::{DumpFormat, GuestPaths, LinuxProfile, OsFamily, RebootMethod};

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
    #[error("{manifest}: {source}")]
    OfflinePath {
        manifest: String,
        #[source]
        source: windows::offline::OfflinePathError,
    },
    #[error("{0} images do not support this step yet")]
    Unsupported(&'static str),
    #[error("`verifier` is Windows' Driver Verifier (verifier.exe), and this is a linux image: a linux kernel checks a driver with its own debug options (KASAN, lockdep, CONFIG_DEBUG_*) built into the image's kernel, not with a step; remove the step or run the scenario on a windows image")]
    VerifierNeedsWindows,
    #[error("{manifest}: `initramfs = true` cannot be done here: {why}")]
    NoInitramfs { manifest: String, why: &'static str },
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
    /// Linux only: how drivers load at boot.
    pub linux: LinuxProfile,
    manifest: String,
    shell: Vec<String>,
    drivers_dir: Option<String>,
    drivers_registry: Option<String>,
    content_dir: Option<String>,
    safe_mode_append: Option<String>,
    /// Distro only: the guest's initramfs rebuild command.
    initramfs_update: Option<String>,
    /// Offline recovery through a helper VM (see the manifest's `offline_*` fields).
    system_root: Option<String>,
    offline_mount: Option<String>,
    offline_root: Option<String>,
    offline_unmount: Option<String>,
    /// Windows only: the image whose helper VM edits this disk (see
    /// [`GuestProfile::offline_helper`]).
    offline_helper: Option<String>,
    /// Windows only: how drivers are installed and when service drivers load.
    driver_kind: DriverKind,
    service_start: ServiceStart,
    /// Windows only: service type, load-order group, minifilter instance.
    service_options: windows::ServiceOptions,
    /// Windows only: where the guest writes crash dumps (may hold %SystemRoot%).
    minidump_dir: String,
    memory_dump_path: String,
    /// The manifest's command budgets (`guest.command_timeout`, `guest.install_timeout`).
    command_timeout: Option<Duration>,
    install_timeout: Option<Duration>,
}

impl GuestProfile {
    /// The profile of an image whose manifest is `manifest` (named in errors).
    pub fn new(
        os: OsFamily,
        linux: LinuxProfile,
        manifest: &Path,
        guest: &GuestPaths,
    ) -> GuestProfile {
        let drivers_dir = match (os, linux) {
            (OsFamily::Linux, LinuxProfile::Distro) => Some(
                guest
                    .drivers_dir
                    .clone()
                    .unwrap_or_else(|| distro::DEFAULT_DRIVERS_DIR.into()),
            ),
            _ => guest.drivers_dir.clone(),
        };
        GuestProfile {
            os,
            linux,
            manifest: manifest.display().to_string(),
            shell: guest.shell.clone(),
            drivers_dir,
            initramfs_update: guest.initramfs_update.clone(),
            drivers_registry: guest.drivers_registry.clone(),
            content_dir: guest.content_dir.clone(),
            safe_mode_append: guest.safe_mode_append.clone(),
            system_root: guest.system_root.clone(),
            offline_mount: guest.offline_mount.clone(),
            offline_root: guest.offline_root.clone(),
            offline_unmount: guest.offline_unmount.clone(),
            offline_helper: guest.offline_helper.clone(),
            driver_kind: guest.driver_kind.unwrap_or_default(),
            service_start: guest.service_start.unwrap_or_default(),
            service_options: windows::ServiceOptions {
                service_type: guest.service_type.unwrap_or_default(),
                group: guest.load_order_group.clone(),
                minifilter: guest.minifilter.clone(),
            },
            minidump_dir: guest
                .minidump_dir
                .clone()
                .unwrap_or_else(|| windows::DEFAULT_MINIDUMP_DIR.into()),
            memory_dump_path: guest
                .memory_dump_path
                .clone()
                .unwrap_or_else(|| windows::DEFAULT_MEMORY_DUMP.into()),
            command_timeout: guest.command_timeout,
            install_timeout: guest.install_timeout,
        }
    }

    /// How long a guest command of `kind` may run: the step's `timeout` if it gave
    /// one, else the manifest's, else this OS family's default (Windows' stretched
    /// under TCG). See [`budget`].
    pub(crate) fn budget(
        &self,
        kind: budget::CommandKind,
        step: Option<Duration>,
        tcg: bool,
    ) -> budget::Budget {
        budget::budget(
            self.os,
            kind,
            step,
            self.command_timeout,
            self.install_timeout,
            tcg,
        )
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

    /// The manifest's drivers folder (the distro profile's default filled in).
    fn drivers_dir(&self) -> Result<&str, GuestError> {
        self.need(&self.drivers_dir, "drivers_dir", "drivers are installed")
    }

    /// Where a driver's module goes on the system disk: Linux `DIR/NAME.ko`; Windows
    /// `DIR\NAME.sys` for a service driver, `DIR\NAME.zip` (the driver package) for PnP.
    /// Distro profile: the folder may hold `{release}`, which only the guest knows.
    pub(crate) fn driver_path(&self, name: &str) -> Result<String, GuestError> {
        let dir = self.drivers_dir()?;
        Ok(match (self.os, self.driver_kind) {
            (OsFamily::Linux, _) => format!("{dir}/{name}.ko"),
            (OsFamily::Windows, DriverKind::Service) => winpath::join(dir, &format!("{name}.sys")),
            (OsFamily::Windows, DriverKind::Pnp) => winpath::join(dir, &format!("{name}.zip")),
        })
    }

    /// Where the host uploads a driver's module: its place on the system disk, or
    /// (distro profile) a staging file the install script moves into place.
    pub(crate) fn driver_upload_path(&self, name: &str) -> Result<String, GuestError> {
        match (self.os, self.linux) {
            (OsFamily::Linux, LinuxProfile::Distro) => {
                Ok(format!("{}/{name}.ko", distro::STAGING_DIR))
            }
            // Never onto a loaded .sys (a sharing violation): beside it; the install
            // script moves it into place (defect 7, wincmd::install_service).
            (OsFamily::Windows, _) if self.driver_kind == DriverKind::Service => {
                Ok(wincmd::staged_sys(&self.driver_path(name)?))
            }
            _ => self.driver_path(name),
        }
    }

    /// The folder part of a guest path.
    pub(crate) fn parent_dir(&self, path: &str) -> Option<String> {
        match self.os {
            OsFamily::Linux => path
                .rsplit_once('/')
                .map(|(dir, _)| dir)
                .filter(|dir| !dir.is_empty())
                .map(str::to_string),
            OsFamily::Windows => path.rsplit_once('\\').map(|(dir, _)| dir.to_string()),
        }
    }

    /// Creates a folder and its parents (the agent's file writes create only the
    /// file). None where bootgate has no such command yet (Windows: issue 16's
    /// guide says the folders must exist).
    pub(crate) fn make_dir(&self, dir: &str) -> Option<GuestCommand> {
        match self.os {
            OsFamily::Linux => Some(self.script(linux::MAKE_DIR, vec![format!("BG_DIR={dir}")])),
            OsFamily::Windows => None,
        }
    }

    /// A command reporting which of `names` are loaded drivers (parse its output
    /// with [`GuestProfile::parse_loaded_drivers`]). Linux: their names, one per
    /// line; Windows: each service's state and this boot's load-failure events.
    /// None for a PnP package, whose service name is the INF's, not bootgate's.
    pub(crate) fn loaded_drivers(&self, names: &[String]) -> Option<GuestCommand> {
        match self.os {
            OsFamily::Linux => Some(self.script(
                linux::LOADED_DRIVERS,
                vec![format!("BG_NAMES={}", names.join(" "))],
            )),
            OsFamily::Windows if self.driver_kind == DriverKind::Pnp => None,
            OsFamily::Windows => windows::loaded::query(names).ok().map(Self::windows),
        }
    }

    /// Reads [`GuestProfile::loaded_drivers`]' output: which of `names` are
    /// loaded, which are not, and (Windows) why not.
    pub(crate) fn parse_loaded_drivers(
        &self,
        names: &[String],
        stdout: &[u8],
    ) -> Result<windows::loaded::LoadedDrivers, String> {
        match self.os {
            OsFamily::Linux => {
                let loaded = linux::parse_loaded(stdout);
                let missing = names
                    .iter()
                    .filter(|name| !loaded.contains(name))
                    .cloned()
                    .collect();
                Ok(windows::loaded::LoadedDrivers {
                    loaded,
                    missing,
                    reasons: Default::default(),
                })
            }
            OsFamily::Windows => windows::loaded::parse(names, stdout).map_err(|e| e.to_string()),
        }
    }

    /// Windows: the command that turns Driver Verifier on for driver `name` with
    /// `flags` (effective at the next boot).
    pub(crate) fn verifier(
        &self,
        name: &str,
        flags: &[String],
    ) -> Result<GuestCommand, GuestError> {
        if self.os != OsFamily::Windows {
            return Err(GuestError::VerifierNeedsWindows);
        }
        Ok(Self::windows(windows::verifier::verifier_argv(
            flags,
            &format!("{name}.sys"),
        )?))
    }

    /// Windows, PnP: the folder a driver package zip is expanded into.
    fn package_dir(&self, name: &str) -> Result<String, GuestError> {
        let dir = self.drivers_dir()?;
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
        initramfs: bool,
    ) -> Result<GuestCommand, GuestError> {
        if self.os == OsFamily::Windows {
            if initramfs {
                return Err(GuestError::NoInitramfs {
                    manifest: self.manifest.clone(),
                    why: "windows has no initramfs: a boot-start driver is a service with start = boot",
                });
            }
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
                    &self.service_options,
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
        if self.linux == LinuxProfile::Distro {
            let update = match (initramfs, &self.initramfs_update) {
                (true, Some(command)) => command.clone(),
                (true, None) => {
                    return Err(GuestError::MissingPath {
                        manifest: self.manifest.clone(),
                        field: "initramfs_update",
                        what: "to find the guest's own initramfs rebuild command (update-initramfs -u, dracut -f)",
                    })
                }
                (false, _) => String::new(),
            };
            return Ok(self.script(
                distro::REGISTER,
                vec![
                    format!("BG_NAME={name}"),
                    format!("BG_PARAMS={params}"),
                    format!("BG_STAGED={}", self.driver_upload_path(name)?),
                    format!("BG_DIR={}", self.drivers_dir()?),
                    format!("BG_LOAD={}", u8::from(load_now)),
                    format!("BG_INITRAMFS={}", u8::from(initramfs)),
                    format!("BG_INITRAMFS_UPDATE={update}"),
                ],
            ));
        }
        if initramfs {
            return Err(GuestError::NoInitramfs {
                manifest: self.manifest.clone(),
                why: "the demo guest loads every registered driver from its own initramfs already",
            });
        }
        let registry = self.registry()?;
        Ok(self.script(
            demo::REGISTER,
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
        if self.linux == LinuxProfile::Distro {
            return Ok(self.script(
                distro::UNREGISTER,
                vec![
                    format!("BG_NAME={name}"),
                    format!("BG_DIR={}", self.drivers_dir()?),
                    format!(
                        "BG_INITRAMFS_UPDATE={}",
                        self.initramfs_update.clone().unwrap_or_default()
                    ),
                ],
            ));
        }
        let registry = self.registry()?;
        Ok(self.script(
            demo::UNREGISTER,
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

    /// Kernel parameters of the rescue boot that skips third-party drivers, with
    /// `{drivers}` replaced by the installed drivers' names.
    pub(crate) fn safe_mode_append(&self, installed: &[String]) -> Result<String, GuestError> {
        // A Windows rescue boot is a bcdedit safeboot setting inside the guest, not
        // kernel parameters; asking the manifest for them would be wrong advice.
        if self.os == OsFamily::Windows {
            return Err(GuestError::Unsupported("windows"));
        }
        let template = self.need(
            &self.safe_mode_append,
            "safe_mode_append",
            "the rescue boot is selected",
        )?;
        Ok(template.replace("{drivers}", &installed.join(",")))
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

    /// Windows: the image of the helper VM that edits this image's disk offline, as
    /// the manifest names it (a built-in image or a manifest path), by default the
    /// built-in NTFS helper.
    pub(crate) fn offline_helper(&self) -> Result<&str, GuestError> {
        match self.os {
            OsFamily::Windows => Ok(self
                .offline_helper
                .as_deref()
                .unwrap_or(windows::DEFAULT_OFFLINE_HELPER)),
            OsFamily::Linux => Err(GuestError::Unsupported("linux")),
        }
    }

    /// Windows: the guest's `%SystemRoot%` (the manifest's `system_root`, by
    /// default `C:\Windows`).
    pub(crate) fn windows_system_root(&self) -> &str {
        self.system_root
            .as_deref()
            .unwrap_or(windows::offline::DEFAULT_SYSTEM_ROOT)
    }

    /// Windows: where `path` (a guest path; `%SystemRoot%` allowed) is on the
    /// stopped VM's system volume, for the NTFS helper. `pattern` allows `*` and `?`
    /// in the file name.
    pub(crate) fn offline_volume_path(
        &self,
        path: &str,
        pattern: bool,
    ) -> Result<windows::offline::VolumePath, GuestError> {
        if self.os != OsFamily::Windows {
            return Err(GuestError::Unsupported("linux"));
        }
        windows::offline::volume_path(path, self.windows_system_root(), pattern).map_err(|e| {
            GuestError::OfflinePath {
                manifest: self.manifest.clone(),
                source: e,
            }
        })
    }

    /// Windows: the crash evidence the NTFS helper copies out of a stopped VM's
    /// disk: the minidumps, the memory dump's header and the System event log.
    pub(crate) fn offline_evidence(&self) -> Result<windows::offline::EvidencePlan, GuestError> {
        let minidumps =
            self.offline_volume_path(&windows::path::join(&self.minidump_dir, "*.dmp"), true)?;
        Ok(windows::offline::EvidencePlan {
            minidumps,
            memory_dump: self.offline_volume_path(&self.memory_dump_path, false)?,
            event_log: self.offline_volume_path(windows::offline::SYSTEM_EVENT_LOG, false)?,
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
mod tests;
