//! Mutations of content files, structure-aware when the input parses.
//!
//! Structure-aware mutations edit the parsed view and serialize it with counts and
//! sizes fixed up, so they reach the interpreter behind the validator: the bug class
//! of July 2024 (a well-formed file whose template declares more fields than the
//! consumer has) is one "length field + 1 with its dependents grown" away from a good
//! file. Raw edits of single fields (boundary values, a stretched size, a cut at a
//! field boundary) keep the rest intact so they probe one validator check at a time.
//! Blind byte mutations cover what the description does not say.

use super::format::ContentFormat;

mod blind;
mod elements;
mod layout;
mod raw;
mod resize;
#[cfg(test)]
mod tests;

pub(crate) use layout::{
    arrays, describe_resize, elements, length_sources, list_len, set_int, show, At,
};

/// One mutated input and what was done to it, for logs and crash reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mutation {
    pub bytes: Vec<u8>,
    pub description: String,
}

/// A small deterministic PRNG (SplitMix64): a fuzz run must replay from its seed, and
/// the quality needed here does not warrant a dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the modulo bias is negligible for the
    /// small `n` used here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `num / den`.
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den.max(1) < num
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    fn weighted<T: Copy>(&mut self, table: &[(u32, T)]) -> Option<T> {
        let total: u64 = table.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut roll = self.next_u64() % total.max(1);
        for &(weight, kind) in table {
            if roll < u64::from(weight) {
                return Some(kind);
            }
            roll -= u64::from(weight);
        }
        table.last().map(|&(_, kind)| kind)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Resize,
    Retarget,
    Boundary,
    Duplicate,
    Drop,
    Swap,
    Truncate,
    Stretch,
    BitFlip,
    SetBytes,
    Insert,
    Delete,
    Splice,
}

/// Weights of the structure-aware kinds: resizing a length with its dependents is
/// the one that reaches past the validator, so it leads.
const STRUCTURED: [(u32, Kind); 8] = [
    (30, Kind::Resize),
    (10, Kind::Retarget),
    (20, Kind::Boundary),
    (8, Kind::Duplicate),
    (8, Kind::Drop),
    (5, Kind::Swap),
    (5, Kind::Truncate),
    (5, Kind::Stretch),
];

const BLIND: [(u32, Kind); 5] = [
    (6, Kind::BitFlip),
    (6, Kind::SetBytes),
    (3, Kind::Insert),
    (3, Kind::Delete),
    (2, Kind::Splice),
];

/// Tries per mutation step before giving up on a step; kinds that do not apply to
/// an input (no array to swap, no room to grow) return nothing and another is drawn.
const ATTEMPTS: usize = 16;

/// Mutates content inputs; deterministic for a seed.
#[derive(Debug, Clone)]
pub(crate) struct Mutator {
    rng: Rng,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: Rng::new(seed),
        }
    }

    /// The PRNG, for callers that make their own random choices (which corpus entry
    /// to mutate next) and want the whole run to replay from one seed.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only the unit tests use it today; found by the pub(crate) pass, to be used or removed"
        )
    )]
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// One or two mutations of `input` (blind ones when it does not parse). The
    /// result differs from `input` and is at most `format.max_file_size()` bytes.
    pub(crate) fn mutate(&mut self, format: &ContentFormat, input: &[u8]) -> Mutation {
        let max = format.max_file_size();
        let mut bytes = input.to_vec();
        let mut notes = Vec::new();
        if bytes.len() > max {
            bytes.truncate(max);
            notes.push(format!("cut to max_file_size {max}"));
        }
        let steps = if self.rng.chance(1, 4) { 2 } else { 1 };
        for _ in 0..steps {
            for _ in 0..ATTEMPTS {
                let Some((next, note)) = self.step(format, &bytes) else {
                    continue;
                };
                if next != bytes && next.len() <= max {
                    bytes = next;
                    notes.push(note);
                    break;
                }
            }
        }
        if bytes == input {
            // Every kind declined (an empty input, a tiny limit): still hand back a
            // different input, so a fuzz loop never retries the same bytes.
            match bytes.len() {
                0 => {
                    bytes.push(self.rng.next_u64() as u8);
                    notes.push("insert 1 byte at 0x0".into());
                }
                len => {
                    let (at, bit) = (self.rng.below(len), self.rng.below(8));
                    bytes[at] ^= 1 << bit;
                    notes.push(format!("flip bit {at:#x}.{bit}"));
                }
            }
            bytes.truncate(max);
        }
        Mutation {
            bytes,
            description: notes.join("; "),
        }
    }

    fn step(&mut self, format: &ContentFormat, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        // A fifth of the steps on parsing inputs stay blind: the description may be
        // wrong or incomplete, and the validator's handling of garbage matters too.
        let parsed = format.parse(bytes).ok();
        let kind = match &parsed {
            Some(_) if !self.rng.chance(1, 5) => self.rng.weighted(&STRUCTURED)?,
            _ => self.rng.weighted(&BLIND)?,
        };
        let max = format.max_file_size();
        match (kind, &parsed) {
            (Kind::Resize, Some(p)) => self.resize(format, p, bytes.len()),
            (Kind::Retarget, Some(p)) => self.retarget(format, p, bytes.len()),
            (Kind::Boundary, Some(p)) => self.boundary(format, p, bytes),
            (Kind::Duplicate, Some(p)) => self.duplicate(format, p, bytes.len()),
            (Kind::Drop, Some(p)) => self.drop_element(format, p),
            (Kind::Swap, Some(p)) => self.swap(format, p),
            (Kind::Truncate, Some(p)) => self.truncate(format, p, bytes),
            (Kind::Stretch, Some(p)) => self.stretch(format, p, bytes),
            (Kind::BitFlip, _) => self.bit_flip(bytes),
            (Kind::SetBytes, _) => self.set_bytes(bytes),
            (Kind::Insert, _) => self.insert(bytes, max),
            (Kind::Delete, _) => self.delete(bytes),
            (Kind::Splice, _) => self.splice(bytes, max),
            _ => None,
        }
    }
}
