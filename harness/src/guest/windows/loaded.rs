//! Did this boot load the installed drivers? Windows' answer, language-independent:
//! each driver service's state from WMI (`Win32_SystemDriver`: State, Started,
//! ExitCode), and the events of this boot that name it: Service Control Manager
//! 7000 (a service failed to start) and 7026 (boot-start or system-start drivers
//! failed to load) in the System log, and Code Integrity 3033 / 3063 (an image
//! refused for its signature) in Microsoft-Windows-CodeIntegrity/Operational. The
//! events are matched on their insertion strings (`Properties`), never on the
//! localised message text. The guest prints one JSON document; [`parse`] reads it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::command::{powershell_argv, ps_quote, CommandError};

/// The tag before the JSON document, so stray warnings stay out of the parse.
const TAG: &str = "bootgate-drivers ";

/// The script after the `$bgNames` assignment. Written as UTF-8 bytes straight to
/// stdout (the console code page would mangle non-ASCII).
const BODY: &[&str] = &[
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
    "$bgBoot = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime",
    "$bgAll = @(Get-CimInstance -ClassName Win32_SystemDriver)",
    "$bgDrivers = @(foreach ($bgName in $bgNames) { $bgD = @($bgAll | Where-Object { $_.Name -ieq $bgName }) | Select-Object -First 1; if ($bgD) { [ordered]@{ name = $bgName; found = $true; state = [string]$bgD.State; started = [bool]$bgD.Started; exit_code = [long]$bgD.ExitCode } } else { [ordered]@{ name = $bgName; found = $false } } })",
    // A log that is absent or empty since boot throws; that is no event, not a failure.
    "$bgEvents = @()",
    "try { $bgEvents += @(Get-WinEvent -FilterHashtable @{ LogName = 'System'; ProviderName = 'Service Control Manager'; Id = 7000, 7026; StartTime = $bgBoot } -ErrorAction Stop) } catch { }",
    "try { $bgEvents += @(Get-WinEvent -FilterHashtable @{ LogName = 'Microsoft-Windows-CodeIntegrity/Operational'; Id = 3033, 3063; StartTime = $bgBoot } -ErrorAction Stop) } catch { }",
    "$bgHits = @(foreach ($bgE in $bgEvents) { $bgText = @($bgE.Properties | ForEach-Object { [string]$_.Value }); foreach ($bgName in $bgNames) { foreach ($bgT in $bgText) { if ($bgT -ieq $bgName -or $bgT -like ('*\\' + $bgName + '.sys') -or (@($bgT -split '[\\s,]+') -icontains $bgName)) { [ordered]@{ name = $bgName; id = [int]$bgE.Id; log = [string]$bgE.LogName } ; break } } } })",
    "$bgJson = ConvertTo-Json -Compress -Depth 4 -InputObject ([ordered]@{ drivers = $bgDrivers; events = $bgHits })",
    "$bgBytes = [Text.Encoding]::UTF8.GetBytes('bootgate-drivers ' + $bgJson + [char]10)",
    "$bgOut = [Console]::OpenStandardOutput(); $bgOut.Write($bgBytes, 0, $bgBytes.Length); $bgOut.Flush()",
    "exit 0",
];

/// The command that reports, for each of `names` (service names), its state and
/// this boot's load-failure events; parse its output with [`parse`].
pub(crate) fn query(names: &[String]) -> Result<Vec<String>, CommandError> {
    for name in names {
        if name.is_empty() || name.contains('\0') {
            return Err(CommandError::Empty {
                what: "driver name",
            });
        }
    }
    let list: Vec<String> = names.iter().map(|n| ps_quote(n)).collect();
    let mut statements = vec![format!("$bgNames = @({})", list.join(", "))];
    statements.extend(BODY.iter().map(|s| s.to_string()));
    Ok(powershell_argv(&statements.join("; ")))
}

/// PowerShell writes a one-element array as the element itself in some places;
/// both shapes are read.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(t) => vec![t],
        }
    }
}

#[derive(Deserialize)]
struct Report {
    drivers: Option<OneOrMany<DriverState>>,
    events: Option<OneOrMany<Event>>,
}

#[derive(Deserialize)]
struct DriverState {
    name: String,
    found: bool,
    state: Option<String>,
    started: Option<bool>,
    exit_code: Option<i64>,
}

#[derive(Deserialize)]
struct Event {
    name: String,
    id: u32,
    log: String,
}

/// What one boot says about the installed drivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoadedDrivers {
    pub loaded: Vec<String>,
    pub missing: Vec<String>,
    /// For each missing driver, why, in words.
    pub reasons: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the guest's driver report is not readable: {why}")]
pub(crate) struct ParseError {
    why: String,
}

/// Reads the output of [`query`] for the drivers `names`. A driver the report
/// leaves out counts as missing: silence is never proof that a driver loaded.
pub(crate) fn parse(names: &[String], stdout: &[u8]) -> Result<LoadedDrivers, ParseError> {
    let text = String::from_utf8_lossy(stdout);
    let json = text
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(TAG))
        .ok_or_else(|| ParseError {
            why: "no line starts with the bootgate-drivers tag".into(),
        })?;
    let report: Report =
        serde_json::from_str(json).map_err(|e| ParseError { why: e.to_string() })?;
    let states: Vec<DriverState> = report.drivers.map(OneOrMany::into_vec).unwrap_or_default();
    let events: Vec<Event> = report.events.map(OneOrMany::into_vec).unwrap_or_default();
    let mut out = LoadedDrivers::default();
    for name in names {
        let state = states.iter().find(|s| s.name.eq_ignore_ascii_case(name));
        let running = state.is_some_and(|s| {
            s.found && s.state.as_deref() == Some("Running") && s.started != Some(false)
        });
        let mine: Vec<String> = events
            .iter()
            .filter(|e| e.name.eq_ignore_ascii_case(name))
            .map(describe_event)
            .collect();
        if running {
            out.loaded.push(name.clone());
            continue;
        }
        let mut why = match state {
            None => "the guest's report left it out".to_string(),
            Some(s) if !s.found => "no such driver service (Win32_SystemDriver)".to_string(),
            Some(s) => format!(
                "service state {}, exit code {}",
                s.state.as_deref().unwrap_or("unknown"),
                s.exit_code.map_or("unknown".to_string(), |c| c.to_string())
            ),
        };
        if !mine.is_empty() {
            why.push_str(&format!("; this boot's events: {}", mine.join(", ")));
        }
        out.missing.push(name.clone());
        out.reasons.insert(name.clone(), why);
    }
    Ok(out)
}

/// An event in words, from its log and id (Microsoft's event documentation).
fn describe_event(e: &Event) -> String {
    let what = match (e.log.as_str(), e.id) {
        ("System", 7000) => "Service Control Manager 7000: the service failed to start",
        ("System", 7026) => {
            "Service Control Manager 7026: a boot-start or system-start driver failed to load"
        }
        (_, 3033) => "Code Integrity 3033: the image did not meet the signing level",
        (_, 3063) => {
            "Code Integrity 3063: the image did not meet the shared-section security requirements"
        }
        _ => "event",
    };
    // The log name is the guest's: keep it printable.
    let log: String = e.log.chars().filter(|c| !c.is_control()).take(80).collect();
    format!("{what} ({log} {})", e.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// The shape ConvertTo-Json -Compress writes for the script's ordered tables.
    const RUNNING_AND_FAILED: &str = concat!(
        "WARNING: something unrelated\r\n",
        r#"bootgate-drivers {"drivers":[{"name":"sensor","found":true,"state":"Running","started":true,"exit_code":0},{"name":"filter","found":true,"state":"Stopped","started":false,"exit_code":1077}],"events":[{"name":"filter","id":7026,"log":"System"},{"name":"filter","id":3033,"log":"Microsoft-Windows-CodeIntegrity/Operational"}]}"#,
        "\r\n"
    );

    #[test]
    fn a_running_driver_is_loaded_and_a_stopped_one_missing_with_its_events() {
        let got = parse(&names(&["sensor", "filter"]), RUNNING_AND_FAILED.as_bytes()).unwrap();
        assert_eq!(got.loaded, names(&["sensor"]));
        assert_eq!(got.missing, names(&["filter"]));
        let why = &got.reasons["filter"];
        assert!(why.contains("Stopped") && why.contains("1077"), "{why}");
        assert!(why.contains("7026") && why.contains("3033"), "{why}");
    }

    #[test]
    fn a_single_object_instead_of_an_array_is_read() {
        let one = r#"bootgate-drivers {"drivers":{"name":"sensor","found":false},"events":null}"#;
        let got = parse(&names(&["sensor"]), one.as_bytes()).unwrap();
        assert_eq!(got.missing, names(&["sensor"]));
        assert!(got.reasons["sensor"].contains("no such driver service"));
    }

    #[test]
    fn a_driver_left_out_of_the_report_is_missing() {
        let empty = r#"bootgate-drivers {"drivers":[],"events":[]}"#;
        let got = parse(&names(&["sensor"]), empty.as_bytes()).unwrap();
        assert_eq!(got.missing, names(&["sensor"]));
    }

    #[test]
    fn hostile_values_do_not_pass_as_running_or_break_the_parse() {
        // A state that merely contains "Running", a non-ASCII name, a control
        // character in the log name: none is taken at face value.
        let hostile = "bootgate-drivers {\"drivers\":[{\"name\":\"s\u{e9}nsor\",\"found\":true,\"state\":\"Running\\u0000 not\",\"started\":true}],\"events\":[{\"name\":\"s\u{e9}nsor\",\"id\":7000,\"log\":\"Sys\\ntem\"}]}";
        let got = parse(&names(&["s\u{e9}nsor"]), hostile.as_bytes()).unwrap();
        assert!(got.loaded.is_empty());
        assert!(!got.reasons["s\u{e9}nsor"].contains('\n'));
        for bad in [
            "",
            "bootgate-drivers ",
            "bootgate-drivers {",
            "bootgate-drivers []",
            "bootgate-drivers {\"drivers\":[{\"name\":1}]}",
        ] {
            assert!(parse(&names(&["x"]), bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_query_quotes_names_as_literals() {
        let argv = query(&names(&["it's", "%SystemRoot%&^"])).unwrap();
        let script = argv.last().unwrap();
        assert!(
            script.starts_with("$bgNames = @('it''s', '%SystemRoot%&^'); "),
            "{script}"
        );
        assert!(query(&names(&[""])).is_err());
    }
}
