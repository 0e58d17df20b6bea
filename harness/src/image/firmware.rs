//! Where the UEFI firmware (OVMF) lives on the host when a manifest does not say.
//!
//! OVMF comes as two files that must match: the read-only code and a template of
//! the variable store, which every VM gets its own copy of (the guest writes its
//! boot entries and, with Secure Boot, checks its keys there). Secure Boot needs the
//! code built with SMM and a variable store with Microsoft's keys enrolled.

use std::path::{Path, PathBuf};

/// One matched pair of OVMF files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OvmfPair {
    pub code: &'static str,
    pub vars: &'static str,
}

/// Known locations, most preferred first: Debian/Ubuntu's `ovmf` package (4 MiB
/// builds first), then Fedora/RHEL's `edk2-ovmf`.
const PLAIN: &[OvmfPair] = &[
    OvmfPair {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
        vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    },
    OvmfPair {
        code: "/usr/share/OVMF/OVMF_CODE.fd",
        vars: "/usr/share/OVMF/OVMF_VARS.fd",
    },
    OvmfPair {
        code: "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        vars: "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    },
];

/// Secure Boot builds with the Microsoft-keys variable store.
const SECURE: &[OvmfPair] = &[
    OvmfPair {
        code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        vars: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    },
    OvmfPair {
        code: "/usr/share/OVMF/OVMF_CODE.secboot.fd",
        vars: "/usr/share/OVMF/OVMF_VARS.ms.fd",
    },
    OvmfPair {
        code: "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        vars: "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
    },
];

/// The package that provides OVMF on Debian and Ubuntu, for error messages.
pub(crate) const OVMF_PACKAGE: &str = "ovmf";

/// The first known pair present on this host (`exists` is the file test, injectable
/// for tests); the most preferred pair when none is, so the error names a real path.
pub(crate) fn default_pair(
    secure_boot: bool,
    exists: impl Fn(&Path) -> bool,
) -> (PathBuf, PathBuf) {
    let pairs = if secure_boot { SECURE } else { PLAIN };
    let found = pairs
        .iter()
        .find(|p| exists(Path::new(p.code)) && exists(Path::new(p.vars)))
        .unwrap_or(&pairs[0]);
    (PathBuf::from(found.code), PathBuf::from(found.vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_complete_pair() {
        let only_edk2 = |p: &Path| p.starts_with("/usr/share/edk2");
        assert_eq!(
            default_pair(false, only_edk2),
            (
                PathBuf::from("/usr/share/edk2/ovmf/OVMF_CODE.fd"),
                PathBuf::from("/usr/share/edk2/ovmf/OVMF_VARS.fd")
            )
        );
        // Code without its variable store is not a pair.
        let code_only = |p: &Path| p.ends_with("OVMF_CODE_4M.secboot.fd");
        assert_eq!(
            default_pair(true, code_only).0,
            PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
            "falls back to the preferred pair's names"
        );
        let secure = default_pair(true, |_| true);
        assert!(secure.1.to_string_lossy().contains(".ms."), "{secure:?}");
    }
}
