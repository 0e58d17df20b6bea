use super::raw::boundaries;
use super::*;
use crate::fuzz::testing::{demo_format, demo_format_path, fixed0, seed_bytes, Outcome};

#[test]
fn same_seed_same_mutations_other_seed_others() {
    let f = demo_format();
    let good = seed_bytes("good.content");
    let run = |seed| {
        let mut m = Mutator::new(seed);
        (0..200).map(|_| m.mutate(&f, &good)).collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn every_mutation_changes_the_input_and_stays_within_max_file_size() {
    let text = std::fs::read_to_string(demo_format_path())
        .unwrap()
        .replace("max_file_size = 65536", "max_file_size = 400");
    let f = ContentFormat::parse_str(&demo_format_path(), &text).unwrap();
    let good = seed_bytes("good.content");
    let mut m = Mutator::new(3);
    let mut current = good.clone();
    let mut grew = false;
    for n in 0..5000 {
        let out = m.mutate(&f, &current);
        assert_ne!(out.bytes, current, "{}", out.description);
        assert!(
            out.bytes.len() <= 400,
            "{} bytes: {}",
            out.bytes.len(),
            out.description
        );
        assert!(!out.description.is_empty());
        grew |= out.bytes.len() > 380;
        // A random walk, reset now and then so it does not drift into noise.
        current = if n % 50 == 0 { good.clone() } else { out.bytes };
    }
    assert!(
        grew,
        "the walk never came near the limit, so the test proved nothing"
    );
    // An input over the limit comes back within it.
    let big = vec![0u8; 1000];
    assert!(m.mutate(&f, &big).bytes.len() <= 400);
}

#[test]
fn garbage_and_empty_inputs_get_blind_mutations_without_panics() {
    let f = demo_format();
    let mut m = Mutator::new(9);
    let mut rng = Rng::new(10);
    let empty = m.mutate(&f, &[]);
    assert!(!empty.bytes.is_empty());
    for _ in 0..5000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let out = m.mutate(&f, &bytes);
        assert_ne!(out.bytes, bytes);
    }
}

#[test]
fn growing_field_count_grows_every_dependent_instance() {
    let f = demo_format();
    let good = seed_bytes("good.content");
    let mut m = Mutator::new(1);
    let found = (0..500)
        .map(|_| m.mutate(&f, &good))
        .find(|x| {
            x.description.starts_with(
                "templates[1].field_count 20 -> 21 (+1 criteria in each of 2 instances",
            )
        })
        .expect("no templates[1].field_count + 1 in 500 mutations");
    let parsed = f.parse(&found.bytes).unwrap();
    // A second stacked mutation may break a relation; the resize itself may not.
    if !found.description.contains(';') {
        assert!(parsed.violations.is_empty(), "{:?}", parsed.violations);
    }
    assert_eq!(parsed.int(1, 1, 1), Some(21));
    for e in [2, 3] {
        assert_eq!(list_len(&parsed, 2, e, 2), 21, "{}", found.description);
    }
    for e in [0, 1] {
        assert_eq!(list_len(&parsed, 2, e, 2), 20, "{}", found.description);
    }
}

#[test]
fn most_single_mutations_of_a_valid_file_stay_well_formed() {
    // Structure-awareness in numbers: blind byte edits of good.content are almost
    // always rejected by the validator; these mostly are not.
    let f = demo_format();
    let good = seed_bytes("good.content");
    let mut m = Mutator::new(2);
    let total = 2000;
    let valid = (0..total)
        .filter(|_| {
            let out = m.mutate(&f, &good);
            f.parse(&out.bytes).is_ok_and(|p| p.is_valid())
        })
        .count();
    println!("{valid} of {total} mutations of good.content are well-formed");
    assert!(valid * 3 > total, "only {valid} of {total} well-formed");
}

/// The key test: from good.content alone, the mutator reaches the fixed=0 crash
/// (a template with more than 20 fields and a non-wildcard criterion past input[19])
/// within N mutations, for several seeds.
#[test]
fn mutator_finds_the_cf291_crash_from_good_content_alone() {
    const N: usize = 5000;
    const CORPUS_MAX: usize = 64;
    let f = demo_format();
    let good = seed_bytes("good.content");
    assert!(matches!(fixed0(&good), Outcome::Loaded { .. }));
    assert!(fixed0(&seed_bytes("cf291-21-fields.content")).crashed());
    for seed in [1u64, 2, 3, 0xC0FFEE, 0xDEAD_BEEF] {
        let mut m = Mutator::new(seed);
        // Accepted mutants join the corpus, as a fuzzer keeps inputs that got
        // past the validator.
        let mut corpus = vec![good.clone()];
        let hit = (1..=N).find_map(|n| {
            let parent = corpus[m.rng().below(corpus.len())].clone();
            let out = m.mutate(&f, &parent);
            match fixed0(&out.bytes) {
                Outcome::Crash {
                    instance, index, ..
                } => Some((n, instance, index, out.description)),
                Outcome::Loaded { .. }
                    if corpus.len() < CORPUS_MAX && !corpus.contains(&out.bytes) =>
                {
                    corpus.push(out.bytes);
                    None
                }
                _ => None,
            }
        });
        let Some((n, instance, index, description)) = hit else {
            panic!("seed {seed:#x}: no oracle crash in {N} mutations");
        };
        println!(
            "seed {seed:#x}: oracle crash after {n} mutations (instance {instance} reads input[{index}]): {description}"
        );
    }
}

#[test]
fn boundaries_respect_the_type_and_name_the_limits() {
    let f = demo_format();
    let field_count = &f.records()[1].fields[1];
    let b = boundaries(&f, field_count);
    assert!(b.contains(&20) && b.contains(&21) && b.contains(&0xffff) && b.contains(&0xfffe));
    assert!(b.iter().all(|&v| v <= 0xffff));
}
