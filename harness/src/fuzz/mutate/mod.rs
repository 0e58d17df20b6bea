//! Mutations of content files, structure-aware when the input parses.
//!
//! Structure-aware mutations edit the parsed view and serialize it with counts and
//! sizes fixed up, so they reach the interpreter behind the validator: the bug class
//! of July 2024 (a well-formed file whose template declares more fields than the
//! consumer has) is one "length field + 1 with its dependents grown" away from a good
//! file. Raw edits of single fields (boundary values, a stretched size, a cut at a
//! field boundary) keep the rest intact so they probe one validator check at a time.
//! Blind byte mutations cover what the description does not say.

use std::collections::BTreeMap;

use super::format::{
    patch_int, read_int, ContentFormat, Element, FieldSpec, LengthFrom, Parsed, Value,
};

/// One mutated input and what was done to it, for logs and crash reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub bytes: Vec<u8>,
    pub description: String,
}

/// A small deterministic PRNG (SplitMix64): a fuzz run must replay from its seed, and
/// the quality needed here does not warrant a dependency.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the modulo bias is negligible for the
    /// small `n` used here.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den.max(1) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    fn weighted<T: Copy>(&mut self, table: &[(u32, T)]) -> Option<T> {
        let total: u64 = table.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut roll = self.next_u64() % total.max(1);
        for &(weight, kind) in table {
            if roll < u64::from(weight) {
                return Some(kind);
            }
            roll -= u64::from(weight);
        }
        table.last().map(|&(_, kind)| kind)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Resize,
    Retarget,
    Boundary,
    Duplicate,
    Drop,
    Swap,
    Truncate,
    Stretch,
    BitFlip,
    SetBytes,
    Insert,
    Delete,
    Splice,
}

/// Weights of the structure-aware kinds: resizing a length with its dependents is
/// the one that reaches past the validator, so it leads.
const STRUCTURED: [(u32, Kind); 8] = [
    (30, Kind::Resize),
    (10, Kind::Retarget),
    (20, Kind::Boundary),
    (8, Kind::Duplicate),
    (8, Kind::Drop),
    (5, Kind::Swap),
    (5, Kind::Truncate),
    (5, Kind::Stretch),
];

const BLIND: [(u32, Kind); 5] = [
    (6, Kind::BitFlip),
    (6, Kind::SetBytes),
    (3, Kind::Insert),
    (3, Kind::Delete),
    (2, Kind::Splice),
];

/// Tries per mutation step before giving up on a step; kinds that do not apply to
/// an input (no array to swap, no room to grow) return nothing and another is drawn.
const ATTEMPTS: usize = 16;

/// Bytes blind mutations like to write.
const INTERESTING_BYTES: [u8; 6] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];

/// Mutates content inputs; deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: Rng,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: Rng::new(seed),
        }
    }

    /// The PRNG, for callers that make their own random choices (which corpus entry
    /// to mutate next) and want the whole run to replay from one seed.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// One or two mutations of `input` (blind ones when it does not parse). The
    /// result differs from `input` and is at most `format.max_file_size()` bytes.
    pub fn mutate(&mut self, format: &ContentFormat, input: &[u8]) -> Mutation {
        let max = format.max_file_size();
        let mut bytes = input.to_vec();
        let mut notes = Vec::new();
        if bytes.len() > max {
            bytes.truncate(max);
            notes.push(format!("cut to max_file_size {max}"));
        }
        let steps = if self.rng.chance(1, 4) { 2 } else { 1 };
        for _ in 0..steps {
            for _ in 0..ATTEMPTS {
                let Some((next, note)) = self.step(format, &bytes) else {
                    continue;
                };
                if next != bytes && next.len() <= max {
                    bytes = next;
                    notes.push(note);
                    break;
                }
            }
        }
        if bytes == input {
            // Every kind declined (an empty input, a tiny limit): still hand back a
            // different input, so a fuzz loop never retries the same bytes.
            match bytes.len() {
                0 => {
                    bytes.push(self.rng.next_u64() as u8);
                    notes.push("insert 1 byte at 0x0".into());
                }
                len => {
                    let (at, bit) = (self.rng.below(len), self.rng.below(8));
                    bytes[at] ^= 1 << bit;
                    notes.push(format!("flip bit {at:#x}.{bit}"));
                }
            }
            bytes.truncate(max);
        }
        Mutation {
            bytes,
            description: notes.join("; "),
        }
    }

    fn step(&mut self, format: &ContentFormat, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        // A fifth of the steps on parsing inputs stay blind: the description may be
        // wrong or incomplete, and the validator's handling of garbage matters too.
        let parsed = format.parse(bytes).ok();
        let kind = match &parsed {
            Some(_) if !self.rng.chance(1, 5) => self.rng.weighted(&STRUCTURED)?,
            _ => self.rng.weighted(&BLIND)?,
        };
        let max = format.max_file_size();
        match (kind, &parsed) {
            (Kind::Resize, Some(p)) => self.resize(format, p, bytes.len()),
            (Kind::Retarget, Some(p)) => self.retarget(format, p, bytes.len()),
            (Kind::Boundary, Some(p)) => self.boundary(format, p, bytes),
            (Kind::Duplicate, Some(p)) => self.duplicate(format, p, bytes.len()),
            (Kind::Drop, Some(p)) => self.drop_element(format, p),
            (Kind::Swap, Some(p)) => self.swap(format, p),
            (Kind::Truncate, Some(p)) => self.truncate(format, p, bytes),
            (Kind::Stretch, Some(p)) => self.stretch(format, p, bytes),
            (Kind::BitFlip, _) => self.bit_flip(bytes),
            (Kind::SetBytes, _) => self.set_bytes(bytes),
            (Kind::Insert, _) => self.insert(bytes, max),
            (Kind::Delete, _) => self.delete(bytes),
            (Kind::Splice, _) => self.splice(bytes, max),
            _ => None,
        }
    }

    // ---- structure-aware ---------------------------------------------------------

    /// A length field ± 1 (or to a boundary), its dependent lists grown or shrunk to
    /// match, so the file stays well-formed.
    fn resize(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
        size: usize,
    ) -> Option<(Vec<u8>, String)> {
        let sources = length_sources(format, parsed);
        let (&(record, element, field), deps) = {
            let keys: Vec<_> = sources.keys().collect();
            let key = *self.rng.pick(&keys)?;
            (key, sources.get(key)?)
        };
        let spec = format.records().get(record)?.fields.get(field)?;
        let type_max = spec.ty.max_int()?;
        let old = parsed.int(record, element, field)?;
        let new = if self.rng.chance(7, 10) {
            if old == 0 || (old < type_max && self.rng.chance(1, 2)) {
                old + 1
            } else {
                old - 1
            }
        } else {
            let options: Vec<u64> = [
                Some(0),
                Some(1),
                spec.fixed_max,
                spec.fixed_max.map(|m| m.saturating_add(1)),
                spec.max,
                format.inputs(),
                format.inputs().map(|n| n.saturating_add(1)),
                Some(old.saturating_mul(2)),
            ]
            .into_iter()
            .flatten()
            .filter(|&v| v != old && v <= type_max)
            .collect();
            *self.rng.pick(&options)?
        };
        if !fits(format, size, deps, old, new) {
            return None;
        }
        let mut edited = parsed.clone();
        set_int(&mut edited, record, element, field, new);
        let appended = self.resize_lists(format, &mut edited, deps, new);
        let note = format!(
            "{} {old} -> {new} ({})",
            format.path_of(record, element, field),
            describe_resize(format, deps, old, new, &appended)
        );
        Some((format.serialize(&edited), note))
    }

    /// Points a reference at another element; lists whose length comes through that
    /// reference are resized to the new target's length.
    fn retarget(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
        size: usize,
    ) -> Option<(Vec<u8>, String)> {
        let mut slots = Vec::new();
        for (r, spec) in format.records().iter().enumerate() {
            for (f, fs) in spec.fields.iter().enumerate() {
                if let Some(target) = fs.reference {
                    slots.extend((0..elements(parsed, r).len()).map(|e| (r, e, f, target)));
                }
            }
        }
        let &(r, e, f, target) = self.rng.pick(&slots)?;
        let old = parsed.int(r, e, f)?;
        let mut keys: Vec<u64> = elements(parsed, target.record)
            .iter()
            .filter_map(|x| x.fields.get(target.field)?.value.as_int())
            .filter(|&k| k != old)
            .collect();
        keys.dedup();
        let new = *self.rng.pick(&keys)?;
        let mut edited = parsed.clone();
        set_int(&mut edited, r, e, f, new);
        let mut notes = Vec::new();
        let mut growth: i128 = 0;
        for (lf, ls) in format.records().get(r)?.fields.iter().enumerate() {
            let Some(LengthFrom::Lookup {
                record,
                key,
                local,
                length,
            }) = ls.list
            else {
                continue;
            };
            if local != f {
                continue;
            }
            let Some(len) = lookup(parsed, record, key, new, length) else {
                continue;
            };
            let current = list_len(parsed, r, e, lf);
            growth += (i128::from(len) - current as i128) * ls.ty.width() as i128;
            if size as i128 + growth > format.max_file_size() as i128 {
                return None;
            }
            let appended = self.resize_list(format, &mut edited, (r, e, lf), len);
            let values = show_values(&appended, ls.wildcard);
            notes.push(format!(
                "{} {current} -> {len}{}",
                ls.name,
                if values.is_empty() {
                    String::new()
                } else {
                    format!(": +{values}")
                }
            ));
        }
        let note = format!(
            "{} {old} -> {new}{}",
            format.path_of(r, e, f),
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            }
        );
        Some((format.serialize(&edited), note))
    }

    /// A boundary value written into one integer (or list item) in place, nothing
    /// else changed: a count or length that no longer adds up is the point.
    fn boundary(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
        bytes: &[u8],
    ) -> Option<(Vec<u8>, String)> {
        let slots = int_slots(format, parsed);
        let &(r, e, f) = self.rng.pick(&slots)?;
        let spec = format.records().get(r)?.fields.get(f)?;
        let field = elements(parsed, r).get(e)?.fields.get(f)?;
        let width = spec.ty.width();
        let (range, path, mut options) = match &field.value {
            Value::Ints(items) => {
                let i = self.rng.below(items.len());
                let start = field.range.start + i * width;
                let mut options = boundaries(format, spec);
                options.extend(spec.wildcard);
                options.extend(format.input_value(i as u64));
                (
                    start..start + width,
                    format!("{}[{i}]", format.path_of(r, e, f)),
                    options,
                )
            }
            _ => (
                field.range.clone(),
                format.path_of(r, e, f),
                boundaries(format, spec),
            ),
        };
        let old = read_int(bytes.get(range.clone())?, format.endian());
        options.retain(|&v| v != old && spec.ty.max_int().is_some_and(|m| v <= m));
        let new = *self.rng.pick(&options)?;
        let mut out = bytes.to_vec();
        patch_int(&mut out, range, new, format.endian());
        Some((
            out,
            format!(
                "{path} {} -> {} (raw, no fix-ups)",
                show(old, spec.wildcard),
                show(new, spec.wildcard)
            ),
        ))
    }

    fn duplicate(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
        size: usize,
    ) -> Option<(Vec<u8>, String)> {
        let arrays: Vec<usize> = arrays(format)
            .filter(|&r| {
                let n = elements(parsed, r).len() as u64;
                n > 0 && count_max(format, r).is_some_and(|m| n < m)
            })
            .collect();
        let &r = self.rng.pick(&arrays)?;
        let items = elements(parsed, r);
        let e = self.rng.below(items.len());
        let element = items.get(e)?.clone();
        if size + element.range.len() > format.max_file_size() {
            return None;
        }
        let at = if self.rng.chance(1, 2) {
            e + 1
        } else {
            self.rng.below(items.len() + 1)
        };
        let mut edited = parsed.clone();
        edited.records.get_mut(r)?.elements.insert(at, element);
        let note = format!(
            "duplicate {} as {}",
            format.element_path(r, e),
            format.element_path(r, at)
        );
        Some((format.serialize(&edited), note))
    }

    fn drop_element(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
    ) -> Option<(Vec<u8>, String)> {
        let arrays: Vec<usize> = arrays(format)
            .filter(|&r| !elements(parsed, r).is_empty())
            .collect();
        let &r = self.rng.pick(&arrays)?;
        let e = self.rng.below(elements(parsed, r).len());
        let mut edited = parsed.clone();
        edited.records.get_mut(r)?.elements.remove(e);
        Some((
            format.serialize(&edited),
            format!("drop {}", format.element_path(r, e)),
        ))
    }

    fn swap(&mut self, format: &ContentFormat, parsed: &Parsed) -> Option<(Vec<u8>, String)> {
        let arrays: Vec<usize> = arrays(format)
            .filter(|&r| elements(parsed, r).len() >= 2)
            .collect();
        let &r = self.rng.pick(&arrays)?;
        let n = elements(parsed, r).len();
        let i = self.rng.below(n);
        let j = (i + 1 + self.rng.below(n - 1)) % n;
        let mut edited = parsed.clone();
        edited.records.get_mut(r)?.elements.swap(i, j);
        Some((
            format.serialize(&edited),
            format!(
                "swap {} and {}",
                format.element_path(r, i),
                format.element_path(r, j)
            ),
        ))
    }

    /// Cuts the input at the start of a field (or list item); half the time the
    /// size fields are set to the new size, so the cut reaches the later checks.
    fn truncate(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
        bytes: &[u8],
    ) -> Option<(Vec<u8>, String)> {
        let mut cuts = Vec::new();
        for (r, spec) in format.records().iter().enumerate() {
            for (e, element) in elements(parsed, r).iter().enumerate() {
                for (f, field) in element.fields.iter().enumerate() {
                    let width = spec.fields.get(f)?.ty.width();
                    match &field.value {
                        Value::Ints(items) => cuts.extend((0..items.len()).map(|i| {
                            (
                                field.range.start + i * width,
                                format!("{}[{i}]", format.path_of(r, e, f)),
                            )
                        })),
                        _ => cuts.push((field.range.start, format.path_of(r, e, f))),
                    }
                }
            }
        }
        let end = bytes.len() - parsed.trailing.len();
        cuts.push((end, "the trailing bytes".into()));
        cuts.retain(|(at, _)| *at > 0 && *at < bytes.len());
        let (at, path) = self.rng.pick(&cuts)?.clone();
        let mut out = bytes[..at].to_vec();
        let fix = self.rng.chance(1, 2);
        let mut fixed = Vec::new();
        if fix {
            for (r, e, f, range) in size_fields(format, parsed) {
                if range.end <= at {
                    patch_int(&mut out, range, at as u64, format.endian());
                    fixed.push(format.path_of(r, e, f));
                }
            }
        }
        let sizes = if fixed.is_empty() {
            String::new()
        } else {
            format!(", {} set to {at}", fixed.join(", "))
        };
        Some((out, format!("truncate to {at} bytes at {path}{sizes}")))
    }

    /// A size field (`equals = "file_size"`) made to disagree with the data.
    fn stretch(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
        bytes: &[u8],
    ) -> Option<(Vec<u8>, String)> {
        let fields = size_fields(format, parsed);
        let (r, e, f, range) = self.rng.pick(&fields)?.clone();
        let spec = format.records().get(r)?.fields.get(f)?;
        let type_max = spec.ty.max_int()?;
        let size = bytes.len() as u64;
        let old = read_int(bytes.get(range.clone())?, format.endian());
        let options: Vec<u64> = [
            size.checked_sub(1),
            Some(size + 1),
            size.checked_sub(4),
            Some(size + 4),
            Some(size + 1 + self.rng.below(64) as u64),
            Some(size.saturating_mul(2)),
            Some(0),
            Some(type_max),
        ]
        .into_iter()
        .flatten()
        .filter(|&v| v != old && v <= type_max)
        .collect();
        let new = *self.rng.pick(&options)?;
        let mut out = bytes.to_vec();
        patch_int(&mut out, range, new, format.endian());
        Some((
            out,
            format!(
                "{} {old} -> {new} (file has {size} bytes)",
                format.path_of(r, e, f)
            ),
        ))
    }

    /// Resizes every dependent list to `len`, appending chosen values; returns the
    /// appended values in order.
    fn resize_lists(
        &mut self,
        format: &ContentFormat,
        parsed: &mut Parsed,
        deps: &[At],
        len: u64,
    ) -> Vec<u64> {
        let mut appended = Vec::new();
        for &dep in deps {
            appended.extend(self.resize_list(format, parsed, dep, len));
        }
        appended
    }

    fn resize_list(
        &mut self,
        format: &ContentFormat,
        parsed: &mut Parsed,
        (r, e, f): At,
        len: u64,
    ) -> Vec<u64> {
        let Some(spec) = format.records().get(r).and_then(|s| s.fields.get(f)) else {
            return Vec::new();
        };
        let Some(Value::Ints(items)) = parsed
            .records
            .get_mut(r)
            .and_then(|x| x.elements.get_mut(e))
            .and_then(|x| x.fields.get_mut(f))
            .map(|x| &mut x.value)
        else {
            return Vec::new();
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut appended = Vec::new();
        if items.len() > len {
            items.truncate(len);
        }
        while items.len() < len {
            let value = fill_value(&mut self.rng, format, spec, items.len() as u64);
            items.push(value);
            appended.push(value);
        }
        appended
    }

    // ---- blind -------------------------------------------------------------------

    fn bit_flip(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        if bytes.is_empty() {
            return None;
        }
        let mut out = bytes.to_vec();
        let flips: Vec<String> = (0..1 + self.rng.below(4))
            .map(|_| {
                let (at, bit) = (self.rng.below(out.len()), self.rng.below(8));
                out[at] ^= 1 << bit;
                format!("{at:#x}.{bit}")
            })
            .collect();
        Some((out, format!("flip bits {}", flips.join(", "))))
    }

    fn set_bytes(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        if bytes.is_empty() {
            return None;
        }
        let mut out = bytes.to_vec();
        let sets: Vec<String> = (0..1 + self.rng.below(4))
            .map(|_| {
                let at = self.rng.below(out.len());
                let value = self.byte();
                out[at] = value;
                format!("{at:#x}={value:#04x}")
            })
            .collect();
        Some((out, format!("set bytes {}", sets.join(", "))))
    }

    fn insert(&mut self, bytes: &[u8], max: usize) -> Option<(Vec<u8>, String)> {
        let room = max.checked_sub(bytes.len()).filter(|&r| r > 0)?;
        let n = 1 + self.rng.below(room.min(16));
        let at = self.rng.below(bytes.len() + 1);
        let fill: Vec<u8> = if self.rng.chance(1, 2) {
            vec![self.byte(); n]
        } else {
            (0..n).map(|_| self.rng.next_u64() as u8).collect()
        };
        let mut out = bytes.to_vec();
        out.splice(at..at, fill);
        Some((out, format!("insert {n} bytes at {at:#x}")))
    }

    fn delete(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        if bytes.is_empty() {
            return None;
        }
        let n = 1 + self.rng.below(bytes.len().min(16));
        let at = self.rng.below(bytes.len() - n + 1);
        let mut out = bytes.to_vec();
        out.drain(at..at + n);
        Some((out, format!("delete {n} bytes at {at:#x}")))
    }

    /// Copies a chunk of the input over, or into, another place of it.
    fn splice(&mut self, bytes: &[u8], max: usize) -> Option<(Vec<u8>, String)> {
        if bytes.len() < 2 {
            return None;
        }
        let n = 1 + self.rng.below(bytes.len().min(64));
        let from = self.rng.below(bytes.len() - n + 1);
        let chunk = bytes[from..from + n].to_vec();
        let mut out = bytes.to_vec();
        if self.rng.chance(1, 2) || bytes.len() + n > max {
            let to = self.rng.below(bytes.len() - n + 1);
            out[to..to + n].copy_from_slice(&chunk);
            Some((out, format!("splice {n} bytes from {from:#x} over {to:#x}")))
        } else {
            let to = self.rng.below(bytes.len() + 1);
            out.splice(to..to, chunk);
            Some((out, format!("splice {n} bytes from {from:#x} into {to:#x}")))
        }
    }

    fn byte(&mut self) -> u8 {
        if self.rng.chance(1, 2) {
            INTERESTING_BYTES[self.rng.below(INTERESTING_BYTES.len())]
        } else {
            self.rng.next_u64() as u8
        }
    }
}

// ---- helpers shared with the minimizer --------------------------------------------

/// A field of one element: (record, element, field) indices.
pub(crate) type At = (usize, usize, usize);

/// The elements of record `r` (empty if `parsed` does not have it).
pub(crate) fn elements(parsed: &Parsed, r: usize) -> &[Element] {
    parsed.records.get(r).map_or(&[], |x| x.elements.as_slice())
}

/// The array records of the format.
pub(crate) fn arrays(format: &ContentFormat) -> impl Iterator<Item = usize> + '_ {
    format
        .records()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.array.is_some())
        .map(|(i, _)| i)
}

/// Length fields and the lists whose length they give: (record, element, field) of
/// the length → the (record, element, field) lists that follow it. A lookup through
/// a key that several elements share resolves to the first (as the parser does), so
/// the later ones have no dependents.
pub(crate) fn length_sources(format: &ContentFormat, parsed: &Parsed) -> BTreeMap<At, Vec<At>> {
    let mut map: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (lr, spec) in format.records().iter().enumerate() {
        for (lf, f) in spec.fields.iter().enumerate() {
            match f.list {
                None => {}
                Some(LengthFrom::Field { field }) => {
                    for e in 0..elements(parsed, lr).len() {
                        map.entry((lr, e, field)).or_default().push((lr, e, lf));
                    }
                }
                Some(LengthFrom::Lookup {
                    record,
                    key,
                    local,
                    length,
                }) => {
                    let targets = elements(parsed, record);
                    for ea in 0..targets.len() {
                        let k = parsed.int(record, ea, key);
                        let first = targets
                            .iter()
                            .position(|x| x.fields.get(key).and_then(|v| v.value.as_int()) == k);
                        let entry = map.entry((record, ea, length)).or_default();
                        if first == Some(ea) {
                            for e in 0..elements(parsed, lr).len() {
                                if parsed.int(lr, e, local) == k {
                                    entry.push((lr, e, lf));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    map
}

/// The `length` field of the first element of `record` whose `key` is `value`.
pub(crate) fn lookup(
    parsed: &Parsed,
    record: usize,
    key: usize,
    value: u64,
    length: usize,
) -> Option<u64> {
    let e = elements(parsed, record)
        .iter()
        .position(|x| x.fields.get(key).and_then(|v| v.value.as_int()) == Some(value))?;
    parsed.int(record, e, length)
}

pub(crate) fn list_len(parsed: &Parsed, r: usize, e: usize, f: usize) -> usize {
    match elements(parsed, r)
        .get(e)
        .and_then(|x| x.fields.get(f))
        .map(|x| &x.value)
    {
        Some(Value::Ints(items)) => items.len(),
        _ => 0,
    }
}

pub(crate) fn set_int(parsed: &mut Parsed, r: usize, e: usize, f: usize, value: u64) {
    if let Some(field) = parsed
        .records
        .get_mut(r)
        .and_then(|x| x.elements.get_mut(e))
        .and_then(|x| x.fields.get_mut(f))
    {
        field.value = Value::Int(value);
    }
}

/// Whether resizing `deps` from `old` to `new` items keeps the file within limits
/// (checked before anything is allocated: a u32 length can ask for 16 GiB).
pub(crate) fn fits(format: &ContentFormat, size: usize, deps: &[At], old: u64, new: u64) -> bool {
    let growth: i128 = deps
        .iter()
        .map(|&(r, _, f)| {
            let width = format
                .records()
                .get(r)
                .and_then(|s| s.fields.get(f))
                .map_or(0, |s| s.ty.width());
            (i128::from(new) - i128::from(old)) * width as i128
        })
        .sum();
    size as i128 + growth <= format.max_file_size() as i128
}

/// "+1 criteria in each of 2 instances: 0x1014, wildcard", "-1 criteria in instances[3]".
pub(crate) fn describe_resize(
    format: &ContentFormat,
    deps: &[At],
    old: u64,
    new: u64,
    appended: &[u64],
) -> String {
    let Some(&(r, _, f)) = deps.first() else {
        return "nothing depends on it".into();
    };
    let spec = format.records().get(r);
    let list = spec
        .and_then(|s| s.fields.get(f))
        .map_or("items", |s| s.name.as_str());
    let wildcard = spec.and_then(|s| s.fields.get(f)).and_then(|s| s.wildcard);
    let owner = spec.and_then(|s| s.array.as_deref()).unwrap_or("elements");
    let delta = if new >= old {
        format!("+{}", new - old)
    } else {
        format!("-{}", old - new)
    };
    let values = show_values(appended, wildcard);
    let whom = match deps {
        [(r, e, _)] => format.element_path(*r, *e),
        _ => format!("each of {} {owner}", deps.len()),
    };
    format!(
        "{delta} {list} in {whom}{}",
        if values.is_empty() {
            String::new()
        } else {
            format!(": {values}")
        }
    )
}

fn show_values(values: &[u64], wildcard: Option<u64>) -> String {
    const SHOWN: usize = 6;
    let mut out: Vec<String> = values
        .iter()
        .take(SHOWN)
        .map(|&v| show(v, wildcard))
        .collect();
    if values.len() > SHOWN {
        out.push(format!("... ({} more)", values.len() - SHOWN));
    }
    out.join(", ")
}

/// A value for messages: small ones in decimal, others in hex, the wildcard by name.
pub(crate) fn show(value: u64, wildcard: Option<u64>) -> String {
    if Some(value) == wildcard {
        "wildcard".into()
    } else if value < 256 {
        value.to_string()
    } else {
        format!("{value:#x}")
    }
}

/// Every integer field (plain, or a list with items) of the parsed input.
fn int_slots(format: &ContentFormat, parsed: &Parsed) -> Vec<(usize, usize, usize)> {
    let mut slots = Vec::new();
    for (r, spec) in format.records().iter().enumerate() {
        for (e, element) in elements(parsed, r).iter().enumerate() {
            for (f, field) in element.fields.iter().enumerate() {
                let int = spec.fields.get(f).is_some_and(FieldSpec::is_int);
                let has_items = !matches!(&field.value, Value::Ints(v) if v.is_empty());
                if int && has_items {
                    slots.push((r, e, f));
                }
            }
        }
    }
    slots
}

/// The `equals = "file_size"` fields with their byte ranges.
fn size_fields(
    format: &ContentFormat,
    parsed: &Parsed,
) -> Vec<(usize, usize, usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for (r, spec) in format.records().iter().enumerate() {
        for (f, fs) in spec.fields.iter().enumerate() {
            if !fs.equals_file_size {
                continue;
            }
            for (e, element) in elements(parsed, r).iter().enumerate() {
                if let Some(field) = element.fields.get(f) {
                    out.push((r, e, f, field.range.clone()));
                }
            }
        }
    }
    out
}

/// The largest element count the array's count field can hold.
fn count_max(format: &ContentFormat, r: usize) -> Option<u64> {
    let count = format.records().get(r)?.count?;
    format
        .records()
        .get(count.record)?
        .fields
        .get(count.field)?
        .ty
        .max_int()
}

/// Boundary integers for a field: the type's edges, the classic signed/unsigned
/// edges, and the limits the format names (max, fixed_max, the input count) ± 1.
fn boundaries(format: &ContentFormat, spec: &FieldSpec) -> Vec<u64> {
    let type_max = spec.ty.max_int().unwrap_or(0);
    let mut values = vec![
        0,
        1,
        type_max.saturating_sub(1),
        type_max,
        0x7f,
        0x80,
        0xff,
        0x7fff,
        0x8000,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
    ];
    for limit in [spec.max, spec.fixed_max, format.inputs()]
        .into_iter()
        .flatten()
    {
        values.extend([limit.saturating_sub(1), limit, limit.saturating_add(1)]);
    }
    values.retain(|&v| v <= type_max);
    values.sort_unstable();
    values.dedup();
    values
}

/// A value for a list item appended at `index`: the wildcard, the consumer's input
/// at that index (a criterion that "should" match, as a content author would
/// write), a boundary, or noise.
fn fill_value(rng: &mut Rng, format: &ContentFormat, spec: &FieldSpec, index: u64) -> u64 {
    let type_max = spec.ty.max_int().unwrap_or(u64::from(u8::MAX));
    let roll = rng.below(100);
    if roll < 35 {
        if let Some(w) = spec.wildcard {
            return w;
        }
    }
    if roll < 70 {
        if let Some(v) = format.input_value(index) {
            return v & type_max;
        }
    }
    if roll < 90 {
        if let Some(&v) = rng.pick(&boundaries(format, spec)) {
            return v;
        }
    }
    rng.next_u64() & type_max
}

#[cfg(test)]
mod tests {
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
}
