//! Shrinking a crashing input: smaller or simpler variants for the engine to try.
//!
//! The engine runs the candidates in a guest in order, keeps the first one that
//! reproduces the same crash title and asks again, until none does. Every candidate is
//! [`is_smaller`] than its input, so that loop ends. Structure-aware candidates come
//! first, serialized with counts and sizes fixed up (so they reach the same code the
//! crash was in); byte-level cuts come after, for crashes that need the input to be
//! malformed (those cuts rarely survive a validator, so they would waste guest runs
//! if tried first).

use std::collections::BTreeSet;

use super::format::{ContentFormat, Parsed, Value};
use super::mutate::{
    arrays, describe_resize, elements, length_sources, list_len, set_int, show, At, Mutation,
};

/// The finest byte-level cut tried is 1/CUT_GRANULARITY of the input: finer cuts
/// multiply guest runs for little gain once the structure-aware steps are done.
const CUT_GRANULARITY: usize = 16;

/// Most structure-aware candidates offered per round. Each is a whole serialized
/// input (up to max_file_size), and a big file has thousands of single items; the
/// coarse steps come first, so the cap only defers fine ones to later rounds.
const MAX_STRUCTURED: usize = 512;

/// "Keep only element k" is offered for arrays with at most this many droppable
/// elements: it is one candidate per element, and for many elements the halves
/// get there in fewer guest runs.
const KEEP_ONLY_MAX: usize = 16;

/// Smaller or simpler variants of `input`, in the order to try them: structure-aware
/// ones first, most reducing first, then byte-level cuts. Each is [`is_smaller`] than
/// `input`, and no two are equal.
pub fn candidates(format: &ContentFormat, input: &[u8]) -> Vec<Mutation> {
    let mut structured = match format.parse(input) {
        Ok(parsed) => structured(format, &parsed),
        Err(_) => Vec::new(),
    };
    let mut cuts = byte_cuts(input);
    let mut seen = BTreeSet::new();
    for list in [&mut structured, &mut cuts] {
        list.retain(|m| is_smaller(&m.bytes, input) && seen.insert(m.bytes.clone()));
        // Stable: among equals, the order of generation (coarser steps first) holds.
        list.sort_by_cached_key(|m| simplicity(&m.bytes));
    }
    structured.extend(cuts);
    structured
}

/// Whether `a` is smaller than `b`: fewer bytes; at equal size, fewer bytes that are
/// neither 0x00 nor 0xFF (a wildcard criterion is all 0xFF, a zeroed field all 0x00,
/// a real value usually neither); then fewer non-zero bytes. A strict order, so a
/// loop that only keeps smaller inputs ends.
pub fn is_smaller(a: &[u8], b: &[u8]) -> bool {
    simplicity(a) < simplicity(b)
}

fn simplicity(bytes: &[u8]) -> (usize, usize, usize) {
    let mixed = bytes.iter().filter(|&&b| b != 0 && b != 0xff).count();
    let nonzero = bytes.iter().filter(|&&b| b != 0).count();
    (bytes.len(), mixed, nonzero)
}

/// Candidates, generated coarsest first: whole elements, shorter lists, whole lists
/// to wildcards and all ignored fields at once, then single items. Generation stops at
/// MAX_STRUCTURED, so on a big input the single-item steps wait for a later round
/// (the engine asks again after every kept candidate), and memory stays bounded.
fn structured(format: &ContentFormat, parsed: &Parsed) -> Vec<Mutation> {
    let mut c = Collector {
        format,
        out: Vec::new(),
    };

    // Trailing junk beyond what the format allows.
    let allowed = format.trailer().unwrap_or(0);
    if parsed.trailing.len() > allowed {
        let mut edited = parsed.clone();
        edited.trailing.truncate(allowed);
        c.push(
            &edited,
            format!("drop {} trailing bytes", parsed.trailing.len() - allowed),
        );
    }

    // Whole elements: all unreferenced ones, each half of them, each alone, each with
    // the elements that reference it, and (for few) all but one.
    for r in arrays(format) {
        if c.full() {
            return c.out;
        }
        let n = elements(parsed, r).len();
        let array = format.records()[r].array.as_deref().unwrap_or("elements");
        let droppable: Vec<usize> = (0..n)
            .filter(|&e| referrers(format, parsed, r, e).is_empty())
            .collect();
        if droppable.len() >= 2 {
            let (first, second) = droppable.split_at(droppable.len() / 2);
            c.push(
                &without(parsed, &[(r, droppable.clone())]),
                format!("drop all {} unreferenced {array}", droppable.len()),
            );
            for half in [first, second] {
                if half.len() >= 2 {
                    c.push(
                        &without(parsed, &[(r, half.to_vec())]),
                        format!(
                            "drop {array}[{}..={}] (the unreferenced ones)",
                            half[0],
                            half[half.len() - 1]
                        ),
                    );
                }
            }
        }
        for e in 0..n {
            if c.full() {
                return c.out;
            }
            let refs = referrers(format, parsed, r, e);
            if refs.is_empty() {
                c.push(
                    &without(parsed, &[(r, vec![e])]),
                    format!("drop {}", format.element_path(r, e)),
                );
                continue;
            }
            let mut drops: Vec<(usize, Vec<usize>)> = refs
                .iter()
                .map(|&(rr, _)| rr)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|rr| {
                    let es = refs.iter().filter(|x| x.0 == rr).map(|x| x.1).collect();
                    (rr, es)
                })
                .collect();
            drops.push((r, vec![e]));
            c.push(
                &without(parsed, &drops),
                format!(
                    "drop {} with {} (which reference it)",
                    format.element_path(r, e),
                    name_some(refs.iter().map(|&(rr, re)| format.element_path(rr, re)))
                ),
            );
        }
        if droppable.len() >= 3 && droppable.len() <= KEEP_ONLY_MAX {
            for &keep in &droppable {
                if c.full() {
                    return c.out;
                }
                let others: Vec<usize> = droppable.iter().copied().filter(|&e| e != keep).collect();
                c.push(
                    &without(parsed, &[(r, others.clone())]),
                    format!(
                        "keep only {} (drop the {} other unreferenced)",
                        format.element_path(r, keep),
                        others.len()
                    ),
                );
            }
        }
    }

    // Shorter lists: a length field lowered, its dependents cut to match.
    for ((r, e, f), deps) in length_sources(format, parsed) {
        if c.full() {
            return c.out;
        }
        let Some(old) = parsed.int(r, e, f).filter(|&v| v > 0) else {
            continue;
        };
        let spec = &format.records()[r].fields[f];
        let mut targets: Vec<u64> = [
            Some(old / 2),
            Some(old - 1),
            spec.fixed_max.map(|m| m.saturating_add(1)),
            format.inputs().map(|n| n.saturating_add(1)),
        ]
        .into_iter()
        .flatten()
        .filter(|&t| t < old)
        .collect();
        targets.sort_unstable();
        targets.dedup();
        for new in targets {
            if c.full() {
                return c.out;
            }
            let mut edited = parsed.clone();
            set_int(&mut edited, r, e, f, new);
            for &dep in &deps {
                truncate_list(&mut edited, dep, new);
            }
            c.push(
                &edited,
                format!(
                    "{} {old} -> {new} ({})",
                    format.path_of(r, e, f),
                    describe_resize(format, &deps, old, new, &[])
                ),
            );
        }
    }

    // List items that are not wildcards, per list.
    let mut set_items_of = Vec::new();
    for (r, spec) in format.records().iter().enumerate() {
        for (f, fs) in spec.fields.iter().enumerate() {
            let (Some(wildcard), Some(_)) = (fs.wildcard, fs.list) else {
                continue;
            };
            for (e, element) in elements(parsed, r).iter().enumerate() {
                if let Some(Value::Ints(items)) = element.fields.get(f).map(|x| &x.value) {
                    let set: Vec<(usize, u64)> = items
                        .iter()
                        .copied()
                        .enumerate()
                        .filter(|&(_, v)| v != wildcard)
                        .collect();
                    if !set.is_empty() {
                        set_items_of.push(((r, e, f), wildcard, set));
                    }
                }
            }
        }
    }
    // Fields the consumer ignores that are not at their defaults.
    let mut unchecked = Vec::new();
    for (r, spec) in format.records().iter().enumerate() {
        for (f, fs) in spec.fields.iter().enumerate() {
            let (false, Some(default)) = (fs.checked, fs.default) else {
                continue;
            };
            for e in 0..elements(parsed, r).len() {
                if parsed.int(r, e, f).is_some_and(|v| v != default) {
                    unchecked.push(((r, e, f), default));
                }
            }
        }
    }

    // Wholesale first: every list to wildcards, every ignored field to its default.
    for (at, wildcard, set) in &set_items_of {
        if c.full() {
            return c.out;
        }
        if set.len() >= 2 {
            let mut edited = parsed.clone();
            let indices: Vec<usize> = set.iter().map(|&(i, _)| i).collect();
            set_items(&mut edited, *at, &indices, *wildcard);
            c.push(
                &edited,
                format!(
                    "{} all {} non-wildcard items to wildcard",
                    format.path_of(at.0, at.1, at.2),
                    set.len()
                ),
            );
        }
    }
    if unchecked.len() >= 2 {
        let mut edited = parsed.clone();
        for &((r, e, f), default) in &unchecked {
            if c.full() {
                return c.out;
            }
            set_int(&mut edited, r, e, f, default);
        }
        c.push(
            &edited,
            format!("{} unchecked fields to their defaults", unchecked.len()),
        );
    }
    // Then one at a time.
    for (at, wildcard, set) in &set_items_of {
        if c.full() {
            return c.out;
        }
        for &(i, value) in set {
            if c.full() {
                return c.out;
            }
            let mut edited = parsed.clone();
            set_items(&mut edited, *at, &[i], *wildcard);
            c.push(
                &edited,
                format!(
                    "{}[{i}] {} -> wildcard",
                    format.path_of(at.0, at.1, at.2),
                    show(value, Some(*wildcard))
                ),
            );
        }
    }
    for &((r, e, f), default) in &unchecked {
        if c.full() {
            return c.out;
        }
        let mut edited = parsed.clone();
        set_int(&mut edited, r, e, f, default);
        c.push(
            &edited,
            format!("{} to its default {default}", format.path_of(r, e, f)),
        );
    }
    c.out
}

/// Candidates gathered up to the budget; loops ask `full` before building an edit,
/// so nothing is cloned or serialized once it is spent.
struct Collector<'a> {
    format: &'a ContentFormat,
    out: Vec<Mutation>,
}

impl Collector<'_> {
    fn full(&self) -> bool {
        self.out.len() >= MAX_STRUCTURED
    }

    fn push(&mut self, edited: &Parsed, description: String) {
        if !self.full() {
            self.out.push(Mutation {
                bytes: self.format.serialize(edited),
                description,
            });
        }
    }
}

/// The (record, element) pairs whose `ref` fields resolve to element `e` of array
/// `r`. A reference to a key that another element of `r` also holds still resolves
/// after `e` is gone, so it does not count.
fn referrers(format: &ContentFormat, parsed: &Parsed, r: usize, e: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (rr, spec) in format.records().iter().enumerate() {
        for (f, fs) in spec.fields.iter().enumerate() {
            let Some(target) = fs.reference.filter(|t| t.record == r) else {
                continue;
            };
            let Some(key) = parsed.int(r, e, target.field) else {
                continue;
            };
            let shared = (0..elements(parsed, r).len())
                .any(|o| o != e && parsed.int(r, o, target.field) == Some(key));
            if shared {
                continue;
            }
            for re in 0..elements(parsed, rr).len() {
                if parsed.int(rr, re, f) == Some(key) {
                    out.push((rr, re));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// "a, b, c" for a few names, "a, b, c and 697 more" for many.
fn name_some(names: impl ExactSizeIterator<Item = String>) -> String {
    const NAMED: usize = 3;
    let total = names.len();
    let shown: Vec<String> = names.take(NAMED).collect();
    match total.saturating_sub(NAMED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// `parsed` without the listed elements of the listed records.
fn without(parsed: &Parsed, drops: &[(usize, Vec<usize>)]) -> Parsed {
    let mut edited = parsed.clone();
    for (r, es) in drops {
        if let Some(record) = edited.records.get_mut(*r) {
            let mut i = 0;
            record.elements.retain(|_| {
                let keep = !es.contains(&i);
                i += 1;
                keep
            });
        }
    }
    edited
}

fn truncate_list(parsed: &mut Parsed, (r, e, f): At, len: u64) {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if list_len(parsed, r, e, f) <= len {
        return;
    }
    if let Some(Value::Ints(items)) = items_mut(parsed, (r, e, f)) {
        items.truncate(len);
    }
}

fn set_items(parsed: &mut Parsed, at: At, indices: &[usize], value: u64) {
    if let Some(Value::Ints(items)) = items_mut(parsed, at) {
        for &i in indices {
            if let Some(item) = items.get_mut(i) {
                *item = value;
            }
        }
    }
}

fn items_mut(parsed: &mut Parsed, (r, e, f): At) -> Option<&mut Value> {
    parsed
        .records
        .get_mut(r)?
        .elements
        .get_mut(e)?
        .fields
        .get_mut(f)
        .map(|x| &mut x.value)
}

/// Byte-level cuts: the input without one chunk, chunks from half the input down
/// to 1/CUT_GRANULARITY of it (at least one byte).
fn byte_cuts(input: &[u8]) -> Vec<Mutation> {
    let mut out = Vec::new();
    let floor = (input.len() / CUT_GRANULARITY).max(1);
    let mut chunk = (input.len() / 2).max(1);
    while chunk >= floor && chunk > 0 {
        let mut at = 0;
        while at < input.len() {
            let end = (at + chunk).min(input.len());
            let mut bytes = input[..at].to_vec();
            bytes.extend_from_slice(&input[end..]);
            out.push(Mutation {
                bytes,
                description: format!("cut bytes {at:#x}..{end:#x}"),
            });
            at = end;
        }
        chunk /= 2;
    }
    out
}

#[cfg(test)]
mod tests {
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
            .any(|m| m.description.ends_with("-> wildcard")
                || m.description.starts_with("keep only")));
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
}
