//! Report sinks: each output format consumes runner events (`crate::model::Event`)
//! through `crate::model::Sink`; adding a format never touches the runner.

pub mod attestation;
pub(crate) mod dump_text;
pub mod html;
pub mod json;
pub mod junit;
pub mod live;
pub mod manifest;
pub(crate) mod recovery;
pub mod terminal;
pub mod terminal_text;
