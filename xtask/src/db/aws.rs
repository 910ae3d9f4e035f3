//! `clone-prod` and `list-clones`, once checked ([`super::clone_prod`]): handed to the AWS tooling
//! in `xtask/aws`, a workspace of its own so that the AWS SDK is never part of the ordinary xtask
//! build. It is built when missing or stale (saying so, with cargo's progress and the time it
//! took), then run directly with this very command line; it parses the same flags.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::{fail, ChildExit};
use crate::proc;

pub fn run(ctx: &Ctx) -> Result<()> {
    let root = &ctx.config.root;
    let manifest = root.join("xtask/aws/Cargo.toml");
    if !manifest.is_file() {
        return Err(fail(
            format!("{} is missing: the AWS verbs live there", manifest.display()),
            "run from the repository that holds the xtask (its xtask/aws directory)",
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let binary = target.join("debug/xtask-aws");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    // Its sources: its own, and the xtask library it uses.
    let changed = built.is_some_and(|built| {
        ["xtask/aws/src", "xtask/aws/Cargo.toml", "xtask/aws/Cargo.lock", "xtask/src", "xtask/Cargo.toml"]
            .iter()
            .any(|p| newer_than(&root.join(p), built))
    });
    if built.is_none() || changed {
        build(&manifest, &target, built.is_none())?;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let sh = xshell::Shell::new().context("reading the current directory")?;
    let mut cmd: Command = xshell::cmd!(sh, "{binary} {args...}").into();
    let status = proc::Registered::spawn_foreground(&mut cmd)?.wait()?;
    match status.code() {
        // It may have finished its work before a signal arrived.
        Some(0) => Ok(()),
        // The AWS tool printed its own one-line error (an interruption too); keep its exit code.
        Some(code) => Err(ChildExit(code).into()),
        None => {
            proc::check_interrupt()?;
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or(0);
            eprintln!("error: the AWS tooling was killed by signal {signal} — run it again");
            Err(ChildExit(128 + signal).into())
        }
    }
}

/// `cargo build` of the AWS tool, with cargo's progress and how long it took.
fn build(manifest: &Path, target: &Path, first: bool) -> Result<()> {
    if first {
        crate::term::announce(format_args!(
            "building the AWS tooling (xtask/aws): the first build compiles the AWS SDK, 3-10 minutes; later ones take seconds"
        ));
    } else {
        crate::term::announce(format_args!(
            "rebuilding the AWS tooling (its sources or the xtask library changed since its last build)"
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let sh = xshell::Shell::new().context("reading the current directory")?;
    let mut cmd: Command =
        xshell::cmd!(sh, "{cargo} build --manifest-path {manifest}").env("CARGO_TARGET_DIR", target).into();
    let start = Instant::now();
    let status = proc::Registered::spawn_foreground(&mut cmd)?.wait()?;
    proc::check_interrupt()?;
    if !status.success() {
        return Err(fail(
            format!("building the AWS tooling failed ({})", proc::describe(status)),
            "read cargo's errors above; `cargo build --manifest-path xtask/aws/Cargo.toml` runs the same build",
        ));
    }
    eprintln!("  built the AWS tooling in {}", crate::time::elapsed(start.elapsed()));
    Ok(())
}

/// Whether `path` (a file, or any file under a directory) was modified after `than`.
fn newer_than(path: &Path, than: std::time::SystemTime) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    if meta.is_dir() {
        return std::fs::read_dir(path).is_ok_and(|entries| entries.flatten().any(|e| newer_than(&e.path(), than)));
    }
    meta.modified().is_ok_and(|m| m > than)
}
