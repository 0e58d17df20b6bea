//! From the TOML model ([`super::schema`]) to the resolved one: records put in
//! layout order, names turned into indices, every relation checked, each mistake
//! located in the description. One field's resolution is in [`super::field`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use toml::Spanned;

use super::schema::{RawRecord, RawSeed};
use super::{FieldRef, FieldSpec, FormatError, InputValues, RecordSpec, Seed};

/// `"0x1000 + i"`, `"0x1000 + 4 * i"`, `"i"`, `"7"`: a linear function of i.
pub(super) fn parse_input_values(text: &str) -> Option<InputValues> {
    let mut base = 0u64;
    let mut step = None;
    for term in text.split('+') {
        let term = term.trim();
        let factors: Vec<&str> = term.split('*').map(str::trim).collect();
        match factors.as_slice() {
            ["i"] => step = Some(1).filter(|_| step.is_none())?.into(),
            [n, "i"] | ["i", n] if step.is_none() => step = Some(parse_int(n)?),
            [n] => base = base.checked_add(parse_int(n)?)?,
            _ => return None,
        }
    }
    Some(InputValues {
        base,
        step: step.unwrap_or(0),
    })
}

fn parse_int(text: &str) -> Option<u64> {
    let text = text.replace('_', "");
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Builds a located [`FormatError`] from a byte offset of the description and a
/// message.
pub(super) type At<'a> = &'a dyn Fn(usize, String) -> FormatError;

/// Orders the records into one chain (the `at = 0` record, then each record `after`
/// the previous one) and resolves every relation to indices.
pub(super) fn resolve_records(
    raw: Vec<Spanned<RawRecord>>,
    at: At,
) -> Result<Vec<RecordSpec>, FormatError> {
    let Some(first_span) = raw.first().map(|r| r.span().start) else {
        return Err(at(
            0,
            "the format has no records: add a [[record]] with `at = 0` and its fields".into(),
        ));
    };
    check_distinct_names(&raw, at)?;
    let order = layout_order(&raw, first_span, at)?;
    let raw: Vec<RawRecord> = {
        let mut slots: Vec<Option<Spanned<RawRecord>>> = raw.into_iter().map(Some).collect();
        order
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .map(Spanned::into_inner)
            .collect()
    };
    let layout = Layout { raw: &raw, at };
    let mut records: Vec<RecordSpec> = Vec::with_capacity(raw.len());
    for ri in 0..raw.len() {
        records.push(layout.record(ri)?);
    }
    layout.assign_counts(&mut records)?;
    Ok(records)
}

/// Record and array names share one namespace: `after`, `count_of`, `ref` and
/// `length_from` name either.
fn check_distinct_names(raw: &[Spanned<RawRecord>], at: At) -> Result<(), FormatError> {
    let mut names = BTreeSet::new();
    for record in raw {
        let r = record.get_ref();
        for name in [Some(&r.name), r.array.as_ref()].into_iter().flatten() {
            if !names.insert(name.get_ref().clone()) {
                return Err(at(
                    name.span().start,
                    format!(
                        "the name {:?} is used twice: record and array names must be distinct",
                        name.get_ref()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The indices of `raw` in layout order.
fn layout_order(
    raw: &[Spanned<RawRecord>],
    first_span: usize,
    at: At,
) -> Result<Vec<usize>, FormatError> {
    let mut order: Vec<usize> = Vec::with_capacity(raw.len());
    order.push(start_record(raw, first_span, at)?);
    check_placements(raw, at)?;
    while order.len() < raw.len() {
        let Some(&last) = order.last() else { break };
        order.push(next_record(raw, &order, last, at)?);
    }
    Ok(order)
}

/// The one record with `at`.
fn start_record(
    raw: &[Spanned<RawRecord>],
    first_span: usize,
    at: At,
) -> Result<usize, FormatError> {
    let starts: Vec<usize> = raw
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get_ref().at.is_some())
        .map(|(i, _)| i)
        .collect();
    match starts.as_slice() {
        [only] => Ok(*only),
        [] => Err(at(
            first_span,
            "no record has `at = 0`: the first record of the layout must say where it starts"
                .into(),
        )),
        [_, second, ..] => Err(at(
            raw[*second].span().start,
            "only one record may have `at`; the others say which record they come `after`".into(),
        )),
    }
}

/// Every record says where it is: `at = 0` (and then is no array and follows
/// nothing), or `after`.
fn check_placements(raw: &[Spanned<RawRecord>], at: At) -> Result<(), FormatError> {
    for (i, record) in raw.iter().enumerate() {
        let r = record.get_ref();
        if let Some(offset) = &r.at {
            if *offset.get_ref() != 0 {
                return Err(at(
                    offset.span().start,
                    format!(
                        "`at = {}` is not supported: the layout must start at offset 0",
                        offset.get_ref()
                    ),
                ));
            }
            if let Some(after) = &r.after {
                return Err(at(
                    after.span().start,
                    "a record takes `at` or `after`, not both".into(),
                ));
            }
            if let Some(array) = &r.array {
                return Err(at(
                    array.span().start,
                    "the record at offset 0 cannot be an array: nothing before it could hold its count".into(),
                ));
            }
        } else if r.after.is_none() {
            return Err(at(
                raw[i].span().start,
                format!("record {:?} needs `after = \"NAME\"` (the record or array it follows) or `at = 0`", r.name.get_ref()),
            ));
        }
    }
    Ok(())
}

/// The one record not yet in `order` that comes `after` the record `last`.
fn next_record(
    raw: &[Spanned<RawRecord>],
    order: &[usize],
    last: usize,
    at: At,
) -> Result<usize, FormatError> {
    let last = raw[last].get_ref();
    let follows = |r: &RawRecord| {
        r.after.as_ref().is_some_and(|a| {
            a.get_ref() == last.name.get_ref()
                || last
                    .array
                    .as_ref()
                    .is_some_and(|x| x.get_ref() == a.get_ref())
        })
    };
    let next: Vec<usize> = (0..raw.len())
        .filter(|i| !order.contains(i) && follows(raw[*i].get_ref()))
        .collect();
    match next.as_slice() {
        [one] => Ok(*one),
        [] => {
            let stray = (0..raw.len()).find(|i| !order.contains(i)).unwrap_or(0);
            let r = raw[stray].get_ref();
            let (offset, after) = r
                .after
                .as_ref()
                .map_or((raw[stray].span().start, String::new()), |a| {
                    (a.span().start, a.get_ref().clone())
                });
            Err(at(
                offset,
                format!("record {:?} comes after {after:?}, which is not the end of the layout so far ({}): records must form one chain from `at = 0`", r.name.get_ref(), order.iter().map(|&i| raw[i].get_ref().name.get_ref().as_str()).collect::<Vec<_>>().join(" -> ")),
            ))
        }
        [_, second, ..] => {
            let r = raw[*second].get_ref();
            Err(at(
                r.after.as_ref().map_or(0, |a| a.span().start),
                format!(
                    "two records come after {:?}: the layout must be one chain",
                    last.name.get_ref()
                ),
            ))
        }
    }
}

/// The raw records in layout order, for resolving names to indices.
pub(super) struct Layout<'a> {
    pub(super) raw: &'a [RawRecord],
    pub(super) at: At<'a>,
}

impl Layout<'_> {
    pub(super) fn array_index(&self, name: &str) -> Option<usize> {
        self.raw
            .iter()
            .position(|r| r.array.as_ref().is_some_and(|a| a.get_ref() == name))
    }

    /// Record `ri` with its fields resolved; its count is set by
    /// [`Layout::assign_counts`] once every record is known.
    fn record(&self, ri: usize) -> Result<RecordSpec, FormatError> {
        let at = self.at;
        let record = &self.raw[ri];
        let fields_raw = record.fields.get_ref();
        if fields_raw.is_empty() {
            return Err(at(
                record.fields.span().start,
                format!("record {:?} has no fields", record.name.get_ref()),
            ));
        }
        let mut fields = Vec::with_capacity(fields_raw.len());
        let mut seen = BTreeSet::new();
        for (fi, field) in fields_raw.iter().enumerate() {
            let name = &field.get_ref().name;
            if !seen.insert(name.get_ref().clone()) {
                return Err(at(
                    name.span().start,
                    format!(
                        "field {:?} appears twice in record {:?}",
                        name.get_ref(),
                        record.name.get_ref()
                    ),
                ));
            }
            fields.push(self.field(ri, fi, field)?);
        }
        self.check_record_sizes(record, &fields)?;
        Ok(RecordSpec {
            name: record.name.get_ref().clone(),
            array: record.array.as_ref().map(|a| a.get_ref().clone()),
            count: None,
            fields,
        })
    }

    /// `variable_size` agrees with the fields, and an array element has a fixed part.
    fn check_record_sizes(
        &self,
        record: &RawRecord,
        fields: &[FieldSpec],
    ) -> Result<(), FormatError> {
        let at = self.at;
        let has_list = fields.iter().any(|f| f.list.is_some());
        let variable = record.variable_size.as_ref().is_some_and(|v| *v.get_ref());
        if has_list != variable {
            let offset = record
                .variable_size
                .as_ref()
                .map_or(record.name.span().start, |v| v.span().start);
            return Err(at(
                offset,
                format!(
                    "record {:?}: `variable_size = true` goes with a `length_from` field, and only with one ({})",
                    record.name.get_ref(),
                    if has_list { "it has one: add variable_size = true" } else { "it has none" }
                ),
            ));
        }
        // A count read from the file bounds the work only if every element takes at
        // least one byte.
        if record.array.is_some() && fields.iter().all(|f| f.list.is_some()) {
            return Err(at(
                record.fields.span().start,
                format!(
                    "array record {:?} needs at least one fixed-size field",
                    record.name.get_ref()
                ),
            ));
        }
        Ok(())
    }

    /// Every array needs exactly one count field.
    fn assign_counts(&self, records: &mut [RecordSpec]) -> Result<(), FormatError> {
        let at = self.at;
        let raw = self.raw;
        for ri in 0..records.len() {
            let counts: Vec<FieldRef> = records
                .iter()
                .enumerate()
                .flat_map(|(r, rec)| {
                    rec.fields
                        .iter()
                        .enumerate()
                        .filter(move |(_, f)| f.count_of == Some(ri))
                        .map(move |(field, _)| FieldRef { record: r, field })
                })
                .collect();
            let Some(array) = raw[ri].array.as_ref() else {
                continue;
            };
            match counts.as_slice() {
                [one] => records[ri].count = Some(*one),
                [] => {
                    return Err(at(
                        array.span().start,
                        format!("array {:?} has no count: add count_of = {:?} to an integer field of an earlier record", array.get_ref(), array.get_ref()),
                    ))
                }
                [_, second, ..] => {
                    let f = &raw[second.record].fields.get_ref()[second.field];
                    return Err(at(f.span().start, format!("array {:?} has two count fields", array.get_ref())));
                }
            }
        }
        Ok(())
    }
}

/// `[trailer] bytes_after_last_NAME = N`, NAME being the last record of the layout.
pub(super) fn resolve_trailer(
    table: Spanned<BTreeMap<Spanned<String>, Spanned<u64>>>,
    records: &[RecordSpec],
    at: &dyn Fn(usize, String) -> FormatError,
) -> Result<usize, FormatError> {
    let last = records.last().map_or("", |r| r.name.as_str());
    let expected = format!("bytes_after_last_{last}");
    let span = table.span().start;
    let mut allowed = None;
    for (key, value) in table.into_inner() {
        if key.get_ref() != &expected {
            return Err(at(
                key.span().start,
                format!("unknown key `{}` in [trailer]: the one key is `{expected}` (bytes allowed after the last record, {last:?})", key.get_ref()),
            ));
        }
        allowed = Some(
            usize::try_from(*value.get_ref())
                .map_err(|_| at(value.span().start, "trailer size too large".into()))?,
        );
    }
    allowed.ok_or_else(|| at(span, format!("[trailer] is empty: add `{expected} = 0`")))
}

/// The `[[seed]]` files, resolved against `dir` (the description's folder).
pub(super) fn resolve_seeds(
    raw: Vec<Spanned<RawSeed>>,
    dir: &Path,
    at: At,
) -> Result<Vec<Seed>, FormatError> {
    let mut seeds = Vec::new();
    for seed in raw {
        let seed = seed.into_inner();
        if seed.file.get_ref().as_os_str().is_empty() {
            return Err(at(seed.file.span().start, "seed `file` is empty".into()));
        }
        seeds.push(Seed {
            path: dir.join(seed.file.get_ref()),
            expect: seed.expect,
        });
    }
    Ok(seeds)
}
