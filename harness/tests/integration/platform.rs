//! Firmware and platform options with the demo guest under real QEMU: UEFI (OVMF)
//! with and without Secure Boot, a software TPM 2.0 (swtpm) per VM, q35. Each test
//! checks what the guest itself sees, that the installed variable-store template is
//! untouched, and that no QEMU, swtpm or per-VM file is left afterwards.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The demo manifest as a UEFI q35 machine with a TPM, Secure Boot on or off.
fn uefi_variant(dir: &Path, secure_boot: bool) -> PathBuf {
    let path = demo_variant(dir, "", "180s");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text
        .replace(
            "firmware = \"bios\"",
            &format!("firmware = \"uefi\"\nsecure_boot = {secure_boot}"),
        )
        .replace("type = \"pc\"", "type = \"q35\"\ntpm = true");
    assert!(
        edited.contains("firmware = \"uefi\"") && edited.contains("tpm = true"),
        "the demo manifest changed shape: {text}"
    );
    write(dir, "image.toml", &edited)
}

/// Prints what the guest sees of its platform, one `key=value` per line.
const PROBE: &str = r#"
[ -d /sys/firmware/efi ] && echo efi=yes || echo efi=no
[ -e /sys/class/tpm/tpm0 ] && echo tpm=yes || echo tpm=no
dmesg | grep -q 'Secure boot enabled' && echo secureboot=yes || echo secureboot=no
"#;

fn probe_suite(dir: &Path) -> PathBuf {
    let probe = PROBE.trim().replace('\n', "; ");
    write(
        dir,
        "suite.toml",
        &format!(
            r#"[suite]
name = "platform"
image = "image.toml"

[[scenario]]
name = "probe"
steps = [{{ exec = {{ run = "{probe}" }} }}]
"#
        ),
    )
}

/// Runs the probe on a UEFI variant and returns what the guest printed.
fn run_probe(secure_boot: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let manifest = bootgate::image::Manifest::load(&uefi_variant(dir.path(), secure_boot))
        .expect("OVMF is installed (tools/host-setup installs it)");
    let code = manifest.boot.uefi_code.clone().unwrap();
    let template = manifest.boot.uefi_vars.clone().unwrap();
    assert_eq!(
        code.to_string_lossy().contains("secboot"),
        secure_boot,
        "{code:?}"
    );
    let template_before = sha256(&template);
    let suite = probe_suite(dir.path());
    let out_dir = dir.path().join("out");
    let out = run_tcg(&suite, &out_dir, &[]);
    let run = run_json(&out_dir);
    assert_eq!(out.status.code(), Some(0), "{run:#}");
    let argv: Vec<String> = run["qemu"]["argv"][0]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let joined = argv.join(" ");
    let vm_dir = &vm_dirs(&run)[0];
    assert!(
        joined.contains(&format!("unit=1,file={vm_dir}/uefi-vars.fd")),
        "the VM boots on its own copy of the variable store: {joined}"
    );
    assert!(
        joined.contains(&format!("path={vm_dir}/swtpm.sock")),
        "{joined}"
    );
    assert_eq!(sha256(&template), template_before, "template untouched");
    // swtpm's command line names the VM folder too: this also proves it is gone.
    assert_no_vm_left(&run);
    let boot = &scenario(&run, "platform/probe")["boots"][0];
    assert_eq!(boot["restored"], false, "UEFI/TPM machines boot cold");
    let logs: Vec<_> = walkdir::WalkDir::new(out_dir.join("latest"))
        .follow_links(true)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "swtpm.log")
        .collect();
    assert_eq!(logs.len(), 1, "swtpm's log is kept with the evidence");
    // The exec step's detail quotes the guest's output.
    scenario(&run, "platform/probe")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["detail"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn uefi_boot_of_the_demo_kernel_with_a_tpm() {
    let seen = run_probe(false);
    assert!(seen.contains("efi=yes"), "{seen}");
    assert!(seen.contains("tpm=yes"), "{seen}");
    assert!(seen.contains("secureboot=no"), "{seen}");
}

#[test]
fn secure_boot_with_microsoft_keys_is_on_in_the_guest() {
    let seen = run_probe(true);
    assert!(seen.contains("efi=yes"), "{seen}");
    assert!(seen.contains("tpm=yes"), "{seen}");
    assert!(seen.contains("secureboot=yes"), "{seen}");
}
