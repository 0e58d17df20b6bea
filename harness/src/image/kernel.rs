//! An image's Linux kernel as the host sees it: the release the guest runs and the
//! headers folder `source` drivers are built against. A built-in image records both
//! in its `build-info.json`; a user's image names them in its manifest's `[kernel]`
//! table, so a vendor's distribution image builds drivers with no code change.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::manifest::Manifest;

/// The manifest's `[kernel]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// The guest kernel's release (`uname -r` in the guest): modules built for
    /// another release are refused before the guest boots.
    pub release: Option<String>,
    /// The host folder holding that kernel's build headers (the folder `make -C`
    /// takes: `/usr/src/linux-headers-<release>` on Debian,
    /// `/usr/src/kernels/<release>` on RHEL). Relative to the manifest's folder.
    pub headers: Option<PathBuf>,
    /// The host package that installs those headers, named in the error when the
    /// folder is missing (`linux-headers-<release>`, `kernel-devel-<release>`).
    pub headers_package: Option<String>,
    /// The guest kernel's debug vmlinux (with its DWARF), for crash triage of a
    /// memory dump with the `crash` utility. Unnamed, the places distributions'
    /// debug packages install it are searched ([`DEBUG_VMLINUX_PLACES`]).
    pub debug_vmlinux: Option<PathBuf>,
}

/// Where distributions' kernel debug packages put the debug vmlinux of `{release}`:
/// Debian's `linux-image-<release>-dbg`, then Ubuntu's `linux-image-<release>-dbgsym`
/// and Fedora/RHEL's `kernel-debuginfo`.
pub(crate) const DEBUG_VMLINUX_PLACES: &[&str] = &[
    "/usr/lib/debug/boot/vmlinux-{release}",
    "/usr/lib/debug/lib/modules/{release}/vmlinux",
    "/usr/lib/debug/usr/lib/modules/{release}/vmlinux",
];

/// The guest kernel's debug vmlinux: the one the manifest names, or the first of the
/// distributions' places that exists for its release. The error says what is
/// missing and the package that would install it.
pub(crate) fn debug_vmlinux(manifest: &Manifest) -> Result<PathBuf, String> {
    debug_vmlinux_under(manifest, Path::new("/"))
}

/// [`debug_vmlinux`] with the distributions' places under `root` (tests).
pub(crate) fn debug_vmlinux_under(manifest: &Manifest, root: &Path) -> Result<PathBuf, String> {
    if let Some(named) = &manifest.kernel.debug_vmlinux {
        return if named.is_file() {
            Ok(named.clone())
        } else {
            Err(format!(
                "{}: [kernel] debug_vmlinux {} does not exist",
                manifest.path.display(),
                named.display()
            ))
        };
    }
    let Some(release) = release(manifest) else {
        return Err(format!(
            "the image {} does not say which kernel it runs: add [kernel] release (or debug_vmlinux) to its manifest",
            manifest.path.display()
        ));
    };
    for place in DEBUG_VMLINUX_PLACES {
        let path = root.join(place.replace("{release}", &release).trim_start_matches('/'));
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(format!(
        "no debug vmlinux for kernel {release} (looked in {}): as root run `apt-get install linux-image-{release}-dbg` (Debian; Ubuntu: linux-image-{release}-dbgsym, Fedora: dnf debuginfo-install kernel-{release}) or name it as [kernel] debug_vmlinux in {}",
        DEBUG_VMLINUX_PLACES
            .iter()
            .map(|p| p.replace("{release}", &release))
            .collect::<Vec<_>>()
            .join(", "),
        manifest.path.display()
    ))
}

/// `build-info.json` of a built image (kernel version, packages, headers folder).
pub fn build_info(manifest: &Path) -> Option<serde_json::Value> {
    let dir = manifest.parent()?;
    let text = std::fs::read_to_string(dir.join("build-info.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The release the image's guest kernel runs, when the manifest or the image's
/// build record says.
pub(crate) fn release(manifest: &Manifest) -> Option<String> {
    manifest.kernel.release.clone().or_else(|| {
        build_info(&manifest.path)?["kernel_version"]
            .as_str()
            .map(str::to_string)
    })
}

/// The kernel release and headers folder `source` drivers are built against, or
/// what the user must do to have them.
pub(crate) fn headers(manifest: &Manifest) -> Result<(String, PathBuf), String> {
    let where_from = manifest.path.display();
    if let Some(dir) = &manifest.kernel.headers {
        let Some(release) = manifest.kernel.release.clone() else {
            return Err(format!(
                "{where_from}: [kernel] names headers but no release: add `release = \"<the guest's uname -r>\"`"
            ));
        };
        if dir.join("Makefile").is_file() {
            return Ok((release, dir.clone()));
        }
        let install = manifest.kernel.headers_package.as_ref().map_or_else(
            || "install the headers of that kernel on this host".to_string(),
            |pkg| format!("as root run: apt-get install -y {pkg} (or dnf install -y {pkg})"),
        );
        return Err(format!(
            "{where_from}: [kernel] headers {} has no Makefile: {install}",
            dir.display()
        ));
    }
    if let Some(info) = build_info(&manifest.path) {
        let release = info["kernel_version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return match info["headers_dir"].as_str() {
            Some(dir) if Path::new(dir).is_dir() => Ok((release, PathBuf::from(dir))),
            Some(dir) => Err(format!("headers folder {dir} is missing")),
            None => Err(info["headers_note"]
                .as_str()
                .unwrap_or("the image records no kernel headers")
                .to_string()),
        };
    }
    Err(match &manifest.kernel.headers_package {
        Some(pkg) => format!(
            "{where_from} has no [kernel] headers folder: install {pkg} and add `headers = \"/usr/src/...\"` with `release` to its [kernel] table"
        ),
        None => format!(
            "{where_from} does not name the image's kernel headers: add a [kernel] table with `release` (the guest's uname -r) and `headers` (the host folder with that kernel's build headers)"
        ),
    })
}

/// Installs the manifest's `[kernel] headers_package` on the host when its
/// `headers` folder is missing, as the built-in images' recipes install theirs:
/// only as root, with the host's own package manager (apt-get, else dnf), and only
/// a name that is a package name. Ok(false) when there is nothing to install.
pub(crate) fn install_headers(manifest: &Manifest) -> Result<bool, String> {
    let (Some(dir), Some(pkg)) = (&manifest.kernel.headers, &manifest.kernel.headers_package)
    else {
        return Ok(false);
    };
    if dir.join("Makefile").is_file() {
        return Ok(false);
    }
    let is_name = pkg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        && !pkg.starts_with('-');
    if !is_name {
        return Err(format!(
            "{}: [kernel] headers_package {pkg:?} is not a package name",
            manifest.path.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{} is missing: as root run `apt-get install -y {pkg}` (or `dnf install -y {pkg}`), then run again",
            dir.display()
        ));
    }
    let tool = ["apt-get", "dnf"]
        .into_iter()
        .find(|t| crate::util::find_in_path(t).is_some())
        .ok_or_else(|| format!("neither apt-get nor dnf is here to install {pkg}"))?;
    let output = std::process::Command::new(tool)
        .args(["install", "-y", pkg])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !output.status.success() || !dir.join("Makefile").is_file() {
        return Err(format!(
            "`{tool} install -y {pkg}` did not provide {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(true)
}

/// The release a module was built for: the first word of its `vermagic=` entry
/// (in the module's `.modinfo` section), or None when the file has none.
pub(crate) fn module_vermagic(module: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"vermagic=";
    let at = module.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &module[at..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    text.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::LinuxProfile;
    use crate::image::ManifestError;

    const DEMO: &str = include_str!("../../../images/demo/image.toml");

    fn load(text: &str) -> (tempfile::TempDir, Result<Manifest, ManifestError>) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let path = dir.path().join("image.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Manifest::load(&path);
        (dir, loaded)
    }

    /// The demo manifest as a distribution's: no registry, distro paths.
    fn distro(extra: &str) -> String {
        DEMO.replace("drivers_dir = \"/system/drivers\"\n", "")
            .replace("drivers_registry = \"/system/etc/drivers.conf\"\n", "")
            .replace("os = \"linux\"", &format!("os = \"linux\"\n{extra}"))
    }

    #[test]
    fn the_debug_vmlinux_is_named_or_found_where_debug_packages_put_it() {
        let root = tempfile::tempdir().unwrap();
        let with_release = format!("{DEMO}\n[kernel]\nrelease = \"6.1.0-9-amd64\"\n");
        let (_d, manifest) = load(&with_release);
        let manifest = manifest.unwrap();
        let err = debug_vmlinux_under(&manifest, root.path()).unwrap_err();
        assert!(
            err.contains("no debug vmlinux for kernel 6.1.0-9-amd64")
                && err.contains("apt-get install linux-image-6.1.0-9-amd64-dbg"),
            "{err}"
        );
        // Ubuntu's and Fedora's place, then Debian's, which wins.
        let ubuntu = root
            .path()
            .join("usr/lib/debug/lib/modules/6.1.0-9-amd64/vmlinux");
        std::fs::create_dir_all(ubuntu.parent().unwrap()).unwrap();
        std::fs::write(&ubuntu, b"x").unwrap();
        assert_eq!(debug_vmlinux_under(&manifest, root.path()).unwrap(), ubuntu);
        let debian = root.path().join("usr/lib/debug/boot/vmlinux-6.1.0-9-amd64");
        std::fs::create_dir_all(debian.parent().unwrap()).unwrap();
        std::fs::write(&debian, b"x").unwrap();
        assert_eq!(debug_vmlinux_under(&manifest, root.path()).unwrap(), debian);
        // Named in the manifest: that file, or an error naming the field.
        let named = with_release.replace(
            "[kernel]\n",
            "[kernel]\ndebug_vmlinux = \"vmlinux.debug\"\n",
        );
        let (dir, manifest) = load(&named);
        let manifest = manifest.unwrap();
        let err = debug_vmlinux_under(&manifest, root.path()).unwrap_err();
        assert!(err.contains("[kernel] debug_vmlinux"), "{err}");
        std::fs::write(dir.path().join("vmlinux.debug"), b"x").unwrap();
        assert_eq!(
            debug_vmlinux_under(&manifest, root.path()).unwrap(),
            dir.path().join("vmlinux.debug")
        );
        // Anywhere else on the host is refused, as every manifest path is.
        let (_d, outside) = load(
            &with_release.replace("[kernel]\n", "[kernel]\ndebug_vmlinux = \"/etc/passwd\"\n"),
        );
        assert!(outside
            .unwrap_err()
            .to_string()
            .contains("kernel.debug_vmlinux"));
    }

    #[test]
    fn the_profile_is_given_or_inferred_from_the_registry() {
        let (_d, demo) = load(DEMO);
        assert_eq!(demo.unwrap().linux_profile, LinuxProfile::Demo);
        let (_d, inferred) = load(&distro(""));
        let inferred = inferred.unwrap();
        assert_eq!(inferred.linux_profile, LinuxProfile::Distro);
        assert_eq!(
            inferred.guest_profile().driver_path("x").unwrap(),
            "/lib/modules/{release}/updates/bootgate/x.ko"
        );
        let (_d, given) = load(&distro("profile = \"distro\""));
        assert_eq!(given.unwrap().linux_profile, LinuxProfile::Distro);
        let (_d, wrong) =
            load(&DEMO.replace("os = \"linux\"", "os = \"linux\"\nprofile = \"distro\""));
        let err = wrong.unwrap_err().to_string();
        assert!(
            err.contains("guest.drivers_registry") && err.contains("modules-load.d"),
            "{err}"
        );
        let (_d, typo) = load(&distro("profile = \"distribution\""));
        match typo.unwrap_err() {
            ManifestError::Invalid { line, message, .. } => {
                assert_eq!(line, 4, "{message}");
                assert!(message.contains("distro"), "{message}");
            }
            other => panic!("expected a located error, got {other}"),
        }
    }

    #[test]
    fn kernel_table_names_release_and_headers_for_any_image() {
        let text = format!(
            "{}\n[kernel]\nrelease = \"6.1.0-99-amd64\"\nheaders = \"hdrs\"\nheaders_package = \"linux-headers-6.1.0-99-amd64\"\n",
            distro("")
        );
        let (dir, m) = load(&text);
        let m = m.unwrap();
        assert_eq!(m.kernel_release().as_deref(), Some("6.1.0-99-amd64"));
        let err = headers(&m).unwrap_err();
        assert!(
            err.contains("apt-get install -y linux-headers-6.1.0-99-amd64"),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("hdrs")).unwrap();
        std::fs::write(dir.path().join("hdrs/Makefile"), b"all:\n").unwrap();
        assert_eq!(
            headers(&m).unwrap(),
            ("6.1.0-99-amd64".to_string(), dir.path().join("hdrs"))
        );
        let (_d, bare) = load(&distro(""));
        let err = headers(&bare.unwrap()).unwrap_err();
        assert!(err.contains("[kernel]") && err.contains("release"), "{err}");
    }

    #[test]
    fn only_a_package_name_is_ever_installed() {
        let text = format!(
            "{}\n[kernel]\nrelease = \"r\"\nheaders = \"missing\"\nheaders_package = \"-o APT::x=1 evil\"\n",
            distro("")
        );
        let (_d, m) = load(&text);
        let err = install_headers(&m.unwrap()).unwrap_err();
        assert!(err.contains("is not a package name"), "{err}");
        let (_d, m) = load(&distro(""));
        assert_eq!(install_headers(&m.unwrap()), Ok(false), "nothing named");
    }

    #[test]
    fn vermagic_is_the_first_word_of_the_modinfo_entry() {
        let module = b"\x7fELF...\0license=GPL\0vermagic=6.1.0-28-cloud-amd64 SMP mod_unload modversions \0name=x\0";
        assert_eq!(
            module_vermagic(module).as_deref(),
            Some("6.1.0-28-cloud-amd64")
        );
        assert_eq!(module_vermagic(b"\x7fELF no modinfo"), None);
    }
}
