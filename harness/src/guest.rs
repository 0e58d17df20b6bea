//! Guest profiles: what a step means in a given guest OS. The image manifest says
//! which OS family an image is and where its paths are; this module turns suite steps
//! into agent requests for that family.

use crate::image::manifest::{Manifest, OsFamily};
use crate::suite::ExecStep;

/// How to drive one kind of guest.
#[derive(Debug, Clone)]
pub struct GuestProfile {
    pub os: OsFamily,
    shell: Vec<String>,
}

impl GuestProfile {
    pub fn for_manifest(manifest: &Manifest) -> GuestProfile {
        GuestProfile {
            os: manifest.os,
            shell: manifest.guest.shell.clone(),
        }
    }

    /// The argv the guest agent runs for an exec step: `argv` as given, or the shell
    /// with the command line as its last argument. The host never interprets it.
    pub fn exec_argv(&self, step: &ExecStep) -> Vec<String> {
        match (&step.argv, &step.run) {
            (Some(argv), _) => argv.clone(),
            (None, Some(run)) => {
                let mut argv = self.shell.clone();
                argv.push(run.clone());
                argv
            }
            (None, None) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::OsFamily;

    #[test]
    fn run_goes_through_the_manifest_shell() {
        let profile = GuestProfile {
            os: OsFamily::Linux,
            shell: vec!["/bin/sh".into(), "-c".into()],
        };
        let step = ExecStep {
            run: Some("echo $((1+1)); exit 3".into()),
            argv: None,
            expect_exit: 3,
            timeout: None,
        };
        assert_eq!(
            profile.exec_argv(&step),
            ["/bin/sh", "-c", "echo $((1+1)); exit 3"]
        );
        let step = ExecStep {
            run: None,
            argv: Some(vec!["/bin/true".into()]),
            expect_exit: 0,
            timeout: None,
        };
        assert_eq!(profile.exec_argv(&step), ["/bin/true"]);
    }
}
