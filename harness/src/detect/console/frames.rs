//! The frames of a report's call trace, as printed: what crash triage resolves to
//! source lines. Only the first trace counts: after `---[ end trace` the kernel
//! prints the registers again, and a syscall's user-space registers (`RIP: 0033:`)
//! end the kernel's frames.

use serde::Serialize;

use super::classify::Line;
use super::title::{frame_text, module_after, symbol_token};

/// Most frames kept of one trace: a kernel stack is rarely deeper than 40 printed
/// frames; past that a corrupted trace only repeats itself.
pub const MAX_TRACE_FRAMES: usize = 64;

/// One frame of a call trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceFrame {
    /// The symbol as printed, compiler suffixes kept (`sensor_load.cold`): the name
    /// the module's symbol table holds.
    pub symbol: String,
    /// Offset into the symbol, in bytes.
    pub offset: u64,
    /// The module whose code it is (`demo_sensor`); None for the kernel's own code.
    pub module: Option<String>,
    /// Not marked `?` by the unwinder.
    pub reliable: bool,
    /// The instruction that faulted (the `RIP:` line); every other frame is a
    /// return address, one past its call.
    pub faulting: bool,
}

/// The frames of the first call trace in `excerpt`: the faulting instruction first,
/// then the trace entries in order, at most [`MAX_TRACE_FRAMES`].
pub fn trace_frames(excerpt: &[String]) -> Vec<TraceFrame> {
    let mut frames: Vec<TraceFrame> = Vec::new();
    for raw in excerpt {
        let line = Line::parse(raw);
        let body = line.body;
        if body.starts_with("---[ end trace") || body.starts_with("RIP: 0033:") {
            if !frames.is_empty() {
                break;
            }
            continue;
        }
        let Some(line) = frame_text(body) else {
            continue;
        };
        if line.at_cpu && frames.iter().any(|f| f.faulting) {
            // The register block printed again: the same place.
            continue;
        }
        let Some((symbol, offset, _size)) = symbol_token(line.text) else {
            continue;
        };
        frames.push(TraceFrame {
            symbol: symbol.to_string(),
            offset,
            module: module_after(line.text).map(str::to_string),
            reliable: line.reliable,
            faulting: line.at_cpu,
        });
        if frames.len() >= MAX_TRACE_FRAMES {
            break;
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_faulting_frame_and_the_trace_with_their_modules() {
        let excerpt = lines(
            "[    3.109244] BUG: unable to handle page fault for address: ffffd23e80096000
[    3.111494] RIP: 0010:sensor_match_fields+0x1a/0x34 [demo_sensor]
[    3.112199] Code: 75 09 48 83 c4 10 c3 cc
[    3.114187] Call Trace:
[    3.115214]  <TASK>
[    3.115494]  sensor_load.cold+0x156/0x26e [demo_sensor]
[    3.115873]  ? kernel_param_unlock+0x30/0x30
[    3.116019]  reload_set+0x46/0x64 [demo_sensor]
[    3.116140]  param_attr_store+0x94/0xe0
[    3.117739] RIP: 0033:0x47b7a0
[    3.117800]  later_frame+0x1/0x2 [other]
[    3.118000] RIP: 0010:sensor_match_fields+0x1a/0x34 [demo_sensor]",
        );
        let frames = trace_frames(&excerpt);
        let seen: Vec<(&str, u64, Option<&str>, bool, bool)> = frames
            .iter()
            .map(|f| {
                (
                    f.symbol.as_str(),
                    f.offset,
                    f.module.as_deref(),
                    f.reliable,
                    f.faulting,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("sensor_match_fields", 0x1a, Some("demo_sensor"), true, true),
                ("sensor_load.cold", 0x156, Some("demo_sensor"), true, false),
                ("kernel_param_unlock", 0x30, None, false, false),
                ("reload_set", 0x46, Some("demo_sensor"), true, false),
                ("param_attr_store", 0x94, None, true, false),
            ]
        );
    }

    #[test]
    fn garbage_and_endless_traces_stay_bounded() {
        assert!(trace_frames(&lines("no frames here\n+0x/0x [x]\nf+0xzz/0x1")).is_empty());
        let long: Vec<String> = (0..500).map(|i| format!(" f{i}+0x1/0x2 [m]")).collect();
        assert_eq!(trace_frames(&long).len(), MAX_TRACE_FRAMES);
    }
}
