//! Everything a command that boots guests does before its first VM starts: the
//! QEMU versions, the image manifests (with a rollout target's overrides), the
//! accelerator, saved ready states, candidate driver builds, the sha256 of every
//! input and the run folder. `run`, `fuzz-content` and `rollout` share these steps,
//! so a fix to one (a notice, an error's context) reaches all three.
//!
//! Long image and snapshot operations report progress as `Event::Notice`s through
//! the caller's emitter, never on stderr directly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::driver::{self, BuiltDriver, DriverError};
use super::folder::{self, FolderError};
use super::{RunError, RunOptions};
use crate::image::{self, ImageError, Manifest};
use crate::model::record::{DriverBuilds, FileHash, QemuInfo};
use crate::model::timings::Timings;
use crate::model::Emitter;
use crate::qemu::accel::{self, Accel, AccelChoice, AccelDecision};
use crate::qemu::snapshot::{self, SavedState, SnapshotError, StateSetup};
use crate::qemu::{self, QemuTools, ToolError};
use crate::suite::{self, Step, Suite, Target};
use crate::util::digest_cache::DigestCache;

/// The candidate drivers of one suite by name: built (or prebuilt), or why not.
/// A driver that cannot be built fails only the scenarios that use it.
pub(crate) type Drivers = BTreeMap<String, Result<BuiltDriver, String>>;

/// A fresh `out/<run-id>` folder.
#[derive(Debug, Clone)]
pub(crate) struct RunFolder {
    pub id: String,
    pub dir: PathBuf,
    /// The results folder it was created in (where `latest` lives).
    out: PathBuf,
}

impl RunFolder {
    pub(crate) fn create(out: &Path) -> Result<RunFolder, FolderError> {
        let (id, dir) = folder::create_run_dir(out)?;
        Ok(RunFolder {
            id,
            dir,
            out: out.to_path_buf(),
        })
    }

    /// Points `out/latest` at this folder.
    pub(crate) fn point_latest(&self) -> Result<(), FolderError> {
        folder::point_latest(&self.out, &self.id)
    }
}

/// The QEMU version, once both QEMU and qemu-img answered (kept for this host boot).
pub(crate) fn qemu_version(tools: &QemuTools) -> Result<String, ToolError> {
    let version = qemu::version_kept(&tools.system)?;
    qemu::version_kept(&tools.img)?;
    Ok(version)
}

/// Resolves a suite's image (or the target's, when it names one) and applies the
/// target's machine overrides. Image builds report progress as notices.
pub(crate) fn resolve_image(
    suite: &Suite,
    target: Option<&Target>,
    emitter: &Emitter,
) -> Result<Manifest, ImageError> {
    let reference = target
        .and_then(|t| t.image.clone())
        .unwrap_or_else(|| suite.image.clone());
    let policy = suite.path_policy;
    let mut manifest = image::resolve(&reference, suite.dir(), policy, &mut |text: &str| {
        emitter.notice(text)
    })?;
    if let Some(target) = target {
        apply_target(&mut manifest, target);
    }
    Ok(manifest)
}

/// A rollout target's machine overrides on a resolved image. The saved-state key
/// covers the command line, so each variant gets a state of its own.
fn apply_target(manifest: &mut Manifest, target: &Target) {
    if let Some(cpus) = target.cpus {
        manifest.machine.cpus = cpus;
    }
    if let Some(memory) = target.memory_mib {
        manifest.machine.memory_mib = memory;
    }
    if let Some(extra) = &target.append {
        manifest.boot.append = format!("{} {extra}", manifest.boot.append)
            .trim()
            .to_string();
    }
}

/// The accelerator for a run; `auto` probes with the image's kernel (what has been
/// seen to hang under KVM here), or with a boot sector when there is no image.
pub(crate) fn decide_accel(
    choice: AccelChoice,
    tools: &QemuTools,
    manifest: Option<&Manifest>,
) -> AccelDecision {
    let kernel = manifest.and_then(|m| m.boot.kernel.clone());
    accel::decide_kept(
        choice,
        &tools.system,
        kernel.as_deref(),
        &crate::cache::cache_root(),
    )
}

/// The image's saved state (after `setup`, if any), saving it first with one cold
/// boot when the cache has none; progress goes out as notices.
pub(crate) fn saved_state(
    manifest: &Manifest,
    tools: &QemuTools,
    accel: Accel,
    setup: Option<&StateSetup>,
    emitter: &Emitter,
) -> Result<SavedState, SnapshotError> {
    snapshot::ensure_saved_with(manifest, tools, accel, setup, &mut |text: &str| {
        emitter.notice(text)
    })
}

/// Builds (or takes prebuilt) one candidate driver against the image; the warning
/// of an unsandboxed build goes out as a notice.
pub(crate) fn build_driver(
    name: &str,
    def: &suite::Driver,
    suite: &Suite,
    manifest: &Manifest,
    builds: DriverBuilds,
    emitter: &Emitter,
) -> Result<BuiltDriver, DriverError> {
    driver::prepare(
        name,
        def,
        suite.dir(),
        manifest,
        builds,
        &mut |text: &str| emitter.notice(text),
    )
}

/// Every driver of a suite; each one that cannot be built is reported as a notice.
pub(crate) fn build_drivers(
    suite: &Suite,
    manifest: Option<&Manifest>,
    builds: DriverBuilds,
    emitter: &Emitter,
) -> Drivers {
    let mut drivers = Drivers::new();
    let Some(manifest) = manifest else {
        return drivers;
    };
    for (name, def) in &suite.drivers {
        let result =
            build_driver(name, def, suite, manifest, builds, emitter).map_err(|e| e.to_string());
        if let Err(why) = &result {
            emitter.notice(why);
        }
        drivers.insert(name.clone(), result);
    }
    drivers
}

/// The files whose sha256 a run records, each once, in the order first met; a
/// digest is the kept one while the file is unchanged (`util::digest_cache`).
struct Inputs {
    digests: DigestCache,
    seen: BTreeSet<PathBuf>,
    hashes: Vec<FileHash>,
    /// What each file is, by path: the attestation names inputs by kind.
    kinds: BTreeMap<String, String>,
}

impl Inputs {
    fn new(digests: DigestCache) -> Inputs {
        Inputs {
            digests,
            seen: BTreeSet::new(),
            hashes: Vec::new(),
            kinds: BTreeMap::new(),
        }
    }

    fn add_kind(&mut self, file: &Path, kind: InputKind) -> Result<(), RunError> {
        if !self.seen.insert(file.to_path_buf()) {
            return Ok(());
        }
        self.kinds
            .insert(file.display().to_string(), kind.as_str().to_string());
        let sha256 = self
            .digests
            .sha256(file)
            .map_err(|source| RunError::Results {
                path: file.to_path_buf(),
                source,
            })?;
        self.hashes.push(FileHash {
            path: file.display().to_string(),
            sha256,
        });
        Ok(())
    }
}

/// What an input file is to the run (run.json's `input_kinds`, the attestation's
/// `inputs[].kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    Suite,
    /// The image manifest and its disk.
    Image,
    /// A direct-boot kernel or initrd.
    Kernel,
    Firmware,
    /// A driver's module or its sources.
    Driver,
    Content,
    /// `--shard-timings`' run.json.
    Timings,
}

impl InputKind {
    fn as_str(self) -> &'static str {
        match self {
            InputKind::Suite => "suite",
            InputKind::Image => "image",
            InputKind::Kernel => "kernel",
            InputKind::Firmware => "firmware",
            InputKind::Driver => "driver",
            InputKind::Content => "content",
            InputKind::Timings => "timings",
        }
    }
}

/// The files a suite's scenarios depend on: the suite, its image's files, its
/// drivers (module and sources) and the content files it applies.
fn suite_inputs(
    suite: &Suite,
    manifest: Option<&Manifest>,
    drivers: Option<&Drivers>,
) -> Vec<(PathBuf, InputKind)> {
    let mut files = vec![(suite.path.clone(), InputKind::Suite)];
    if let Some(m) = manifest {
        let boot = [&m.boot.kernel, &m.boot.initrd];
        let firmware = [&m.boot.uefi_code, &m.boot.uefi_vars];
        for file in m.input_files() {
            let is = |slots: &[&Option<PathBuf>]| slots.iter().any(|s| s.as_ref() == Some(&file));
            let kind = if is(&boot) {
                InputKind::Kernel
            } else if is(&firmware) {
                InputKind::Firmware
            } else {
                InputKind::Image
            };
            files.push((file, kind));
        }
    }
    for built in drivers.into_iter().flat_map(|d| d.values()).flatten() {
        files.push((built.module.clone(), InputKind::Driver));
        // A prebuilt module's separate debug file: triage's source lines come from it.
        if built.debug_file != built.module {
            files.push((built.debug_file.clone(), InputKind::Driver));
        }
        files.extend(built.sources.iter().map(|s| (s.clone(), InputKind::Driver)));
    }
    for scenario in &suite.scenarios {
        for step in &scenario.steps {
            if let Step::ApplyContent(apply) = step {
                files.push((suite.dir().join(&apply.file), InputKind::Content));
            }
        }
    }
    files
}

/// A rerun must use exactly the inputs of the run it repeats: refuse before any VM
/// starts if a suite, image, driver or content file is not the same.
fn check_required(inputs: &[FileHash], required: &[FileHash]) -> Result<(), RunError> {
    for input in inputs {
        match required.iter().find(|r| r.path == input.path) {
            Some(r) if r.sha256 == input.sha256 => {}
            Some(_) => return Err(RunError::InputChanged(input.path.clone())),
            None => return Err(RunError::InputNew(input.path.clone())),
        }
    }
    Ok(())
}

/// What `run` has ready once preparation is over, keyed by suite file.
#[derive(Default)]
pub(crate) struct Prepared {
    /// Why no scenario can start (QEMU or qemu-img missing): each ends `error`.
    pub qemu_problem: Option<String>,
    pub qemu: QemuInfo,
    pub manifests: BTreeMap<PathBuf, Manifest>,
    pub decision: Option<AccelDecision>,
    pub saved: BTreeMap<PathBuf, SavedState>,
    pub drivers: BTreeMap<PathBuf, Drivers>,
    pub inputs: Vec<FileHash>,
    /// What each input is, by path.
    pub input_kinds: BTreeMap<String, String>,
    /// How long each preparation phase took.
    pub timings: Timings,
}

impl Prepared {
    /// Prepares the selected scenarios of a run. QEMU missing is an infrastructure
    /// error for every scenario, not a usage error (the suite is fine, the host is
    /// not ready), so it is recorded rather than returned.
    pub(crate) fn for_run(
        selected: &[(&Suite, usize)],
        opts: &RunOptions,
        emitter: &Emitter,
    ) -> Result<Prepared, RunError> {
        let mut prepared = Prepared::default();
        let mut timings = Timings::default();
        match timings.time("tool versions", || qemu_version(&opts.tools)) {
            Err(problem) => prepared.qemu_problem = Some(problem.to_string()),
            // An empty shard runs nothing: no image, no accelerator probe.
            Ok(_) if selected.is_empty() => {}
            Ok(version) => {
                prepared.qemu.version = Some(version);
                timings.time("image manifests", || {
                    prepared.resolve_images(selected, opts, emitter)
                })?;
                let decision = timings.time("accelerator", || {
                    decide_accel(opts.accel, &opts.tools, prepared.manifests.values().next())
                });
                prepared.qemu.accel = Some(decision.accel.as_str().into());
                prepared.qemu.accel_notice = decision.notice.clone();
                timings.time("saved state lookup", || {
                    prepared.save_states(selected, &opts.tools, decision.accel, emitter)
                });
                prepared.decision = Some(decision);
            }
        }
        timings.time("driver builds", || {
            prepared.build_drivers(selected, opts.driver_builds, emitter)
        });
        timings.time("input hashing", || {
            prepared.digest_inputs(selected, opts.timings_file.as_deref())
        })?;
        prepared.timings = timings;
        if let Some(required) = &opts.required_inputs {
            check_required(&prepared.inputs, required)?;
        }
        Ok(prepared)
    }

    fn resolve_images(
        &mut self,
        selected: &[(&Suite, usize)],
        opts: &RunOptions,
        emitter: &Emitter,
    ) -> Result<(), RunError> {
        for (suite, _) in selected {
            if self.manifests.contains_key(&suite.path) {
                continue;
            }
            let manifest =
                resolve_image(suite, opts.target.as_ref(), emitter).map_err(|source| {
                    RunError::Image {
                        suite: suite.path.clone(),
                        source,
                    }
                })?;
            self.manifests.insert(suite.path.clone(), manifest);
        }
        Ok(())
    }

    /// Saved ready states for fast starts: one per image that a scenario will start
    /// from (not the cold-boot ones). A state that cannot be saved only costs time.
    fn save_states(
        &mut self,
        selected: &[(&Suite, usize)],
        tools: &QemuTools,
        accel: Accel,
        emitter: &Emitter,
    ) {
        for (suite, index) in selected {
            let Some(manifest) = self.manifests.get(&suite.path) else {
                continue;
            };
            // UEFI and TPM machines boot cold: see Manifest::supports_saved_state.
            if suite.scenarios[*index].cold_boot
                || self.saved.contains_key(&suite.path)
                || !manifest.ready.agent
                || !manifest.supports_saved_state()
            {
                continue;
            }
            match saved_state(manifest, tools, accel, None, emitter) {
                Ok(state) => {
                    self.saved.insert(suite.path.clone(), state);
                }
                Err(e) => emitter.notice(&format!(
                    "could not save a ready state of {} for fast starts ({e}); its scenarios boot cold",
                    manifest.name
                )),
            }
        }
    }

    /// Candidate drivers, built against each suite's image (or taken prebuilt).
    fn build_drivers(
        &mut self,
        selected: &[(&Suite, usize)],
        builds: DriverBuilds,
        emitter: &Emitter,
    ) {
        for (suite, _) in selected {
            if !self.drivers.contains_key(&suite.path) {
                let built = build_drivers(suite, self.manifests.get(&suite.path), builds, emitter);
                self.drivers.insert(suite.path.clone(), built);
            }
        }
    }

    /// The sha256 of every input: the timings file, then each suite's files.
    fn digest_inputs(
        &mut self,
        selected: &[(&Suite, usize)],
        timings_file: Option<&Path>,
    ) -> Result<(), RunError> {
        let mut inputs = Inputs::new(DigestCache::under(&crate::cache::cache_root()));
        if let Some(file) = timings_file {
            inputs.add_kind(file, InputKind::Timings)?;
        }
        for (suite, _) in selected {
            let manifest = self.manifests.get(&suite.path);
            for (file, kind) in suite_inputs(suite, manifest, self.drivers.get(&suite.path)) {
                inputs.add_kind(&file, kind)?;
            }
        }
        self.inputs = inputs.hashes;
        self.input_kinds = inputs.kinds;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(path: &str, sha256: &str) -> FileHash {
        FileHash {
            path: path.into(),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn a_rerun_refuses_changed_and_new_inputs() {
        let run = [hash("a", "1"), hash("b", "2")];
        assert!(check_required(&run[..1], &run).is_ok(), "a subset is fine");
        assert!(matches!(
            check_required(&[hash("a", "9")], &run),
            Err(RunError::InputChanged(p)) if p == "a"
        ));
        assert!(matches!(
            check_required(&[hash("c", "3")], &run),
            Err(RunError::InputNew(p)) if p == "c"
        ));
    }

    #[test]
    fn each_input_is_hashed_once_in_the_order_met() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let mut inputs = Inputs::new(DigestCache::under(dir.path()));
        for file in [&b, &a, &b] {
            inputs.add_kind(file, InputKind::Suite).unwrap();
        }
        let paths: Vec<&str> = inputs.hashes.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(paths, [b.to_str().unwrap(), a.to_str().unwrap()]);
        assert!(matches!(
            inputs.add_kind(&dir.path().join("missing"), InputKind::Suite),
            Err(RunError::Results { .. })
        ));
    }

    #[test]
    fn a_target_overrides_the_machine_and_extends_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["vmlinuz", "initrd.img", "system.qcow2"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let path = dir.path().join("image.toml");
        std::fs::write(&path, include_str!("../../../images/demo/image.toml")).unwrap();
        let mut manifest = Manifest::load(&path).unwrap();
        let before = manifest.boot.append.clone();
        let target = Target {
            cpus: Some(3),
            memory_mib: Some(384),
            append: Some("quiet".into()),
            ..Target::default()
        };
        apply_target(&mut manifest, &target);
        assert_eq!(manifest.machine.cpus, 3);
        assert_eq!(manifest.machine.memory_mib, 384);
        assert_eq!(manifest.boot.append, format!("{before} quiet"));
    }
}
