//! A content file laid out against its format ([`Parsed`]), and written back.

use std::collections::BTreeMap;
use std::ops::Range;

use super::{ContentFormat, Endian, Expected, LengthFrom};

/// Why a content file could not be laid out against its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("truncated: {what} needs {need} bytes at offset {offset}, the input has {size}")]
    Truncated {
        what: String,
        offset: usize,
        need: u64,
        size: usize,
    },
    #[error("{what} = {value} names no element of {array} (no {array}[].{key} has that value), so its size is unknown")]
    UnknownRef {
        what: String,
        value: u64,
        array: String,
        key: String,
    },
}

/// A content file laid out against its format. `records` has one entry per
/// [`ContentFormat::records`] entry, in the same order, and each element one field per
/// [`RecordSpec::fields`] entry. Byte ranges are those of the parsed input; after an
/// edit they are stale (serialize and parse again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub records: Vec<ParsedRecord>,
    /// Bytes after the last record.
    pub trailing: Vec<u8>,
    /// Relations the input breaks (a consumer would reject it); empty for a valid file.
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRecord {
    pub range: Range<usize>,
    /// One for a plain record, the elements for an array.
    pub elements: Vec<Element>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub range: Range<usize>,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub range: Range<usize>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Int(u64),
    Bytes(Vec<u8>),
    /// The items of a list field.
    Ints(Vec<u64>),
}

impl Value {
    pub(crate) fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl Parsed {
    /// The integer value of a plain field, if the indices exist.
    pub fn int(&self, record: usize, element: usize, field: usize) -> Option<u64> {
        self.records
            .get(record)?
            .elements
            .get(element)?
            .fields
            .get(field)?
            .value
            .as_int()
    }

    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

impl ContentFormat {
    /// Lays `bytes` out against the format. Fails only when a field cannot be
    /// located (the input ends early, or a length comes through a reference to no
    /// element); broken relations are listed in [`Parsed::violations`].
    pub fn parse(&self, bytes: &[u8]) -> Result<Parsed, ParseError> {
        let size = bytes.len();
        let mut off = 0usize;
        let mut records: Vec<ParsedRecord> = Vec::with_capacity(self.records.len());
        for (ri, spec) in self.records.iter().enumerate() {
            let start = off;
            let count = match spec.count {
                // Count holders come earlier in the layout (checked at load).
                Some(c) => records
                    .get(c.record)
                    .and_then(|r| r.elements.first())
                    .and_then(|e| e.fields.get(c.field))
                    .and_then(|f| f.value.as_int())
                    .unwrap_or(0),
                None => 1,
            };
            // Every element takes at least one byte (checked at load), so a count
            // larger than the input is cut short by the truncation check, and the
            // capacity is bounded by the input, not by the count.
            let capacity = usize::try_from(count).unwrap_or(usize::MAX);
            let mut elements = Vec::with_capacity(capacity.min(size - off + 1));
            for ei in 0..capacity {
                let element_start = off;
                let mut fields: Vec<Field> = Vec::with_capacity(spec.fields.len());
                for (fi, f) in spec.fields.iter().enumerate() {
                    let width = f.ty.width();
                    let items = match f.list {
                        None => 1,
                        Some(lf) => self.list_len(lf, &records, &fields, ri, ei)?,
                    };
                    let need = items.saturating_mul(width as u64);
                    let truncated = || ParseError::Truncated {
                        what: self.path_of(ri, ei, fi),
                        offset: off,
                        need,
                        size,
                    };
                    let len = usize::try_from(need).map_err(|_| truncated())?;
                    if size - off < len {
                        return Err(truncated());
                    }
                    let range = off..off + len;
                    let raw = &bytes[range.clone()];
                    let value = match f.list {
                        Some(_) => Value::Ints(
                            raw.chunks(width)
                                .map(|c| read_int(c, self.endian))
                                .collect(),
                        ),
                        None if f.is_int() => Value::Int(read_int(raw, self.endian)),
                        None => Value::Bytes(raw.to_vec()),
                    };
                    fields.push(Field { value, range });
                    off += len;
                }
                elements.push(Element {
                    range: element_start..off,
                    fields,
                });
            }
            records.push(ParsedRecord {
                range: start..off,
                elements,
            });
        }
        let trailing = bytes[off..].to_vec();
        let violations = self.violations(size, &records, &trailing);
        Ok(Parsed {
            records,
            trailing,
            violations,
        })
    }

    /// The item count of a list field of element `ei` of record `ri`, from the fields
    /// parsed so far.
    fn list_len(
        &self,
        lf: LengthFrom,
        records: &[ParsedRecord],
        fields: &[Field],
        ri: usize,
        ei: usize,
    ) -> Result<u64, ParseError> {
        match lf {
            LengthFrom::Field { field } => Ok(fields
                .get(field)
                .and_then(|f| f.value.as_int())
                .unwrap_or(0)),
            LengthFrom::Lookup {
                record,
                key,
                local,
                length,
            } => {
                let want = fields.get(local).and_then(|f| f.value.as_int());
                let found = records.get(record).and_then(|r| {
                    r.elements
                        .iter()
                        .find(|e| e.fields.get(key).and_then(|f| f.value.as_int()) == want)
                });
                match found.and_then(|e| e.fields.get(length)?.value.as_int()) {
                    Some(n) => Ok(n),
                    None => {
                        let target = &self.records[record];
                        Err(ParseError::UnknownRef {
                            what: self.path_of(ri, ei, local),
                            value: want.unwrap_or(0),
                            array: target.array.clone().unwrap_or_default(),
                            key: target.fields[key].name.clone(),
                        })
                    }
                }
            }
        }
    }

    /// The relations a laid-out input breaks, in file order.
    fn violations(&self, size: usize, records: &[ParsedRecord], trailing: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        if size > self.max_file_size {
            out.push(format!(
                "the file has {size} bytes, more than max_file_size {}",
                self.max_file_size
            ));
        }
        for (ri, (spec, record)) in self.records.iter().zip(records).enumerate() {
            let mut seen: BTreeMap<usize, BTreeMap<&Value, usize>> = BTreeMap::new();
            for (ei, element) in record.elements.iter().enumerate() {
                for (fi, (f, field)) in spec.fields.iter().zip(&element.fields).enumerate() {
                    let path = || self.path_of(ri, ei, fi);
                    let int = field.value.as_int();
                    match (&f.value, &field.value) {
                        (Some(Expected::Int(want)), Value::Int(got)) if want != got => {
                            out.push(format!("{} is {got}, the format requires {want}", path()))
                        }
                        (Some(Expected::Bytes(want)), Value::Bytes(got)) if want != got => out
                            .push(format!(
                                "{} is {}, the format requires {}",
                                path(),
                                show_bytes(got),
                                show_bytes(want)
                            )),
                        _ => {}
                    }
                    if let (true, Some(v)) = (f.equals_file_size, int) {
                        if v != size as u64 {
                            out.push(format!("{} is {v}, the file has {size} bytes", path()));
                        }
                    }
                    if let (Some(max), Some(v)) = (f.max, int) {
                        if v > max {
                            out.push(format!("{} is {v}, more than the maximum {max}", path()));
                        }
                    }
                    if let (Some(r), Some(v)) = (f.reference, int) {
                        let hit = records.get(r.record).is_some_and(|t| {
                            t.elements.iter().any(|e| {
                                e.fields.get(r.field).and_then(|x| x.value.as_int()) == Some(v)
                            })
                        });
                        if !hit {
                            out.push(format!(
                                "{} = {v} names no {}[].{}",
                                path(),
                                self.records[r.record].array.as_deref().unwrap_or_default(),
                                self.records[r.record].fields[r.field].name
                            ));
                        }
                    }
                    if f.unique {
                        if let Some(first) = seen.entry(fi).or_default().insert(&field.value, ei) {
                            out.push(format!(
                                "{} repeats the value of {}",
                                path(),
                                self.path_of(ri, first, fi)
                            ));
                        }
                    }
                }
            }
        }
        if let Some(allowed) = self.trailer {
            if trailing.len() != allowed {
                let last = self.records.last().map_or("record", |r| r.name.as_str());
                out.push(format!(
                    "{} bytes after the last {last}, the format allows {allowed}",
                    trailing.len()
                ));
            }
        }
        out
    }

    /// Writes `parsed` back out. Counts (`count_of`) are recomputed from the arrays and
    /// `equals = "file_size"` fields from the output's size, so a structural edit (an
    /// element added or dropped) stays consistent; every other value is written as it
    /// is, so a deliberate inconsistency survives. List lengths are not derived: an
    /// edit that changes a length field must resize the lists that depend on it.
    /// For every valid input `x`, `serialize(parse(x)) == x`.
    pub(crate) fn serialize(&self, parsed: &Parsed) -> Vec<u8> {
        let mut out = Vec::new();
        let mut size_fields = Vec::new();
        for (spec, record) in self.records.iter().zip(&parsed.records) {
            for element in &record.elements {
                for (fi, f) in spec.fields.iter().enumerate() {
                    let width = f.ty.width();
                    let value = element.fields.get(fi).map(|x| &x.value);
                    if f.equals_file_size {
                        size_fields.push((out.len(), width));
                        out.resize(out.len() + width, 0);
                        continue;
                    }
                    if let Some(target) = f.count_of {
                        let n = parsed.records.get(target).map_or(0, |r| r.elements.len());
                        write_int(&mut out, n as u64, width, self.endian);
                        continue;
                    }
                    match value {
                        Some(Value::Int(v)) => write_int(&mut out, *v, width, self.endian),
                        Some(Value::Ints(items)) if f.list.is_some() => {
                            for v in items {
                                write_int(&mut out, *v, width, self.endian);
                            }
                        }
                        Some(Value::Bytes(b)) => {
                            let mut b = b.clone();
                            b.resize(width, 0);
                            out.extend_from_slice(&b);
                        }
                        // A hand-built Parsed that does not match the format: keep
                        // the layout by writing zeros rather than failing.
                        _ if f.list.is_some() => {}
                        _ => out.resize(out.len() + width, 0),
                    }
                }
            }
        }
        out.extend_from_slice(&parsed.trailing);
        let total = out.len() as u64;
        for (offset, width) in size_fields {
            let mut field = Vec::with_capacity(width);
            write_int(&mut field, total, width, self.endian);
            out[offset..offset + width].copy_from_slice(&field);
        }
        out
    }
}

/// Reads an unsigned integer of `bytes.len()` (at most 8) bytes.
pub fn read_int(bytes: &[u8], endian: Endian) -> u64 {
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    match endian {
        Endian::Little => bytes.iter().rev().fold(0, fold),
        Endian::Big => bytes.iter().fold(0, fold),
    }
}

/// Appends `value` as a `width`-byte integer; higher bytes are dropped, as a C
/// assignment to a narrower type would.
pub fn write_int(out: &mut Vec<u8>, value: u64, width: usize, endian: Endian) {
    let le = value.to_le_bytes();
    let bytes = (0..width).map(|i| le.get(i).copied().unwrap_or(0));
    match endian {
        Endian::Little => out.extend(bytes),
        Endian::Big => {
            let mut v: Vec<u8> = bytes.collect();
            v.reverse();
            out.extend(v);
        }
    }
}

/// Overwrites the integer at `range` of `bytes` (used for raw edits without fix-ups).
pub fn patch_int(bytes: &mut [u8], range: Range<usize>, value: u64, endian: Endian) {
    let mut field = Vec::with_capacity(range.len());
    write_int(&mut field, value, range.len(), endian);
    if let Some(slot) = bytes.get_mut(range) {
        slot.copy_from_slice(&field);
    }
}

fn show_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
