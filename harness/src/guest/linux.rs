//! Linux guests' driver scripts, one set per [`LinuxProfile`]: the demo guest's
//! registry file, and a distribution's `/lib/modules`, `depmod`, `modules-load.d`
//! (which systemd-modules-load and the sysvinit `kmod` script read at every boot,
//! names only) and `modprobe.d` (options), as modules-load.d(5) and modprobe.d(5)
//! describe them. Every value reaches the scripts through the environment
//! (`BG_*`), never as script text.

use super::paths::LinuxProfile;

/// Distro profile: where a module goes when the manifest names no `drivers_dir`.
/// `updates/` is searched before the distribution's own modules (depmod.d(5)).
pub(crate) const DEFAULT_DISTRO_DRIVERS_DIR: &str = "/lib/modules/{release}/updates/bootgate";
/// Distro profile: where the host uploads a module before the install script moves
/// it into place (the final folder depends on the guest's `uname -r`).
pub(crate) const DISTRO_STAGING_DIR: &str = "/var/lib/bootgate/staging";
/// Exit code of the install script when the module's vermagic names another kernel.
pub(crate) const WRONG_KERNEL_EXIT: i32 = 90;

/// Registers a driver in the Linux demo guest's boot-start registry (one
/// `NAME PARAMS` line per driver), then optionally loads it now.
pub(super) const DEMO_REGISTER: &str = r#"set -euf
touch "$BG_REGISTRY"
grep -v "^$BG_NAME\( \|\$\)" "$BG_REGISTRY" > "$BG_REGISTRY.tmp" || true
printf '%s %s\n' "$BG_NAME" "$BG_PARAMS" >> "$BG_REGISTRY.tmp"
mv "$BG_REGISTRY.tmp" "$BG_REGISTRY"
sync
if [ "$BG_LOAD" = 1 ]; then insmod "$BG_MODULE" $BG_PARAMS; fi"#;

/// Unloads (if loaded), unregisters and deletes a driver in the Linux demo guest.
pub(super) const DEMO_UNREGISTER: &str = r#"set -uf
rmmod "$BG_NAME" 2>/dev/null
touch "$BG_REGISTRY"
grep -v "^$BG_NAME\( \|\$\)" "$BG_REGISTRY" > "$BG_REGISTRY.tmp"
mv "$BG_REGISTRY.tmp" "$BG_REGISTRY" && rm -f "$BG_MODULE" && sync"#;

/// Installs an uploaded module the way a distribution loads modules at boot. The
/// vermagic check comes first: a module for another kernel would fail to load at
/// every boot, and that is the user's build problem, not a driver defect. With
/// `BG_INITRAMFS=1` the module is also listed for the initramfs (initramfs-tools'
/// `/etc/initramfs-tools/modules`, dracut's `add_drivers` in dracut.conf.d), which
/// the image's own tool then rebuilds. Prints the installed module's path.
pub(super) const DISTRO_REGISTER: &str = r#"set -euf
rel=$(uname -r)
magic=$(modinfo -F vermagic "$BG_STAGED" 2>/dev/null | cut -d' ' -f1 || true)
if [ -n "$magic" ] && [ "$magic" != "$rel" ]; then
  echo "bootgate: $BG_NAME.ko was built for kernel $magic, but the guest runs $rel" >&2
  rm -f "$BG_STAGED"
  exit 90
fi
dir=$(printf '%s\n' "$BG_DIR" | sed "s/{release}/$rel/g")
mkdir -p "$dir" /etc/modules-load.d /etc/modprobe.d
mv -f "$BG_STAGED" "$dir/$BG_NAME.ko"
depmod -a "$rel"
printf '%s\n' "$BG_NAME" > "/etc/modules-load.d/$BG_NAME.conf"
if [ -n "$BG_PARAMS" ]; then
  printf 'options %s %s\n' "$BG_NAME" "$BG_PARAMS" > "/etc/modprobe.d/$BG_NAME.conf"
else
  rm -f "/etc/modprobe.d/$BG_NAME.conf"
fi
if [ "$BG_INITRAMFS" = 1 ]; then
  if [ -d /etc/initramfs-tools ]; then
    touch /etc/initramfs-tools/modules
    grep -qx "$BG_NAME" /etc/initramfs-tools/modules || printf '%s\n' "$BG_NAME" >> /etc/initramfs-tools/modules
  fi
  if [ -d /etc/dracut.conf.d ]; then
    printf 'add_drivers+=" %s "\n' "$BG_NAME" > "/etc/dracut.conf.d/$BG_NAME.conf"
  fi
  sh -c "$BG_INITRAMFS_UPDATE"
fi
sync
if [ "$BG_LOAD" = 1 ]; then modprobe "$BG_NAME"; fi
echo "$dir/$BG_NAME.ko""#;

/// Reverses [`DISTRO_REGISTER`]: unloads, removes the module and its load and
/// option files, re-indexes, and rebuilds the initramfs if the module was in it.
pub(super) const DISTRO_UNREGISTER: &str = r#"set -uf
rel=$(uname -r)
modprobe -r "$BG_NAME" 2>/dev/null || rmmod "$BG_NAME" 2>/dev/null
dir=$(printf '%s\n' "$BG_DIR" | sed "s/{release}/$rel/g")
set -e
rm -f "$dir/$BG_NAME.ko" "/etc/modules-load.d/$BG_NAME.conf" "/etc/modprobe.d/$BG_NAME.conf"
depmod -a "$rel"
rebuild=0
if [ -f /etc/initramfs-tools/modules ] && grep -qx "$BG_NAME" /etc/initramfs-tools/modules; then
  grep -vx "$BG_NAME" /etc/initramfs-tools/modules > /etc/initramfs-tools/modules.bootgate || true
  mv /etc/initramfs-tools/modules.bootgate /etc/initramfs-tools/modules
  rebuild=1
fi
if [ -f "/etc/dracut.conf.d/$BG_NAME.conf" ]; then
  rm -f "/etc/dracut.conf.d/$BG_NAME.conf"
  rebuild=1
fi
if [ "$rebuild" = 1 ] && [ -n "$BG_INITRAMFS_UPDATE" ]; then sh -c "$BG_INITRAMFS_UPDATE"; fi
sync"#;

/// Creates a folder (and its parents) for a file the host is about to write: the
/// agent's `guest-file-open` creates files, not folders.
pub(super) const MAKE_DIR: &str = r#"mkdir -p "$BG_DIR""#;

/// Prints the names in `$BG_NAMES` whose module is loaded: the kernel lists every
/// loaded module under /sys/module, with `-` in its name written `_`.
pub(super) const LOADED_DRIVERS: &str = r#"for n in $BG_NAMES; do
  m=$(printf '%s' "$n" | tr - _)
  if [ -d "/sys/module/$m" ]; then echo "$n"; fi
done"#;

/// The install script for a profile.
pub(super) fn register_script(profile: LinuxProfile) -> &'static str {
    match profile {
        LinuxProfile::Demo => DEMO_REGISTER,
        LinuxProfile::Distro => DISTRO_REGISTER,
    }
}

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
pub(crate) fn wrong_kernel(driver: &str, exit: Option<i32>, output: &str) -> Option<String> {
    let lower = output.to_ascii_lowercase();
    let built_for = exit == Some(WRONG_KERNEL_EXIT) || lower.contains("was built for kernel");
    let signs = [
        "invalid module format",
        "exec format error",
        "unknown symbol",
        "disagrees about version of symbol",
    ];
    if !built_for && !signs.iter().any(|s| lower.contains(s)) {
        return None;
    }
    Some(format!(
        "{driver}.ko does not match the guest's kernel ({}): this is a build problem, not a driver defect; build the module against the image's own kernel headers (the image manifest's [kernel] release and headers) and run again",
        output.trim().trim_start_matches("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_kernel_is_recognised_by_the_loaders_words() {
        let busybox = "stderr: insmod: can't insert '/system/drivers/x.ko': invalid module format";
        assert!(wrong_kernel("x", Some(1), busybox)
            .unwrap()
            .contains("build problem"));
        let kmod = "stderr: modprobe: ERROR: could not insert 'x': Exec format error";
        assert!(wrong_kernel("x", Some(1), kmod).is_some());
        let vermagic = "stderr: bootgate: x.ko was built for kernel 6.1.0-9-amd64, but the guest runs 6.1.0-28-cloud-amd64";
        let why = wrong_kernel("x", Some(WRONG_KERNEL_EXIT), vermagic).unwrap();
        assert!(why.contains("6.1.0-9-amd64"), "{why}");
        assert_eq!(
            wrong_kernel("x", Some(1), "stderr: modprobe: FATAL: Module x not found"),
            None
        );
    }

    #[test]
    fn loaded_names_are_the_output_lines() {
        assert_eq!(
            parse_loaded(b"demo_sensor\n\nslow-init\n"),
            ["demo_sensor", "slow-init"]
        );
    }
}
