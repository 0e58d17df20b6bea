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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::util::{line_col, snippet};

mod field;
mod parse;
mod resolve;
mod schema;
#[cfg(test)]
mod tests;

pub use parse::{patch_int, read_int, Element, ParseError, Parsed, Value};
use resolve::{parse_input_values, resolve_records, resolve_seeds, resolve_trailer};
use schema::RawFile;

/// Largest format description read: they are a few KiB, and the bound stops a wrong
/// path (a device, a disk image) from being read into memory whole.
pub(crate) const MAX_FORMAT_BYTES: u64 = 1 << 20;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endian {
    Little,
    Big,
}

/// A field's storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    U8,
    U16,
    U32,
    U64,
    Bytes(usize),
}

impl FieldType {
    pub(crate) fn width(self) -> usize {
        match self {
            FieldType::U8 => 1,
            FieldType::U16 => 2,
            FieldType::U32 => 4,
            FieldType::U64 => 8,
            FieldType::Bytes(n) => n,
        }
    }

    /// The largest value of an integer type; `None` for bytes.
    pub(crate) fn max_int(self) -> Option<u64> {
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
pub(crate) enum Expected {
    Int(u64),
    Bytes(Vec<u8>),
}

/// Where a list field's length comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthFrom {
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
pub(crate) struct FieldRef {
    pub record: usize,
    pub field: usize,
}

/// One field of a record, with its relations resolved to indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldSpec {
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
    pub(crate) fn is_int(&self) -> bool {
        self.ty.max_int().is_some()
    }
}

/// A record: a plain one (exactly one element) or an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordSpec {
    pub name: String,
    pub array: Option<String>,
    /// For an array, the field holding its element count.
    pub count: Option<FieldRef>,
    pub fields: Vec<FieldSpec>,
}

/// `input_values = "BASE + STEP * i"`: the values a consumer supplies, for writing
/// criteria that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputValues {
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
    pub(crate) fn parse_str(path: &Path, text: &str) -> Result<ContentFormat, FormatError> {
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
        let seeds = resolve_seeds(raw.seed, &dir, &at)?;
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

    pub(crate) fn endian(&self) -> Endian {
        self.endian
    }

    /// Consumers reject larger files; mutations stay within it.
    pub(crate) fn max_file_size(&self) -> usize {
        self.max_file_size
    }

    /// How many input values the consumer supplies (`sensor_inputs`).
    pub(crate) fn inputs(&self) -> Option<u64> {
        self.inputs
    }

    /// The consumer's input `i`, for writing a criterion that matches it. Also
    /// defined past the supplied inputs: that is the plausible value a content author
    /// writes for a field the consumer does not have.
    pub(crate) fn input_value(&self, i: u64) -> Option<u64> {
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
    pub(crate) fn records(&self) -> &[RecordSpec] {
        &self.records
    }

    /// How many bytes may follow the last record (`[trailer]`); `None`: any.
    pub(crate) fn trailer(&self) -> Option<usize> {
        self.trailer
    }

    /// The seed files, absolute, next to the description.
    pub(crate) fn seeds(&self) -> Vec<PathBuf> {
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
    pub(crate) fn path_of(&self, record: usize, element: usize, field: usize) -> String {
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
    pub(crate) fn element_path(&self, record: usize, element: usize) -> String {
        match self.records.get(record) {
            Some(RecordSpec {
                array: Some(array), ..
            }) => format!("{array}[{element}]"),
            Some(spec) => spec.name.clone(),
            None => format!("record#{record}"),
        }
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
