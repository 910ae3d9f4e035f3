//! `cargo xtask`: this repository's automation. See `docs/ARCHITECTURE.md` for the codemap.

pub mod bench;
pub mod build_cache;
pub mod config;
pub mod db;
pub mod dbdoc;
pub mod env_file;
pub mod error;
pub mod flags;
pub mod git;
pub mod mask;
pub mod migrations;
pub mod naming;
pub mod pg;
pub mod proc;
pub mod schema;
pub mod sql;
pub mod term;
pub mod test_harness;
pub mod time;

use anyhow::Result;
use clap::Parser;

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> i32 {
    entry(run)
}

/// The entry routine of both binaries (`xtask`, and `xtask-aws`, which runs the AWS verbs with
/// the same command line): stdout's broken pipe, the signal handlers, parsing, and the one-line
/// error report with its exit code.
pub fn entry(run: impl FnOnce(flags::Xtask) -> Result<()>) -> i32 {
    // `cargo xtask db schema-diff … | head -1`: a reader of stdout that leaves ends us quietly
    // (exit 128+SIGPIPE, as a filter ends), not with `println!`'s panic. Stdout is data, written
    // after the work is done. SIGPIPE itself stays ignored: the default action would also kill us
    // when a child we feed (psql on stdin) exits early, before cleanup and the error message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        if msg.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(128 + libc::SIGPIPE);
        }
        default_hook(info);
    }));
    proc::install_signal_handlers();
    let flags = match flags::Xtask::try_parse() {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { error::EXIT_ERROR } else { 0 };
        }
    };
    match run(flags) {
        Ok(()) => 0,
        Err(err) => {
            let report = error::report(&err);
            if !report.line.is_empty() {
                eprintln!("{}", report.line);
            }
            report.code
        }
    }
}

fn run(flags: flags::Xtask) -> Result<()> {
    match flags.command {
        flags::Command::Db(db) => db::run(db),
        flags::Command::Test(t) => test_harness::run(t),
        flags::Command::Bench(flags::Bench::Worktree(b)) => bench::worktree(b),
        flags::Command::Bench(flags::Bench::SchemaDiff(b)) => bench::schema_diff(b),
        flags::Command::Bench(flags::Bench::Rehearse(b)) => bench::rehearse::run(b),
        flags::Command::Bench(flags::Bench::Mask(b)) => bench::mask::run(b),
        flags::Command::Completions(c) => {
            clap_complete::generate(c.shell, &mut flags::command(), "xtask", &mut std::io::stdout());
            Ok(())
        }
    }
}
