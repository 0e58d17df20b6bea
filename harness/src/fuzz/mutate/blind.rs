//! Blind byte mutations, for what the description does not say (and inputs that do
//! not parse).

use super::Mutator;

/// Bytes blind mutations like to write.
const INTERESTING_BYTES: [u8; 6] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];

impl Mutator {
    pub(super) fn bit_flip(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        if bytes.is_empty() {
            return None;
        }
        let mut out = bytes.to_vec();
        let flips: Vec<String> = (0..1 + self.rng.below(4))
            .map(|_| {
                let (at, bit) = (self.rng.below(out.len()), self.rng.below(8));
                out[at] ^= 1 << bit;
                format!("{at:#x}.{bit}")
            })
            .collect();
        Some((out, format!("flip bits {}", flips.join(", "))))
    }

    pub(super) fn set_bytes(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        if bytes.is_empty() {
            return None;
        }
        let mut out = bytes.to_vec();
        let sets: Vec<String> = (0..1 + self.rng.below(4))
            .map(|_| {
                let at = self.rng.below(out.len());
                let value = self.byte();
                out[at] = value;
                format!("{at:#x}={value:#04x}")
            })
            .collect();
        Some((out, format!("set bytes {}", sets.join(", "))))
    }

    pub(super) fn insert(&mut self, bytes: &[u8], max: usize) -> Option<(Vec<u8>, String)> {
        let room = max.checked_sub(bytes.len()).filter(|&r| r > 0)?;
        let n = 1 + self.rng.below(room.min(16));
        let at = self.rng.below(bytes.len() + 1);
        let fill: Vec<u8> = if self.rng.chance(1, 2) {
            vec![self.byte(); n]
        } else {
            (0..n).map(|_| self.rng.next_u64() as u8).collect()
        };
        let mut out = bytes.to_vec();
        out.splice(at..at, fill);
        Some((out, format!("insert {n} bytes at {at:#x}")))
    }

    pub(super) fn delete(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, String)> {
        if bytes.is_empty() {
            return None;
        }
        let n = 1 + self.rng.below(bytes.len().min(16));
        let at = self.rng.below(bytes.len() - n + 1);
        let mut out = bytes.to_vec();
        out.drain(at..at + n);
        Some((out, format!("delete {n} bytes at {at:#x}")))
    }

    /// Copies a chunk of the input over, or into, another place of it.
    pub(super) fn splice(&mut self, bytes: &[u8], max: usize) -> Option<(Vec<u8>, String)> {
        if bytes.len() < 2 {
            return None;
        }
        let n = 1 + self.rng.below(bytes.len().min(64));
        let from = self.rng.below(bytes.len() - n + 1);
        let chunk = bytes[from..from + n].to_vec();
        let mut out = bytes.to_vec();
        if self.rng.chance(1, 2) || bytes.len() + n > max {
            let to = self.rng.below(bytes.len() - n + 1);
            out[to..to + n].copy_from_slice(&chunk);
            Some((out, format!("splice {n} bytes from {from:#x} over {to:#x}")))
        } else {
            let to = self.rng.below(bytes.len() + 1);
            out.splice(to..to, chunk);
            Some((out, format!("splice {n} bytes from {from:#x} into {to:#x}")))
        }
    }

    pub(super) fn byte(&mut self) -> u8 {
        if self.rng.chance(1, 2) {
            INTERESTING_BYTES[self.rng.below(INTERESTING_BYTES.len())]
        } else {
            self.rng.next_u64() as u8
        }
    }
}
