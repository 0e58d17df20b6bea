//! Array edits: an element duplicated, dropped or swapped with another, counts
//! fixed up on serializing.

use super::layout::{arrays, elements};
use super::Mutator;
use crate::fuzz::format::{ContentFormat, Parsed};

impl Mutator {
    pub(super) fn duplicate(
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

    pub(super) fn drop_element(
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

    pub(super) fn swap(
        &mut self,
        format: &ContentFormat,
        parsed: &Parsed,
    ) -> Option<(Vec<u8>, String)> {
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
