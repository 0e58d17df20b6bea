//! A distribution Linux guest's driver scripts (systemd or not): the module under
//! `/lib/modules/<release>`, indexed by `depmod`, loaded at every boot through
//! `modules-load.d` (names only, read by systemd-modules-load and the sysvinit
//! `kmod` script) with its options in `modprobe.d`, as modules-load.d(5) and
//! modprobe.d(5) describe them.

/// Distro profile: where a module goes when the manifest names no `drivers_dir`.
/// `updates/` is searched before the distribution's own modules (depmod.d(5)).
pub(crate) const DEFAULT_DRIVERS_DIR: &str = "/lib/modules/{release}/updates/bootgate";
/// Distro profile: where the host uploads a module before the install script moves
/// it into place (the final folder depends on the guest's `uname -r`).
pub(crate) const STAGING_DIR: &str = "/var/lib/bootgate/staging";

/// Installs an uploaded module the way a distribution loads modules at boot. The
/// vermagic check comes first: a module for another kernel would fail to load at
/// every boot, and that is the user's build problem, not a driver defect. With
/// `BG_INITRAMFS=1` the module is also listed for the initramfs (initramfs-tools'
/// `/etc/initramfs-tools/modules`, dracut's `add_drivers` in dracut.conf.d), which
/// the image's own tool then rebuilds. Prints the installed module's path.
pub(crate) const REGISTER: &str = r#"set -euf
rel=$(uname -r)
magic=$(modinfo -F vermagic "$BG_STAGED" 2>/dev/null | cut -d' ' -f1 || true)
if [ -n "$magic" ] && [ "$magic" != "$rel" ]; then
  echo "bootgate: $BG_NAME.ko was built for kernel $magic, but the guest runs $rel" >&2
  rm -f "$BG_STAGED"
  exit 1
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
echo "bootgate-installed: $dir/$BG_NAME.ko""#;

/// The line of [`REGISTER`]'s output that says where the module went.
const INSTALLED_MARKER: &str = "bootgate-installed: ";

/// Where [`REGISTER`] put the module, from its output (other lines are the
/// initramfs tool's and depmod's).
pub(crate) fn installed_path(stdout: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix(INSTALLED_MARKER))
        .map(|p| p.trim().to_string())
}

/// Reverses [`REGISTER`]: unloads, removes the module and its load and
/// option files, re-indexes, and rebuilds the initramfs if the module was in it.
pub(crate) const UNREGISTER: &str = r#"set -uf
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_path_is_the_marked_line_whatever_else_is_printed() {
        let out = b"update-initramfs: Generating /boot/initrd.img-6.1\nbootgate-installed: /lib/modules/6.1/updates/bootgate/x.ko\n";
        assert_eq!(
            installed_path(out).as_deref(),
            Some("/lib/modules/6.1/updates/bootgate/x.ko")
        );
        assert!(REGISTER.ends_with(&format!("echo \"{INSTALLED_MARKER}$dir/$BG_NAME.ko\"")));
        assert_eq!(installed_path(b"insmod ok\n"), None);
    }
}
