//! Driver Verifier settings: `verifier.exe <selection> /driver NAME.sys`, which
//! take effect at the next boot. The selections accepted are the documented ones
//! that choose checks (Microsoft, "Driver Verifier command syntax"):
//! `/standard`, `/flags <options>`, and `{/ruleclasses | /rc} <class> [<class> ...]`.
//! Everything else on that page (queries, /reset, /bootmode, /faults, /volatile,
//! /log, /all) is refused: it either does not select checks for one driver, or it
//! would change the whole machine.

use super::command::CommandError;
use crate::suite::check_verifier_flags as check_flags;

/// `verifier.exe FLAGS... /driver SYS`: `sys` is the driver's image file name
/// (`sensor.sys`). Each item is its own argv item (verifier parses its command line
/// the C way), so no value is ever shell text.
pub(crate) fn verifier_argv(flags: &[String], sys: &str) -> Result<Vec<String>, CommandError> {
    check_flags(flags).map_err(|_| CommandError::Invalid {
        what: "verifier flags",
        value: flags.join(" "),
        why: "are not a documented Driver Verifier selection",
    })?;
    if sys.is_empty()
        || !sys
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(CommandError::Invalid {
            what: "driver image name",
            value: sys.into(),
            why: "must be letters, digits, '_', '-' or '.' (an image file name like sensor.sys)",
        });
    }
    let mut argv = vec!["verifier.exe".to_string()];
    argv.extend(flags.iter().cloned());
    argv.push("/driver".into());
    argv.push(sys.into());
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn documented_selections_make_one_argv_item_each() {
        assert_eq!(
            verifier_argv(&s(&["/standard"]), "sensor.sys").unwrap(),
            s(&["verifier.exe", "/standard", "/driver", "sensor.sys"])
        );
        assert_eq!(
            verifier_argv(&s(&["/flags", "0x209BB"]), "sensor.sys").unwrap(),
            s(&["verifier.exe", "/flags", "0x209BB", "/driver", "sensor.sys"])
        );
        assert!(check_flags(&s(&["/rc", "1", "2", "18"])).is_ok());
        assert!(check_flags(&s(&["/RuleClasses", "5"])).is_ok());
    }

    #[test]
    fn other_options_and_hostile_values_are_refused() {
        for bad in [
            &[][..],
            &["/all"][..],
            &["/reset"][..],
            &["/standard", "/all"][..],
            &["/flags"][..],
            &["/flags", "7 & del x"][..],
            &["/flags", "%SystemRoot%"][..],
            &["/rc"][..],
            &["/rc", "1^"][..],
            &["/standard\n/reset"][..],
            &["/driver", "x.sys"][..],
            &["/stándard"][..],
        ] {
            assert!(check_flags(&s(bad)).is_err(), "{bad:?}");
        }
        for sys in [
            "",
            "a b.sys",
            "x\".sys",
            "%x%.sys",
            "a&b.sys",
            "sénsor.sys",
            "a\nb",
        ] {
            assert!(verifier_argv(&s(&["/standard"]), sys).is_err(), "{sys:?}");
        }
    }
}
