//! The TOML model of a format description, as written: spans kept for locating
//! mistakes, relations still names. [`super::resolve`] turns it into the resolved
//! [`super::ContentFormat`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) format: Spanned<RawHeader>,
    #[serde(default)]
    pub(super) record: Vec<Spanned<RawRecord>>,
    pub(super) trailer: Option<Spanned<BTreeMap<Spanned<String>, Spanned<u64>>>>,
    #[serde(default)]
    pub(super) seed: Vec<Spanned<RawSeed>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub(super) name: String,
    pub(super) endian: Spanned<String>,
    pub(super) max_file_size: Spanned<u64>,
    pub(super) sensor_inputs: Option<u64>,
    pub(super) input_values: Option<Spanned<String>>,
    pub(super) wildcard: Option<u64>,
    pub(super) bug: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecord {
    pub(super) name: Spanned<String>,
    pub(super) at: Option<Spanned<u64>>,
    pub(super) array: Option<Spanned<String>>,
    pub(super) after: Option<Spanned<String>>,
    pub(super) variable_size: Option<Spanned<bool>>,
    pub(super) fields: Spanned<Vec<Spanned<RawField>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawField {
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) ty: Spanned<String>,
    pub(super) value: Option<Spanned<toml::Value>>,
    pub(super) equals: Option<Spanned<String>>,
    pub(super) count_of: Option<Spanned<String>>,
    pub(super) max: Option<Spanned<u64>>,
    pub(super) fixed_max: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) unique: bool,
    #[serde(rename = "ref")]
    pub(super) reference: Option<Spanned<String>>,
    pub(super) default: Option<Spanned<u64>>,
    pub(super) checked: Option<bool>,
    pub(super) length_from: Option<Spanned<String>>,
    pub(super) special: Option<RawSpecial>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpecial {
    pub(super) wildcard: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeed {
    pub(super) file: Spanned<PathBuf>,
    #[serde(default)]
    pub(super) expect: BTreeMap<String, String>,
}
