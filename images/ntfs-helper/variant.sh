# ntfs-helper: the demo guest plus NTFS read-write support, for offline work on a
# stopped Windows VM's disk (bootgate's helper_vm recovery, `bootgate offline`).
# Sourced by the demo's build.sh (shipped in this recipe as build.sh); see the
# VARIANT_* comment there.
#
# ntfs-3g (Debian 1:2022.10.x) runs on its built-in fuse-lite: as root it mounts
# through /dev/fuse with mount(2), without fusermount or libfuse. The cloud kernel has
# no ntfs3 driver, but has fuse as a module.
VARIANT_PACKAGES=(ntfs-3g)
VARIANT_BINARIES=("ntfs-3g bin/ntfs-3g" "ntfs-3g bin/ntfsfix" "ntfs-3g bin/ntfsinfo")
VARIANT_MODULES=(fuse)
VARIANT_FILES=("bootgate-ntfs usr/sbin/bootgate-ntfs 0755")
VARIANT_LINKS=()
