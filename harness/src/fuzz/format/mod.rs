//! Content format descriptions (`format.toml`) and a layout parser driven by them.
//!
//! A description lists records laid out one after another: a plain record (a header)
//! at offset 0, then records that follow it, some repeated as arrays whose element
//! count is a field of an earlier record. A field may be a list of integers whose
//! length is another field's value, possibly looked up in an earlier array through a
//! key (`length_from = "templates[id == template_id].field_count"`). Relations that a
//! consumer checks (`value`, `equals`, `max`, `unique`, `ref`, the trailer) do not
//! change where anything is, so [`ContentFormat::parse`] only fails when it cannot
//! locate the fields, and reports broken relations as [`Parsed::violations`]: a fuzzer
//! wants a structured view of a file whose magic was flipped, too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::util::{line_col, snippet};

/// Largest format description read: they are a few KiB, and the bound stops a wrong
/// path (a device, a disk image) from being read into memory whole.
pub const MAX_FORMAT_BYTES: u64 = 1 << 20;

/// An error in a format description, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read content format {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "content format {path} is larger than {limit} bytes: is it really a format description?"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

/// A field's storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    U8,
    U16,
    U32,
    U64,
    Bytes(usize),
}

impl FieldType {
    pub fn width(self) -> usize {
        match self {
            FieldType::U8 => 1,
            FieldType::U16 => 2,
            FieldType::U32 => 4,
            FieldType::U64 => 8,
            FieldType::Bytes(n) => n,
        }
    }

    /// The largest value of an integer type; `None` for bytes.
    pub fn max_int(self) -> Option<u64> {
        match self {
            FieldType::Bytes(_) => None,
            FieldType::U64 => Some(u64::MAX),
            other => Some((1u64 << (8 * other.width())) - 1),
        }
    }

    fn parse(text: &str) -> Option<FieldType> {
        match text.trim() {
            "u8" => Some(FieldType::U8),
            "u16" => Some(FieldType::U16),
            "u32" => Some(FieldType::U32),
            "u64" => Some(FieldType::U64),
            other => {
                let n = other.strip_prefix("bytes(")?.strip_suffix(')')?;
                n.trim()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(FieldType::Bytes)
            }
        }
    }
}

/// The value a field must hold (`value = ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Int(u64),
    Bytes(Vec<u8>),
}

/// Where a list field's length comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthFrom {
    /// An integer field earlier in the same element.
    Field { field: usize },
    /// `ARRAY[KEY == LOCAL].LENGTH`: the LENGTH field of the first element of an
    /// earlier array (record index `record`) whose KEY equals this element's LOCAL.
    Lookup {
        record: usize,
        key: usize,
        local: usize,
        length: usize,
    },
}

/// A field of a record, by indices into [`ContentFormat::records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef {
    pub record: usize,
    pub field: usize,
}

/// One field of a record, with its relations resolved to indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    /// The type of the field, or of each item of a list field.
    pub ty: FieldType,
    /// `Some` for a list of `ty` items (`length_from`).
    pub list: Option<LengthFrom>,
    pub value: Option<Expected>,
    /// `equals = "file_size"`.
    pub equals_file_size: bool,
    /// `count_of`: the record index of the array this field counts.
    pub count_of: Option<usize>,
    pub max: Option<u64>,
    /// A limit only the fixed consumer enforces (the check that was missing).
    pub fixed_max: Option<u64>,
    pub unique: bool,
    /// `ref`: the field must equal this field of some element.
    pub reference: Option<FieldRef>,
    pub default: Option<u64>,
    /// `checked = false`: the consumer ignores the value.
    pub checked: bool,
    /// `special.wildcard`: the item value that matches anything.
    pub wildcard: Option<u64>,
}

impl FieldSpec {
    pub fn is_int(&self) -> bool {
        self.ty.max_int().is_some()
    }
}

/// A record: a plain one (exactly one element) or an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    pub name: String,
    pub array: Option<String>,
    /// For an array, the field holding its element count.
    pub count: Option<FieldRef>,
    pub fields: Vec<FieldSpec>,
}

/// `input_values = "BASE + STEP * i"`: the values a consumer supplies, for writing
/// criteria that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputValues {
    pub base: u64,
    pub step: u64,
}

/// A `[[seed]]`: a content file next to the description and what each consumer
/// variant is expected to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub path: PathBuf,
    pub expect: BTreeMap<String, String>,
}

/// A loaded, validated format description. Records are kept in layout order.
#[derive(Debug, Clone)]
pub struct ContentFormat {
    path: PathBuf,
    name: String,
    endian: Endian,
    max_file_size: usize,
    inputs: Option<u64>,
    input_values: Option<InputValues>,
    wildcard: Option<u64>,
    bug: Option<String>,
    records: Vec<RecordSpec>,
    trailer: Option<usize>,
    seeds: Vec<Seed>,
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
    pub fn as_int(&self) -> Option<u64> {
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
    /// Reads and validates a format description.
    pub fn load(path: &Path) -> Result<ContentFormat, FormatError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FORMAT_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|source| FormatError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > MAX_FORMAT_BYTES {
            return Err(FormatError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_FORMAT_BYTES,
            });
        }
        match String::from_utf8(bytes) {
            Ok(text) => ContentFormat::parse_str(path, &text),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes());
                Err(located(
                    path,
                    &text,
                    offset,
                    "invalid UTF-8: a format description must be UTF-8 text".into(),
                ))
            }
        }
    }

    /// Validates description text; `path` is used for messages and to resolve seeds.
    pub fn parse_str(path: &Path, text: &str) -> Result<ContentFormat, FormatError> {
        let at = |offset: usize, message: String| located(path, text, offset, message);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().trim();
            let message = if message.starts_with("missing field `format`") {
                "missing [format] table: add `[format]` with name, endian and max_file_size"
                    .to_string()
            } else if message.is_empty() {
                "invalid TOML".to_string()
            } else {
                message.to_string()
            };
            at(offset, message)
        })?;
        let header = raw.format.into_inner();
        let endian = match header.endian.get_ref().as_str() {
            "little" => Endian::Little,
            "big" => Endian::Big,
            other => {
                return Err(at(
                    header.endian.span().start,
                    format!("`endian` {other:?} must be \"little\" or \"big\""),
                ))
            }
        };
        let max_file_size = *header.max_file_size.get_ref();
        let max_file_size = usize::try_from(max_file_size)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                at(
                    header.max_file_size.span().start,
                    format!("`max_file_size` {max_file_size} must be a positive size"),
                )
            })?;
        let input_values = match &header.input_values {
            None => None,
            Some(expr) => Some(parse_input_values(expr.get_ref()).ok_or_else(|| {
                at(
                    expr.span().start,
                    format!("`input_values` {:?} must read \"BASE + i\" or \"BASE + STEP * i\" (integers, 0x for hex)", expr.get_ref()),
                )
            })?),
        };
        let records = resolve_records(raw.record, &at)?;
        let trailer = match raw.trailer {
            None => None,
            Some(table) => Some(resolve_trailer(table, &records, &at)?),
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut seeds = Vec::new();
        for seed in raw.seed {
            let seed = seed.into_inner();
            if seed.file.get_ref().as_os_str().is_empty() {
                return Err(at(seed.file.span().start, "seed `file` is empty".into()));
            }
            seeds.push(Seed {
                path: dir.join(seed.file.get_ref()),
                expect: seed.expect,
            });
        }
        Ok(ContentFormat {
            path: path.to_path_buf(),
            name: header.name,
            endian,
            max_file_size,
            inputs: header.sensor_inputs,
            input_values,
            wildcard: header.wildcard,
            bug: header.bug,
            records,
            trailer,
            seeds,
        })
    }

    /// The file the description came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// Consumers reject larger files; mutations stay within it.
    pub fn max_file_size(&self) -> usize {
        self.max_file_size
    }

    /// How many input values the consumer supplies (`sensor_inputs`).
    pub fn inputs(&self) -> Option<u64> {
        self.inputs
    }

    /// The consumer's input `i`, for writing a criterion that matches it. Also
    /// defined past the supplied inputs: that is the plausible value a content author
    /// writes for a field the consumer does not have.
    pub fn input_value(&self, i: u64) -> Option<u64> {
        self.input_values
            .map(|v| v.base.wrapping_add(v.step.wrapping_mul(i)))
    }

    pub fn wildcard(&self) -> Option<u64> {
        self.wildcard
    }

    /// The description's note on the bug being hunted, if any.
    pub fn bug(&self) -> Option<&str> {
        self.bug.as_deref()
    }

    /// The records, in layout order.
    pub fn records(&self) -> &[RecordSpec] {
        &self.records
    }

    /// How many bytes may follow the last record (`[trailer]`); `None`: any.
    pub fn trailer(&self) -> Option<usize> {
        self.trailer
    }

    /// The seed files, absolute, next to the description.
    pub fn seeds(&self) -> Vec<PathBuf> {
        self.seeds.iter().map(|s| s.path.clone()).collect()
    }

    /// The seeds with their expectations.
    pub fn seed_specs(&self) -> &[Seed] {
        &self.seeds
    }

    /// The index of a record by its record or array name.
    pub fn record_index(&self, name: &str) -> Option<usize> {
        self.records
            .iter()
            .position(|r| r.name == name || r.array.as_deref() == Some(name))
    }

    /// A field's path for messages: `header.magic`, `templates[1].field_count`.
    pub fn path_of(&self, record: usize, element: usize, field: usize) -> String {
        let Some(spec) = self.records.get(record) else {
            return format!("record#{record}");
        };
        let field = spec
            .fields
            .get(field)
            .map_or_else(|| format!("field#{field}"), |f| f.name.clone());
        match &spec.array {
            Some(array) => format!("{array}[{element}].{field}"),
            None => format!("{}.{field}", spec.name),
        }
    }

    /// An element's path for messages: `instances[2]`, `header`.
    pub fn element_path(&self, record: usize, element: usize) -> String {
        match self.records.get(record) {
            Some(RecordSpec {
                array: Some(array), ..
            }) => format!("{array}[{element}]"),
            Some(spec) => spec.name.clone(),
            None => format!("record#{record}"),
        }
    }

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
    pub fn serialize(&self, parsed: &Parsed) -> Vec<u8> {
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

/// A format error at byte `offset` of `text`.
fn located(path: &Path, text: &str, offset: usize, message: String) -> FormatError {
    let (line, column) = line_col(text, offset);
    FormatError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
        snippet: snippet(text, line, column),
    }
}

// ---- raw file schema -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    format: Spanned<RawHeader>,
    #[serde(default)]
    record: Vec<Spanned<RawRecord>>,
    trailer: Option<Spanned<BTreeMap<Spanned<String>, Spanned<u64>>>>,
    #[serde(default)]
    seed: Vec<Spanned<RawSeed>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    endian: Spanned<String>,
    max_file_size: Spanned<u64>,
    sensor_inputs: Option<u64>,
    input_values: Option<Spanned<String>>,
    wildcard: Option<u64>,
    bug: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: Spanned<String>,
    at: Option<Spanned<u64>>,
    array: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
    variable_size: Option<Spanned<bool>>,
    fields: Spanned<Vec<Spanned<RawField>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    value: Option<Spanned<toml::Value>>,
    equals: Option<Spanned<String>>,
    count_of: Option<Spanned<String>>,
    max: Option<Spanned<u64>>,
    fixed_max: Option<Spanned<u64>>,
    #[serde(default)]
    unique: bool,
    #[serde(rename = "ref")]
    reference: Option<Spanned<String>>,
    default: Option<Spanned<u64>>,
    checked: Option<bool>,
    length_from: Option<Spanned<String>>,
    special: Option<RawSpecial>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecial {
    wildcard: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    file: Spanned<PathBuf>,
    #[serde(default)]
    expect: BTreeMap<String, String>,
}

/// `"0x1000 + i"`, `"0x1000 + 4 * i"`, `"i"`, `"7"`: a linear function of i.
fn parse_input_values(text: &str) -> Option<InputValues> {
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

/// Orders the records into one chain (the `at = 0` record, then each record `after`
/// the previous one) and resolves every relation to indices.
fn resolve_records(
    raw: Vec<Spanned<RawRecord>>,
    at: &dyn Fn(usize, String) -> FormatError,
) -> Result<Vec<RecordSpec>, FormatError> {
    let Some(first_span) = raw.first().map(|r| r.span().start) else {
        return Err(at(
            0,
            "the format has no records: add a [[record]] with `at = 0` and its fields".into(),
        ));
    };
    let mut names = BTreeSet::new();
    for record in &raw {
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

    // Layout order.
    let mut order: Vec<usize> = Vec::with_capacity(raw.len());
    let starts: Vec<usize> = raw
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get_ref().at.is_some())
        .map(|(i, _)| i)
        .collect();
    match starts.as_slice() {
        [only] => order.push(*only),
        [] => {
            return Err(at(
                first_span,
                "no record has `at = 0`: the first record of the layout must say where it starts"
                    .into(),
            ))
        }
        [_, second, ..] => {
            return Err(at(
                raw[*second].span().start,
                "only one record may have `at`; the others say which record they come `after`"
                    .into(),
            ))
        }
    }
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
    while order.len() < raw.len() {
        let Some(&last) = order.last() else { break };
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
            [one] => order.push(*one),
            [] => {
                let stray = (0..raw.len()).find(|i| !order.contains(i)).unwrap_or(0);
                let r = raw[stray].get_ref();
                let (offset, after) = r
                    .after
                    .as_ref()
                    .map_or((raw[stray].span().start, String::new()), |a| {
                        (a.span().start, a.get_ref().clone())
                    });
                return Err(at(
                    offset,
                    format!("record {:?} comes after {after:?}, which is not the end of the layout so far ({}): records must form one chain from `at = 0`", r.name.get_ref(), order.iter().map(|&i| raw[i].get_ref().name.get_ref().as_str()).collect::<Vec<_>>().join(" -> ")),
                ));
            }
            [_, second, ..] => {
                let r = raw[*second].get_ref();
                return Err(at(
                    r.after.as_ref().map_or(0, |a| a.span().start),
                    format!(
                        "two records come after {:?}: the layout must be one chain",
                        last.name.get_ref()
                    ),
                ));
            }
        }
    }

    let raw: Vec<RawRecord> = {
        let mut slots: Vec<Option<Spanned<RawRecord>>> = raw.into_iter().map(Some).collect();
        order
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .map(Spanned::into_inner)
            .collect()
    };
    let array_index = |name: &str| {
        raw.iter()
            .position(|r| r.array.as_ref().is_some_and(|a| a.get_ref() == name))
    };
    let field_index = |record: &RawRecord, name: &str| {
        record
            .fields
            .get_ref()
            .iter()
            .position(|f| f.get_ref().name.get_ref() == name)
    };

    let mut records: Vec<RecordSpec> = Vec::with_capacity(raw.len());
    for (ri, record) in raw.iter().enumerate() {
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
            let field_at = field.span().start;
            let field = field.get_ref();
            let fname = field.name.get_ref().clone();
            if !seen.insert(fname.clone()) {
                return Err(at(
                    field.name.span().start,
                    format!(
                        "field {fname:?} appears twice in record {:?}",
                        record.name.get_ref()
                    ),
                ));
            }
            let ty = FieldType::parse(field.ty.get_ref()).ok_or_else(|| {
                at(
                    field.ty.span().start,
                    format!(
                        "field {fname:?}: `type` {:?} is not one of u8, u16, u32, u64, bytes(N)",
                        field.ty.get_ref()
                    ),
                )
            })?;
            let is_int = ty.max_int().is_some();
            let int_only = |what: &str, offset: usize| -> Result<(), FormatError> {
                if is_int {
                    Ok(())
                } else {
                    Err(at(
                        offset,
                        format!(
                            "field {fname:?}: `{what}` needs an integer type, not {:?}",
                            field.ty.get_ref()
                        ),
                    ))
                }
            };
            let fits = |what: &str, value: &Spanned<u64>| -> Result<u64, FormatError> {
                let v = *value.get_ref();
                match ty.max_int() {
                    Some(max) if v <= max => Ok(v),
                    _ => Err(at(
                        value.span().start,
                        format!(
                            "field {fname:?}: `{what}` {v} does not fit its type {:?}",
                            field.ty.get_ref()
                        ),
                    )),
                }
            };

            let value = match &field.value {
                None => None,
                Some(v) => Some(match (ty, v.get_ref()) {
                    (FieldType::Bytes(n), toml::Value::String(s)) if s.len() == n => Expected::Bytes(s.as_bytes().to_vec()),
                    (FieldType::Bytes(n), toml::Value::Array(items)) if items.len() == n => Expected::Bytes(
                        items
                            .iter()
                            .map(|x| x.as_integer().and_then(|x| u8::try_from(x).ok()))
                            .collect::<Option<Vec<u8>>>()
                            .ok_or_else(|| at(v.span().start, format!("field {fname:?}: `value` must list {n} byte values (0..=255)")))?,
                    ),
                    (_, toml::Value::Integer(x)) if is_int => {
                        let x = u64::try_from(*x).ok().filter(|x| ty.max_int().is_some_and(|m| *x <= m));
                        Expected::Int(x.ok_or_else(|| at(v.span().start, format!("field {fname:?}: `value` does not fit its type {:?}", field.ty.get_ref())))?)
                    }
                    _ => {
                        return Err(at(
                            v.span().start,
                            format!("field {fname:?}: `value` must be an integer for an integer type, or a string or list of {} bytes for {:?}", ty.width(), field.ty.get_ref()),
                        ))
                    }
                }),
            };

            let equals_file_size = match &field.equals {
                None => false,
                Some(e) if e.get_ref() == "file_size" => {
                    int_only("equals", e.span().start)?;
                    if record.array.is_some() {
                        return Err(at(e.span().start, format!("field {fname:?}: `equals = \"file_size\"` is supported only in a plain record, not in an array")));
                    }
                    true
                }
                Some(e) => {
                    return Err(at(e.span().start, format!("field {fname:?}: `equals` {:?} is not supported; the only relation is \"file_size\"", e.get_ref())))
                }
            };

            let count_of = match &field.count_of {
                None => None,
                Some(name) => {
                    int_only("count_of", name.span().start)?;
                    let target = array_index(name.get_ref()).ok_or_else(|| {
                        at(name.span().start, format!("field {fname:?}: `count_of` names {:?}, which is no record's `array`", name.get_ref()))
                    })?;
                    if record.array.is_some() || target <= ri {
                        return Err(at(name.span().start, format!("field {fname:?}: a count must be in a plain record laid out before the array {:?} it counts", name.get_ref())));
                    }
                    Some(target)
                }
            };

            let reference = match &field.reference {
                None => None,
                Some(text) => {
                    int_only("ref", text.span().start)?;
                    let bad = || {
                        at(text.span().start, format!("field {fname:?}: `ref` {:?} must name ARRAY.FIELD, an integer field of an array", text.get_ref()))
                    };
                    let (array, target_field) = text.get_ref().split_once('.').ok_or_else(bad)?;
                    let record = array_index(array.trim()).ok_or_else(bad)?;
                    let field = field_index(&raw[record], target_field.trim()).ok_or_else(bad)?;
                    let target = raw[record].fields.get_ref()[field].get_ref();
                    if FieldType::parse(target.ty.get_ref())
                        .and_then(FieldType::max_int)
                        .is_none()
                        || target.length_from.is_some()
                    {
                        return Err(bad());
                    }
                    Some(FieldRef { record, field })
                }
            };

            let list = match &field.length_from {
                None => None,
                Some(text) => {
                    int_only("length_from", text.span().start)?;
                    Some(resolve_length_from(
                        text,
                        &raw,
                        ri,
                        fi,
                        &array_index,
                        &field_index,
                        at,
                    )?)
                }
            };
            if list.is_some()
                && (value.is_some()
                    || equals_file_size
                    || count_of.is_some()
                    || reference.is_some()
                    || field.unique
                    || field.default.is_some())
            {
                return Err(at(field_at, format!("field {fname:?}: a list (`length_from`) takes only `special`; value, equals, count_of, ref, unique and default are for single values")));
            }

            let max = match &field.max {
                None => None,
                Some(m) => {
                    int_only("max", m.span().start)?;
                    Some(*m.get_ref())
                }
            };
            let fixed_max = match &field.fixed_max {
                None => None,
                Some(m) => {
                    int_only("fixed_max", m.span().start)?;
                    Some(*m.get_ref())
                }
            };
            let default = match &field.default {
                None => None,
                Some(d) => {
                    int_only("default", d.span().start)?;
                    Some(fits("default", d)?)
                }
            };
            let wildcard = match field.special.as_ref().and_then(|s| s.wildcard.as_ref()) {
                None => None,
                Some(w) => {
                    int_only("special.wildcard", w.span().start)?;
                    Some(fits("special.wildcard", w)?)
                }
            };
            if field.unique && record.array.is_none() {
                return Err(at(
                    field_at,
                    format!("field {fname:?}: `unique` only means something in an array"),
                ));
            }
            fields.push(FieldSpec {
                name: fname,
                ty,
                list,
                value,
                equals_file_size,
                count_of,
                max,
                fixed_max,
                unique: field.unique,
                reference,
                default,
                checked: field.checked.unwrap_or(true),
                wildcard,
            });
        }

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
        records.push(RecordSpec {
            name: record.name.get_ref().clone(),
            array: record.array.as_ref().map(|a| a.get_ref().clone()),
            count: None,
            fields,
        });
    }

    // Every array needs exactly one count field.
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
    Ok(records)
}

/// `ARRAY[KEY == LOCAL].LENGTH` or `LOCAL`.
fn resolve_length_from(
    text: &Spanned<String>,
    raw: &[RawRecord],
    ri: usize,
    fi: usize,
    array_index: &dyn Fn(&str) -> Option<usize>,
    field_index: &dyn Fn(&RawRecord, &str) -> Option<usize>,
    at: &dyn Fn(usize, String) -> FormatError,
) -> Result<LengthFrom, FormatError> {
    let record = &raw[ri];
    let offset = text.span().start;
    let expr = text.get_ref().trim();
    let is_int_field = |r: &RawRecord, i: usize| {
        r.fields.get_ref().get(i).is_some_and(|f| {
            let f = f.get_ref();
            f.length_from.is_none()
                && FieldType::parse(f.ty.get_ref())
                    .and_then(FieldType::max_int)
                    .is_some()
        })
    };
    let local_field = |name: &str| -> Result<usize, FormatError> {
        match field_index(record, name.trim()) {
            Some(i) if i < fi && is_int_field(record, i) => Ok(i),
            _ => Err(at(
                offset,
                format!("`length_from` {expr:?}: {:?} must be an integer field before this one in record {:?}", name.trim(), record.name.get_ref()),
            )),
        }
    };
    let Some((array, rest)) = expr.split_once('[') else {
        return Ok(LengthFrom::Field {
            field: local_field(expr)?,
        });
    };
    let syntax = || {
        at(
            offset,
            format!("`length_from` {expr:?} must read ARRAY[KEY == FIELD].LENGTH (or name a field of this record)"),
        )
    };
    let (condition, length) = rest.split_once("].").ok_or_else(syntax)?;
    let (key, local) = condition.split_once("==").ok_or_else(syntax)?;
    let target = array_index(array.trim()).ok_or_else(|| {
        at(
            offset,
            format!(
                "`length_from` {expr:?}: {:?} is no record's `array`",
                array.trim()
            ),
        )
    })?;
    if target >= ri {
        return Err(at(
            offset,
            format!(
                "`length_from` {expr:?}: array {:?} must be laid out before record {:?}",
                array.trim(),
                record.name.get_ref()
            ),
        ));
    }
    let target_field = |name: &str| match field_index(&raw[target], name.trim()) {
        Some(i) if is_int_field(&raw[target], i) => Ok(i),
        _ => Err(at(
            offset,
            format!(
                "`length_from` {expr:?}: {:?} is not an integer field of {:?}",
                name.trim(),
                array.trim()
            ),
        )),
    };
    Ok(LengthFrom::Lookup {
        record: target,
        key: target_field(key)?,
        local: local_field(local)?,
        length: target_field(length)?,
    })
}

/// `[trailer] bytes_after_last_NAME = N`, NAME being the last record of the layout.
fn resolve_trailer(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::testing::{demo_format, demo_format_path, seed_bytes};

    #[test]
    fn demo_format_loads_with_its_relations() {
        let f = demo_format();
        assert_eq!(f.name(), "DSC1");
        assert_eq!(f.max_file_size(), 65536);
        assert_eq!(f.input_value(20), Some(0x1014));
        assert_eq!(f.trailer(), Some(0));
        let names: Vec<&str> = f.records().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["header", "template", "instance"]);
        assert_eq!(f.record_index("instances"), Some(2));
        assert_eq!(f.record_index("template"), Some(1));
        assert_eq!(f.path_of(2, 3, 2), "instances[3].criteria");
        let instance = &f.records()[2];
        assert_eq!(
            instance.count,
            Some(FieldRef {
                record: 0,
                field: 3
            })
        );
        assert_eq!(
            instance.fields[2].list,
            Some(LengthFrom::Lookup {
                record: 1,
                key: 0,
                local: 0,
                length: 1
            })
        );
        assert_eq!(instance.fields[2].wildcard, Some(0xFFFF_FFFF));
        assert_eq!(
            instance.fields[0].reference,
            Some(FieldRef {
                record: 1,
                field: 0
            })
        );
        assert!(!instance.fields[1].checked);
        let seeds = f.seeds();
        assert_eq!(seeds.len(), 3);
        for seed in &seeds {
            assert!(seed.is_absolute() && seed.is_file(), "{}", seed.display());
        }
    }

    #[test]
    fn valid_seeds_round_trip_byte_for_byte() {
        let f = demo_format();
        for name in ["good.content", "cf291-21-fields.content"] {
            let bytes = seed_bytes(name);
            let parsed = f.parse(&bytes).unwrap();
            assert!(
                parsed.violations.is_empty(),
                "{name}: {:?}",
                parsed.violations
            );
            assert_eq!(f.serialize(&parsed), bytes, "{name}");
        }
        let good = f.parse(&seed_bytes("good.content")).unwrap();
        assert_eq!(good.records[1].elements.len(), 2);
        assert_eq!(good.records[2].elements.len(), 4);
        assert_eq!(good.records[2].elements[1].fields[2].range, 108..188);
        assert_eq!(
            good.records[2].elements[2].fields[2].value,
            Value::Ints((0..20).map(|i| 0x1000 + i).collect())
        );
    }

    #[test]
    fn truncated_seed_is_a_parse_error_naming_the_field() {
        let f = demo_format();
        let err = f.parse(&seed_bytes("truncated.content")).unwrap_err();
        assert_eq!(
            err,
            ParseError::Truncated {
                what: "instances[1].criteria".into(),
                offset: 108,
                need: 80,
                size: 148
            }
        );
        assert!(
            err.to_string()
                .starts_with("truncated: instances[1].criteria"),
            "{err}"
        );
    }

    #[test]
    fn every_strict_prefix_of_a_valid_file_fails_to_parse() {
        let f = demo_format();
        let good = seed_bytes("good.content");
        for n in 0..good.len() {
            assert!(f.parse(&good[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn structural_edit_serializes_with_counts_and_size_fixed() {
        let f = demo_format();
        let mut parsed = f.parse(&seed_bytes("good.content")).unwrap();
        parsed.records[2].elements.remove(1);
        let bytes = f.serialize(&parsed);
        assert_eq!(bytes.len(), 356 - 84);
        assert_eq!(read_int(&bytes[4..8], Endian::Little), 272);
        assert_eq!(read_int(&bytes[10..12], Endian::Little), 3);
        let again = f.parse(&bytes).unwrap();
        assert!(again.violations.is_empty(), "{:?}", again.violations);
    }

    #[test]
    fn broken_relations_are_violations_not_errors() {
        let f = demo_format();
        let mut bytes = seed_bytes("good.content");
        bytes[3] = b'2';
        // Template ids 1, 1; instances 2 and 3 follow to template 1 so all resolve.
        for at in [16, 188, 272] {
            bytes[at] = 1;
        }
        bytes.push(0);
        let parsed = f.parse(&bytes).unwrap();
        let v = parsed.violations.join("\n");
        assert!(
            v.contains("header.magic is \"DSC2\", the format requires \"DSC1\""),
            "{v}"
        );
        assert!(
            v.contains("header.total_length is 356, the file has 357 bytes"),
            "{v}"
        );
        assert!(
            v.contains("templates[1].id repeats the value of templates[0].id"),
            "{v}"
        );
        assert!(v.contains("1 bytes after the last instance"), "{v}");
        // instances 0 and 1 name template 1, which no longer exists: that is a
        // layout failure, since their size depends on it.
        let mut bytes = seed_bytes("good.content");
        bytes[12] = 9;
        let err = f.parse(&bytes).unwrap_err();
        assert!(
            matches!(&err, ParseError::UnknownRef { what, value: 1, .. } if what == "instances[0].template_id"),
            "{err}"
        );
    }

    #[test]
    fn garbage_never_panics_the_parser() {
        let f = demo_format();
        let mut rng = crate::fuzz::mutate::Rng::new(7);
        let good = seed_bytes("good.content");
        for round in 0..20_000 {
            let len = rng.below(400);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Half the rounds start from a valid header so the parse gets further.
            if round % 2 == 0 && len >= 12 {
                bytes[..12].copy_from_slice(&good[..12]);
                bytes[8] = rng.below(8) as u8;
                bytes[10] = rng.below(8) as u8;
            }
            if let Ok(parsed) = f.parse(&bytes) {
                // Whatever parses re-serializes to something that parses again.
                let out = f.serialize(&parsed);
                assert!(f.parse(&out).is_ok(), "{bytes:02x?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let f = demo_format();
            let _ = f.parse(&bytes);
        }
    }

    fn invalid(text: &str) -> (usize, usize, String) {
        match ContentFormat::parse_str(&demo_format_path(), text) {
            Err(FormatError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn demo_text() -> String {
        std::fs::read_to_string(demo_format_path()).unwrap()
    }

    /// 1-based line and column of the first occurrence of `needle`.
    fn position(text: &str, needle: &str) -> (usize, usize) {
        let offset = text.find(needle).unwrap();
        line_col(text, offset)
    }

    #[test]
    fn typo_in_field_key_names_line_column_and_key() {
        let text = demo_text().replace("count_of = \"templates\"", "count_off = \"templates\"");
        let (line, column, message) = invalid(&text);
        assert_eq!((line, column), position(&text, "count_off"));
        assert!(message.contains("count_off"), "{message}");
    }

    #[test]
    fn typo_in_header_key_is_located() {
        let text = demo_text().replace("max_file_size = 65536", "max_file_sise = 65536");
        let (line, column, message) = invalid(&text);
        assert_eq!((line, column), position(&text, "max_file_sise"));
        assert!(message.contains("max_file_sise"), "{message}");
    }

    #[test]
    fn semantic_mistakes_are_located_and_explained() {
        // (replace, with, where the error must point, what it must say)
        let cases = [
            (
                "id == template_id",
                "id == templat_id",
                "\"templates[id == templat_id]",
                "\"templat_id\" must be an integer field",
            ),
            (
                "type = \"u32\", length_from",
                "type = \"u24\", length_from",
                "\"u24\"",
                "\"u24\" is not one of",
            ),
            (
                "ref = \"templates.id\"",
                "ref = \"templates.idd\"",
                "\"templates.idd\"",
                "must name ARRAY.FIELD",
            ),
            (
                "after = \"templates\"",
                "after = \"nowhere\"",
                "\"nowhere\"",
                "comes after \"nowhere\"",
            ),
            (
                "bytes_after_last_instance",
                "bytes_after_last_instanc",
                "bytes_after_last_instanc",
                "unknown key `bytes_after_last_instanc`",
            ),
            (
                "equals = \"file_size\"",
                "equals = \"file_length\"",
                "\"file_length\"",
                "only relation is \"file_size\"",
            ),
            (
                "count_of = \"instances\"",
                "count_of = \"instancez\"",
                "\"instancez\"",
                "no record's `array`",
            ),
        ];
        for (from, to, needle, expected) in cases {
            let text = demo_text().replace(from, to);
            assert_ne!(text, demo_text(), "{from} not in format.toml");
            let (line, column, message) = invalid(&text);
            let want = line_col(&text, text.find(needle).unwrap());
            // The error points at the offending value (or key) itself.
            assert_eq!((line, column), want, "{to}: {message}");
            assert!(message.contains(expected), "{to}: {message}");
        }
    }

    #[test]
    fn array_without_count_and_missing_format_are_rejected() {
        let text = demo_text().replace(", count_of = \"instances\"", "");
        let (_, _, message) = invalid(&text);
        assert!(
            message.contains("array \"instances\" has no count"),
            "{message}"
        );
        let (_, _, message) = invalid("[[record]]\nname = \"h\"\nat = 0\nfields = []\n");
        assert!(message.contains("[format]"), "{message}");
    }

    #[test]
    fn input_values_expressions() {
        let iv = |s| parse_input_values(s);
        assert_eq!(
            iv("0x1000 + i"),
            Some(InputValues {
                base: 0x1000,
                step: 1
            })
        );
        assert_eq!(iv("16 + 4 * i"), Some(InputValues { base: 16, step: 4 }));
        assert_eq!(iv("i"), Some(InputValues { base: 0, step: 1 }));
        assert_eq!(iv("i + i"), None);
        assert_eq!(iv("0x10 - i"), None);
    }

    #[test]
    fn big_endian_formats_read_and_write_the_other_way() {
        let text = "[format]\nname = \"B\"\nendian = \"big\"\nmax_file_size = 64\n[[record]]\nname = \"h\"\nat = 0\nfields = [{ name = \"n\", type = \"u16\", count_of = \"xs\" }]\n[[record]]\nname = \"x\"\narray = \"xs\"\nafter = \"h\"\nvariable_size = true\nfields = [{ name = \"k\", type = \"u8\" }, { name = \"v\", type = \"u16\", length_from = \"k\" }]\n";
        let f = ContentFormat::parse_str(Path::new("b.toml"), text).unwrap();
        let bytes = [0, 2, 1, 0x12, 0x34, 0, 7];
        let parsed = f.parse(&bytes).unwrap();
        assert_eq!(
            parsed.records[1].elements[0].fields[1].value,
            Value::Ints(vec![0x1234])
        );
        assert_eq!(parsed.trailing, vec![7]);
        assert_eq!(f.serialize(&parsed), bytes);
    }
}
