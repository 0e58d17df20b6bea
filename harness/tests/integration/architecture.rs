//! The layering rule, kept by reading the sources: a top-level module of the library
//! may name (`crate::x`) only modules of a lower layer. Needs no VM.
//!
//! The layers, bottom first (docs/architecture.md explains each). Modules of one layer
//! do not name each other either, so no circle can form inside a layer.
//! The binary (`main.rs`, `cli/`) sits on top and names the library as `bootgate::`.
//! `testing` (fakes and builders for bootgate's own tests) may name any module, and
//! any module may name it, but only from its `#[cfg(test)]` part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom first. A module may name modules of earlier rows only.
const LAYERS: &[&[&str]] = &[
    &["util", "cache", "confine"],
    &["model"],
    &["suite", "detect", "agent"],
    &["guest"],
    &["image"],
    &["qemu"],
    &["report", "doctor"],
    &["runner"],
    &["fuzz"],
];

/// Test support: exempt as described above.
const TEST_SUPPORT: &str = "testing";

/// One upward (or sideways) reference: the file and line, and the two modules.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// The top-level module a source file belongs to (`runner/scenario/steps.rs` →
/// `runner`, `util.rs` → `util`); `None` for the crate roots and the binary.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "lib" | "main" | "cli" => None,
        _ => Some(name.to_string()),
    }
}

/// Every top-level module a line names through `crate::`: `crate::x::...` and the
/// names inside `use crate::{x, y::z}`.
fn named_modules(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // `bootgate_crate::x` or `some_crate::` are not this crate.
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ => {}
                }
                if depth == 0 && c != ',' && c != '}' {
                    item.push(c);
                }
            }
            items.push(item);
            names.extend(items.iter().filter_map(|i| first_ident(i.trim())));
        } else if let Some(name) = first_ident(after) {
            names.push(name);
        }
    }
    names
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// The violations in one file's text, `module` being the file's top-level module.
pub fn check_source(file: &str, module: &str, text: &str) -> Vec<Violation> {
    let Some(own) = layer_of(module) else {
        return Vec::new();
    };
    // A `tests.rs` file is the body of a `#[cfg(test)] mod tests;`: all test code.
    let test_part_from = if file == "tests.rs" || file.ends_with("/tests.rs") {
        0
    } else {
        text.lines()
            .position(|l| l.trim_start().starts_with("#[cfg(test)]"))
            .unwrap_or(usize::MAX)
    };
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for to in named_modules(code) {
            if to == module {
                continue;
            }
            let allowed = if to == TEST_SUPPORT {
                test_part_from == 0 || index > test_part_from
            } else {
                // A name that is no module of ours (a macro path, say) is not a layer.
                layer_of(&to).is_none_or(|theirs| theirs < own)
            };
            if !allowed {
                found.push(Violation {
                    file: file.to_string(),
                    line: index + 1,
                    from: module.to_string(),
                    to,
                });
            }
        }
    }
    found
}

fn source_files(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect()
}

#[test]
fn layers_import_only_downward() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut modules: BTreeMap<String, usize> = BTreeMap::new();
    for path in source_files(&root) {
        let relative = path.strip_prefix(&root).unwrap();
        let Some(module) = module_of(relative) else {
            continue;
        };
        *modules.entry(module.clone()).or_default() += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        violations.extend(check_source(
            &relative.display().to_string(),
            &module,
            &text,
        ));
    }
    // A new top-level module must be given a layer, or the rule would skip it.
    let unplaced: Vec<&String> = modules
        .keys()
        .filter(|m| layer_of(m).is_none() && m.as_str() != TEST_SUPPORT)
        .collect();
    assert!(
        unplaced.is_empty(),
        "top-level modules with no layer in tests/integration/architecture.rs LAYERS: {unplaced:?}"
    );
    assert!(modules.contains_key("runner") && modules.contains_key("model"));
    let listing: Vec<String> = violations
        .iter()
        .map(|v| {
            format!(
                "  src/{}:{}: {} names crate::{} (a higher or same layer)",
                v.file, v.line, v.from, v.to
            )
        })
        .collect();
    assert!(
        violations.is_empty(),
        "upward imports break the layering (docs/architecture.md):\n{}",
        listing.join("\n")
    );
}

#[test]
fn the_checker_flags_upward_and_sideways_names_and_passes_downward_ones() {
    let text = "use crate::util::lock;\n\
                use crate::{model::Event, runner::run};\n\
                fn f() { crate::report::html::render(); }\n\
                // crate::runner in a comment is not code\n\
                use crate::detect::CrashClass;\n";
    let found = check_source("qemu/x.rs", "qemu", text);
    let pairs: Vec<(usize, &str)> = found.iter().map(|v| (v.line, v.to.as_str())).collect();
    assert_eq!(pairs, vec![(2, "runner"), (3, "report")]);
    // Sideways, inside one layer: suite and detect share a layer.
    let found = check_source("suite.rs", "suite", "use crate::detect::CrashClass;\n");
    assert_eq!(found.len(), 1, "{found:?}");
    // Test support only from the test part.
    let text = "use crate::testing::FakePeer;\n#[cfg(test)]\nmod tests {\n use crate::testing::FakePeer;\n}\n";
    let found = check_source("agent.rs", "agent", text);
    assert_eq!(
        found.iter().map(|v| v.line).collect::<Vec<_>>(),
        vec![1],
        "{found:?}"
    );
    assert!(check_source("agent/tests.rs", "agent", "use crate::testing::FakePeer;\n").is_empty());
}
