//! The demo image: built once, reused from the cache, headers recorded.

use crate::common::*;

#[test]
fn image_build_reuses_the_cache_and_records_kernel_and_headers() {
    let manifest = demo_manifest();
    let out = run(&["image", "build", "demo"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&manifest.display().to_string()), "{stdout}");
    assert!(
        !stderr.contains("building"),
        "an up-to-date image is not rebuilt: {stderr}"
    );
    assert!(stdout.contains("kernel: 6."), "{stdout}");
    let info = bootgate::image::kernel::build_info(manifest).expect("build-info.json");
    let kernel = info["kernel_version"].as_str().unwrap();
    assert!(kernel.ends_with("-cloud-amd64"), "{kernel}");
    // Base files are read-only so nothing can write them by accident.
    let disk = manifest.parent().unwrap().join("system.qcow2");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&disk).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "base disk must not be writable");
}

#[test]
fn doctor_reports_each_check() {
    let out = run(&["doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for check in [
        "qemu-system-x86_64:",
        "qemu-img:",
        "firmware:",
        "accelerator:",
        "build sandbox:",
        "image cache:",
    ] {
        assert!(
            stdout.contains(check),
            "doctor has no {check} line: {stdout}"
        );
    }
}

/// `doctor --image` boots the image and reports what is ready inside it, and says
/// plainly what is missing when the guest agent never starts.
#[test]
fn doctor_image_checks_inside_the_guest() {
    let out = run(&[
        "doctor",
        "--image",
        demo_manifest().to_str().unwrap(),
        "--accel",
        "tcg",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for line in [
        "ok   guest agent: answered",
        "ok   agent version: qemu-ga ",
        "ok   agent commands:",
        "ok   pvpanic: driver bound",
        "ok   panic settings: oops=panic",
        "ok   content_dir: /system/content exists",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }

    let dir = tempfile::tempdir().unwrap();
    let no_agent = demo_variant(dir.path(), "bootgate.agent=off", "15s");
    let out = run(&[
        "doctor",
        "--image",
        no_agent.to_str().unwrap(),
        "--accel",
        "tcg",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("FAIL guest agent: no answer within") && stdout.contains("qemu-ga"),
        "{stdout}"
    );
}
