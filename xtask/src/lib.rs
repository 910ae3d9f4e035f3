//! `cargo xtask`: this repository's automation. See `docs/ARCHITECTURE.md` for the codemap.

pub mod bench;
pub mod build_cache;
pub mod config;
pub mod db;
pub mod dbdoc;
pub mod env_file;
pub mod error;
pub mod flags;
pub mod flock;
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

use std::io::Write as _;
use std::path::{Path, PathBuf};

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
        if msg.is_some_and(|m| {
            (m.starts_with("failed printing to stdout") || m.starts_with("failed printing to stderr"))
                && m.contains("Broken pipe")
        }) {
            std::process::exit(128 + libc::SIGPIPE);
        }
        default_hook(info);
        // A panic is a bug of ours, whatever the input: say what ran and where to report it.
        let args: Vec<String> = std::env::args().skip(1).collect();
        let _ = writeln!(std::io::stderr(), "{}", panic_report(&args, git_head().as_deref()));
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
        flags::Command::Bench(flags::Bench::Dump(b)) => bench::dump::run(b),
        flags::Command::Completions(c) => {
            clap_complete::generate(c.shell, &mut flags::command(), "xtask", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// What a panic adds to the default message: what was running (the command line, secrets
/// redacted), which xtask (version, the checkout's commit), and where to report it.
fn panic_report(args: &[String], commit: Option<&str>) -> String {
    let shown: Vec<String> = args.iter().map(|a| redact(a)).collect();
    let tracker = match env!("CARGO_PKG_REPOSITORY") {
        "" => "this repository's issue tracker".to_string(),
        repo => format!("{}/issues", repo.trim_end_matches('/')),
    };
    format!(
        "xtask {} (commit {}) panicked while running `cargo xtask {}`: this is a bug in the xtask, not in your input; please report it at {tracker}, with this message (secrets in it are redacted)",
        env!("CARGO_PKG_VERSION"),
        commit.unwrap_or("unknown"),
        shown.join(" ")
    )
}

/// One argument with its secrets out: a URL's password, the value of a `KEY=VALUE` whose key
/// names a secret (`password`, `secret`, `token`, `key`).
fn redact(arg: &str) -> String {
    if arg.contains("://") {
        return pg::PgUrl::parse(arg).map(|u| u.redacted()).unwrap_or_else(|_| "(a URL)".into());
    }
    // `--set=mask.key=…` as well as `mask.key=…`: the first `=` after a secret's name.
    for (at, _) in arg.match_indices('=') {
        let key = arg[..at].to_ascii_lowercase();
        if ["password", "secret", "token", "key"].iter().any(|s| key.contains(s)) {
            return format!("{}=***", &arg[..at]);
        }
    }
    arg.to_string()
}

/// The commit checked out where this xtask runs (read from the files of `.git`: no program runs
/// inside a panic), abbreviated: the checkout whose `target/` holds this binary, else the one
/// the command runs in. Found at run time, never from a compile-time path: a binary a new
/// worktree's `target/` was seeded with was built in another checkout (see `build_cache.rs`).
fn git_head() -> Option<String> {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    [exe, cwd].into_iter().flatten().find_map(|start| git_head_above(&start))
}

/// The commit of the git checkout at `start` or above it (the nearest `.git`).
fn git_head_above(start: &Path) -> Option<String> {
    let root = start.ancestors().find(|d| d.join(".git").exists())?;
    let mut git = root.join(".git");
    if git.is_file() {
        // A linked worktree: `gitdir: …`.
        let text = std::fs::read_to_string(&git).ok()?;
        git = root.join(text.strip_prefix("gitdir:")?.trim());
    }
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let sha = match head.trim().strip_prefix("ref: ") {
        None => head.trim().to_string(),
        Some(name) => {
            let common = std::fs::read_to_string(git.join("commondir"))
                .map(|c| git.join(c.trim()))
                .unwrap_or_else(|_| git.clone());
            let loose = |dir: &PathBuf| std::fs::read_to_string(dir.join(name)).ok();
            match loose(&git).or_else(|| loose(&common)) {
                Some(s) => s.trim().to_string(),
                None => std::fs::read_to_string(common.join("packed-refs"))
                    .ok()?
                    .lines()
                    .find_map(|l| l.strip_suffix(name).map(|sha| sha.trim().to_string()))?,
            }
        }
    };
    Some(sha.chars().take(12).collect()).filter(|s: &String| s.len() == 12 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_says_what_ran_without_secrets_and_where_to_report_it() {
        let args: Vec<String> = [
            "db",
            "rehearse",
            "--from",
            "postgres://u:hunter2@127.0.0.1/db",
            "--set",
            "mask.key=s3cr3t-value",
            "--set=api_token=abc=def",
            "--keep",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let text = panic_report(&args, Some("0123456789ab"));
        assert!(!text.contains("hunter2") && !text.contains("s3cr3t") && !text.contains("abc"), "{text}");
        assert!(text.contains("`cargo xtask db rehearse --from postgres://u:***@127.0.0.1/db --set mask.key=*** --set=api_token=*** --keep`"), "{text}");
        assert!(text.contains(concat!("xtask ", env!("CARGO_PKG_VERSION"), " (commit 0123456789ab)")), "{text}");
        assert!(text.contains("please report it at"), "{text}");
        // This checkout's commit, read without running git.
        assert!(git_head().is_some_and(|c| c.len() == 12), "{:?}", git_head());
    }

    #[test]
    fn the_commit_is_the_checkout_s_found_at_run_time() {
        let dir = std::env::temp_dir().join(format!("xtask-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (main, linked) = (dir.join("main"), dir.join("linked"));
        let git = main.join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::create_dir_all(git.join("worktrees/linked")).unwrap();
        std::fs::create_dir_all(main.join("target/debug")).unwrap();
        std::fs::create_dir_all(linked.join("target/debug")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(git.join("refs/heads/main"), "aaaaaaaaaaaa0000000000000000000000000000\n").unwrap();
        std::fs::write(git.join("packed-refs"), "bbbbbbbbbbbb0000000000000000000000000000 refs/heads/feature\n")
            .unwrap();
        std::fs::write(git.join("worktrees/linked/HEAD"), "ref: refs/heads/feature\n").unwrap();
        std::fs::write(git.join("worktrees/linked/commondir"), "../..\n").unwrap();
        std::fs::write(linked.join(".git"), format!("gitdir: {}\n", git.join("worktrees/linked").display())).unwrap();
        assert_eq!(git_head_above(&main.join("target/debug")).as_deref(), Some("aaaaaaaaaaaa"));
        // A linked worktree (its HEAD in the main repository's worktrees/, its branch packed).
        assert_eq!(git_head_above(&linked.join("target/debug")).as_deref(), Some("bbbbbbbbbbbb"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
