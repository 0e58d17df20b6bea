//! The command line: every subcommand and flag, with the texts `--help` prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use bootgate::qemu::accel::AccelChoice;
use bootgate::report::terminal::Verbosity;
use bootgate::runner::options::DEFAULT_OUT_DIR;
use bootgate::runner::shard::Shard;
use bootgate::suite;

/// `--unsandboxed-builds`, the same on every command that builds drivers.
const UNSANDBOXED_BUILDS: &str =
    "Build `source` drivers directly on this host instead of in the build sandbox. \
A Kbuild file runs arbitrary commands, so bootgate builds in a bubblewrap sandbox: no network, \
nothing of the host writable, no host file but the toolchain, the kernel headers and the driver \
source. Where that sandbox cannot be made (bubblewrap missing, user namespaces refused, as in \
many containers), bootgate refuses to build; this flag builds anyway, as you, with your network \
and every file you can read or write (keys, the bootgate cache, other results): only for suites \
you trust. Recorded in run.json; `rerun` never takes it from there, pass it again.";

#[derive(Parser)]
#[command(
    name = "bootgate",
    version,
    about = "Boot-gate kernel drivers and content updates: boot VM images under QEMU, run scenario suites, record crashes, hangs and boot times as pass/fail gates.",
    after_help = "Exit codes:\n  0    every scenario passed (flaky ones included)\n  1    some scenario failed: the product failed a gate\n  2    usage or suite error (bad flag, typo in a suite, unknown image)\n  3    infrastructure error: QEMU missing or died, image build failed, results not writable\n  130  interrupted (Ctrl-C / SIGTERM); results written so far are kept\n\nQuick start:\n  bootgate run scenarios/demo          run the demo suite (builds the demo image on first use)\n  bootgate doctor                      check QEMU, accelerator, image cache\n\nEnvironment: BOOTGATE_QEMU, BOOTGATE_QEMU_IMG, BOOTGATE_BWRAP (binaries), BOOTGATE_CACHE (image cache folder), BOOTGATE_SIGN_KEY (private key that signs run attestations, as --sign-key)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a suite file, or every *.toml suite in a folder.
    ///
    /// A suite with a [drill] section is a recovery drill: one scenario per recovery
    /// path it names (the driver's boot-loop guard, a rescue boot, removal from the
    /// stopped VM's disk through a helper VM, a rollback through the agent), each
    /// gated by recovers_within, and a table of boots and seconds per path at the
    /// end (also in report.html and run.json). Folders leave drill and rollout suites
    /// out: name the file.
    ///
    /// Example: bootgate run scenarios/demo/drill-cf291.toml --jobs 2
    Run(RunArgs),
    /// Fuzz a driver's content file through the real load path in a booted guest.
    ///
    /// The driver is installed and loaded once and the VM saved; each VM restores
    /// that state and is kept for up to --restore-every executions, each writing a
    /// mutated content file (structure-aware, from the format description, plus blind
    /// byte mutations) and running the driver's reload. An input that crashes or hangs
    /// a kept guest is replayed alone from the saved state before anything is
    /// reported. Crashes are told apart by title, each minimized and saved with its evidence;
    /// the output folder gets report.json and a regression suite for `bootgate run`.
    /// Exit 1 when a crash was found, 0 when none.
    ///
    /// Example:
    ///   bootgate fuzz-content scenarios/demo/suite.toml --driver demo_sensor \
    ///     --format scenarios/demo/content/format.toml \
    ///     --seed scenarios/demo/content/good.content --time 10m
    FuzzContent(FuzzArgs),
    /// A staged-rollout gate over the rings of a suite's [rollout] section.
    ///
    /// The suite's scenarios run ring by ring (canary first); a ring is promoted only
    /// when it is clean, and the first that is not halts the rollout with its
    /// evidence. Each target is a full run in OUT/<run-id>/<ring>/<target>/;
    /// rollout.json has every ring's outcome and the total gate time. Exit 0 when
    /// every ring promoted, 1 when the product halted it, 3 on infrastructure trouble.
    ///
    /// Example: bootgate rollout scenarios/demo/rollout-good.toml
    Rollout(RolloutArgs),
    /// Rerun scenarios of a finished run with the same inputs and settings, into a new
    /// run. Refuses, naming the file, if any input changed since.
    Rerun(RerunArgs),
    /// Recheck a run folder against its manifest.json and attestation.intoto.jsonl:
    /// names every file missing, altered or added since the run, and inputs that
    /// changed. Exit 1 if any.
    ///
    /// With --key, also checks that the attestation is signed by that key (and fails
    /// on an unsigned one); without, the digests are checked and the signature is
    /// not. docs/attestation.md says how to check it without bootgate.
    Verify {
        run_dir: PathBuf,
        /// The signer's public key (PEM, the .pub file of `bootgate keygen`).
        #[arg(long, value_name = "PUBKEY")]
        key: Option<PathBuf>,
    },
    /// Make an Ed25519 key pair for signing run attestations: PREFIX.key (private,
    /// PEM PKCS#8, mode 0600) and PREFIX.pub (public, PEM SubjectPublicKeyInfo).
    /// Never overwrites a file.
    ///
    /// Sign with `bootgate run --sign-key PREFIX.key` (or BOOTGATE_SIGN_KEY=PREFIX.key);
    /// check with `bootgate verify RUN_DIR --key PREFIX.pub`. Keep the .key secret
    /// (a CI secret); hand the .pub to whoever verifies.
    Keygen {
        /// Where the pair goes: PREFIX.key and PREFIX.pub.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print a run's summary and each failing scenario's crash title and excerpt.
    Show { run_dir: PathBuf },
    /// Regenerate a run's report.html from its run.json (and refresh manifest.json,
    /// which lists it).
    Report { run_dir: PathBuf },
    /// Join the run folders of CI shards (`run --shard K/N`) into one run: run.json,
    /// junit.xml, report.html and manifest.json over every scenario.
    Merge(MergeArgs),
    /// List the scenarios of a suite file or folder without running them.
    List { path: PathBuf },
    /// Build or inspect images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Check the host: QEMU binaries and version, qemu-img, accelerator, firmware,
    /// free disk, image cache. Each line says ok or what to do.
    ///
    /// With --image, boot that image once and check what bootgate needs inside it:
    /// the guest agent and its commands, panic reporting (pvpanic), crash settings,
    /// and for Windows crash dumps, test signing, recovery, pvpanic and fwcfg drivers.
    Doctor(DoctorArgs),
    /// Repair a Windows VM's disk offline, and copy its crash evidence out.
    ///
    /// A helper VM (the built-in ntfs-helper image: Linux with ntfs-3g) gets the
    /// disk as its second disk, mounts the NTFS volume that holds \Windows\System32,
    /// looks paths up without case as Windows does, deletes what --remove names,
    /// writes what --put names, copies the minidumps, the memory dump's header and
    /// the System event log to --collect, unmounts and checks the volume (ntfsfix -n).
    /// Needs no privileges on the host and nothing Windows.
    ///
    /// The disk is never written unless --in-place: the changes go into a new qcow2
    /// overlay on it (printed at the end), which you boot instead of the disk, or
    /// merge into it with `qemu-img commit OVERLAY`. Paths are Windows paths (quote
    /// them for the shell): C:\..., \... or %SystemRoot%\...; the file name of a
    /// --remove may hold * and ?. Exit 0 done, 1 a --remove matched nothing, 2 bad
    /// input, 3 the helper or the host failed.
    #[command(
        after_long_help = "Example (the 19 July 2024 Channel File 291 fix):\n  bootgate offline --disk vm.qcow2 \\\n    --remove 'C:\\Windows\\System32\\drivers\\CrowdStrike\\C-00000291*.sys' \\\n    --collect evidence/"
    )]
    Offline(OfflineArgs),
}

/// `bootgate run`'s arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Suite file or folder of suite files.
    pub path: PathBuf,
    /// Results folder; each run lands in DIR/<run-id>, and DIR/latest points at it.
    #[arg(long, short, default_value = DEFAULT_OUT_DIR, value_name = "DIR")]
    pub out: PathBuf,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Keep each VM's disk overlay in the results (system.qcow2).
    #[arg(long, short)]
    pub keep: bool,
    /// VMs to run at once (default: one per core, as free memory allows; at most 64).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Retry a scenario that ended in `error` (infrastructure trouble) up to N more
    /// times (at most 10). Every attempt's evidence is kept (<scenario>.attempt-K folders).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    /// With --retries, retry `fail` too. A pass after a failure is `flaky`, never a
    /// plain pass: it is reported as such everywhere.
    #[arg(long, requires = "retries")]
    pub retry_failures: bool,
    /// You vouch for the suite: let it (and its image manifest) name files outside
    /// its own folder: an image elsewhere, driver sources, content files. By default
    /// every path must stay in the naming file's folder (no absolute path, `..` or
    /// symlink out), so a suite from elsewhere cannot copy a host file into the guest
    /// and the results (docs/security.md).
    #[arg(long)]
    pub allow_outside_paths: bool,
    #[arg(long, help = UNSANDBOXED_BUILDS)]
    pub unsandboxed_builds: bool,
    /// Run only scenarios whose "suite/scenario" name contains this text (repeatable;
    /// like cargo test's FILTER).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    /// Leave out scenarios whose name contains this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub skip: Vec<String>,
    /// --only and --skip match whole "suite/scenario" names.
    #[arg(long)]
    pub exact: bool,
    /// Run only the scenarios marked `ignore = true`.
    #[arg(long, conflicts_with = "include_ignored")]
    pub ignored: bool,
    /// Run the scenarios marked `ignore = true` too.
    #[arg(long)]
    pub include_ignored: bool,
    /// Run only shard K of N (1-based; a CI index counting from 0 needs INDEX+1).
    /// Deterministic: every machine computes the same split.
    #[arg(long, value_name = "K/N", value_parser = clap::value_parser!(Shard))]
    pub shard: Option<Shard>,
    /// An earlier run.json (or run folder) whose durations balance the shards and
    /// order the queue longest first.
    #[arg(long, value_name = "RUN_JSON")]
    pub shard_timings: Option<PathBuf>,
    /// Print the selected scenario names (after --only and --shard), run nothing.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub signing: SignArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Signing the run's attestation, the same on every command that writes run folders.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Sign the run's attestation.intoto.jsonl (a DSSE envelope, Ed25519) with this
    /// private key: PEM PKCS#8, as `bootgate keygen` writes it. Default: the file
    /// named by BOOTGATE_SIGN_KEY; neither: the attestation is written unsigned.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

/// How much the terminal shows.
#[derive(clap::Args)]
pub struct OutputArgs {
    /// Print only failures and the summary.
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print every step and boot as it happens.
    #[arg(long, short)]
    pub verbose: bool,
}

impl OutputArgs {
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }
}

/// `bootgate rerun`'s arguments.
#[derive(clap::Args)]
pub struct RerunArgs {
    /// The run folder (e.g. results/latest).
    pub run_dir: PathBuf,
    /// Scenario names ("suite/scenario"); all of the run's when none.
    pub scenarios: Vec<String>,
    /// Results folder for the new run (default: the one holding RUN_DIR).
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Needed when the original run used --allow-outside-paths: a run.json (perhaps
    /// from someone else) cannot grant that permission by itself. Grants no more
    /// than the original run had.
    #[arg(long)]
    pub allow_outside_paths: bool,
    #[arg(long, help = UNSANDBOXED_BUILDS)]
    pub unsandboxed_builds: bool,
    #[command(flatten)]
    pub signing: SignArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `bootgate merge`'s arguments.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// Shard run folders (e.g. shard-1/latest shard-2/latest ...).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Results folder for the merged run.
    #[arg(long, short, default_value = DEFAULT_OUT_DIR, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub signing: SignArgs,
}

/// `bootgate offline`'s arguments.
#[derive(clap::Args)]
pub struct OfflineArgs {
    /// The Windows VM's disk (qcow2 or raw). Not written unless --in-place.
    #[arg(long, value_name = "DISK")]
    pub disk: PathBuf,
    /// The Windows image manifest (image.toml), for its %SystemRoot% (guest.system_root),
    /// dump paths and helper image (guest.offline_helper). Without it: C:\Windows,
    /// %SystemRoot%\Minidump, %SystemRoot%\MEMORY.DMP and the built-in ntfs-helper.
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// A file to delete, as a Windows path; * and ? allowed in the file name. Repeatable.
    #[arg(long, value_name = "WINPATH")]
    pub remove: Vec<String>,
    /// HOST_FILE=WINPATH: write a host file at a Windows path (a content file put
    /// back); missing folders are created. Repeatable.
    #[arg(long, value_name = "HOST_FILE=WINPATH")]
    pub put: Vec<String>,
    /// Copy the evidence here (created): Minidump/*.dmp, MEMORY.DMP.header (the
    /// first 8 KiB, which name the bugcheck), System.evtx, offline.json (what was
    /// done) and helper-vm/ (the helper's console and QEMU logs). Evidence is copied
    /// before anything is deleted.
    #[arg(long, value_name = "OUTDIR")]
    pub collect: Option<PathBuf>,
    /// Edit this partition (1-based; 0: a disk that is one NTFS volume) instead of
    /// the NTFS volume holding %SystemRoot%\System32: for a disk with two Windows,
    /// or to prepare a volume that has no Windows folder yet.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Write the changes into DISK itself (qcow2 only). Stop the VM first.
    #[arg(long, conflicts_with = "overlay")]
    pub in_place: bool,
    /// Where the overlay with the changes goes (default: DISK-STEM.offline.qcow2 in
    /// the current folder; never overwritten).
    #[arg(long, value_name = "PATH")]
    pub overlay: Option<PathBuf>,
    /// Accelerator for the helper VM: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
}

/// `bootgate doctor`'s arguments.
#[derive(clap::Args)]
pub struct DoctorArgs {
    /// An image manifest (image.toml, or its folder) to boot and check.
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Accelerator for the image check: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Let the manifest name files outside its own folder (its disk elsewhere, say),
    /// as `run --allow-outside-paths` does: by default an image's files must be in
    /// its folder, bootgate's image cache, or the host's firmware and header folders.
    #[arg(long, requires = "image")]
    pub allow_outside_paths: bool,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build a built-in image (demo, debian12, ntfs-helper) into the per-user cache; reuses it when nothing changed.
    Build {
        /// Image name: demo (no root needed), debian12 (Debian 12 with systemd; needs root) or ntfs-helper (the demo with ntfs-3g: the Windows offline helper).
        name: String,
        /// Rebuild even if the cache holds an up-to-date image.
        #[arg(long)]
        force: bool,
    },
}

/// `bootgate fuzz-content`'s arguments.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// The suite file that defines the driver ([driver.NAME] with source or module,
    /// content_file and reload).
    pub suite: PathBuf,
    /// The driver to fuzz (a [driver.NAME] of the suite).
    #[arg(long, value_name = "NAME")]
    pub driver: String,
    /// Module parameters to load it with ("fixed=0").
    #[arg(long, default_value = "", value_name = "PARAMS")]
    pub params: String,
    /// The content format description (fields, counts, lengths), e.g. format.toml.
    #[arg(long, value_name = "FILE")]
    pub format: PathBuf,
    /// A starting input (repeatable); default: the format's [[seed]] files.
    #[arg(long = "seed", value_name = "FILE")]
    pub seeds: Vec<PathBuf>,
    /// Stop after this long (30s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = suite::parse_duration, value_name = "DURATION")]
    pub time: std::time::Duration,
    /// Stop after this many executions (minimizing not counted; at most 100 million).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub execs: Option<u64>,
    /// Stop once N unique crashes are found (CI: prove the bug is findable).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// VMs at once (default: one per core, as free memory allows; at most 64).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Output folder; each run lands in DIR/<run-id>, DIR/latest points at it.
    #[arg(long, short, default_value = "results/fuzz", value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the mutator's random numbers (same seed, same inputs).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub rng_seed: u64,
    /// Restore the VM from the driver-loaded state every K executions (and after any
    /// crash or hang); in between, each input is reloaded in the same guest. 1
    /// restores before every execution. A crash seen in a kept guest is reported
    /// only once its input, replayed alone from the saved state, crashes again.
    #[arg(long, value_name = "K", default_value_t = bootgate::fuzz::DEFAULT_RESTORE_EVERY,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub restore_every: u32,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Let the suite name files outside its own folder.
    #[arg(long)]
    pub allow_outside_paths: bool,
    #[arg(long, help = UNSANDBOXED_BUILDS)]
    pub unsandboxed_builds: bool,
}

/// `bootgate rollout`'s arguments.
#[derive(clap::Args)]
pub struct RolloutArgs {
    /// A suite file with a [rollout] section.
    pub suite: PathBuf,
    /// Results folder; each rollout lands in DIR/<run-id>, DIR/latest points at it.
    #[arg(long, short, default_value = "results/rollout", value_name = "DIR")]
    pub out: PathBuf,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// VMs at once within a target's run (default: one per core, as memory allows; at most 64).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Let the suite name files outside its own folder.
    #[arg(long)]
    pub allow_outside_paths: bool,
    #[arg(long, help = UNSANDBOXED_BUILDS)]
    pub unsandboxed_builds: bool,
    #[command(flatten)]
    pub signing: SignArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootgate::model::DriverBuilds;
    use bootgate::runner::{IgnoredPolicy, RunOptions};

    /// `RunOptions::default()` is what `bootgate run PATH` does without flags, so the
    /// library and the command line cannot drift apart on what "default" means.
    #[test]
    fn run_flag_defaults_are_the_run_options_defaults() {
        let Command::Run(args) = Cli::parse_from(["bootgate", "run", "suite.toml"]).command else {
            panic!("parsed as another command");
        };
        let defaults = RunOptions::default();
        assert_eq!(args.out, defaults.out_dir);
        assert_eq!(super::super::jobs(args.jobs), defaults.jobs);
        assert_eq!(args.accel, defaults.accel);
        assert_eq!(args.keep, defaults.keep);
        assert_eq!(args.retries, defaults.retries);
        assert_eq!(args.retry_failures, defaults.retry_failures);
        assert_eq!(
            suite::PathPolicy::allowing_outside(args.allow_outside_paths),
            defaults.path_policy
        );
        assert_eq!(
            DriverBuilds::unsandboxed_if(args.unsandboxed_builds),
            defaults.driver_builds
        );
        assert_eq!(args.only, defaults.only);
        assert_eq!(args.skip, defaults.skip);
        assert_eq!(args.exact, defaults.exact);
        assert!(!args.ignored && !args.include_ignored);
        assert_eq!(defaults.ignored, IgnoredPolicy::Skip);
        assert_eq!(args.shard, defaults.shard);
        assert!(args.shard_timings.is_none() && defaults.timings_file.is_none());
        assert!(defaults.expected_ms.is_empty() && defaults.target.is_none());
        assert!(defaults.required_inputs.is_none());
    }

    /// Every command that builds drivers takes `--unsandboxed-builds`, and none
    /// turns the sandbox off without it.
    #[test]
    fn every_building_command_takes_the_unsandboxed_builds_flag() {
        let fuzz = [
            "fuzz-content",
            "s.toml",
            "--driver",
            "d",
            "--format",
            "f.toml",
        ];
        let commands: [&[&str]; 4] = [
            &["run", "s.toml"],
            &["rerun", "results/latest"],
            &["rollout", "s.toml"],
            &fuzz,
        ];
        for command in commands {
            for (extra, expected) in [(None, false), (Some("--unsandboxed-builds"), true)] {
                let argv: Vec<&str> = ["bootgate"]
                    .into_iter()
                    .chain(command.iter().copied())
                    .chain(extra)
                    .collect();
                let flag = match Cli::parse_from(&argv).command {
                    Command::Run(a) => a.unsandboxed_builds,
                    Command::Rerun(a) => a.unsandboxed_builds,
                    Command::Rollout(a) => a.unsandboxed_builds,
                    Command::FuzzContent(a) => a.unsandboxed_builds,
                    _ => panic!("{argv:?} parsed as another command"),
                };
                assert_eq!(flag, expected, "{argv:?}");
            }
        }
    }

    /// Every command that writes run folders (and so attestations) takes
    /// `--sign-key`; without it none signs (BOOTGATE_SIGN_KEY is read later, in `cli`).
    #[test]
    fn every_command_writing_run_folders_takes_the_sign_key_flag() {
        let commands: [&[&str]; 4] = [
            &["run", "s.toml"],
            &["rerun", "results/latest"],
            &["rollout", "s.toml"],
            &["merge", "a", "b"],
        ];
        for command in commands {
            for extra in [None, Some(["--sign-key", "ci.key"])] {
                let argv: Vec<&str> = ["bootgate"]
                    .into_iter()
                    .chain(command.iter().copied())
                    .chain(extra.into_iter().flatten())
                    .collect();
                let key = match Cli::parse_from(&argv).command {
                    Command::Run(a) => a.signing.sign_key,
                    Command::Rerun(a) => a.signing.sign_key,
                    Command::Rollout(a) => a.signing.sign_key,
                    Command::Merge(a) => a.signing.sign_key,
                    _ => panic!("{argv:?} parsed as another command"),
                };
                assert_eq!(key, extra.map(|_| PathBuf::from("ci.key")), "{argv:?}");
            }
        }
    }

    /// clap's own consistency checks (conflicting or missing argument names).
    #[test]
    fn the_command_line_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
