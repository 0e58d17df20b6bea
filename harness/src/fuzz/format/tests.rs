use super::*;
use crate::fuzz::testing::{demo_format, demo_format_path, seed_bytes};

#[test]
fn demo_format_loads_with_its_relations() {
    let f = demo_format();
    assert_eq!(f.name(), "DSC1");
    assert_eq!(f.max_file_size(), 65536);
    assert_eq!(f.input_value(20), Some(0x1014));
    assert_eq!(f.trailer(), Some(0));
    let names: Vec<&str> = f.records().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["header", "template", "instance"]);
    assert_eq!(f.record_index("instances"), Some(2));
    assert_eq!(f.record_index("template"), Some(1));
    assert_eq!(f.path_of(2, 3, 2), "instances[3].criteria");
    let instance = &f.records()[2];
    assert_eq!(
        instance.count,
        Some(FieldRef {
            record: 0,
            field: 3
        })
    );
    assert_eq!(
        instance.fields[2].list,
        Some(LengthFrom::Lookup {
            record: 1,
            key: 0,
            local: 0,
            length: 1
        })
    );
    assert_eq!(instance.fields[2].wildcard, Some(0xFFFF_FFFF));
    assert_eq!(
        instance.fields[0].reference,
        Some(FieldRef {
            record: 1,
            field: 0
        })
    );
    assert!(!instance.fields[1].checked);
    let seeds = f.seeds();
    assert_eq!(seeds.len(), 3);
    for seed in &seeds {
        assert!(seed.is_absolute() && seed.is_file(), "{}", seed.display());
    }
}

#[test]
fn valid_seeds_round_trip_byte_for_byte() {
    let f = demo_format();
    for name in ["good.content", "cf291-21-fields.content"] {
        let bytes = seed_bytes(name);
        let parsed = f.parse(&bytes).unwrap();
        assert!(
            parsed.violations.is_empty(),
            "{name}: {:?}",
            parsed.violations
        );
        assert_eq!(f.serialize(&parsed), bytes, "{name}");
    }
    let good = f.parse(&seed_bytes("good.content")).unwrap();
    assert_eq!(good.records[1].elements.len(), 2);
    assert_eq!(good.records[2].elements.len(), 4);
    assert_eq!(good.records[2].elements[1].fields[2].range, 108..188);
    assert_eq!(
        good.records[2].elements[2].fields[2].value,
        Value::Ints((0..20).map(|i| 0x1000 + i).collect())
    );
}

#[test]
fn truncated_seed_is_a_parse_error_naming_the_field() {
    let f = demo_format();
    let err = f.parse(&seed_bytes("truncated.content")).unwrap_err();
    assert_eq!(
        err,
        ParseError::Truncated {
            what: "instances[1].criteria".into(),
            offset: 108,
            need: 80,
            size: 148
        }
    );
    assert!(
        err.to_string()
            .starts_with("truncated: instances[1].criteria"),
        "{err}"
    );
}

#[test]
fn every_strict_prefix_of_a_valid_file_fails_to_parse() {
    let f = demo_format();
    let good = seed_bytes("good.content");
    for n in 0..good.len() {
        assert!(f.parse(&good[..n]).is_err(), "prefix of {n} bytes parsed");
    }
}

#[test]
fn structural_edit_serializes_with_counts_and_size_fixed() {
    let f = demo_format();
    let mut parsed = f.parse(&seed_bytes("good.content")).unwrap();
    parsed.records[2].elements.remove(1);
    let bytes = f.serialize(&parsed);
    assert_eq!(bytes.len(), 356 - 84);
    assert_eq!(read_int(&bytes[4..8], Endian::Little), 272);
    assert_eq!(read_int(&bytes[10..12], Endian::Little), 3);
    let again = f.parse(&bytes).unwrap();
    assert!(again.violations.is_empty(), "{:?}", again.violations);
}

#[test]
fn broken_relations_are_violations_not_errors() {
    let f = demo_format();
    let mut bytes = seed_bytes("good.content");
    bytes[3] = b'2';
    // Template ids 1, 1; instances 2 and 3 follow to template 1 so all resolve.
    for at in [16, 188, 272] {
        bytes[at] = 1;
    }
    bytes.push(0);
    let parsed = f.parse(&bytes).unwrap();
    let v = parsed.violations.join("\n");
    assert!(
        v.contains("header.magic is \"DSC2\", the format requires \"DSC1\""),
        "{v}"
    );
    assert!(
        v.contains("header.total_length is 356, the file has 357 bytes"),
        "{v}"
    );
    assert!(
        v.contains("templates[1].id repeats the value of templates[0].id"),
        "{v}"
    );
    assert!(v.contains("1 bytes after the last instance"), "{v}");
    // instances 0 and 1 name template 1, which no longer exists: that is a
    // layout failure, since their size depends on it.
    let mut bytes = seed_bytes("good.content");
    bytes[12] = 9;
    let err = f.parse(&bytes).unwrap_err();
    assert!(
        matches!(&err, ParseError::UnknownRef { what, value: 1, .. } if what == "instances[0].template_id"),
        "{err}"
    );
}

#[test]
fn garbage_never_panics_the_parser() {
    let f = demo_format();
    let mut rng = crate::fuzz::mutate::Rng::new(7);
    let good = seed_bytes("good.content");
    for round in 0..20_000 {
        let len = rng.below(400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Half the rounds start from a valid header so the parse gets further.
        if round % 2 == 0 && len >= 12 {
            bytes[..12].copy_from_slice(&good[..12]);
            bytes[8] = rng.below(8) as u8;
            bytes[10] = rng.below(8) as u8;
        }
        if let Ok(parsed) = f.parse(&bytes) {
            // Whatever parses re-serializes to something that parses again.
            let out = f.serialize(&parsed);
            assert!(f.parse(&out).is_ok(), "{bytes:02x?}");
        }
    }
}

proptest::proptest! {
    #[test]
    fn parse_never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let f = demo_format();
        let _ = f.parse(&bytes);
    }
}

fn invalid(text: &str) -> (usize, usize, String) {
    match ContentFormat::parse_str(&demo_format_path(), text) {
        Err(FormatError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn demo_text() -> String {
    std::fs::read_to_string(demo_format_path()).unwrap()
}

/// 1-based line and column of the first occurrence of `needle`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap();
    line_col(text, offset)
}

#[test]
fn typo_in_field_key_names_line_column_and_key() {
    let text = demo_text().replace("count_of = \"templates\"", "count_off = \"templates\"");
    let (line, column, message) = invalid(&text);
    assert_eq!((line, column), position(&text, "count_off"));
    assert!(message.contains("count_off"), "{message}");
}

#[test]
fn typo_in_header_key_is_located() {
    let text = demo_text().replace("max_file_size = 65536", "max_file_sise = 65536");
    let (line, column, message) = invalid(&text);
    assert_eq!((line, column), position(&text, "max_file_sise"));
    assert!(message.contains("max_file_sise"), "{message}");
}

#[test]
fn semantic_mistakes_are_located_and_explained() {
    // (replace, with, where the error must point, what it must say)
    let cases = [
        (
            "id == template_id",
            "id == templat_id",
            "\"templates[id == templat_id]",
            "\"templat_id\" must be an integer field",
        ),
        (
            "type = \"u32\", length_from",
            "type = \"u24\", length_from",
            "\"u24\"",
            "\"u24\" is not one of",
        ),
        (
            "ref = \"templates.id\"",
            "ref = \"templates.idd\"",
            "\"templates.idd\"",
            "must name ARRAY.FIELD",
        ),
        (
            "after = \"templates\"",
            "after = \"nowhere\"",
            "\"nowhere\"",
            "comes after \"nowhere\"",
        ),
        (
            "bytes_after_last_instance",
            "bytes_after_last_instanc",
            "bytes_after_last_instanc",
            "unknown key `bytes_after_last_instanc`",
        ),
        (
            "equals = \"file_size\"",
            "equals = \"file_length\"",
            "\"file_length\"",
            "only relation is \"file_size\"",
        ),
        (
            "count_of = \"instances\"",
            "count_of = \"instancez\"",
            "\"instancez\"",
            "no record's `array`",
        ),
    ];
    for (from, to, needle, expected) in cases {
        let text = demo_text().replace(from, to);
        assert_ne!(text, demo_text(), "{from} not in format.toml");
        let (line, column, message) = invalid(&text);
        let want = line_col(&text, text.find(needle).unwrap());
        // The error points at the offending value (or key) itself.
        assert_eq!((line, column), want, "{to}: {message}");
        assert!(message.contains(expected), "{to}: {message}");
    }
}

#[test]
fn array_without_count_and_missing_format_are_rejected() {
    let text = demo_text().replace(", count_of = \"instances\"", "");
    let (_, _, message) = invalid(&text);
    assert!(
        message.contains("array \"instances\" has no count"),
        "{message}"
    );
    let (_, _, message) = invalid("[[record]]\nname = \"h\"\nat = 0\nfields = []\n");
    assert!(message.contains("[format]"), "{message}");
}

#[test]
fn input_values_expressions() {
    let iv = |s| parse_input_values(s);
    assert_eq!(
        iv("0x1000 + i"),
        Some(InputValues {
            base: 0x1000,
            step: 1
        })
    );
    assert_eq!(iv("16 + 4 * i"), Some(InputValues { base: 16, step: 4 }));
    assert_eq!(iv("i"), Some(InputValues { base: 0, step: 1 }));
    assert_eq!(iv("i + i"), None);
    assert_eq!(iv("0x10 - i"), None);
}

#[test]
fn big_endian_formats_read_and_write_the_other_way() {
    let text = "[format]\nname = \"B\"\nendian = \"big\"\nmax_file_size = 64\n[[record]]\nname = \"h\"\nat = 0\nfields = [{ name = \"n\", type = \"u16\", count_of = \"xs\" }]\n[[record]]\nname = \"x\"\narray = \"xs\"\nafter = \"h\"\nvariable_size = true\nfields = [{ name = \"k\", type = \"u8\" }, { name = \"v\", type = \"u16\", length_from = \"k\" }]\n";
    let f = ContentFormat::parse_str(Path::new("b.toml"), text).unwrap();
    let bytes = [0, 2, 1, 0x12, 0x34, 0, 7];
    let parsed = f.parse(&bytes).unwrap();
    assert_eq!(
        parsed.records[1].elements[0].fields[1].value,
        Value::Ints(vec![0x1234])
    );
    assert_eq!(parsed.trailing, vec![7]);
    assert_eq!(f.serialize(&parsed), bytes);
}
