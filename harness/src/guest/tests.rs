use super::*;
use crate::guest::OsFamily;

fn profile() -> GuestProfile {
    GuestProfile {
        os: OsFamily::Linux,
        linux: LinuxProfile::Demo,
        initramfs_update: None,
        manifest: "image.toml".into(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        drivers_dir: Some("/system/drivers".into()),
        drivers_registry: Some("/system/etc/drivers.conf".into()),
        content_dir: None,
        safe_mode_append: Some("bootgate.safe=1".into()),
        system_root: Some("/system".into()),
        offline_mount: Some("mount /dev/vdb /target".into()),
        offline_root: Some("/target/".into()),
        offline_unmount: Some("umount /target".into()),
        offline_helper: None,
        driver_kind: DriverKind::Service,
        service_start: ServiceStart::Boot,
        service_options: windows::ServiceOptions::default(),
        minidump_dir: String::new(),
        memory_dump_path: String::new(),
        command_timeout: None,
        install_timeout: None,
    }
}

fn windows_profile(kind: DriverKind) -> GuestProfile {
    GuestProfile {
        os: OsFamily::Windows,
        linux: LinuxProfile::Demo,
        initramfs_update: None,
        manifest: "windows/image.toml".into(),
        shell: wincmd::POWERSHELL.iter().map(|s| s.to_string()).collect(),
        drivers_dir: Some(r"D:\Program Files\Vendor Ünïcode\drivers".into()),
        drivers_registry: None,
        content_dir: Some(r"C:\ProgramData\bootgate\content".into()),
        safe_mode_append: None,
        system_root: None,
        offline_mount: None,
        offline_root: None,
        offline_unmount: None,
        offline_helper: None,
        driver_kind: kind,
        service_start: ServiceStart::System,
        service_options: windows::ServiceOptions::default(),
        minidump_dir: windows::DEFAULT_MINIDUMP_DIR.into(),
        memory_dump_path: windows::DEFAULT_MEMORY_DUMP.into(),
        command_timeout: None,
        install_timeout: Some(std::time::Duration::from_secs(900)),
    }
}

#[test]
fn offline_paths_map_the_system_root_onto_the_helper_mount() {
    let p = profile();
    assert_eq!(
        p.offline_path("/system/content/demo_sensor.content")
            .unwrap(),
        "/target/content/demo_sensor.content"
    );
    assert_eq!(p.offline_path("/system").unwrap(), "/target");
    // A sibling that merely starts with the same letters is not on the disk.
    let err = p.offline_path("/systemd/x").unwrap_err().to_string();
    assert!(err.contains("not under guest.system_root"), "{err}");
    assert!(p.offline_path("/etc/passwd").is_err());
    assert_eq!(
        p.offline_mount().unwrap().argv,
        ["/bin/sh", "-c", "mount /dev/vdb /target"]
    );
    let mut bare = profile();
    bare.offline_unmount = None;
    let err = bare.offline_unmount().unwrap_err().to_string();
    assert!(err.contains("guest.offline_unmount"), "{err}");
    assert!(windows_profile(DriverKind::Service)
        .offline_path(r"C:\x")
        .is_err());
}

#[test]
fn run_goes_through_the_manifest_shell() {
    let step = ExecStep {
        run: Some("echo $((1+1)); exit 3".into()),
        argv: None,
        expect_exit: 3,
        timeout: None,
    };
    assert_eq!(
        profile().exec_argv(&step),
        ["/bin/sh", "-c", "echo $((1+1)); exit 3"]
    );
    let step = ExecStep {
        run: None,
        argv: Some(vec!["/bin/true".into()]),
        expect_exit: 0,
        timeout: None,
    };
    assert_eq!(profile().exec_argv(&step), ["/bin/true"]);
}

#[test]
fn driver_values_travel_in_the_environment_not_the_script() {
    let cmd = profile()
        .register_driver("demo_sensor", "fixed=1; reboot", true, false)
        .unwrap();
    assert_eq!(cmd.argv[2], demo::REGISTER);
    assert!(cmd.env.contains(&"BG_PARAMS=fixed=1; reboot".to_string()));
    assert!(cmd
        .env
        .contains(&"BG_MODULE=/system/drivers/demo_sensor.ko".to_string()));
    assert!(cmd.env.contains(&"BG_LOAD=1".to_string()));
}

#[test]
fn linux_commands_are_unchanged() {
    // The Linux side must not move when Windows support grows: exact argv and env.
    let p = profile();
    assert_eq!(
        p.driver_path("demo_sensor").unwrap(),
        "/system/drivers/demo_sensor.ko"
    );
    let cmd = p.unregister_driver("demo_sensor").unwrap();
    assert_eq!(cmd.argv, ["/bin/sh", "-c", demo::UNREGISTER]);
    assert_eq!(
        cmd.env,
        [
            "BG_NAME=demo_sensor",
            "BG_REGISTRY=/system/etc/drivers.conf",
            "BG_MODULE=/system/drivers/demo_sensor.ko",
        ]
    );
    let cmd = p.remove_file("/system/content/a b").unwrap();
    assert_eq!(cmd.argv, ["/bin/sh", "-c", r#"rm -f "$BG_PATH" && sync"#]);
    assert_eq!(cmd.env, ["BG_PATH=/system/content/a b"]);
    assert_eq!(p.sync_disks().unwrap().argv, ["/bin/sh", "-c", "sync"]);
    assert_eq!(p.safe_mode_append(&[]).unwrap(), "bootgate.safe=1");
    assert!(matches!(
        p.list_crash_dumps(),
        Err(GuestError::Unsupported("linux"))
    ));
    // Driver Verifier is Windows' own: a linux image is told what it has instead.
    let err = p
        .verifier("demo_sensor", &["/standard".into()])
        .unwrap_err();
    assert!(matches!(err, GuestError::VerifierNeedsWindows));
    assert!(err.to_string().contains("KASAN"), "{err}");
}

#[test]
fn windows_service_driver_goes_through_sc_with_quoted_values() {
    let p = windows_profile(DriverKind::Service);
    let sys = r"D:\Program Files\Vendor Ünïcode\drivers\sensor.sys";
    assert_eq!(p.driver_path("sensor").unwrap(), sys);
    let cmd = p.register_driver("sensor", "", true, false).unwrap();
    assert!(
        cmd.env.is_empty(),
        "an env would replace the whole windows environment"
    );
    assert_eq!(
        cmd.argv,
        wincmd::install_service(
            "sensor",
            sys,
            ServiceStart::System,
            &Default::default(),
            true,
            &['D', 'C']
        )
        .unwrap()
    );
    assert!(
        cmd.argv[6].contains(&format!("$bgSys = '{sys}'")),
        "{}",
        cmd.argv[6]
    );
    assert!(
        cmd.argv[6].contains("$bgDrives = @('D', 'C')"),
        "{}",
        cmd.argv[6]
    );
    let cmd = p.unregister_driver("sensor").unwrap();
    assert_eq!(
        cmd.argv,
        wincmd::uninstall_service("sensor", sys, &['D', 'C']).unwrap()
    );
    let err = p
        .register_driver("sensor", "fixed=1", false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("windows/image.toml") && err.contains("registry"),
        "{err}"
    );
}

#[test]
fn windows_pnp_driver_is_a_package_zip_expanded_next_to_it() {
    let p = windows_profile(DriverKind::Pnp);
    let zip = r"D:\Program Files\Vendor Ünïcode\drivers\sensor.zip";
    let dir = r"D:\Program Files\Vendor Ünïcode\drivers\sensor";
    assert_eq!(p.driver_path("sensor").unwrap(), zip);
    let cmd = p.register_driver("sensor", "  ", false, false).unwrap();
    assert_eq!(
        cmd.argv,
        wincmd::install_pnp_package(zip, dir, false, &['D', 'C']).unwrap()
    );
    let cmd = p.unregister_driver("sensor").unwrap();
    assert_eq!(
        cmd.argv,
        wincmd::uninstall_pnp_package(zip, dir, &['D', 'C']).unwrap()
    );
}

#[test]
fn windows_content_sync_shell_and_dumps() {
    let p = windows_profile(DriverKind::Service);
    let path = p.content_path("C-00000291-00000000-00000032.sys").unwrap();
    assert_eq!(
        path,
        r"C:\ProgramData\bootgate\content\C-00000291-00000000-00000032.sys"
    );
    let cmd = p.remove_file(&path).unwrap();
    assert!(cmd.env.is_empty());
    assert_eq!(cmd.argv, wincmd::remove_file(&path, &['D', 'C']).unwrap());
    assert_eq!(
        p.sync_disks().unwrap().argv,
        wincmd::flush_volumes(&['D', 'C']).unwrap()
    );
    let line = r#"Get-Content 'C:\x y\log.txt' | Select-String "error""#;
    assert_eq!(p.shell_argv(line), wincmd::powershell_argv(line));
    let step = ExecStep {
        run: Some(line.into()),
        argv: None,
        expect_exit: 0,
        timeout: None,
    };
    assert_eq!(p.exec_argv(&step), wincmd::powershell_argv(line));
    assert_eq!(
        p.list_crash_dumps().unwrap().argv,
        wincmd::list_crash_dumps(r"%SystemRoot%\Minidump", r"%SystemRoot%\MEMORY.DMP").unwrap()
    );
    assert!(matches!(
        p.safe_mode_append(&[]),
        Err(GuestError::Unsupported("windows"))
    ));
}

#[test]
fn missing_manifest_path_says_which_field() {
    let err = profile().content_path("x").unwrap_err().to_string();
    assert!(err.contains("guest.content_dir"), "{err}");
}

fn distro() -> GuestProfile {
    GuestProfile {
        linux: LinuxProfile::Distro,
        drivers_dir: Some(distro::DEFAULT_DRIVERS_DIR.into()),
        drivers_registry: None,
        content_dir: Some("/var/lib/sensor".into()),
        safe_mode_append: Some("modprobe.blacklist={drivers}".into()),
        initramfs_update: Some("update-initramfs -u".into()),
        ..profile()
    }
}

#[test]
fn distro_driver_is_staged_then_installed_with_modules_load_and_modprobe_conf() {
    let p = distro();
    let staged = p.driver_upload_path("demo_sensor").unwrap();
    assert_eq!(staged, "/var/lib/bootgate/staging/demo_sensor.ko");
    assert_eq!(p.parent_dir(&staged).unwrap(), "/var/lib/bootgate/staging");
    let cmd = p
        .register_driver(
            "demo_sensor",
            "fixed=1 content=/var/lib/sensor/x",
            true,
            false,
        )
        .unwrap();
    assert_eq!(cmd.argv[2], distro::REGISTER);
    for want in [
        "BG_NAME=demo_sensor",
        "BG_PARAMS=fixed=1 content=/var/lib/sensor/x",
        "BG_STAGED=/var/lib/bootgate/staging/demo_sensor.ko",
        "BG_DIR=/lib/modules/{release}/updates/bootgate",
        "BG_LOAD=1",
        "BG_INITRAMFS=0",
        "BG_INITRAMFS_UPDATE=",
    ] {
        assert!(
            cmd.env.contains(&want.to_string()),
            "{want} in {:?}",
            cmd.env
        );
    }
    for needed in [
        "depmod -a",
        "/etc/modules-load.d/$BG_NAME.conf",
        "options %s %s",
        "modprobe \"$BG_NAME\"",
    ] {
        assert!(distro::REGISTER.contains(needed), "{needed}");
    }
    let cmd = p.register_driver("demo_sensor", "", false, true).unwrap();
    assert!(cmd
        .env
        .contains(&"BG_INITRAMFS_UPDATE=update-initramfs -u".to_string()));
    let cmd = p.unregister_driver("demo_sensor").unwrap();
    assert_eq!(cmd.argv[2], distro::UNREGISTER);
    assert_eq!(
        p.safe_mode_append(&["demo_sensor".into(), "slow_init".into()])
            .unwrap(),
        "modprobe.blacklist=demo_sensor,slow_init"
    );
    let names = p.loaded_drivers(&["demo_sensor".into()]).unwrap();
    assert!(names.env.contains(&"BG_NAMES=demo_sensor".to_string()));
}

#[test]
fn initramfs_installs_need_the_distro_profile_and_its_command() {
    let mut p = distro();
    p.initramfs_update = None;
    let err = p
        .register_driver("demo_sensor", "", false, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("guest.initramfs_update"), "{err}");
    let err = profile()
        .register_driver("demo_sensor", "", false, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("initramfs = true"), "{err}");
    assert!(windows_profile(DriverKind::Service)
        .register_driver("sensor", "", false, true)
        .is_err());
}

#[test]
fn the_manifest_budget_replaces_the_windows_default() {
    let p = windows_profile(DriverKind::Service);
    let install = p.budget(budget::CommandKind::Install, None, true);
    assert_eq!(install.timeout, std::time::Duration::from_secs(900));
    let command = p.budget(budget::CommandKind::Command, None, true);
    assert_eq!(
        command.timeout,
        budget::WINDOWS_COMMAND_TIMEOUT * budget::TCG_SLOWDOWN
    );
}
