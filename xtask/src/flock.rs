//! Advisory locks on files (`flock(2)`): held by an open descriptor, released when it is closed
//! — by the process's exit too, whatever ends it. The one place the tool takes one: the
//! repository's turn to add a worktree, cargo's lock on a `target/` profile directory while it
//! is seeded, and waiting for either.

use std::fs::File;
use std::os::fd::AsRawFd;

use anyhow::Result;

use crate::proc;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Shared,
    Exclusive,
}

fn operation(mode: Mode) -> i32 {
    match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    }
}

/// Takes the lock if it is free, without waiting: whether it was taken.
pub fn try_lock(file: &File, mode: Mode) -> bool {
    // SAFETY: flock on a descriptor `file` owns.
    unsafe { libc::flock(file.as_raw_fd(), operation(mode) | libc::LOCK_NB) == 0 }
}

/// Waits for the lock. A signal (Ctrl-C) ends the wait with `Interrupted`; another failure is
/// an error.
pub fn lock(file: &File, mode: Mode) -> Result<()> {
    loop {
        // SAFETY: as above; blocking.
        if unsafe { libc::flock(file.as_raw_fd(), operation(mode)) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        proc::check_interrupt()?;
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(anyhow::Error::new(e).context("taking a file lock"));
        }
    }
}
