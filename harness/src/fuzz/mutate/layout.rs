//! Reading and editing a parsed input's layout (elements, length fields and the
//! lists they size), and wording such edits: shared by the mutator and the minimizer.

use std::collections::BTreeMap;

use crate::fuzz::format::{ContentFormat, Element, LengthFrom, Parsed, Value};

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

pub(super) fn show_values(values: &[u64], wildcard: Option<u64>) -> String {
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
