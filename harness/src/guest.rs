//! Guest profiles: what a step means in a given guest OS. The image manifest says
//! which OS family an image is and where its paths are; this module turns suite steps
//! into agent requests for that family. Values reach guest scripts through the
//! environment, never spliced into script text, so suite strings are never code.

use crate::image::manifest::{Manifest, OsFamily};
use crate::suite::ExecStep;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("the image manifest {manifest} has no guest.{field}: add it to say where {what}")]
    MissingPath {
        manifest: String,
        field: &'static str,
        what: &'static str,
    },
    #[error("{0} images do not support this step yet")]
    Unsupported(&'static str),
}

/// A command for the guest agent: argv plus environment.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestCommand {
    pub argv: Vec<String>,
    pub env: Vec<String>,
}

/// How to drive one kind of guest.
#[derive(Debug, Clone)]
pub struct GuestProfile {
    pub os: OsFamily,
    manifest: String,
    shell: Vec<String>,
    drivers_dir: Option<String>,
    drivers_registry: Option<String>,
    content_dir: Option<String>,
    safe_mode_append: Option<String>,
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
    pub fn for_manifest(manifest: &Manifest) -> GuestProfile {
        GuestProfile {
            os: manifest.os,
            manifest: manifest.path.display().to_string(),
            shell: manifest.guest.shell.clone(),
            drivers_dir: manifest.guest.drivers_dir.clone(),
            drivers_registry: manifest.guest.drivers_registry.clone(),
            content_dir: manifest.guest.content_dir.clone(),
            safe_mode_append: manifest.guest.safe_mode_append.clone(),
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

    fn linux_only(&self) -> Result<(), GuestError> {
        match self.os {
            OsFamily::Linux => Ok(()),
            OsFamily::Windows => Err(GuestError::Unsupported("windows")),
        }
    }

    /// The argv the guest agent runs for an exec step: `argv` as given, or the shell
    /// with the command line as its last argument. The host never interprets it.
    pub fn exec_argv(&self, step: &ExecStep) -> Vec<String> {
        match (&step.argv, &step.run) {
            (Some(argv), _) => argv.clone(),
            (None, Some(run)) => self.shell_argv(run),
            (None, None) => Vec::new(),
        }
    }

    /// A command line for the guest's shell.
    pub fn shell_argv(&self, line: &str) -> Vec<String> {
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

    /// Where a driver's module goes on the system disk.
    pub fn driver_path(&self, name: &str) -> Result<String, GuestError> {
        let dir = self.need(&self.drivers_dir, "drivers_dir", "drivers are installed")?;
        Ok(format!("{dir}/{name}.ko"))
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
    pub fn register_driver(
        &self,
        name: &str,
        params: &str,
        load_now: bool,
    ) -> Result<GuestCommand, GuestError> {
        self.linux_only()?;
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

    /// Unloads, unregisters and deletes a driver.
    pub fn unregister_driver(&self, name: &str) -> Result<GuestCommand, GuestError> {
        self.linux_only()?;
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
    pub fn content_path(&self, content_file: &str) -> Result<String, GuestError> {
        let dir = self.need(&self.content_dir, "content_dir", "content files go")?;
        Ok(format!("{dir}/{content_file}"))
    }

    /// Deletes a content file.
    pub fn remove_file(&self, path: &str) -> Result<GuestCommand, GuestError> {
        self.linux_only()?;
        Ok(self.script(
            r#"rm -f "$BG_PATH" && sync"#,
            vec![format!("BG_PATH={path}")],
        ))
    }

    /// Flushes the guest's disk writes (before power-cycling it from outside).
    pub fn sync_disks(&self) -> Result<GuestCommand, GuestError> {
        self.linux_only()?;
        Ok(self.script("sync", Vec::new()))
    }

    /// Kernel parameters of the rescue boot that skips third-party drivers.
    pub fn safe_mode_append(&self) -> Result<&str, GuestError> {
        self.need(
            &self.safe_mode_append,
            "safe_mode_append",
            "the rescue boot is selected",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::OsFamily;

    fn profile() -> GuestProfile {
        GuestProfile {
            os: OsFamily::Linux,
            manifest: "image.toml".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            drivers_dir: Some("/system/drivers".into()),
            drivers_registry: Some("/system/etc/drivers.conf".into()),
            content_dir: None,
            safe_mode_append: Some("bootgate.safe=1".into()),
        }
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
    fn missing_manifest_path_says_which_field() {
        let err = profile().content_path("x").unwrap_err().to_string();
        assert!(err.contains("guest.content_dir"), "{err}");
    }
}
