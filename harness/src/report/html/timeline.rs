//! The timeline: boots and steps as bars on a shared time axis, laid out here so the
//! template only draws shapes.

use serde::Serialize;

use super::format::{clean, ms_text, step_timeline_class, timeline_class};
use crate::model::record::{
    BootRecord, CrashPhase, CrashRecord, ScenarioRecord, StepOutcome, StepRecord,
};

/// viewBox units; the SVG scales to the page width.
const TL_WIDTH: f64 = 960.0;
/// Room left of the plot for the row names.
const TL_GUTTER: f64 = 52.0;
const TL_RIGHT: f64 = 14.0;
const TL_AXIS: f64 = 22.0;
const BAR_H: f64 = 16.0;
const LANE_H: f64 = 13.0;
/// Rough width of one character at the 11-unit label size, for placing labels so
/// they do not overlap (exact text metrics are not known without a browser).
const CHAR_W: f64 = 6.0;
const MAX_LANES: usize = 5;

#[derive(Serialize)]
pub(super) struct Timeline {
    width: f64,
    height: f64,
    aria: String,
    ticks: Vec<Tick>,
    rows: Vec<Label>,
    bars: Vec<Bar>,
    labels: Vec<Label>,
    markers: Vec<Marker>,
}

#[derive(Serialize)]
struct Tick {
    x: f64,
    label: String,
}

#[derive(Serialize)]
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    class: String,
    title: String,
}

#[derive(Serialize)]
struct Label {
    x: f64,
    y: f64,
    text: String,
    class: &'static str,
}

#[derive(Serialize)]
struct Marker {
    x: f64,
    y1: f64,
    y2: f64,
    points: String,
    title: String,
}

/// A label waiting for its lane.
struct Pending {
    x: f64,
    text: String,
    class: &'static str,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Assigns each label to the first lane (a line under its row) where it does not
/// overlap the previous label; returns the lane of each and the lanes used.
fn pack(labels: &mut [Pending]) -> (Vec<usize>, usize) {
    let mut ends: Vec<f64> = Vec::new();
    let mut lanes = Vec::with_capacity(labels.len());
    for label in labels.iter_mut() {
        let w = label.text.chars().count() as f64 * CHAR_W;
        label.x = label.x.min(TL_WIDTH - w).max(TL_GUTTER);
        let lane = match ends.iter().position(|&end| end + 8.0 <= label.x) {
            Some(lane) => lane,
            None if ends.len() < MAX_LANES => {
                ends.push(f64::MIN);
                ends.len() - 1
            }
            // Crowded: overlap in the lane that frees up first; the tables below
            // the timeline carry the same facts.
            None => ends
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i),
        };
        ends[lane] = label.x + w;
        lanes.push(lane);
    }
    let used = ends.len();
    (lanes, used)
}

/// Where a boot ends on the timeline: when the next one starts, or the scenario ends.
fn boot_end(boots: &[BootRecord], i: usize, total: u64) -> u64 {
    boots
        .get(i + 1)
        .map_or(total, |b| b.start_ms)
        .max(boots[i].start_ms)
}

fn tick_step_ms(total: u64) -> u64 {
    const STEPS: [u64; 12] = [
        500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
        1_800_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| total / s <= 10)
        .unwrap_or(3_600_000)
}

fn tick_label(ms: u64) -> String {
    if ms == 0 {
        "0".to_string()
    } else if ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

impl Timeline {
    pub(super) fn build(sc: &ScenarioRecord) -> Timeline {
        let axis = Axis::new(total_ms(sc));
        // Boots: layout of bars first, labels after their lanes are known.
        let boots_y = TL_AXIS + 6.0;
        let mut bars = Vec::new();
        let mut boot_labels = Vec::new();
        for (i, b) in sc.boots.iter().enumerate() {
            let end = boot_end(&sc.boots, i, axis.total);
            let (shapes, label) = boot_shapes(b, end, &axis, boots_y);
            bars.extend(shapes);
            boot_labels.push(label);
        }
        let (boot_lanes, boot_lanes_used) = pack(&mut boot_labels);

        let steps_y = boots_y + BAR_H + boot_lanes_used as f64 * LANE_H + 10.0;
        let mut step_labels = Vec::new();
        for st in &sc.steps {
            let (bar, label) = step_shapes(st, &axis, steps_y);
            bars.push(bar);
            step_labels.push(label);
        }
        let (step_lanes, step_lanes_used) = pack(&mut step_labels);
        let bottom = steps_y + BAR_H + step_lanes_used as f64 * LANE_H + 6.0;

        let mut labels = place(boot_labels, boot_lanes, boots_y + BAR_H + 11.0);
        labels.extend(place(step_labels, step_lanes, steps_y + BAR_H + 11.0));
        Timeline {
            width: TL_WIDTH,
            height: round1(bottom),
            aria: aria(sc, axis.total),
            ticks: ticks(&axis),
            rows: rows(boots_y, steps_y),
            bars,
            labels,
            markers: sc
                .crashes
                .iter()
                .filter_map(|c| crash_marker(c, &sc.boots, &axis, boots_y, steps_y))
                .collect(),
        }
    }
}

/// The time span drawn: the end of the last boot, step or the scenario itself.
fn total_ms(sc: &ScenarioRecord) -> u64 {
    sc.boots
        .iter()
        .map(|b| b.start_ms + b.ready_ms.unwrap_or(0))
        .chain(sc.steps.iter().map(|s| s.start_ms + s.duration_ms))
        .chain(std::iter::once(sc.duration_ms))
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Maps milliseconds since the scenario start to viewBox x.
struct Axis {
    total: u64,
    plot: f64,
}

impl Axis {
    fn new(total: u64) -> Axis {
        Axis {
            total,
            plot: TL_WIDTH - TL_GUTTER - TL_RIGHT,
        }
    }

    fn x(&self, t: u64) -> f64 {
        round1(TL_GUTTER + t.min(self.total) as f64 / self.total as f64 * self.plot)
    }

    /// At least 2 units, so that an instant still shows.
    fn width(&self, a: u64, b: u64) -> f64 {
        round1((self.x(b) - self.x(a)).max(2.0))
    }
}

/// The bars of one boot (and of the time its guest was up) and its label.
fn boot_shapes(b: &BootRecord, end: u64, axis: &Axis, y: f64) -> (Vec<Bar>, Pending) {
    let rescue = if b.extra_append.is_some() {
        " rescue"
    } else {
        ""
    };
    let prefix = if rescue.is_empty() { "" } else { "rescue " };
    let mut bars = Vec::new();
    let text = match (b.outcome, b.ready_ms) {
        (_, Some(ready)) => {
            let ready_at = b.start_ms + ready;
            bars.push(Bar {
                x: axis.x(b.start_ms),
                y,
                w: axis.width(b.start_ms, ready_at),
                h: BAR_H,
                class: format!("t-ready{rescue}"),
                title: format!(
                    "{prefix}boot {}: ready {} after power-on{}",
                    b.index,
                    ms_text(ready),
                    append_note(b)
                ),
            });
            if end > ready_at {
                // The guest was up: a thin band, so the bar itself still shows the
                // boot time.
                bars.push(Bar {
                    x: axis.x(ready_at),
                    y: y + BAR_H / 2.0 - 2.0,
                    w: axis.width(ready_at, end),
                    h: 4.0,
                    class: "t-up".to_string(),
                    title: format!("boot {}: guest up{}", b.index, late_note(b)),
                });
            }
            format!(
                "{prefix}boot {} ready {}{}",
                b.index,
                ms_text(ready),
                late_note(b)
            )
        }
        (outcome, None) => {
            bars.push(Bar {
                x: axis.x(b.start_ms),
                y,
                w: axis.width(b.start_ms, end),
                h: BAR_H,
                class: format!("{}{rescue}", timeline_class(outcome)),
                title: format!(
                    "{prefix}boot {}: {}{}{}",
                    b.index,
                    outcome.as_str(),
                    b.crash
                        .as_deref()
                        .map(|t| format!(" — {}", clean(t)))
                        .unwrap_or_default(),
                    append_note(b)
                ),
            });
            format!("{prefix}boot {} {}", b.index, outcome.as_str())
        }
    };
    let label = Pending {
        x: axis.x(b.start_ms) + 1.0,
        text,
        class: "l-boot",
    };
    (bars, label)
}

fn step_shapes(st: &StepRecord, axis: &Axis, y: f64) -> (Bar, Pending) {
    let end = st.start_ms + st.duration_ms;
    let bar = Bar {
        x: axis.x(st.start_ms),
        y,
        w: axis.width(st.start_ms, end),
        h: BAR_H,
        class: step_timeline_class(st.outcome).to_string(),
        title: format!(
            "{} {}: {} at {}, took {}",
            clean(&st.kind),
            st.outcome.as_str(),
            clean(&st.detail),
            ms_text(st.start_ms),
            ms_text(st.duration_ms)
        ),
    };
    let text = if st.outcome == StepOutcome::Ok {
        clean(&st.kind)
    } else {
        format!("{} {}", clean(&st.kind), st.outcome.as_str())
    };
    let label = Pending {
        x: axis.x(st.start_ms) + 1.0,
        text,
        class: if st.outcome == StepOutcome::Ok {
            "l-step"
        } else {
            "l-bad"
        },
    };
    (bar, label)
}

/// Puts packed labels on their lanes, the first lane at `y`.
fn place(pending: Vec<Pending>, lanes: Vec<usize>, y: f64) -> Vec<Label> {
    pending
        .into_iter()
        .zip(lanes)
        .map(|(p, lane)| Label {
            x: round1(p.x),
            y: round1(y + lane as f64 * LANE_H),
            text: p.text,
            class: p.class,
        })
        .collect()
}

/// A crash is drawn where its boot ended: the panic stops the boot, and the next
/// boot starts right after the evidence is captured.
fn crash_marker(
    c: &CrashRecord,
    boots: &[BootRecord],
    axis: &Axis,
    boots_y: f64,
    steps_y: f64,
) -> Option<Marker> {
    let i = boots.iter().position(|b| b.index == c.boot_index)?;
    let cx = axis.x(boot_end(boots, i, axis.total));
    let top = boots_y - 7.0;
    Some(Marker {
        x: cx,
        y1: top,
        y2: round1(steps_y + BAR_H),
        points: format!(
            "{},{} {},{} {},{}",
            round1(cx - 5.0),
            round1(top - 1.0),
            round1(cx + 5.0),
            round1(top - 1.0),
            cx,
            round1(top + 7.0)
        ),
        title: format!("crash in boot {}: {}", c.boot_index, clean(&c.title)),
    })
}

fn ticks(axis: &Axis) -> Vec<Tick> {
    let step = tick_step_ms(axis.total);
    (0..=axis.total / step)
        .map(|k| Tick {
            x: axis.x(k * step),
            label: tick_label(k * step),
        })
        .collect()
}

fn rows(boots_y: f64, steps_y: f64) -> Vec<Label> {
    vec![
        Label {
            x: 4.0,
            y: boots_y + 12.0,
            text: "boots".to_string(),
            class: "l-row",
        },
        Label {
            x: 4.0,
            y: steps_y + 12.0,
            text: "steps".to_string(),
            class: "l-row",
        },
    ]
}

fn aria(sc: &ScenarioRecord, total: u64) -> String {
    let crashes = sc.crashes.len();
    format!(
        "Timeline of {}: {} boot{}, {} step{}, {} crash{}, over {}",
        clean(&sc.name),
        sc.boots.len(),
        if sc.boots.len() == 1 { "" } else { "s" },
        sc.steps.len(),
        if sc.steps.len() == 1 { "" } else { "s" },
        crashes,
        if crashes == 1 { "" } else { "es" },
        ms_text(total)
    )
}

/// ", crashed 5.1 s after ready" for a boot that answered and then crashed.
fn late_note(b: &BootRecord) -> String {
    match (b.crash_phase(), b.crash_when()) {
        (Some(CrashPhase::AfterReady), Some(when)) => format!(", {when}"),
        _ => String::new(),
    }
}

fn append_note(b: &BootRecord) -> String {
    b.extra_append
        .as_deref()
        .map(|a| format!(" (kernel parameters added: {})", clean(a)))
        .unwrap_or_default()
}
