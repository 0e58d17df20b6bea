use super::*;

/// The MSVCRT (2008 and later) / CommandLineToArgvW rules that split a command
/// line into argv, as Microsoft documents them ("Parsing C command-line
/// arguments"): test-only, to check that glib's quoting round-trips.
fn command_line_to_argv(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut argv = Vec::new();
    // argv[0]: up to the next quote if it starts with one, else to whitespace;
    // no backslash processing.
    let mut program = String::new();
    if chars.first() == Some(&'"') {
        i = 1;
        while i < chars.len() && chars[i] != '"' {
            program.push(chars[i]);
            i += 1;
        }
        i += 1;
    } else {
        while i < chars.len() && chars[i] != ' ' && chars[i] != '\t' {
            program.push(chars[i]);
            i += 1;
        }
    }
    argv.push(program);
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= chars.len() {
            return argv;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while i < chars.len() {
            let c = chars[i];
            if !quoted && (c == ' ' || c == '\t') {
                break;
            }
            if c == '\\' {
                let run = chars[i..].iter().take_while(|&&c| c == '\\').count();
                i += run;
                if chars.get(i) == Some(&'"') {
                    arg.extend(std::iter::repeat_n('\\', run / 2));
                    if run % 2 == 1 {
                        arg.push('"');
                        i += 1;
                    }
                } else {
                    arg.extend(std::iter::repeat_n('\\', run));
                }
                continue;
            }
            if c == '"' {
                if quoted && chars.get(i + 1) == Some(&'"') {
                    arg.push('"');
                    i += 2;
                } else {
                    quoted = !quoted;
                    i += 1;
                }
                continue;
            }
            arg.push(c);
            i += 1;
        }
        argv.push(arg);
    }
}

/// What cmd.exe runs for `... /s /c REST` (from `cmd /?`): with /s, if REST
/// starts with a quote, that quote and the last quote are removed; nothing else.
fn cmd_runs(command_line: &str) -> String {
    let at = command_line.find(" /c ").unwrap() + " /c ".len();
    let rest = command_line[at..].trim_start_matches([' ', '\t']);
    match rest.strip_prefix('"') {
        Some(inner) => match inner.rfind('"') {
            Some(end) => format!("{}{}", &inner[..end], &inner[end + 1..]),
            None => inner.to_string(),
        },
        None => rest.to_string(),
    }
}

/// Reads one PowerShell single-quoted literal at the start of `text`: its value
/// and the rest. Test-only, to check [`ps_quote`] against the language's rule.
fn read_ps_literal(text: &str) -> (String, &str) {
    let mut chars = text.char_indices().peekable();
    assert_eq!(chars.next().map(|(_, c)| c), Some('\''), "{text}");
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        if is_ps_single_quote(c) {
            match chars.peek() {
                Some(&(_, next)) if is_ps_single_quote(next) => {
                    value.push(c);
                    chars.next();
                }
                _ => return (value, &text[i + c.len_utf8()..]),
            }
        } else {
            value.push(c);
        }
    }
    panic!("unterminated literal in {text}");
}

/// The `$name = 'literal'` (or `@('literal', ...)`, first item) assignments a
/// script makes, read back with the language's quoting rule.
fn script_vars(script: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for statement in script.split("; $bg").skip(1) {
        let Some((name, rhs)) = statement.split_once(" = ") else {
            continue;
        };
        let literal = match rhs.strip_prefix("@(") {
            Some(list) if list.starts_with('\'') => list,
            Some(_) => continue,
            None if rhs.starts_with('\'') => rhs,
            None => continue,
        };
        let (value, _) = read_ps_literal(literal);
        vars.push((format!("bg{name}"), value));
    }
    vars
}

const NASTY: &[&str] = &[
    r"C:\Program Files\Vendor Ünïcode\sensor driver.inf",
    r"C:\a&b|c>d<e^f%PATH%!x!\sensor.sys",
    r#"C:\quote"inside\x"#,
    r"C:\trailing space\",
    r"C:\no_space_trailing\",
    r#"C:\odd\\"quote"#,
    "tab\there",
    "new\nline",
    "O'Brien’s ‘smart’ ‚quotes‛",
    "$(Remove-Item C:\\ -Recurse); `whoami`",
    "'; Remove-Item C:\\ -Recurse; '",
    "日本語のパス",
    "\"",
    "\\",
    " ",
];

#[test]
fn glib_quoting_matches_its_source_on_the_edge_cases() {
    let cases = [
        ("plain", "plain"),
        ("a b", r#""a b""#),
        (r#"a"b"#, r#"a\"b"#),
        (r#"a\"b"#, r#"a\\\"b"#),
        (r"C:\dir\", r"C:\dir\"),
        (r"C:\a dir\", r#""C:\a dir\\""#),
        (r"C:\a dir\\", r#""C:\a dir\\\\""#),
        (r"back\slash", r"back\slash"),
        ("", ""),
    ];
    for (arg, quoted) in cases {
        assert_eq!(glib_quote(arg), quoted, "{arg:?}");
    }
}

#[test]
fn argv_round_trips_through_glib_and_commandlinetoargvw() {
    let mut argv = vec!["C:\\Program Files\\prog.exe".to_string()];
    argv.extend(NASTY.iter().map(|s| s.to_string()));
    let line = glib_command_line(&argv);
    assert_eq!(command_line_to_argv(&line), argv, "{line}");
    for one in NASTY {
        let argv = vec!["p".to_string(), one.to_string(), "next".to_string()];
        assert_eq!(command_line_to_argv(&glib_command_line(&argv)), argv);
    }
}

#[test]
fn an_empty_argument_vanishes_which_is_why_values_must_not_be_empty() {
    let argv = strings(&["sc.exe", "config", "x", "binpath=", "", "start=", "boot"]);
    let back = command_line_to_argv(&glib_command_line(&argv));
    assert_eq!(
        back,
        ["sc.exe", "config", "x", "binpath=", "start=", "boot"]
    );
    assert_eq!(
        sc_create_kernel("x", ServiceStart::Boot, ""),
        Err(CommandError::Empty {
            what: "driver path"
        })
    );
    assert!(matches!(
        pnputil_add_driver("a\0b", true),
        Err(CommandError::Nul { .. })
    ));
}

#[test]
fn pnputil_add_driver_passes_the_path_as_one_argument() {
    let inf = r"C:\Program Files\Vendor Ünïcode\sensor driver.inf";
    let argv = pnputil_add_driver(inf, true).unwrap();
    assert_eq!(argv, ["pnputil.exe", "/add-driver", inf, "/install"]);
    assert_eq!(
        glib_command_line(&argv),
        r#"pnputil.exe /add-driver "C:\Program Files\Vendor Ünïcode\sensor driver.inf" /install"#
    );
    assert_eq!(command_line_to_argv(&glib_command_line(&argv)), argv);
    assert_eq!(
        pnputil_add_driver(r"C:\d\x.inf", false).unwrap(),
        ["pnputil.exe", "/add-driver", r"C:\d\x.inf"]
    );
}

#[test]
fn pnputil_delete_driver_takes_only_published_names() {
    assert_eq!(
        pnputil_delete_driver("oem12.inf").unwrap(),
        [
            "pnputil.exe",
            "/delete-driver",
            "oem12.inf",
            "/uninstall",
            "/force"
        ]
    );
    assert!(pnputil_delete_driver("OEM7.INF").is_ok());
    for bad in [
        "sensor.inf",
        "oem.inf",
        "oem1x.inf",
        "oem12.inf & del",
        r"C:\oem1.inf",
    ] {
        let err = pnputil_delete_driver(bad).unwrap_err();
        assert!(err.to_string().contains("published name"), "{bad}: {err}");
    }
}

#[test]
fn sc_create_uses_key_equals_space_value() {
    let sys = r"C:\Program Files\Vendor Ünïcode\a&b %x% ^c\sensor.sys";
    let argv = sc_create_kernel("sensor", ServiceStart::Boot, sys).unwrap();
    assert_eq!(
        argv,
        ["sc.exe", "create", "sensor", "type=", "kernel", "start=", "boot", "binpath=", sys]
    );
    // What sc.exe sees: `key= value`, with the space after '=' sc.exe requires.
    assert_eq!(
        glib_command_line(&argv),
        r#"sc.exe create sensor type= kernel start= boot binpath= "C:\Program Files\Vendor Ünïcode\a&b %x% ^c\sensor.sys""#
    );
    assert_eq!(command_line_to_argv(&glib_command_line(&argv)), argv);
    assert_eq!(
        sc_create_kernel("sensor", ServiceStart::Demand, r"C:\s.sys").unwrap()[6],
        "demand"
    );
    assert_eq!(sc_start("sensor").unwrap(), ["sc.exe", "start", "sensor"]);
    assert_eq!(sc_stop("sensor").unwrap(), ["sc.exe", "stop", "sensor"]);
    assert_eq!(sc_delete("sensor").unwrap(), ["sc.exe", "delete", "sensor"]);
    for bad in ["", "a b", "a&b", r"..\x", "x\"y", &"n".repeat(257)] {
        assert!(sc_start(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn reboot_is_shutdown_r_t_0() {
    assert_eq!(reboot(), ["shutdown.exe", "/r", "/t", "0"]);
}

#[test]
fn ps_quote_doubles_every_kind_of_single_quote() {
    assert_eq!(ps_quote("plain"), "'plain'");
    assert_eq!(ps_quote("O'Brien"), "'O''Brien'");
    assert_eq!(ps_quote("it’s"), "'it’’s'");
    assert_eq!(ps_quote(""), "''");
    assert_eq!(ps_quote(r#"$env:x "y" `z`"#), r#"'$env:x "y" `z`'"#);
    for v in NASTY {
        let quoted = ps_quote(v);
        let (back, rest) = read_ps_literal(&quoted);
        assert_eq!(&back, v);
        assert_eq!(rest, "", "literal of {v:?} ended early");
    }
}

#[test]
fn install_service_script_is_constant_text_after_quoted_values() {
    let sys = r"C:\Program Files\Vendor Ünïcode\sensor driver.sys";
    let argv = install_service(
        "sensor",
        sys,
        ServiceStart::Boot,
        &ServiceOptions::default(),
        true,
        &['c', 'D', 'C'],
    )
    .unwrap();
    assert_eq!(&argv[..6], POWERSHELL);
    assert_eq!(argv.len(), 7);
    let mut expected: Vec<&str> = vec![
        "$ErrorActionPreference = 'Stop'",
        "$ProgressPreference = 'SilentlyContinue'",
        "$bgName = 'sensor'",
        r"$bgSys = 'C:\Program Files\Vendor Ünïcode\sensor driver.sys'",
        r"$bgNew = 'C:\Program Files\Vendor Ünïcode\sensor driver.sys.bootgate-new'",
        "$bgType = 'kernel'",
        "$bgGroup = ''",
        "$bgAltitude = ''",
        "$bgInstance = ''",
        "$bgFlags = 0",
        "$bgStart = 'boot'",
        "$bgLoad = $true",
        "$bgDrives = @('C', 'D')",
    ];
    expected.extend(SERVICE_INSTALL);
    expected.extend(FLUSH);
    expected.push("exit 0");
    let expected = expected.join("; ");
    assert_eq!(argv[6], expected);
    let line = glib_command_line(&argv);
    assert!(line.starts_with("powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -Command \"$ErrorActionPreference"), "{line}");
    // powershell.exe splits its command line the C way and joins what follows
    // -Command with spaces: the script must come back exactly.
    let back = command_line_to_argv(&line);
    assert_eq!(back[6..].join(" "), argv[6]);
}

#[test]
fn hostile_values_stay_data_in_every_script() {
    type Build = fn(&str) -> Vec<String>;
    let builders: [(&str, Build); 6] = [
        ("bgSys", |v| {
            install_service(
                "sensor",
                v,
                ServiceStart::System,
                &ServiceOptions::default(),
                false,
                &['C'],
            )
            .unwrap()
        }),
        ("bgSys", |v| uninstall_service("sensor", v, &['C']).unwrap()),
        ("bgZip", |v| {
            install_pnp_package(v, r"C:\d\sensor", true, &['C']).unwrap()
        }),
        ("bgDir", |v| {
            uninstall_pnp_package(r"C:\d\sensor.zip", v, &['C']).unwrap()
        }),
        ("bgPath", |v| remove_file(v, &['C']).unwrap()),
        ("bgMinidumps", |v| {
            list_crash_dumps(v, r"%SystemRoot%\MEMORY.DMP").unwrap()
        }),
    ];
    for v in NASTY {
        for (var, build) in builders {
            let argv = build(v);
            let script = &argv[6];
            // The value reads back from its literal...
            assert!(
                script_vars(script)
                    .iter()
                    .any(|(n, value)| n == var && value == v),
                "{var} of {v:?} not read back from {script}"
            );
            // ...and is nowhere else: with its literal swapped for another
            // value's, the script is that value's script, byte for byte.
            // (The install's staged file name holds the path too.)
            let swapped = script
                .replacen(&ps_quote(&staged_sys(v)), &ps_quote(&staged_sys("X")), 1)
                .replacen(&ps_quote(v), &ps_quote("X"), 1);
            assert_eq!(swapped, build("X")[6], "{v:?}");
            // powershell.exe gets the script back exactly.
            let back = command_line_to_argv(&glib_command_line(&argv));
            assert_eq!(&back[..6], POWERSHELL);
            assert_eq!(&back[6..].join(" "), script);
        }
    }
}

#[test]
fn other_scripts_keep_their_values_in_the_prelude() {
    let argv = uninstall_pnp_inf("Sensor Driver’s.inf").unwrap();
    assert_eq!(
        script_vars(&argv[6]),
        [("bgInfNames".to_string(), "Sensor Driver’s.inf".to_string())]
    );
    assert!(
        argv[6].contains("$bgInfNames = @('Sensor Driver’’s.inf')"),
        "{}",
        argv[6]
    );
    assert!(argv[6].contains("pnputil.exe /delete-driver $bgDriver.Driver /uninstall /force"));
    for bad in ["", r"C:\x\sensor.inf", "sensor.sys"] {
        assert!(uninstall_pnp_inf(bad).is_err(), "{bad:?}");
    }
    let flush = flush_volumes(&['e']).unwrap();
    assert!(flush[6].contains("$bgDrives = @('E')"), "{}", flush[6]);
    assert!(
        flush[6].ends_with("volume flush failed: ' + $_.Exception.Message) }; exit 0"),
        "{}",
        flush[6]
    );
    assert!(matches!(
        flush_volumes(&['1']),
        Err(CommandError::Invalid { .. })
    ));
    let install = install_pnp_package(r"C:\d\s.zip", r"C:\d\s", false, &[]).unwrap();
    assert!(
        install[6].contains("$bgInstall = $false; $bgDrives = @()"),
        "{}",
        install[6]
    );
}

#[test]
fn cmd_lines_reach_cmd_exactly_or_are_refused() {
    for line in [
        r"dir C:\Program Files & echo 100%PATH% ^& done",
        r"type C:\Vendor Ünïcode\log.txt | findstr error",
        "ver",
        r"dir C:\ /b",
        r"C:\no_space_trailing\",
    ] {
        let argv = cmd_argv(line).unwrap();
        assert_eq!(&argv[..5], CMD);
        assert_eq!(cmd_runs(&glib_command_line(&argv)), line, "{line}");
    }
    // Why quotes are refused: glib's \" reaches cmd.exe as a backslash and a quote.
    let line = r#"dir "C:\Program Files""#;
    let mut unchecked = strings(&CMD);
    unchecked.push(line.into());
    assert_eq!(
        cmd_runs(&glib_command_line(&unchecked)),
        r#"dir \"C:\Program Files\""#
    );
    assert!(matches!(cmd_argv(line), Err(CommandError::CmdQuote { .. })));
    assert!(cmd_argv(line)
        .unwrap_err()
        .to_string()
        .contains("powershell"));
    for line in [r"dir C:\Program Files\", r"dir C:\"] {
        assert!(
            matches!(
                cmd_argv(line),
                Err(CommandError::CmdTrailingBackslash { .. })
            ),
            "{line}"
        );
    }
    assert!(matches!(cmd_argv(""), Err(CommandError::Empty { .. })));
}

#[test]
fn powershell_argv_is_the_prefix_and_the_line() {
    let argv = powershell_argv("Get-Date; exit 3");
    assert_eq!(argv.len(), 7);
    assert_eq!(&argv[..6], POWERSHELL);
    assert_eq!(argv[6], "Get-Date; exit 3");
}

#[test]
fn no_generated_argument_is_empty_or_ends_in_a_backslash() {
    // glib before 2.59.1 did not double a trailing backslash inside quotes; an
    // argument ending in one would have swallowed the next argument there.
    let drives = ['C'];
    let all = [
        install_service(
            "s",
            r"C:\x y\s.sys",
            ServiceStart::Boot,
            &ServiceOptions::default(),
            true,
            &drives,
        )
        .unwrap(),
        uninstall_service("s", r"C:\x y\s.sys", &drives).unwrap(),
        install_pnp_package(r"C:\x y\s.zip", r"C:\x y\s", true, &drives).unwrap(),
        uninstall_pnp_package(r"C:\x y\s.zip", r"C:\x y\s", &drives).unwrap(),
        uninstall_pnp_inf("s.inf").unwrap(),
        remove_file(r"C:\x y\c.bin", &drives).unwrap(),
        flush_volumes(&drives).unwrap(),
        list_crash_dumps(r"%SystemRoot%\Minidump", r"%SystemRoot%\MEMORY.DMP").unwrap(),
        reboot(),
    ];
    for argv in all {
        for arg in &argv {
            assert!(
                !arg.is_empty() && !arg.ends_with('\\'),
                "{arg:?} in {argv:?}"
            );
        }
    }
}

#[test]
fn crash_dump_listing_parses_and_rejects_malformed_lines() {
    let out = "WARNING: something the host printed\r\n\
               dump\tmini\t2359296\t2024-07-19T04:09:12.1234567Z\tC:\\Windows\\Minidump\\071924-7000-01.dmp\n\
               dump\tmemory\t1073741824\t2024-07-19T04:09:40.0000000Z\tC:\\Windows\\MEMORY.DMP\r\n\
               dump\tmini\t1\t2024-07-19T04:10:00Z\tD:\\Ünïcode dumps\\a\tb.dmp\n";
    let files = parse_crash_dump_listing(out).unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(
        files[0],
        GuestDumpFile {
            kind: GuestDumpKind::Minidump,
            bytes: 2_359_296,
            modified_utc: "2024-07-19T04:09:12.1234567Z".into(),
            modified: "2024-07-19T04:09:12.1234567Z".parse().unwrap(),
            path: r"C:\Windows\Minidump\071924-7000-01.dmp".into(),
        }
    );
    assert_eq!(files[1].kind, GuestDumpKind::Memory);
    assert_eq!(files[1].path, r"C:\Windows\MEMORY.DMP");
    // The path is the last field: it keeps whatever follows.
    assert_eq!(files[2].path, "D:\\Ünïcode dumps\\a\tb.dmp");
    assert!(parse_crash_dump_listing("").unwrap().is_empty());
    for bad in [
        "dump\tmini\t12\tC:\\x.dmp",
        "dump\tfull\t12\tt\tC:\\x.dmp",
        "dump\tmini\ttwelve\tt\tC:\\x.dmp",
        "dump\tmini\t12\t\tC:\\x.dmp",
        // A time that is not UTC ISO 8601 (a localized date, no zone) cannot be
        // matched to a crash.
        "dump\tmini\t12\t19.07.2024 04:09:12\tC:\\x.dmp",
        "dump\tmini\t12\t2024-07-19T04:09:12\tC:\\x.dmp",
    ] {
        assert!(
            matches!(
                parse_crash_dump_listing(bad),
                Err(CommandError::Listing { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn reinstall_never_writes_onto_the_loaded_image_and_says_when_a_reboot_is_needed() {
    let script = install_service(
        "sensor",
        r"C:\Windows\System32\drivers\sensor.sys",
        ServiceStart::Boot,
        &ServiceOptions::default(),
        false,
        &[],
    )
    .unwrap()[6]
        .clone();
    // The new image arrives beside the old one and is moved in after the old one
    // is moved aside; nothing writes to $bgSys itself.
    let aside = script.find("Move-Item -LiteralPath $bgSys").unwrap();
    let moved_in = script
        .find("Move-Item -LiteralPath $bgNew -Destination $bgSys")
        .unwrap();
    let create = script.find("& sc.exe create").unwrap();
    assert!(aside < moved_in && moved_in < create, "{script}");
    assert!(script.contains("$LASTEXITCODE -eq 1072"), "{script}");
    assert!(script.contains("put a reboot step between uninstall_driver and install_driver"));
    assert!(!script.contains("Set-Content"));
}

#[test]
fn minifilter_options_become_literals_and_are_validated() {
    use crate::guest::windows::{Minifilter, ServiceType};
    let hostile = "FSFilter Activity Monitor' ; & calc %PATH% ^ ü";
    let options = ServiceOptions {
        service_type: ServiceType::Filesys,
        group: Some(hostile.into()),
        minifilter: Some(Minifilter {
            altitude: "370030.5".into(),
            instance: "it's ^&%x% Ïnstance".into(),
            flags: 1,
        }),
    };
    let argv = install_service(
        "mf",
        r"C:\Windows\System32\drivers\mf.sys",
        ServiceStart::Boot,
        &options,
        true,
        &[],
    )
    .unwrap();
    let vars = script_vars(&argv[6]);
    let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("bgType").as_deref(), Some("filesys"));
    assert_eq!(get("bgGroup").as_deref(), Some(hostile));
    assert_eq!(get("bgAltitude").as_deref(), Some("370030.5"));
    assert_eq!(get("bgInstance").as_deref(), Some("it's ^&%x% Ïnstance"));
    assert!(argv[6].contains("$bgFlags = 1;"));
    let back = command_line_to_argv(&glib_command_line(&argv));
    assert_eq!(back[6..].join(" "), argv[6]);

    let bad = |o: ServiceOptions| {
        install_service(
            "mf",
            r"C:\Windows\mf.sys",
            ServiceStart::Boot,
            &o,
            false,
            &[],
        )
        .is_err()
    };
    let mf = |altitude: &str, instance: &str, flags: u32| Minifilter {
        altitude: altitude.into(),
        instance: instance.into(),
        flags,
    };
    let filesys = |m| ServiceOptions {
        service_type: ServiceType::Filesys,
        group: None,
        minifilter: Some(m),
    };
    assert!(bad(ServiceOptions {
        service_type: ServiceType::Kernel,
        group: None,
        minifilter: Some(mf("1", "i", 0))
    }));
    for altitude in ["", "1.2.3", "12a", "-5", ".5", "5.", "３７"] {
        assert!(bad(filesys(mf(altitude, "i", 0))), "{altitude:?}");
    }
    for instance in ["", "a\\b", "a\nb"] {
        assert!(bad(filesys(mf("1", instance, 0))), "{instance:?}");
    }
    assert!(bad(filesys(mf("1", "i", 4))));
    assert!(bad(ServiceOptions {
        group: Some("a\nb".into()),
        ..Default::default()
    }));
}
