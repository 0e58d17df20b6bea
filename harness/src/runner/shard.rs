//! `--shard K/N`: spreads one suite over N machines of a CI matrix (GitHub Actions
//! `matrix`, GitLab `parallel:`, Jenkins, Kubernetes Indexed Jobs). Every machine runs
//! the same command with its own K and computes the same partition on its own, so the
//! partition may depend only on the scenario names and the expected durations: never
//! on HashMap order, pointers, the host or the time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One shard of a run: `index` is K (1-based, as people and CI matrices count),
/// `total` is N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

impl Shard {
    /// The whole run as one shard: what a run without `--shard` is.
    pub const WHOLE: Shard = Shard { index: 1, total: 1 };
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("--shard expects K/N with 1 <= K <= N, like 2/4 (K counts from 1: a CI index that counts from 0 needs INDEX+1); got {0:?}")]
    Spec(String),
    #[error("cannot read {path}: {source} (--shard-timings wants the run.json of an earlier run)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a run record bootgate can read for timings: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ShardError {
    /// A bad `--shard` or `--shard-timings` argument: the command line is wrong.
    pub fn exit_code(&self) -> crate::model::exit::Exit {
        crate::model::exit::Exit::Usage
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Spec(text.to_string());
        let (k, n) = text.trim().split_once('/').ok_or_else(bad)?;
        // Plain decimal digits only: u32::from_str would also take "+2".
        let number = |s: &str| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u32>().ok()
        };
        let (Some(index), Some(total)) = (number(k), number(n)) else {
            return Err(bad());
        };
        if index == 0 || total == 0 || index > total {
            return Err(bad());
        }
        Ok(Shard { index, total })
    }
}

/// Which of `names` (full `suite/scenario` names, in suite order) belong to `shard`,
/// returned in the input order.
///
/// Every name lands in exactly one shard for a given N, and every machine computes the
/// same answer from the same names and durations. The assignment is the
/// longest-processing-time-first greedy: names sorted by expected duration (longest
/// first, ties by a sha256 of the name, so neighbours in a suite spread out instead of
/// clustering by position), each given to the least-loaded shard. Names with no
/// expected duration count as the median of the known ones (1 ms when none is known,
/// which makes the split an even one by count).
pub fn select(names: &[String], expected_ms: &BTreeMap<String, u64>, shard: &Shard) -> Vec<String> {
    let assignment = assign(names, expected_ms, shard.total);
    names
        .iter()
        .filter(|name| assignment.get(name.as_str()) == Some(&shard.index))
        .cloned()
        .collect()
}

/// Name -> 1-based shard, for every distinct name.
fn assign<'a>(
    names: &'a [String],
    expected_ms: &BTreeMap<String, u64>,
    total: u32,
) -> BTreeMap<&'a str, u32> {
    let total = total.max(1);
    let mut distinct: Vec<&str> = names.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();

    let mut known: Vec<u64> = distinct
        .iter()
        .filter_map(|name| expected_ms.get(*name).copied())
        .collect();
    known.sort_unstable();
    let fallback = median(&known).unwrap_or(1);
    // A zero weight would add nothing to a shard's load, so every such name would
    // land on the same shard; one millisecond keeps them spreading by count.
    let weight = |name: &str| expected_ms.get(name).copied().unwrap_or(fallback).max(1);

    let mut order: Vec<(u64, u64, &str)> = distinct
        .iter()
        .map(|name| (weight(name), stable_hash(name), *name))
        .collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));

    // (load, names so far) per shard; ties go to the shard with fewer names, then
    // the lower index, so the result never depends on anything but the input.
    let mut loads = vec![(0u64, 0usize); total as usize];
    let mut assignment = BTreeMap::new();
    for (w, _, name) in order {
        let slot = loads
            .iter()
            .enumerate()
            .min_by_key(|(i, load)| (load.0, load.1, *i))
            .map_or(0, |(i, _)| i);
        loads[slot].0 = loads[slot].0.saturating_add(w);
        loads[slot].1 += 1;
        assignment.insert(name, slot as u32 + 1);
    }
    assignment
}

fn median(sorted: &[u64]) -> Option<u64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(
            sorted[n / 2 - 1] / 2
                + sorted[n / 2] / 2
                + (sorted[n / 2 - 1] % 2 + sorted[n / 2] % 2) / 2,
        ),
    }
}

/// The first 8 bytes of sha256(name): the same on every machine and every build,
/// unlike std's randomly seeded hashers.
fn stable_hash(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

/// Only the fields timings need, so a run.json from an older or newer bootgate still
/// serves (unknown fields are ignored).
#[derive(Deserialize)]
struct TimingsRecord {
    scenarios: Vec<TimingsScenario>,
}

#[derive(Deserialize)]
struct TimingsScenario {
    name: String,
    duration_ms: u64,
    #[serde(default)]
    verdict: Option<String>,
}

/// Expected durations (scenario name -> duration_ms) from an earlier run's run.json,
/// for `--shard` balancing. `run_json` may also be the run folder itself.
///
/// Scenarios whose verdict was `error` are left out: the harness failed before or
/// while running them (QEMU missing, image absent), so their duration says nothing
/// about how long they take, and they count as the median instead.
pub fn durations_from_run(run_json: &Path) -> Result<BTreeMap<String, u64>, ShardError> {
    let path = if run_json.is_dir() {
        run_json.join(crate::model::run_file::RUN_JSON)
    } else {
        run_json.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ShardError::Read {
        path: path.clone(),
        source,
    })?;
    let record: TimingsRecord = serde_json::from_str(&text).map_err(|e| ShardError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(record
        .scenarios
        .into_iter()
        .filter(|s| s.verdict.as_deref() != Some("error"))
        .map(|s| (s.name, s.duration_ms))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        (0..20)
            .map(|i| format!("{}/scenario-{i:02}", ["boot", "update", "recover"][i % 3]))
            .collect()
    }

    fn durations() -> BTreeMap<String, u64> {
        // Uneven on purpose: a few long boot-loop scenarios and many short ones; three
        // names have no duration and count as the median.
        names()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 7 != 3)
            .map(|(i, n)| {
                (
                    n,
                    [90_000, 12_000, 3_000, 45_000, 800, 9_500][i % 6] + i as u64,
                )
            })
            .collect()
    }

    fn shard(index: u32, total: u32) -> Shard {
        Shard { index, total }
    }

    #[test]
    fn every_name_lands_in_exactly_one_shard() {
        let names = names();
        for timings in [BTreeMap::new(), durations()] {
            for n in 1..=7 {
                let mut seen: Vec<String> = Vec::new();
                for k in 1..=n {
                    let part = select(&names, &timings, &shard(k, n));
                    // Input order is kept inside a shard.
                    let positions: Vec<usize> = part
                        .iter()
                        .map(|p| names.iter().position(|x| x == p).unwrap())
                        .collect();
                    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{part:?}");
                    seen.extend(part);
                }
                seen.sort();
                let mut all = names.clone();
                all.sort();
                assert_eq!(seen, all, "N={n}, timings={}", !timings.is_empty());
            }
        }
    }

    #[test]
    fn without_timings_shards_differ_in_size_by_at_most_one() {
        let names = names();
        for n in 1..=7 {
            let sizes: Vec<usize> = (1..=n)
                .map(|k| select(&names, &BTreeMap::new(), &shard(k, n)).len())
                .collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "N={n}: {sizes:?}");
        }
    }

    #[test]
    fn same_input_same_partition_whatever_the_map_was_built_from() {
        let names = names();
        let forward = durations();
        let mut backward = BTreeMap::new();
        for (k, v) in forward.iter().rev() {
            backward.insert(k.clone(), *v);
        }
        // Timings for scenarios that are not in the list change nothing.
        let mut extra = forward.clone();
        extra.insert("gone/old-scenario".into(), 1_000_000);
        for n in 1..=7 {
            for k in 1..=n {
                let a = select(&names, &forward, &shard(k, n));
                assert_eq!(a, select(&names, &forward, &shard(k, n)));
                assert_eq!(a, select(&names, &backward, &shard(k, n)));
                assert_eq!(a, select(&names, &extra, &shard(k, n)));
            }
        }
    }

    #[test]
    fn partition_is_pinned_so_machines_with_other_builds_agree() {
        // Shards of one CI matrix may run different bootgate builds (a cache hit on one
        // machine, a fresh build on another): change this partition only on purpose.
        assert_eq!(
            select(&names(), &BTreeMap::new(), &shard(1, 4)),
            [
                "recover/scenario-05",
                "boot/scenario-12",
                "recover/scenario-14",
                "boot/scenario-15",
                "update/scenario-16"
            ]
        );
        assert_eq!(
            stable_hash(""),
            u64::from_be_bytes([0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14])
        );
    }

    #[test]
    fn durations_balance_the_shards() {
        let names = names();
        let timings = durations();
        let mut known: Vec<u64> = names
            .iter()
            .filter_map(|n| timings.get(n).copied())
            .collect();
        known.sort();
        let fallback = median(&known).unwrap();
        let weight = |n: &String| timings.get(n).copied().unwrap_or(fallback);
        let largest = names.iter().map(weight).max().unwrap();
        let sum: u64 = names.iter().map(weight).sum();
        for n in 2..=7u32 {
            let totals: Vec<u64> = (1..=n)
                .map(|k| {
                    select(&names, &timings, &shard(k, n))
                        .iter()
                        .map(weight)
                        .sum()
                })
                .collect();
            let max = *totals.iter().max().unwrap();
            let min = *totals.iter().min().unwrap();
            // Greedy onto the least-loaded shard: the fullest shard was the emptiest
            // when it got its last name, so the spread is at most one duration.
            assert!(max - min <= largest + 1, "N={n}: {totals:?}");
            // And never worse than 4/3 of the lower bound on the optimum.
            let bound = (sum / u64::from(n)).max(largest);
            assert!(max * 3 <= bound * 4 + 3, "N={n}: {totals:?}, bound {bound}");
        }
    }

    #[test]
    fn long_scenarios_go_to_different_shards() {
        let names: Vec<String> = ["s/a", "s/b", "s/c", "s/d"].map(String::from).to_vec();
        let timings: BTreeMap<String, u64> = [("s/a", 100), ("s/b", 100), ("s/c", 1), ("s/d", 1)]
            .map(|(n, d)| (n.to_string(), d))
            .into();
        let one = select(&names, &timings, &shard(1, 2));
        let two = select(&names, &timings, &shard(2, 2));
        assert_eq!(one.len(), 2, "{one:?} {two:?}");
        assert!(one.contains(&"s/a".to_string()) != one.contains(&"s/b".to_string()));
    }

    #[test]
    fn more_shards_than_names_leaves_some_empty() {
        let names = vec!["s/only".to_string()];
        let parts: Vec<Vec<String>> = (1..=3)
            .map(|k| select(&names, &BTreeMap::new(), &shard(k, 3)))
            .collect();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 1);
    }

    #[test]
    fn median_of_even_and_odd_lists() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[1, 4]), Some(2));
        assert_eq!(median(&[3, 5]), Some(4));
        assert_eq!(median(&[u64::MAX, u64::MAX]), Some(u64::MAX));
    }

    #[test]
    fn shard_spec_parses_k_of_n() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), shard(2, 4));
        assert_eq!("1/1".parse::<Shard>().unwrap(), Shard::WHOLE);
        assert_eq!(" 4/4 ".parse::<Shard>().unwrap(), shard(4, 4));
        assert_eq!(shard(3, 8).to_string(), "3/8");
        for bad in [
            "0/4", "5/4", "1/0", "0/0", "2", "2/", "/4", "a/b", "-1/4", "+2/4", "2/4/6", "",
        ] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(
                err.contains("K/N") && err.contains("like 2/4"),
                "{bad}: {err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn timings_come_from_run_json_and_skip_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        std::fs::write(
            &path,
            r#"{"schema_version":1,"future_field":true,"scenarios":[
                {"name":"s/a","duration_ms":1200,"verdict":"pass","extra":[]},
                {"name":"s/b","duration_ms":7,"verdict":"error"},
                {"name":"s/c","duration_ms":300,"verdict":"fail"}]}"#,
        )
        .unwrap();
        let timings = durations_from_run(&path).unwrap();
        assert_eq!(
            timings,
            [("s/a".to_string(), 1200), ("s/c".to_string(), 300)].into()
        );
        // The run folder works too.
        assert_eq!(durations_from_run(dir.path()).unwrap(), timings);

        let err = durations_from_run(&dir.path().join("nope.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.json"), "{err}");
        std::fs::write(&path, b"{").unwrap();
        let err = durations_from_run(&path).unwrap_err().to_string();
        assert!(err.contains("run.json"), "{err}");
    }
}
