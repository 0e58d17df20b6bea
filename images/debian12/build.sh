#!/usr/bin/env bash
# Recipe for bootgate's Debian 12 guest: a real distribution (systemd, D-Bus, udev,
# Debian's packaged qemu-guest-agent, initramfs-tools and the cloud kernel) made with
# mmdebstrap, on an ext4 root disk made with `mke2fs -d` (no loop mount).
#
#   build.sh resolve        print "PACKAGE VERSION" for every package the image is pinned to
#   build.sh build OUTDIR   build vmlinuz, initrd.img, system.qcow2, image.toml, build-info.json
#
# The harness hashes `resolve` output plus the recipe files into the image cache key,
# so `resolve` must be deterministic and must not download anything, and `build`
# must install exactly the versions `resolve` printed.
#
# Environment:
#   BOOTGATE_DEBIAN_MIRROR           default http://deb.debian.org/debian
#   BOOTGATE_DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
# (Debian's kernel updates land in bookworm-security first, so both are needed.)
#
# Exit codes: 0 ok, 1 build failed, 2 usage, 3 host not ready (root, apt lists, tools).
set -euo pipefail
shopt -s nullglob

readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SUITE=bookworm
readonly MIRROR=${BOOTGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly SECURITY_MIRROR=${BOOTGATE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
readonly KERNEL_META=linux-image-cloud-amd64
# What the image is made of, besides the kernel (its concrete package is found at resolve).
# Everything else comes in as their dependencies (no Recommends: mmdebstrap's default).
readonly BASE_PKGS=(systemd systemd-sysv dbus udev kmod initramfs-tools qemu-guest-agent)
# Modules the initramfs loads before it mounts the root (MODULES=list: only these and
# their dependencies go in, so the initramfs stays small and quick to unpack under TCG).
# pvpanic-mmio binds ISA `-device pvpanic` (ACPI QEMU0001), pvpanic-pci the PCI one:
# loaded this early, a crash anywhere after the initramfs starts reaches QEMU.
readonly INITRAMFS_MODULES=(virtio_pci virtio_blk virtio_console pvpanic-mmio pvpanic-pci)
readonly DISK_SIZE=2G
readonly DISK_LABEL=bootgate-root
readonly DISK_UUID=6f0c8a52-4b1e-4c47-9d0a-b0079a7e0d12
readonly HOSTNAME=bootgate-debian12
# Every boot runs on a fresh overlay of the same base: a fixed machine-id means systemd
# never sees a first boot (no machine-id commit, no preset pass, no first-boot units).
readonly MACHINE_ID=b007a7e0d12b007a7e0d12b007a7e0d1
# Units that cost a TCG boot time and do nothing useful in a throwaway test VM.
# (apt-daily*, man-db and e2scrub are not installed: no apt, man pages or e2fsprogs.)
readonly MASKED_UNITS=(
  systemd-timesyncd.service      # no network; the host sets the RTC
  systemd-journal-flush.service  # the journal stays in /run (volatile): nothing to flush
  systemd-update-utmp.service systemd-update-utmp-runlevel.service
  systemd-random-seed.service    # writes the disk at every boot and shutdown
  systemd-pstore.service
  systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
  sys-kernel-debug.mount sys-kernel-tracing.mount dev-mqueue.mount dev-hugepages.mount
  sys-fs-fuse-connections.mount sys-kernel-config.mount
  systemd-ask-password-console.path systemd-ask-password-wall.path
  getty@tty1.service             # screenshots show the console; nobody logs in on tty1
  fstrim.timer e2scrub_all.timer e2scrub_reap.service apt-daily.timer
  apt-daily-upgrade.timer man-db.timer logrotate.timer dpkg-db-backup.timer
)
readonly EPOCH=1700000000

die() { # die EXIT_CODE MESSAGE...
  local code=$1; shift
  printf 'build.sh: error: %s\n' "$*" >&2
  exit "$code"
}
note() { printf 'build.sh: %s\n' "$*" >&2; }

usage() {
  cat >&2 <<'EOF'
usage: build.sh resolve
       build.sh build OUTDIR     (OUTDIR must exist and be empty; needs root)
EOF
  exit 2
}

need_tools() {
  local t missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die 3 "missing host tools: ${missing[*]} (on Debian: apt-get install -y mmdebstrap e2fsprogs qemu-utils binutils make gcc; or run tools/host-setup)"
}

ARCH=""
# `apt-cache show --no-all-versions` prints the candidate record only; qualify names with
# the native architecture so a host with multiarch enabled still gives one record each.
apt_show() {
  local p args=()
  for p in "$@"; do args+=("$p:$ARCH"); done
  apt-cache show --no-all-versions "${args[@]}"
}

# Field value from a single control record on stdin.
field() { awk -v f="$1" 'index($0, f": ")==1 {print substr($0, length(f)+3); exit}'; }

# resolve_packages: prints sorted "NAME VERSION" lines to stdout.
resolve_packages() {
  need_tools apt-cache dpkg awk sort
  ARCH=$(dpkg --print-architecture)
  local meta
  if ! meta=$(apt_show "$KERNEL_META" 2>/dev/null) || [[ -z $meta ]]; then
    die 3 "apt has no candidate for $KERNEL_META: the package lists are missing or stale; run 'apt-get update' (as root) and retry"
  fi
  # The metapackage depends on the concrete, ABI-versioned kernel package, whose version
  # the host's linux-headers-<kver> must match exactly.
  local kpkg
  kpkg=$(field Depends <<<"$meta" | tr ',' '\n' | awk '{print $1}' | grep -E '^linux-image-[0-9].*-cloud-amd64$' | head -n1 || true)
  [[ -n $kpkg ]] || die 1 "could not find the concrete kernel package in the Depends of $KERNEL_META"
  local pkgs=("$KERNEL_META" "$kpkg" "${BASE_PKGS[@]}") out n
  out=$(apt_show "${pkgs[@]}" 2>/dev/null | awk '/^Package: /{p=$2} /^Version: /{print p, $2}' | LC_ALL=C sort -u)
  n=$(grep -c . <<<"$out" || true)
  ((n == ${#pkgs[@]})) || die 3 "apt-cache returned $n candidate versions for ${#pkgs[@]} packages (${pkgs[*]}); run 'apt-get update' (as root) and retry"
  printf '%s\n' "$out"
}

# ---------------------------------------------------------------------------------
# build

build_headers_info() {
  # Sets HEADERS_DIR and HEADERS_NOTE; verifies a module builds against the headers.
  # The same as the demo recipe: drivers built on the host must load in the guest.
  local hdr=/usr/src/linux-headers-$KVER hpkg=linux-headers-$KVER
  HEADERS_DIR=null
  if [[ ! -f $hdr/Makefile ]]; then
    note "installing $hpkg on the host (needed to build drivers against this kernel)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$hpkg=$KVERSION" \
      || die 3 "apt-get install -y $hpkg=$KVERSION failed; run 'apt-get update' (as root) and retry"
  fi
  local m="$WORK/hello-module"
  mkdir -p "$m"
  cat > "$m/hello.c" <<'EOF'
#include <linux/module.h>
static int __init hello_init(void) { pr_info("hello: loaded\n"); return 0; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
EOF
  echo 'obj-m := hello.o' > "$m/Kbuild"
  if ! make -C "$hdr" M="$m" modules > "$m/build.log" 2>&1; then
    tail -n 20 "$m/build.log" >&2
    die 1 "a hello-world module does not build against $hdr (log above); check gcc and $hpkg"
  fi
  local vm
  vm=$(readelf -p .modinfo "$m/hello.ko" | sed -n 's/.*vermagic=\([^ ]*\).*/\1/p')
  [[ $vm == "$KVER" ]] || die 1 "module built against $hdr has vermagic '$vm', expected '$KVER'"
  HEADERS_DIR="\"$hdr\""
  HEADERS_NOTE="$hpkg; build drivers with: make -C $hdr M=\$PWD modules (verified: a hello-world module builds with vermagic $KVER)"
}

# The guest's configuration, run by mmdebstrap as its customize hook (with /proc,
# /sys and /dev mounted in the chroot): customize ROOT.
write_customize_hook() {
  cat > "$WORK/customize.sh" <<EOF
#!/bin/sh
set -eu
root=\$1
echo $MACHINE_ID > "\$root/etc/machine-id"
mkdir -p "\$root/var/lib/dbus"
ln -sf /etc/machine-id "\$root/var/lib/dbus/machine-id"
echo $HOSTNAME > "\$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 $HOSTNAME\n' > "\$root/etc/hosts"
# Root on the whole disk, no fsck (no e2fsprogs in the guest; the kernel replays the
# journal after a crash). sync: a file the harness writes survives a crash right after.
printf '/dev/vda / ext4 rw,sync,errors=remount-ro 0 0\n' > "\$root/etc/fstab"
# The journal in memory: nothing written to the disk, no flush at boot.
mkdir -p "\$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' > "\$root/etc/systemd/journald.conf.d/bootgate.conf"
# A stuck unit must not hold a reboot for 90 s.
mkdir -p "\$root/etc/systemd/system.conf.d"
printf '[Manager]\nDefaultTimeoutStopSec=10s\nDefaultTimeoutStartSec=60s\n' > "\$root/etc/systemd/system.conf.d/bootgate.conf"

# Boot counter: before any module from /etc/modules-load.d is loaded, so a driver that
# crashes the kernel still leaves a rising count (a boot loop shows as one).
mkdir -p "\$root/var/lib/bootgate"
echo 0 > "\$root/var/lib/bootgate/bootcount"
cat > "\$root/etc/systemd/system/bootgate-bootcount.service" <<'UNIT'
[Unit]
Description=bootgate: count this boot
DefaultDependencies=no
After=systemd-remount-fs.service
Before=systemd-modules-load.service sysinit.target
RequiresMountsFor=/var/lib/bootgate

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'f=/var/lib/bootgate/bootcount; n=\$\$(cat \$\$f 2>/dev/null || echo 0); echo \$\$((n + 1)) > \$\$f.new && mv \$\$f.new \$\$f && sync'

[Install]
WantedBy=sysinit.target
UNIT
chroot "\$root" systemctl enable bootgate-bootcount.service

# Debian's qemu-guest-agent.service has no [Install] section: udev's rule starts it when
# the virtio port org.qemu.guest_agent.0 appears. Enable it on that device as well, so
# it starts on the port even if the rule's SYSTEMD_WANTS is lost to a udev change.
wants="\$root/etc/systemd/system/dev-virtio\\\\x2dports-org.qemu.guest_agent.0.device.wants"
mkdir -p "\$wants"
ln -sf /lib/systemd/system/qemu-guest-agent.service "\$wants/qemu-guest-agent.service"
for u in ${MASKED_UNITS[*]}; do chroot "\$root" systemctl mask "\$u" >/dev/null 2>&1; done

# initramfs: only the listed modules, zstd (quick to unpack).
printf '%s\n' ${INITRAMFS_MODULES[*]} > "\$root/etc/initramfs-tools/modules"
sed -i 's/^MODULES=.*/MODULES=list/' "\$root/etc/initramfs-tools/initramfs.conf"
chroot "\$root" update-initramfs -u -k $KVER

chroot "\$root" dpkg-query -W -f '\${Package} \${Version}\n' > "$WORK/installed.txt"
rm -rf "\$root/var/cache/apt/archives/"*.deb "\$root/var/log/"*.log
EOF
}

cmd_build() {
  local out=${1:-}
  [[ -n $out ]] || usage
  [[ -d $out ]] || die 2 "OUTDIR '$out' does not exist; create it (empty) first"
  [[ -z $(ls -A "$out") ]] || die 2 "OUTDIR '$out' is not empty; give an empty directory"
  out=$(cd "$out" && pwd)
  ((EUID == 0)) || die 3 "building the debian12 image needs root (mmdebstrap and update-initramfs run in a chroot, and the host's kernel headers are installed with apt); as root run: bootgate image build debian12 (or: sudo $HERE/build.sh build OUTDIR)"
  need_tools mmdebstrap apt-get apt-cache dpkg mke2fs truncate qemu-img readelf make
  local t_start=$SECONDS
  exec 1>&2

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootgate-debian12-build.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  chmod 0755 "$WORK"
  resolve_packages > "$WORK/resolve.txt"
  local kpkg name ver specs=()
  kpkg=$(awk '$1 ~ /^linux-image-[0-9]/ {print $1}' "$WORK/resolve.txt")
  KVER=${kpkg#linux-image-}
  KVERSION=$(awk -v p="$kpkg" '$1 == p {print $2}' "$WORK/resolve.txt")
  while read -r name ver; do specs+=("$name=$ver"); done < "$WORK/resolve.txt"

  write_customize_hook
  local tree="$WORK/root"
  note "mmdebstrap $SUITE from $MIRROR (+ $SECURITY_MIRROR): ${specs[*]}"
  # --mode=root: real owners in the tree, so mke2fs -d copies them as they are.
  if ! mmdebstrap --mode=root --variant=essential --format=directory \
      --include="$(IFS=,; echo "${specs[*]}")" \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook="sh $WORK/customize.sh \"\$1\"" \
      "$SUITE" "$tree" \
      "deb $MIRROR $SUITE main" \
      "deb $MIRROR $SUITE-updates main" \
      "deb $SECURITY_MIRROR $SUITE-security main" 2>&1 | tee "$WORK/mmdebstrap.log"; then
    if grep -qE "Version '.*' for '.*' was not found|Unable to locate package" "$WORK/mmdebstrap.log"; then
      die 3 "the mirror has no package of a version the host's apt lists resolved (the lists are older than the mirror); run 'apt-get update' (as root) and retry"
    fi
    die 1 "mmdebstrap failed (log above); check network access to $MIRROR and $SECURITY_MIRROR"
  fi
  [[ -f $tree/boot/vmlinuz-$KVER && -f $tree/boot/initrd.img-$KVER ]] \
    || die 1 "the tree has no /boot/vmlinuz-$KVER and /boot/initrd.img-$KVER"
  [[ ! -e $tree/var/lib/sensor ]] || die 1 "the tree has /var/lib/sensor; the harness must create it itself"
  cp "$tree/boot/vmlinuz-$KVER" "$out/vmlinuz"
  cp "$tree/boot/initrd.img-$KVER" "$out/initrd.img"

  # ext4 on the whole disk from the tree: no loop mount. Inode tables and the journal
  # are written now (not lazily by the kernel at first mount, which would be at every
  # boot: every boot runs on a fresh overlay); qemu-img then drops the zeros.
  truncate -s "$DISK_SIZE" "$WORK/system.raw"
  E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext4 -L "$DISK_LABEL" -U "$DISK_UUID" \
      -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$tree" "$WORK/system.raw" \
    || die 1 "mke2fs -d failed"
  qemu-img convert -f raw -O qcow2 "$WORK/system.raw" "$out/system.qcow2"
  rm -f "$WORK/system.raw"
  cp "$HERE/image.toml" "$out/image.toml"

  build_headers_info

  {
    printf '{\n  "kernel_version": "%s",\n  "packages": [\n' "$KVER"
    local first=1
    while read -r name ver; do
      ((first)) || printf ',\n'
      first=0
      printf '    {"name": "%s", "version": "%s"}' "$name" "$ver"
    done < <(LC_ALL=C sort "$WORK/installed.txt")
    printf '\n  ],\n  "headers_dir": %s,\n  "headers_note": "%s"\n}\n' "$HEADERS_DIR" "${HEADERS_NOTE//\"/\\\"}"
  } > "$out/build-info.json"
  note "built the $KVER image in $((SECONDS - t_start)) s: $(cd "$out" && ls | tr '\n' ' ')"
}

case ${1:-} in
  resolve) (($# == 1)) || usage; resolve_packages ;;
  build) (($# == 2)) || usage; cmd_build "$2" ;;
  *) usage ;;
esac
