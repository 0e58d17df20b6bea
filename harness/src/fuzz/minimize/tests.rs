use super::*;
use crate::fuzz::mutate::Rng;
use crate::fuzz::testing::{demo_format, fixed0, seed_bytes};

/// Applies candidates as the engine will: keep the first that still crashes,
/// ask again, stop when none does. Returns the result and the steps kept.
fn minimize(format: &ContentFormat, input: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut current = input.to_vec();
    let mut kept = Vec::new();
    'search: for _ in 0..10_000 {
        for c in candidates(format, &current) {
            assert!(is_smaller(&c.bytes, &current), "{}", c.description);
            if fixed0(&c.bytes).crashed() {
                current = c.bytes;
                kept.push(c.description);
                continue 'search;
            }
        }
        return (current, kept);
    }
    panic!("minimization did not converge");
}

#[test]
fn cf291_minimizes_to_one_template_and_one_instance_that_still_crash() {
    let f = demo_format();
    let original = seed_bytes("cf291-21-fields.content");
    let (min, kept) = minimize(&f, &original);
    println!(
        "cf291: {} -> {} bytes via {kept:?}",
        original.len(),
        min.len()
    );
    assert!(
        fixed0(&min).crashed(),
        "the minimized input no longer crashes"
    );
    assert!(min.len() < original.len());
    // Header, template 291 (21 fields), one instance of 4 + 21 * 4 bytes.
    assert_eq!(min.len(), 12 + 4 + 4 + 21 * 4, "{kept:?}");
    let parsed = f.parse(&min).unwrap();
    assert!(parsed.is_valid(), "{:?}", parsed.violations);
    assert_eq!(parsed.int(1, 0, 0), Some(291));
}

#[test]
fn a_noisy_crash_minimizes_to_its_one_bad_criterion() {
    // good.content with template 1 grown to 21 fields, noise in every criterion
    // of its instances and in the reserved fields, and 0x1014 at index 20 of
    // instance 1: the minimum is that template with one instance whose only
    // non-wildcard criterion is the one past the inputs.
    let f = demo_format();
    let mut parsed = f.parse(&seed_bytes("good.content")).unwrap();
    set_int(&mut parsed, 1, 0, 1, 21);
    for e in 0..4 {
        set_int(&mut parsed, 2, e, 1, 0xbeef);
    }
    for e in [0, 1] {
        if let Some(Value::Ints(items)) = items_mut(&mut parsed, (2, e, 2)) {
            items.push(if e == 1 { 0x1014 } else { 0xffff_ffff });
            items[7] = 0x1234_5678;
        }
    }
    let noisy = f.serialize(&parsed);
    assert!(fixed0(&noisy).crashed());
    let (min, kept) = minimize(&f, &noisy);
    println!("noisy: {} -> {} bytes via {kept:?}", noisy.len(), min.len());
    assert!(fixed0(&min).crashed());
    assert_eq!(min.len(), 12 + 4 + 4 + 21 * 4, "{kept:?}");
    let p = f.parse(&min).unwrap();
    assert!(p.is_valid(), "{:?}", p.violations);
    let Value::Ints(items) = &p.records[2].elements[0].fields[2].value else {
        panic!("no criteria");
    };
    let set: Vec<(usize, u64)> = items
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, v)| v != 0xffff_ffff)
        .collect();
    assert_eq!(set, [(20, 0x1014)]);
    assert_eq!(p.int(2, 0, 1), Some(0), "reserved not zeroed");
}

#[test]
fn candidates_of_a_valid_file_stay_consistent_and_smaller() {
    let f = demo_format();
    let good = seed_bytes("good.content");
    let all = candidates(&f, &good);
    let structured: Vec<&Mutation> = all
        .iter()
        .filter(|m| !m.description.starts_with("cut bytes"))
        .collect();
    assert!(structured.len() > 10, "{}", structured.len());
    for m in &structured {
        let p = f
            .parse(&m.bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", m.description));
        assert!(p.is_valid(), "{}: {:?}", m.description, p.violations);
    }
    // Structured ones come first, and within them the smallest first.
    let first_cut = all
        .iter()
        .position(|m| m.description.starts_with("cut bytes"));
    assert_eq!(first_cut, Some(structured.len()));
    assert!(structured
        .windows(2)
        .all(|w| w[0].bytes.len() <= w[1].bytes.len()));
    // Both templates are referenced: neither is dropped alone.
    assert!(!all.iter().any(|m| m.description == "drop templates[0]"));
    assert!(all.iter().any(|m| m.description == "drop instances[1]"));
}

#[test]
fn a_big_input_gets_a_bounded_list_coarse_steps_first() {
    // 300 instances of 20 non-wildcard criteria: 6,000 single-item steps if
    // nothing bounded them, each a 25 KB input.
    let f = demo_format();
    let mut parsed = f.parse(&seed_bytes("good.content")).unwrap();
    let instance = parsed.records[2].elements[2].clone();
    parsed.records[2].elements = vec![instance; 300];
    // Distinct instances, or dropping any one gives the same bytes.
    for (k, element) in parsed.records[2].elements.iter_mut().enumerate() {
        if let Value::Ints(items) = &mut element.fields[2].value {
            items[19] = k as u64;
        }
    }
    let big = f.serialize(&parsed);
    assert_eq!(big.len(), 12 + 8 + 300 * 84);
    let all = candidates(&f, &big);
    let structured: Vec<&Mutation> = all
        .iter()
        .filter(|m| !m.description.starts_with("cut bytes"))
        .collect();
    // The budget is reached; the filter then removes the two field_count steps of
    // template 1, which nothing depends on (20 -> 10 or 19 is no simpler as bytes).
    assert_eq!(structured.len(), MAX_STRUCTURED - 2);
    // Smallest first: template 2 with every instance (16 bytes), then all the
    // instances (20 bytes).
    assert_eq!(
        structured[0].description,
        "drop templates[1] with instances[0], instances[1], instances[2] and 297 more (which reference it)"
    );
    assert_eq!(
        structured[1].description,
        "drop all 300 unreferenced instances"
    );
    assert!(structured
        .iter()
        .any(|m| m.description == "drop instances[0..=149] (the unreferenced ones)"));
    assert!(structured
        .iter()
        .any(|m| m.description == "drop instances[0]"));
    // The budget is spent on coarse steps; single items wait for a later round.
    assert!(!structured
        .iter()
        .any(|m| m.description.ends_with("-> wildcard") || m.description.starts_with("keep only")));
}

#[test]
fn trailing_junk_is_dropped_first() {
    let f = demo_format();
    let mut bytes = seed_bytes("cf291-21-fields.content");
    bytes.extend_from_slice(&[1, 2, 3]);
    let n = bytes.len() as u32;
    bytes[4..8].copy_from_slice(&n.to_le_bytes());
    let all = candidates(&f, &bytes);
    let junk = all
        .iter()
        .find(|m| m.description == "drop 3 trailing bytes")
        .unwrap();
    assert_eq!(junk.bytes, seed_bytes("cf291-21-fields.content"));
}

#[test]
fn is_smaller_orders_by_size_then_simplicity() {
    let criterion = 0x1005u32.to_le_bytes();
    assert!(is_smaller(&[1, 2], &[1, 2, 3]));
    assert!(!is_smaller(&[1, 2, 3], &[1, 2]));
    assert!(is_smaller(&[0xff; 4], &criterion), "wildcard is simpler");
    assert!(is_smaller(&[0, 0], &[0x34, 0x12]), "zero is simpler");
    assert!(
        is_smaller(&[0, 0], &[0xff, 0xff]),
        "zero is simpler than 0xffff"
    );
    assert!(!is_smaller(&criterion, &criterion), "strict");
}

#[test]
fn garbage_gets_byte_cuts_only_and_never_panics() {
    let f = demo_format();
    let mut rng = Rng::new(4);
    for _ in 0..500 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        for c in candidates(&f, &bytes) {
            assert!(c.bytes.len() < bytes.len());
        }
    }
    assert!(candidates(&f, &[]).is_empty());
    assert_eq!(candidates(&f, &[7])[0].bytes, Vec::<u8>::new());
}
