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
pub(crate) fn candidates(format: &ContentFormat, input: &[u8]) -> Vec<Mutation> {
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
pub(crate) fn is_smaller(a: &[u8], b: &[u8]) -> bool {
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
    c.drop_trailing(parsed);
    for r in arrays(format) {
        if c.full() {
            return c.out;
        }
        c.drop_elements(parsed, r);
    }
    c.shorten_lists(parsed);
    let lists = set_list_items(format, parsed);
    let unchecked = unchecked_fields(format, parsed);
    c.reset_all_at_once(parsed, &lists, &unchecked);
    c.reset_one_at_a_time(parsed, &lists, &unchecked);
    c.out
}

/// A list field with the items that are not the wildcard: (list, wildcard, the
/// (index, value) of each such item).
type SetItems = (At, u64, Vec<(usize, u64)>);

/// List items that are not wildcards, per list.
fn set_list_items(format: &ContentFormat, parsed: &Parsed) -> Vec<SetItems> {
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
    set_items_of
}

/// Fields the consumer ignores that are not at their defaults, with the default.
fn unchecked_fields(format: &ContentFormat, parsed: &Parsed) -> Vec<(At, u64)> {
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
    unchecked
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

    /// Trailing junk beyond what the format allows.
    fn drop_trailing(&mut self, parsed: &Parsed) {
        let allowed = self.format.trailer().unwrap_or(0);
        if parsed.trailing.len() > allowed {
            let mut edited = parsed.clone();
            edited.trailing.truncate(allowed);
            self.push(
                &edited,
                format!("drop {} trailing bytes", parsed.trailing.len() - allowed),
            );
        }
    }

    /// Whole elements of array `r`: all unreferenced ones, each half of them, each
    /// alone, each with the elements that reference it, and (for few) all but one.
    fn drop_elements(&mut self, parsed: &Parsed, r: usize) {
        let format = self.format;
        let n = elements(parsed, r).len();
        let array = format.records()[r].array.as_deref().unwrap_or("elements");
        let droppable: Vec<usize> = (0..n)
            .filter(|&e| referrers(format, parsed, r, e).is_empty())
            .collect();
        if droppable.len() >= 2 {
            self.drop_unreferenced(parsed, r, array, &droppable);
        }
        for e in 0..n {
            if self.full() {
                return;
            }
            self.drop_element(parsed, r, e);
        }
        if droppable.len() >= 3 && droppable.len() <= KEEP_ONLY_MAX {
            for &keep in &droppable {
                if self.full() {
                    return;
                }
                let others: Vec<usize> = droppable.iter().copied().filter(|&e| e != keep).collect();
                self.push(
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

    /// All the unreferenced elements of array `r`, then each half of them.
    fn drop_unreferenced(&mut self, parsed: &Parsed, r: usize, array: &str, droppable: &[usize]) {
        let (first, second) = droppable.split_at(droppable.len() / 2);
        self.push(
            &without(parsed, &[(r, droppable.to_vec())]),
            format!("drop all {} unreferenced {array}", droppable.len()),
        );
        for half in [first, second] {
            if half.len() >= 2 {
                self.push(
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

    /// Element `e` of array `r`, with the elements that reference it.
    fn drop_element(&mut self, parsed: &Parsed, r: usize, e: usize) {
        let format = self.format;
        let refs = referrers(format, parsed, r, e);
        if refs.is_empty() {
            self.push(
                &without(parsed, &[(r, vec![e])]),
                format!("drop {}", format.element_path(r, e)),
            );
            return;
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
        self.push(
            &without(parsed, &drops),
            format!(
                "drop {} with {} (which reference it)",
                format.element_path(r, e),
                name_some(refs.iter().map(|&(rr, re)| format.element_path(rr, re)))
            ),
        );
    }

    /// Shorter lists: a length field lowered, its dependents cut to match.
    fn shorten_lists(&mut self, parsed: &Parsed) {
        let format = self.format;
        for ((r, e, f), deps) in length_sources(format, parsed) {
            if self.full() {
                return;
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
                if self.full() {
                    return;
                }
                let mut edited = parsed.clone();
                set_int(&mut edited, r, e, f, new);
                for &dep in &deps {
                    truncate_list(&mut edited, dep, new);
                }
                self.push(
                    &edited,
                    format!(
                        "{} {old} -> {new} ({})",
                        format.path_of(r, e, f),
                        describe_resize(format, &deps, old, new, &[])
                    ),
                );
            }
        }
    }

    /// Wholesale first: every list to wildcards, every ignored field to its default.
    fn reset_all_at_once(&mut self, parsed: &Parsed, lists: &[SetItems], unchecked: &[(At, u64)]) {
        let format = self.format;
        for (at, wildcard, set) in lists {
            if self.full() {
                return;
            }
            if set.len() >= 2 {
                let mut edited = parsed.clone();
                let indices: Vec<usize> = set.iter().map(|&(i, _)| i).collect();
                set_items(&mut edited, *at, &indices, *wildcard);
                self.push(
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
            for &((r, e, f), default) in unchecked {
                if self.full() {
                    return;
                }
                set_int(&mut edited, r, e, f, default);
            }
            self.push(
                &edited,
                format!("{} unchecked fields to their defaults", unchecked.len()),
            );
        }
    }

    /// Then one list item, one ignored field at a time.
    fn reset_one_at_a_time(
        &mut self,
        parsed: &Parsed,
        lists: &[SetItems],
        unchecked: &[(At, u64)],
    ) {
        let format = self.format;
        for (at, wildcard, set) in lists {
            if self.full() {
                return;
            }
            for &(i, value) in set {
                if self.full() {
                    return;
                }
                let mut edited = parsed.clone();
                set_items(&mut edited, *at, &[i], *wildcard);
                self.push(
                    &edited,
                    format!(
                        "{}[{i}] {} -> wildcard",
                        format.path_of(at.0, at.1, at.2),
                        show(value, Some(*wildcard))
                    ),
                );
            }
        }
        for &((r, e, f), default) in unchecked {
            if self.full() {
                return;
            }
            let mut edited = parsed.clone();
            set_int(&mut edited, r, e, f, default);
            self.push(
                &edited,
                format!("{} to its default {default}", format.path_of(r, e, f)),
            );
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
mod tests;
