//! Raw edits of single fields, without fix-ups: a boundary value in place, a cut at
//! a field boundary, a stretched size. The rest stays intact, so each probes one
//! validator check at a time.

use super::layout::{elements, show};
use super::Mutator;
use crate::fuzz::format::{patch_int, read_int, ContentFormat, FieldSpec, Parsed, Value};

impl Mutator {
    /// A boundary value written into one integer (or list item) in place, nothing
    /// else changed: a count or length that no longer adds up is the point.
    pub(super) fn boundary(
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

    /// Cuts the input at the start of a field (or list item); half the time the
    /// size fields are set to the new size, so the cut reaches the later checks.
    pub(super) fn truncate(
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
    pub(super) fn stretch(
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

/// Boundary integers for a field: the type's edges, the classic signed/unsigned
/// edges, and the limits the format names (max, fixed_max, the input count) ± 1.
pub(super) fn boundaries(format: &ContentFormat, spec: &FieldSpec) -> Vec<u64> {
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
