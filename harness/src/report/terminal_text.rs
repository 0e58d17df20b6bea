//! Text from a results folder, made safe for a terminal. A crash title, scenario
//! name or console excerpt in someone else's run.json may carry ANSI escapes (clear
//! the screen, retitle the window, fake a PASS line over a FAIL), other control
//! bytes, or Unicode direction overrides that make text read differently than it
//! is. `show`, `merge` and every error message print such text only through here.

/// Unicode bidirectional embeddings, overrides and isolates: invisible, and they
/// reorder the text after them.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// What a forbidden character becomes: visible, so a reviewer sees something was
/// there, and inert.
const REPLACEMENT: char = '\u{FFFD}';

/// One line: every control character (newlines included, so a title cannot forge a
/// line of its own) and direction override replaced; a tab becomes a space.
pub fn line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() || is_direction_control(c) => REPLACEMENT,
            c => c,
        })
        .collect()
}

/// Several lines: as [`line`] for each, the line breaks kept (a carriage return is
/// dropped, since it would let a line overwrite itself).
pub fn lines(text: &str) -> String {
    text.split('\n')
        .map(|l| line(l.strip_suffix('\r').unwrap_or(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_become_visible_and_inert() {
        let hostile = "BUG: x\u{1b}[2J\u{1b}]0;owned\u{7}\rPASS\u{9b}31m\u{202E}txt.exe";
        let clean = line(hostile);
        assert!(
            !clean
                .chars()
                .any(|c| c.is_control() || is_direction_control(c)),
            "{clean:?}"
        );
        assert!(clean.starts_with("BUG: x\u{FFFD}[2J"), "{clean:?}");
    }

    #[test]
    fn a_title_cannot_forge_a_line_but_an_excerpt_keeps_its_lines() {
        assert_eq!(line("a\nPASS  fake"), "a\u{FFFD}PASS  fake");
        assert_eq!(
            lines("one\r\ntwo\u{1b}[1m\n\tthree"),
            "one\ntwo\u{FFFD}[1m\n three"
        );
    }
}
