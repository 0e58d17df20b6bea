//! What every Linux guest shares, whatever its
//! [`LinuxProfile`](super::LinuxProfile): folders made
//! before the agent writes into them, the loaded-driver check of every ready boot,
//! and telling a module built for another kernel from a driver defect. The
//! profiles' own install scripts are in [`super::demo`] and [`super::distro`].
//! Every value reaches the scripts through the environment (`BG_*`), never as
//! script text.

/// Creates a folder (and its parents) for a file the host is about to write: the
/// agent's `guest-file-open` creates files, not folders.
pub(super) const MAKE_DIR: &str = r#"mkdir -p "$BG_DIR""#;

/// Prints the names in `$BG_NAMES` whose module is loaded: the kernel lists every
/// loaded module under /sys/module, with `-` in its name written `_`.
pub(super) const LOADED_DRIVERS: &str = r#"for n in $BG_NAMES; do
  m=$(printf '%s' "$n" | tr - _)
  if [ -d "/sys/module/$m" ]; then echo "$n"; fi
done"#;

/// The names of [`LOADED_DRIVERS`]'s output.
pub(crate) fn parse_loaded(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a failed install's output says about the module itself, when it says the
/// module does not fit the guest's kernel (as insmod/modprobe and the kernel's
/// module loader word it: `Invalid module format` is ENOEXEC, `Unknown symbol` and
/// `disagrees about version of symbol` a build against other headers). That is the
/// user's build problem, said with what to do; None for any other failure.
pub(crate) fn wrong_kernel(driver: &str, output: &str) -> Option<String> {
    let lower = output.to_ascii_lowercase();
    let signs = [
        // The distro install script's own vermagic check.
        "was built for kernel",
        "invalid module format",
        "exec format error",
        "unknown symbol",
        "disagrees about version of symbol",
    ];
    if !signs.iter().any(|s| lower.contains(s)) {
        return None;
    }
    Some(format!(
        "{driver}.ko does not match the guest's kernel ({}): this is a build problem, not a driver defect; build the module against the image's own kernel headers (the image manifest's [kernel] release and headers) and run again",
        output.trim().trim_start_matches("; ")
    ))
}

/// A failed install whose script could not run a tool (the shell's exit 127, "not
/// found"): the image lacks what its profile needs, which is setup trouble, said
/// with the command that checks an image.
pub(crate) fn missing_tool(driver: &str, manifest: &str, output: &str) -> Option<String> {
    output.starts_with("exit 127").then(|| {
        format!(
            "installing {driver} needs a tool the guest does not have ({}): the image lacks what its profile needs; `bootgate doctor --image {manifest}` lists it",
            output.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_kernel_is_recognised_by_the_loaders_words() {
        let busybox = "stderr: insmod: can't insert '/system/drivers/x.ko': invalid module format";
        assert!(wrong_kernel("x", busybox)
            .unwrap()
            .contains("build problem"));
        let kmod = "stderr: modprobe: ERROR: could not insert 'x': Exec format error";
        assert!(wrong_kernel("x", kmod).is_some());
        let vermagic = "stderr: bootgate: x.ko was built for kernel 6.1.0-9-amd64, but the guest runs 6.1.0-28-cloud-amd64";
        let why = wrong_kernel("x", vermagic).unwrap();
        assert!(why.contains("6.1.0-9-amd64"), "{why}");
        assert_eq!(
            wrong_kernel("x", "stderr: modprobe: FATAL: Module x not found"),
            None
        );
    }

    #[test]
    fn a_missing_tool_is_setup_trouble() {
        let out = "exit 127, expected exit 0; stderr: sh: 1: depmod: not found";
        let why = missing_tool("x", "img/image.toml", out).unwrap();
        assert!(
            why.contains("depmod: not found") && why.contains("doctor --image img/image.toml"),
            "{why}"
        );
        assert_eq!(missing_tool("x", "m", "exit 1, expected exit 0"), None);
    }

    #[test]
    fn loaded_names_are_the_output_lines() {
        assert_eq!(
            parse_loaded(b"demo_sensor\n\nslow-init\n"),
            ["demo_sensor", "slow-init"]
        );
    }
}
