//! The terminal: steps with their timings, and questions before anything is destroyed.

use std::time::Instant;

use anyhow::Result;

use crate::error::fail;
use crate::{proc, time};

/// Prints a step's start, runs it, prints how long it took.
pub fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    proc::check_interrupt()?;
    eprintln!("▸ {what}");
    let start = Instant::now();
    let out = f()?;
    eprintln!("  done in {}", time::elapsed(start.elapsed()));
    Ok(out)
}

/// Asks before destroying something. `yes` answers for the user; without a terminal to ask on,
/// refuses. Returns whether to go ahead.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
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
