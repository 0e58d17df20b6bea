//! Resizing lengths with their dependents, and retargeting references: edits of the
//! parsed view that stay well-formed, so they reach the interpreter behind the
//! validator (the July 2024 file was one "length + 1 with its dependents grown" away
//! from a good one).

use super::layout::{
    describe_resize, elements, fits, length_sources, list_len, lookup, set_int, show_values, At,
};
use super::raw::boundaries;
use super::{Mutator, Rng};
use crate::fuzz::format::{ContentFormat, FieldSpec, LengthFrom, Parsed, Value};

impl Mutator {
    /// A length field ± 1 (or to a boundary), its dependent lists grown or shrunk to
    /// match, so the file stays well-formed.
    pub(super) fn resize(
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
    pub(super) fn retarget(
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

    /// Resizes every dependent list to `len`, appending chosen values; returns the
    /// appended values in order.
    pub(super) fn resize_lists(
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

    pub(super) fn resize_list(
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
