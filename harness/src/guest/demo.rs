//! The Linux demo guest's driver scripts: its init loads every driver listed in a
//! registry file on the system disk (one `NAME PARAMS` line each) with insmod,
//! the way Windows loads boot-start drivers from its registry. That format is the
//! demo's own; a distribution image uses [`super::distro`].

/// Registers a driver in the Linux demo guest's boot-start registry (one
/// `NAME PARAMS` line per driver), then optionally loads it now.
pub(crate) const REGISTER: &str = r#"set -euf
touch "$BG_REGISTRY"
grep -v "^$BG_NAME\( \|\$\)" "$BG_REGISTRY" > "$BG_REGISTRY.tmp" || true
printf '%s %s\n' "$BG_NAME" "$BG_PARAMS" >> "$BG_REGISTRY.tmp"
mv "$BG_REGISTRY.tmp" "$BG_REGISTRY"
sync
if [ "$BG_LOAD" = 1 ]; then insmod "$BG_MODULE" $BG_PARAMS; fi"#;

/// Unloads (if loaded), unregisters and deletes a driver in the Linux demo guest.
pub(crate) const UNREGISTER: &str = r#"set -uf
rmmod "$BG_NAME" 2>/dev/null
touch "$BG_REGISTRY"
grep -v "^$BG_NAME\( \|\$\)" "$BG_REGISTRY" > "$BG_REGISTRY.tmp"
mv "$BG_REGISTRY.tmp" "$BG_REGISTRY" && rm -f "$BG_MODULE" && sync"#;
