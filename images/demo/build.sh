#!/usr/bin/env bash
# Recipe for bootgate's demo Linux guest: a Debian cloud kernel, a busybox initramfs
# that runs qemu-ga, and a small ext4 "system drive" holding the boot count, the
# driver registry and the content folder. Everything comes from Debian packages.
#
#   build.sh resolve        print "PACKAGE VERSION" for every package the image is made of
#   build.sh build OUTDIR   build vmlinuz, initrd.img, system.qcow2, image.toml, build-info.json
#
# The harness hashes `resolve` output plus the recipe files into the image cache key,
# so `resolve` must be deterministic and must not download anything, and `build`
# must use exactly the versions `resolve` printed.
#
# Exit codes: 0 ok, 1 build failed, 2 usage, 3 host not ready (apt lists, tools).
set -euo pipefail
shopt -s nullglob

readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly KERNEL_META=linux-image-cloud-amd64
readonly BUSYBOX_PKG=busybox-static
readonly AGENT_PKG=qemu-guest-agent
# Modules the initramfs loads, in order. ext4 (and jbd2, crc16, crc32c) and the pvpanic
# core option are built into the cloud kernel; virtio itself is modular there.
# pvpanic-mmio is the driver that binds ISA `-device pvpanic` (ACPI QEMU0001);
# pvpanic-pci covers `-device pvpanic-pci`.
readonly GUEST_MODULES=(virtio_pci virtio_blk virtio_console pvpanic-mmio pvpanic-pci)
readonly DISK_SIZE=64M
readonly DISK_LABEL=bootgate-sys
# Fixed identity and timestamps so two builds from the same packages give the same bytes.
readonly DISK_UUID=6f0c8a52-4b1e-4c47-9d0a-b0079a7e0001
readonly DISK_HASH_SEED=6f0c8a52-4b1e-4c47-9d0a-b0079a7e0002
readonly EPOCH=1700000000

# A variant recipe (images/ntfs-helper) ships this script beside its own variant.sh,
# which adds to the image without copying the recipe:
#   VARIANT_PACKAGES  packages resolved and downloaded with the rest
#   VARIANT_BINARIES  "PACKAGE PATH": files copied to PATH in the initramfs, with the
#                     shared libraries they need (ELF NEEDED, transitively)
#   VARIANT_MODULES   kernel modules shipped (with their dependencies) but not loaded at boot
#   VARIANT_FILES     "RECIPE_FILE PATH MODE": recipe files installed into the initramfs
#   VARIANT_LINKS     "TARGET PATH": symlinks made in the initramfs
VARIANT_PACKAGES=() VARIANT_BINARIES=() VARIANT_MODULES=() VARIANT_FILES=() VARIANT_LINKS=()
if [[ -f $HERE/variant.sh ]]; then
  # shellcheck source=/dev/null
  source "$HERE/variant.sh"
fi

die() { # die EXIT_CODE MESSAGE...
  local code=$1; shift
  printf 'build.sh: error: %s\n' "$*" >&2
  exit "$code"
}
note() { printf 'build.sh: %s\n' "$*" >&2; }

usage() {
  cat >&2 <<'EOF'
usage: build.sh resolve
       build.sh build OUTDIR     (OUTDIR must exist and be empty)
EOF
  exit 2
}

need_tools() {
  local t missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die 3 "missing host tools: ${missing[*]} (on Debian: apt-get install -y apt dpkg e2fsprogs qemu-utils cpio gzip binutils)"
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
  # The metapackage depends on the concrete, ABI-versioned kernel package.
  local kpkg
  kpkg=$(field Depends <<<"$meta" | tr ',' '\n' | awk '{print $1}' | grep -E '^linux-image-[0-9].*-cloud-amd64$' | head -n1 || true)
  [[ -n $kpkg ]] || die 1 "could not find the concrete kernel package in the Depends of $KERNEL_META"

  # qemu-ga's shared libraries: the Depends closure restricted to library packages.
  # Pre-Depends are skipped on purpose (init-system-helpers, for systemd units, drags in
  # perl); which files of these packages are shipped is decided from ELF NEEDED at build.
  local libs
  local roots=("$AGENT_PKG:$ARCH") p
  for p in "${VARIANT_PACKAGES[@]}"; do roots+=("$p:$ARCH"); done
  libs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
           --no-breaks --no-replaces --no-enhances --no-pre-depends "${roots[@]}" \
         | awk '/^[^ <]/ {sub(/:.*/, ""); print}' | grep -E '^lib' | LC_ALL=C sort -u)
  [[ -n $libs ]] || die 1 "could not resolve the library dependencies of $AGENT_PKG"

  local pkgs=("$KERNEL_META" "$kpkg" "$BUSYBOX_PKG" "$AGENT_PKG" "${VARIANT_PACKAGES[@]}")
  mapfile -t -O ${#pkgs[@]} pkgs < <(LC_ALL=C comm -13 <(printf '%s\n' "${pkgs[@]}" | LC_ALL=C sort -u) - <<<"$libs")
  apt_show "${pkgs[@]}" 2>/dev/null \
    | awk '/^Package: /{p=$2} /^Version: /{print p, $2}' \
    | LC_ALL=C sort -u > "$TMP_RESOLVE"
  local n
  n=$(wc -l < "$TMP_RESOLVE")
  ((n == ${#pkgs[@]})) || die 1 "apt-cache returned $n candidate versions for ${#pkgs[@]} packages (${pkgs[*]})"
  cat "$TMP_RESOLVE"
}

cmd_resolve() {
  TMP_RESOLVE=$(mktemp)
  trap 'rm -f "$TMP_RESOLVE"' EXIT
  resolve_packages
}

# ---------------------------------------------------------------------------------
# build

# Copy FILE from an unpacked package tree into the image root at the same path.
install_from() { # install_from SRC_ROOT PATH DEST_ROOT
  mkdir -p "$3/$(dirname "$2")"
  cp -L --preserve=mode "$1/$2" "$3/$2"
}

# Print the NEEDED sonames of an ELF file.
needed_of() {
  readelf -d "$1" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p'
}

# find_lib SONAME: print "PKG RELPATH" of the first unpacked package providing it.
find_lib() {
  local pkgdir d pkg
  for pkgdir in "$WORK/pkg"/*; do
    pkg=${pkgdir##*/}
    for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 lib usr/lib; do
      if [[ -e $pkgdir/$d/$1 ]]; then
        echo "$pkg $d/$1"
        return 0
      fi
    done
  done
  return 1
}

build_headers_info() {
  # Sets HEADERS_DIR and HEADERS_NOTE; verifies a module builds against the headers.
  local hdr=/usr/src/linux-headers-$KVER hpkg=linux-headers-$KVER
  HEADERS_DIR=null
  if [[ ! -f $hdr/Makefile ]]; then
    if ((EUID == 0)); then
      note "installing $hpkg (needed to build drivers against this kernel)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$hpkg" \
        || die 1 "apt-get install -y $hpkg failed; fix apt and retry"
    else
      HEADERS_NOTE="linux headers for $KVER are not installed; as root run: apt-get install -y $hpkg"
      note "$HEADERS_NOTE"
      return 0
    fi
  fi
  # A hello-world module proves the headers, kbuild and compiler work together.
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

cmd_build() {
  local out=${1:-}
  [[ -n $out ]] || usage
  [[ -d $out ]] || die 2 "OUTDIR '$out' does not exist; create it (empty) first"
  [[ -z $(ls -A "$out") ]] || die 2 "OUTDIR '$out' is not empty; give an empty directory"
  out=$(cd "$out" && pwd)
  need_tools apt-get apt-cache dpkg dpkg-deb mke2fs debugfs truncate qemu-img cpio gzip readelf find make
  local t_start=$SECONDS
  # Progress and tool chatter go to stderr; build prints nothing on stdout.
  exec 1>&2

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootgate-demo-build.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  # apt drops privileges to _apt for downloads; it must be able to reach the download dir.
  chmod 0755 "$WORK"
  TMP_RESOLVE=$WORK/resolve.txt
  resolve_packages > /dev/null

  # --- fetch exactly the resolved versions and unpack each package separately, so every
  # shipped file can be traced back to its package.
  mkdir -p "$WORK/debs" "$WORK/pkg"
  if ((EUID == 0)) && id _apt >/dev/null 2>&1; then chown _apt "$WORK/debs"; fi
  local specs=() name ver
  while read -r name ver; do specs+=("$name=$ver"); done < "$TMP_RESOLVE"
  note "downloading ${#specs[@]} packages"
  (cd "$WORK/debs" && apt-get download -q "${specs[@]}") \
    || die 1 "apt-get download failed; check network access to the Debian mirror, run 'apt-get update' and retry"
  local deb
  for deb in "$WORK"/debs/*.deb; do
    name=$(dpkg-deb -f "$deb" Package)
    dpkg-deb -x "$deb" "$WORK/pkg/$name"
  done

  local kpkg
  kpkg=$(awk '$1 ~ /^linux-image-[0-9]/ {print $1}' "$TMP_RESOLVE")
  KVER=${kpkg#linux-image-}
  local kroot="$WORK/pkg/$kpkg"
  [[ -f $kroot/boot/vmlinuz-$KVER ]] || die 1 "$kpkg has no boot/vmlinuz-$KVER"

  # Packages whose files end up in the image (build-info.json lists these).
  declare -A USED=([$KERNEL_META]=1 [$kpkg]=1 [$BUSYBOX_PKG]=1 [$AGENT_PKG]=1)

  # --- initramfs root
  local root="$WORK/initramfs"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,system,etc,root,var}
  # qemu-ga's compiled-in pidfile and state dir live under /var/run.
  ln -s ../run "$root/var/run"
  chmod 1777 "$root/tmp"

  # busybox: one static binary, applet links at the paths it reports itself.
  local bbsrc="$WORK/pkg/$BUSYBOX_PKG/bin/busybox" applet
  [[ -x $bbsrc ]] || die 1 "$BUSYBOX_PKG has no bin/busybox"
  install -m 0755 "$bbsrc" "$root/bin/busybox"
  while read -r applet; do
    [[ $applet == bin/busybox || -e $root/$applet ]] && continue
    ln -s /bin/busybox "$root/$applet"
  done < <("$bbsrc" --list-full)

  # Our init and shutdown (qemu-ga's guest-shutdown execs /sbin/shutdown; busybox has none).
  install -m 0755 "$HERE/init" "$root/init"
  install -m 0755 "$HERE/shutdown" "$root/sbin/shutdown"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\n' > "$root/etc/group"

  # qemu-ga and exactly the shared libraries it needs (transitively), plus ld.so.
  local ga_rel=usr/sbin/qemu-ga
  [[ -x $WORK/pkg/$AGENT_PKG/$ga_rel ]] || die 1 "$AGENT_PKG has no $ga_rel"
  install_from "$WORK/pkg/$AGENT_PKG" "$ga_rel" "$root"
  local interp
  interp=$(readelf -l "$root/$ga_rel" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  [[ -n $interp ]] || die 1 "qemu-ga has no ELF interpreter"
  local queue=("$root/$ga_rel") seen=" " f so hit pkg rel vpkg vpath
  for p in "${VARIANT_BINARIES[@]}"; do
    read -r vpkg vpath <<<"$p"
    [[ -f $WORK/pkg/$vpkg/$vpath ]] || die 1 "$vpkg has no $vpath (variant binary)"
    install_from "$WORK/pkg/$vpkg" "$vpath" "$root"
    USED[$vpkg]=1
    queue+=("$root/$vpath")
  done
  while ((${#queue[@]})); do
    f=${queue[0]}; queue=("${queue[@]:1}")
    for so in $(needed_of "$f"); do
      [[ $seen == *" $so "* ]] && continue
      seen+="$so "
      hit=$(find_lib "$so") || die 1 "no resolved package provides $so (needed by ${f#$root/}); the Depends closure of $AGENT_PKG is incomplete"
      read -r pkg rel <<<"$hit"
      USED[$pkg]=1
      # All libraries go to /lib/x86_64-linux-gnu, a default search dir of Debian's ld.so.
      mkdir -p "$root/lib/x86_64-linux-gnu"
      cp -L --preserve=mode "$WORK/pkg/$pkg/$rel" "$root/lib/x86_64-linux-gnu/$so"
      queue+=("$root/lib/x86_64-linux-gnu/$so")
    done
  done
  # The loader at the exact path the binary asks for (/lib64/ld-linux-x86-64.so.2): libc.so.6
  # NEEDs it, so it is already in /lib/x86_64-linux-gnu; link rather than copy it twice.
  local ld=${interp##*/}
  [[ -f $root/lib/x86_64-linux-gnu/$ld ]] || die 1 "the loader $ld was not among the libraries qemu-ga needs"
  mkdir -p "$root/${interp%/*}"
  ln -s "/lib/x86_64-linux-gnu/$ld" "$root/$interp"

  # Kernel modules: the closure of GUEST_MODULES by modules.dep, then a fresh modules.dep
  # for just those. busybox (the host may lack kmod) computes both.
  local mdir="lib/modules/$KVER"
  "$bbsrc" depmod -b "$kroot" "$KVER" || die 1 "busybox depmod failed on the kernel package"
  local want=() m dep path
  for m in "${GUEST_MODULES[@]}" "${VARIANT_MODULES[@]}"; do
    path=$(awk -F: -v n="$m" '{ b=$1; sub(/.*\//, "", b); sub(/\.ko.*$/, "", b); gsub(/-/, "_", b);
                                 t=n; gsub(/-/, "_", t); if (b == t) { print $0; exit } }' "$kroot/$mdir/modules.dep")
    [[ -n $path ]] || die 1 "module $m not found in $kpkg (is it built in? check boot/config-$KVER)"
    for dep in ${path/:/ }; do want+=("$dep"); done
  done
  for dep in $(printf '%s\n' "${want[@]}" | LC_ALL=C sort -u); do
    dep=${dep#/lib/modules/$KVER/}; dep=${dep#"$kroot/$mdir/"}
    install_from "$kroot/$mdir" "$dep" "$root/$mdir"
  done
  cp "$kroot/$mdir/modules.builtin" "$kroot/$mdir/modules.order" "$root/$mdir/"
  "$root/bin/busybox" depmod -b "$root" "$KVER" || die 1 "busybox depmod failed on the initramfs"

  local vsrc vdest vmode
  for p in "${VARIANT_FILES[@]}"; do
    read -r vsrc vdest vmode <<<"$p"
    mkdir -p "$root/$(dirname "$vdest")"
    install -m "$vmode" "$HERE/$vsrc" "$root/$vdest"
  done
  for p in "${VARIANT_LINKS[@]}"; do
    read -r vsrc vdest <<<"$p"
    mkdir -p "$root/$(dirname "$vdest")"
    ln -sfn "$vsrc" "$root/$vdest"
  done

  # --- system drive contents: what the guest's init expects to find.
  local sys="$WORK/system"
  mkdir -p "$sys"/{drivers,content,etc,var}
  : > "$sys/etc/drivers.conf"
  echo 0 > "$sys/var/bootcount"

  # Deterministic trees: fixed mtimes, sorted cpio member order, gzip without name/time.
  find "$root" "$sys" -exec touch -h -d "@$EPOCH" {} +
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort \
     | cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n > "$out/initrd.img"

  # ext4 from a directory: no loop mount, no root. mke2fs -d copies each file's owner and
  # its ctime (which cannot be faked on the host), so debugfs (same e2fsprogs) then gives
  # every inode to root and pins its times: the disk is byte-identical across builds and users.
  truncate -s "$DISK_SIZE" "$WORK/system.raw"
  E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext4 -L "$DISK_LABEL" -U "$DISK_UUID" \
      -E "hash_seed=$DISK_HASH_SEED,root_owner=0:0" -d "$sys" "$WORK/system.raw" \
    || die 1 "mke2fs failed (needs e2fsprogs >= 1.43 for -d)"
  (cd "$sys" && find . -mindepth 1 | LC_ALL=C sort; echo ./lost+found; echo .) | while read -r f; do
    f=/${f#./}; [[ $f == /. ]] && f=/
    printf 'sif %s\n' "$f uid 0" "$f gid 0" "$f atime @$EPOCH" "$f mtime @$EPOCH" \
      "$f ctime @$EPOCH" "$f crtime @$EPOCH"
  done > "$WORK/fixup.debugfs"
  E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$WORK/fixup.debugfs" "$WORK/system.raw" > "$WORK/debugfs.log" 2>&1 \
    || { cat "$WORK/debugfs.log"; die 1 "debugfs could not fix owners and times on the system disk"; }
  qemu-img convert -f raw -O qcow2 "$WORK/system.raw" "$out/system.qcow2"

  cp "$kroot/boot/vmlinuz-$KVER" "$out/vmlinuz"
  cp "$HERE/image.toml" "$out/image.toml"

  build_headers_info

  # --- build-info.json (all strings here are package names, versions and paths: no escaping needed
  # beyond the note's quotes, which it does not contain).
  {
    printf '{\n  "kernel_version": "%s",\n  "packages": [\n' "$KVER"
    local first=1
    while read -r name ver; do
      [[ -n ${USED[$name]:-} ]] || continue
      ((first)) || printf ',\n'
      first=0
      printf '    {"name": "%s", "version": "%s"}' "$name" "$ver"
    done < "$TMP_RESOLVE"
    printf '\n  ],\n  "headers_dir": %s,\n  "headers_note": "%s"\n}\n' "$HEADERS_DIR" "${HEADERS_NOTE//\"/\\\"}"
  } > "$out/build-info.json"

  local unused
  unused=$(awk '{print $1}' "$TMP_RESOLVE" | while read -r name; do [[ -n ${USED[$name]:-} ]] || echo "$name"; done | tr '\n' ' ')
  [[ -z $unused ]] || note "resolved but no files shipped (qemu-ga does not need them): $unused"
  note "built $KVER image in $((SECONDS - t_start)) s: $(cd "$out" && ls | tr '\n' ' ')"
}

case ${1:-} in
  resolve) (($# == 1)) || usage; cmd_resolve ;;
  build) (($# == 2)) || usage; cmd_build "$2" ;;
  *) usage ;;
esac
