//! A rollout target: one machine configuration a suite runs on, as the suite names it
//! and as run.json records it.

use serde::Deserialize;

/// One machine configuration: an image (default: the suite's) with overrides.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Names the target in results (default: derived from the overrides).
    pub name: Option<String>,
    pub image: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    /// Extra kernel parameters.
    pub append: Option<String>,
}

impl Target {
    /// A name for folders and reports: the given one, else built from the overrides.
    pub(crate) fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut parts = vec![self.image.clone().unwrap_or_else(|| "default".into())];
        if let Some(c) = self.cpus {
            parts.push(format!("{c}cpu"));
        }
        if let Some(m) = self.memory_mib {
            parts.push(format!("{m}mib"));
        }
        if self.append.is_some() {
            parts.push("append".into());
        }
        let label: String = parts
            .join("-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        // A plain folder name (the suite's name rule): a letter or digit first, at
        // most 64 characters, whatever the image path was.
        let label: String = label
            .trim_start_matches(['-', '_'])
            .chars()
            .take(64)
            .collect();
        if label.is_empty() {
            "target".into()
        } else {
            label
        }
    }
}
