//! The terminal: whether stdout takes colour, progress lines (`announce`, and `step` with its
//! timing), and questions before anything is destroyed. Nothing else asks whether a descriptor
//! is a terminal or writes a progress line.

use std::time::Instant;

use anyhow::Result;

use crate::error::fail;
use crate::{proc, time};

/// Whether standard output is a terminal that takes colour (`NO_COLOR` unset).
pub fn colour_on_stdout() -> bool {
    // SAFETY: isatty has no preconditions.
    std::env::var_os("NO_COLOR").is_none() && unsafe { libc::isatty(1) } == 1
}

/// Announces what is starting (`▸ what`, on stderr): every progress line is written here.
pub fn announce(what: impl std::fmt::Display) {
    eprintln!("▸ {what}");
}

/// Prints a step's start, runs it, prints how long it took.
pub fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    proc::check_interrupt()?;
    announce(what);
    let start = Instant::now();
    let out = f()?;
    eprintln!("  done in {}", time::elapsed(start.elapsed()));
    Ok(out)
}

/// What the command line answered in advance about a destructive step: `-y` (yes, without
/// asking) and `--dry-run` (no, but say what it would have been). `--dry-run` wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer {
    pub yes: bool,
    pub dry_run: bool,
}

impl Answer {
    pub fn new(yes: bool, dry_run: bool) -> Answer {
        Answer { yes, dry_run }
    }
}

/// Asks before destroying something; every verb that drops or deletes asks here, so that one
/// place decides. `--dry-run` says what would have been asked and answers no, whatever `-y` says;
/// else `-y` answers yes; else the user is asked, and without a terminal to ask on it refuses.
/// Returns whether to go ahead.
pub fn confirm(question: &str, answer: Answer) -> Result<bool> {
    if answer.dry_run {
        eprintln!("--dry-run: would ask \"{question}\"; nothing is changed");
        return Ok(false);
    }
    if answer.yes {
        return Ok(true);
    }
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(0) } != 1 {
        return Err(fail(format!("{question} — no terminal to ask on"), "pass -y to confirm"));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
