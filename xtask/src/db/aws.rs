//! `clone-prod` and `list-clones`: handed to the AWS tooling in `xtask/aws`, a workspace of its
//! own so that the AWS SDK is never part of the ordinary xtask build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::ChildExit;
use crate::proc;

/// Runs the AWS side (`xtask/aws`, a workspace of its own so the AWS SDK is never part of the
/// ordinary xtask build) with this very command line; it parses the same flags.
pub fn run(ctx: &Ctx) -> Result<()> {
    let root = &ctx.config.root;
    let manifest = root.join("xtask/aws/Cargo.toml");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let built = std::fs::metadata(target.join("debug/xtask-aws")).and_then(|m| m.modified()).ok();
    // Its sources: its own, and the xtask library it uses.
    let changed = built.is_some_and(|built| {
        ["xtask/aws/src", "xtask/aws/Cargo.toml", "xtask/aws/Cargo.lock", "xtask/src", "xtask/Cargo.toml"]
            .iter()
            .any(|p| newer_than(&root.join(p), built))
    });
    if built.is_none() {
        crate::term::announce(format_args!(
            "building the AWS tooling (xtask/aws; the first build takes a few minutes)"
        ));
    } else if changed {
        crate::term::announce(format_args!(
            "rebuilding the AWS tooling (its sources or the xtask library changed since its last build)"
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // A build shows cargo's progress; otherwise only the tool's own output.
    let quiet = (built.is_some() && !changed).then_some("--quiet");
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let sh = xshell::Shell::new().context("reading the current directory")?;
    let mut cmd: Command = xshell::cmd!(sh, "{cargo} run {quiet...} --manifest-path {manifest} -- {args...}")
        .env("CARGO_TARGET_DIR", &target)
        .into();
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

/// Whether `path` (a file, or any file under a directory) was modified after `than`.
fn newer_than(path: &std::path::Path, than: std::time::SystemTime) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    if meta.is_dir() {
        return std::fs::read_dir(path).is_ok_and(|entries| entries.flatten().any(|e| newer_than(&e.path(), than)));
    }
    meta.modified().is_ok_and(|m| m > than)
}
