//! Resolving one field of a record: its type, its relations to other records
//! (`count_of`, `ref`, `length_from`) and its settings, each mistake located.

use toml::Spanned;

use super::resolve::Layout;
use super::schema::{RawField, RawRecord};
use super::{Expected, FieldRef, FieldSpec, FieldType, FormatError, LengthFrom};

impl Layout<'_> {
    /// Field `fi` of record `ri`, every relation checked and resolved.
    pub(super) fn field(
        &self,
        ri: usize,
        fi: usize,
        spanned: &Spanned<RawField>,
    ) -> Result<FieldSpec, FormatError> {
        let field = spanned.get_ref();
        let name = field.name.get_ref().clone();
        let ty = FieldType::parse(field.ty.get_ref()).ok_or_else(|| {
            (self.at)(
                field.ty.span().start,
                format!(
                    "field {name:?}: `type` {:?} is not one of u8, u16, u32, u64, bytes(N)",
                    field.ty.get_ref()
                ),
            )
        })?;
        let f = FieldCheck {
            layout: self,
            record: &self.raw[ri],
            ri,
            fi,
            field,
            field_at: spanned.span().start,
            name,
            ty,
        };
        let value = f.value()?;
        let equals_file_size = f.equals_file_size()?;
        let count_of = f.count_of()?;
        let reference = f.reference()?;
        let list = f.list()?;
        if list.is_some()
            && (value.is_some()
                || equals_file_size
                || count_of.is_some()
                || reference.is_some()
                || field.unique
                || field.default.is_some())
        {
            return Err(f.at(f.field_at, "a list (`length_from`) takes only `special`; value, equals, count_of, ref, unique and default are for single values".into()));
        }
        let max = f.int_setting("max", field.max.as_ref())?;
        let fixed_max = f.int_setting("fixed_max", field.fixed_max.as_ref())?;
        let default = f.fitting_setting("default", field.default.as_ref())?;
        let wildcard = f.fitting_setting(
            "special.wildcard",
            field.special.as_ref().and_then(|s| s.wildcard.as_ref()),
        )?;
        if field.unique && f.record.array.is_none() {
            return Err(f.at(
                f.field_at,
                "`unique` only means something in an array".into(),
            ));
        }
        Ok(FieldSpec {
            name: f.name,
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
        })
    }
}

pub(super) fn field_index(record: &RawRecord, name: &str) -> Option<usize> {
    record
        .fields
        .get_ref()
        .iter()
        .position(|f| f.get_ref().name.get_ref() == name)
}

/// One field being resolved: what its checks need to locate and word their errors.
struct FieldCheck<'a> {
    layout: &'a Layout<'a>,
    record: &'a RawRecord,
    ri: usize,
    fi: usize,
    field: &'a RawField,
    /// Where the field's table starts, for errors about the field as a whole.
    field_at: usize,
    name: String,
    ty: FieldType,
}

impl FieldCheck<'_> {
    /// An error about this field, prefixed with its name.
    fn at(&self, offset: usize, message: String) -> FormatError {
        (self.layout.at)(offset, format!("field {:?}: {message}", self.name))
    }

    fn is_int(&self) -> bool {
        self.ty.max_int().is_some()
    }

    /// Fails unless the field has an integer type, which setting `what` needs.
    fn int_only(&self, what: &str, offset: usize) -> Result<(), FormatError> {
        if self.is_int() {
            Ok(())
        } else {
            Err(self.at(
                offset,
                format!(
                    "`{what}` needs an integer type, not {:?}",
                    self.field.ty.get_ref()
                ),
            ))
        }
    }

    /// `value`, checked, if it fits the field's type.
    fn fits(&self, what: &str, value: &Spanned<u64>) -> Result<u64, FormatError> {
        let v = *value.get_ref();
        match self.ty.max_int() {
            Some(max) if v <= max => Ok(v),
            _ => Err(self.at(
                value.span().start,
                format!(
                    "`{what}` {v} does not fit its type {:?}",
                    self.field.ty.get_ref()
                ),
            )),
        }
    }

    /// An integer-only setting (`max`, `fixed_max`).
    fn int_setting(
        &self,
        what: &str,
        setting: Option<&Spanned<u64>>,
    ) -> Result<Option<u64>, FormatError> {
        match setting {
            None => Ok(None),
            Some(m) => {
                self.int_only(what, m.span().start)?;
                Ok(Some(*m.get_ref()))
            }
        }
    }

    /// An integer-only setting whose value the field must be able to hold
    /// (`default`, `special.wildcard`).
    fn fitting_setting(
        &self,
        what: &str,
        setting: Option<&Spanned<u64>>,
    ) -> Result<Option<u64>, FormatError> {
        match setting {
            None => Ok(None),
            Some(d) => {
                self.int_only(what, d.span().start)?;
                Ok(Some(self.fits(what, d)?))
            }
        }
    }

    /// `value = ...`: an integer for an integer type, a string or byte list of the
    /// right length for `bytes(N)`.
    fn value(&self) -> Result<Option<Expected>, FormatError> {
        let Some(v) = &self.field.value else {
            return Ok(None);
        };
        let (ty, field) = (self.ty, self.field);
        Ok(Some(match (ty, v.get_ref()) {
            (FieldType::Bytes(n), toml::Value::String(s)) if s.len() == n => Expected::Bytes(s.as_bytes().to_vec()),
            (FieldType::Bytes(n), toml::Value::Array(items)) if items.len() == n => Expected::Bytes(
                items
                    .iter()
                    .map(|x| x.as_integer().and_then(|x| u8::try_from(x).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| self.at(v.span().start, format!("`value` must list {n} byte values (0..=255)")))?,
            ),
            (_, toml::Value::Integer(x)) if self.is_int() => {
                let x = u64::try_from(*x).ok().filter(|x| ty.max_int().is_some_and(|m| *x <= m));
                Expected::Int(x.ok_or_else(|| self.at(v.span().start, format!("`value` does not fit its type {:?}", field.ty.get_ref())))?)
            }
            _ => {
                return Err(self.at(
                    v.span().start,
                    format!("`value` must be an integer for an integer type, or a string or list of {} bytes for {:?}", ty.width(), field.ty.get_ref()),
                ))
            }
        }))
    }

    /// `equals = "file_size"`, the one relation `equals` knows.
    fn equals_file_size(&self) -> Result<bool, FormatError> {
        match &self.field.equals {
            None => Ok(false),
            Some(e) if e.get_ref() == "file_size" => {
                self.int_only("equals", e.span().start)?;
                if self.record.array.is_some() {
                    return Err(self.at(e.span().start, "`equals = \"file_size\"` is supported only in a plain record, not in an array".into()));
                }
                Ok(true)
            }
            Some(e) => Err(self.at(
                e.span().start,
                format!(
                    "`equals` {:?} is not supported; the only relation is \"file_size\"",
                    e.get_ref()
                ),
            )),
        }
    }

    /// `count_of = "ARRAY"`: the record index of the array this field counts.
    fn count_of(&self) -> Result<Option<usize>, FormatError> {
        let Some(name) = &self.field.count_of else {
            return Ok(None);
        };
        self.int_only("count_of", name.span().start)?;
        let target = self.layout.array_index(name.get_ref()).ok_or_else(|| {
            self.at(
                name.span().start,
                format!(
                    "`count_of` names {:?}, which is no record's `array`",
                    name.get_ref()
                ),
            )
        })?;
        if self.record.array.is_some() || target <= self.ri {
            return Err(self.at(
                name.span().start,
                format!(
                    "a count must be in a plain record laid out before the array {:?} it counts",
                    name.get_ref()
                ),
            ));
        }
        Ok(Some(target))
    }

    /// `ref = "ARRAY.FIELD"`, an integer field of an array.
    fn reference(&self) -> Result<Option<FieldRef>, FormatError> {
        let Some(text) = &self.field.reference else {
            return Ok(None);
        };
        let raw = self.layout.raw;
        self.int_only("ref", text.span().start)?;
        let bad = || {
            self.at(
                text.span().start,
                format!(
                    "`ref` {:?} must name ARRAY.FIELD, an integer field of an array",
                    text.get_ref()
                ),
            )
        };
        let (array, target_field) = text.get_ref().split_once('.').ok_or_else(bad)?;
        let record = self.layout.array_index(array.trim()).ok_or_else(bad)?;
        let field = field_index(&raw[record], target_field.trim()).ok_or_else(bad)?;
        let target = raw[record].fields.get_ref()[field].get_ref();
        if FieldType::parse(target.ty.get_ref())
            .and_then(FieldType::max_int)
            .is_none()
            || target.length_from.is_some()
        {
            return Err(bad());
        }
        Ok(Some(FieldRef { record, field }))
    }

    /// `length_from`: makes the field a list.
    fn list(&self) -> Result<Option<LengthFrom>, FormatError> {
        let Some(text) = &self.field.length_from else {
            return Ok(None);
        };
        self.int_only("length_from", text.span().start)?;
        Ok(Some(self.layout.length_from(text, self.ri, self.fi)?))
    }
}

impl Layout<'_> {
    /// `ARRAY[KEY == LOCAL].LENGTH` or `LOCAL`.
    fn length_from(
        &self,
        text: &Spanned<String>,
        ri: usize,
        fi: usize,
    ) -> Result<LengthFrom, FormatError> {
        let (raw, at) = (self.raw, self.at);
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
        let target = self.array_index(array.trim()).ok_or_else(|| {
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
}
