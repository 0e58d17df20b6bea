//! report.html: one self-contained page for certification reviewers who did not run
//! the suite and open a single file from a CI artifact download. No network, no
//! external assets: styles are inline, the timelines are inline SVG and crash
//! screenshots are embedded as data: URIs, so the file reads the same anywhere.
//!
//! Everything that came from the guest (console lines, step details, crash titles,
//! file names) is hostile. The template is rendered with HTML auto-escaping for every
//! value; the only values marked safe are built here from a fixed alphabet (base64
//! data URIs and percent-encoded relative links).
//!
//! The view model (everything the template shows, already formatted, so the
//! template holds layout only) is built in `views` (the run), `cards` (one
//! scenario: boots, steps, crash cards, links) and `timeline` (the inline SVG).

mod cards;
mod format;
#[cfg(test)]
mod tests;
mod timeline;
mod views;

use crate::model::run_file::REPORT_HTML;
use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::model::record::RunRecord;
use crate::model::Event;
use crate::model::{ReportError, Sink};
use crate::util::write_atomic;
use views::RunView;

/// The name ends in `.html` so that even minijinja's default callback would escape;
/// `render` also forces HTML escaping explicitly.
const TEMPLATE_NAME: &str = "report.html";
const TEMPLATE: &str = include_str!("../report.html.j2");

/// Writes `report.html` into the run folder when the run ends. Earlier events are
/// ignored: a partial report would have to be rewritten after every scenario, and
/// run.json already covers interrupted runs.
#[derive(Debug, Default)]
pub struct HtmlSink;

impl HtmlSink {
    pub fn new() -> HtmlSink {
        HtmlSink
    }
}

impl Sink for HtmlSink {
    fn event(&mut self, event: &Event) -> Result<(), ReportError> {
        let Event::RunFinished { run, dir } = event else {
            return Ok(());
        };
        let html = render(run, dir)?;
        let path = dir.join(REPORT_HTML);
        write_atomic(&path, html.as_bytes()).map_err(|source| ReportError::Write { path, source })
    }
}

/// Renders the report of `run`; `run_dir` is the run folder, where screenshots are
/// read from to embed them.
pub fn render(run: &RunRecord, run_dir: &Path) -> Result<String, ReportError> {
    let view = RunView::build(run, run_dir);
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    // A misspelt field in the template must fail the tests, not render as blank.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template(TEMPLATE_NAME, TEMPLATE)
        .map_err(template_error)?;
    let template = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
    template
        .render(Value::from_serialize(&view))
        .map_err(template_error)
}

fn template_error(e: minijinja::Error) -> ReportError {
    ReportError::Encode {
        what: REPORT_HTML,
        message: format!("{e:#}"),
    }
}
