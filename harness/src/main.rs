//! The `bootgate` command: parses arguments, runs the command, exits with the code
//! its outcome stands for. The commands themselves live in `cli/`.

mod cli;

use clap::Parser;

use cli::args::{Cli, Command, ImageCommand};
use cli::{fuzz, host, offline, results, rollout, run};

fn main() -> std::process::ExitCode {
    // The clock `-v`'s phases and run.json's timings count from.
    bootgate::model::timings::process_start();
    let parsed = match Cli::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => return cli::exit::parse_error(&e).into(),
    };
    let exit = match parsed.command {
        Command::Run(args) => run::run(args),
        Command::List { path } => run::list(&path),
        Command::Rerun(args) => run::rerun(args),
        Command::Verify { run_dir, key } => results::verify(&run_dir, key.as_deref()),
        Command::Keygen { out } => results::keygen(&out),
        Command::Show { run_dir } => results::show(&run_dir),
        Command::Report { run_dir } => results::report(&run_dir),
        Command::Merge(args) => results::merge(args),
        Command::FuzzContent(args) => fuzz::fuzz_content(args),
        Command::Rollout(args) => rollout::rollout(args),
        Command::Image {
            command: ImageCommand::Build { name, force },
        } => host::image_build(&name, force),
        Command::Doctor(args) => host::doctor(args),
        Command::Offline(args) => offline::offline(args),
    };
    exit.into()
}
