//! The lifecycle of every database this tool builds: created under a staging name of this run
//! and marked staging, built, then published — renamed into place and marked for what it is, in
//! one transaction — or dropped by its guard ([`Creating`]). A run killed outright leaves a
//! staging database that [`sweep_abandoned`] recognises by name, pid and marker.
//!
//! [`build`] is the whole of it in one call; [`publish`] is its last step, for the template's
//! copies, which publish under locks of their own ([`super::clone`]). What a database is marked
//! with is a [`Marker`].

use anyhow::{Context, Result};

use super::marker::{Kind, Marker};
use super::{ident, mark_statement, Creating, Server};
use crate::naming::{self, Staging};
use crate::proc;

/// The marker of a database this process is building to become `target`.
pub fn staging_marker(target: &str) -> Marker {
    Marker::new(Kind::Staging {
        target: target.to_string(),
        pid: Some(i64::from(std::process::id())),
        host: hostname(),
    })
}

/// The host name, for markers of in-progress work (a pid means nothing on another machine).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn host_tag() -> String {
    naming::short_hash(&hostname())[..4].to_string()
}

/// This run's staging name for building a database of the given sort (see
/// [`naming::staging_name`]).
pub fn name(prefix: &str, what: Staging) -> String {
    naming::staging_name(prefix, &host_tag(), std::process::id(), what)
}

/// A database to build: published as `target`, marked `marker`, replacing what `old` says.
pub struct Build<'a> {
    pub prefix: &'a str,
    /// Which of this run's staging names it is built under.
    pub what: Staging,
    pub target: &'a str,
    pub marker: Marker,
    pub old: Old<'a>,
    /// `ALTER DATABASE … WITH` settings published with it.
    pub settings: &'a [&'a str],
}

/// The lifecycle in one call: `make` creates and fills the staging database (it is given the
/// staging name and the staging marker to create it with, and returns the guard that drops it),
/// then — unless the run was interrupted meanwhile — it is published as `b.target`
/// ([`publish`]). On any error or interrupt nothing is published and the staging database is
/// gone.
pub fn build<'s, T>(
    server: &'s Server,
    b: Build,
    make: impl FnOnce(&str, Marker) -> Result<(Creating<'s>, T)>,
) -> Result<T> {
    let staging = name(b.prefix, b.what);
    let (building, made) = make(&staging, staging_marker(b.target))?;
    proc::check_interrupt()?;
    publish(server, &staging, b.target, &b.marker, b.old, b.settings)?;
    building.keep();
    Ok(made)
}

/// [`build`] from an empty database (`TEMPLATE template0`) that `fill` fills.
pub fn build_empty<T>(server: &Server, b: Build, fill: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    build(server, b, |staging, marker| {
        let db = server.create_database(staging, "TEMPLATE template0", &marker)?;
        Ok((db, fill(staging)?))
    })
}

/// What happens to a database already named like the one being published.
pub enum Old<'a> {
    /// There is none (or a failing rename says so).
    None,
    /// Dropped just before the rename, now that its replacement is complete (`force`: its
    /// sessions are ended). DROP DATABASE cannot run inside the rename's transaction.
    Drop { force: bool, what: &'a str },
    /// Renamed to `to` and marked staging in the rename's own transaction, so that a run killed
    /// after it leaves something the sweep removes, never a gap; the caller drops it afterwards.
    Retire { to: &'a str },
}

/// Renames the finished `staging` database to `target` and marks it with `marker`, one
/// transaction; `settings` (`ALLOW_CONNECTIONS true`, `IS_TEMPLATE true`) go into the same one.
/// The caller keeps its guard afterwards.
pub fn publish(
    server: &Server,
    staging: &str,
    target: &str,
    marker: &Marker,
    old: Old,
    settings: &[&str],
) -> Result<()> {
    let mut tx = Vec::new();
    match old {
        Old::None => {}
        Old::Drop { force, what } => server.drop_database(target, force).with_context(|| format!("dropping {what}"))?,
        Old::Retire { to } => {
            tx.push(format!("ALTER DATABASE {} RENAME TO {}", ident(target), ident(to)));
            tx.push(mark_statement(to, &staging_marker(target))?);
        }
    }
    tx.push(format!("ALTER DATABASE {} RENAME TO {}", ident(staging), ident(target)));
    for s in settings {
        tx.push(format!("ALTER DATABASE {} WITH {s}", ident(target)));
    }
    tx.push(mark_statement(target, marker)?);
    server.transaction(&tx).with_context(|| format!("renaming the finished `{staging}` to `{target}`"))
}

/// Drops staging databases left by runs of this tool on this machine that died before their
/// cleanup could run. Never touches a database marked as anything but staging, one whose marker
/// names another pid, or one whose run is alive.
pub fn sweep_abandoned(server: &Server, prefix: &str) -> Result<()> {
    let host = host_tag();
    for db in server.databases(prefix, &[])? {
        let Some(pid) = naming::staging_pid(prefix, &host, &db.name) else { continue };
        // Unmarked (killed between CREATE and COMMENT), or marked staging by the pid in its name.
        let marked_pid = match db.kind() {
            None => None,
            Some(Kind::Staging { pid, .. }) => *pid,
            Some(_) => continue,
        };
        if marked_pid.is_some_and(|m| m != pid) || db.name.len() >= naming::MAX_NAME {
            continue;
        }
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && pid != i64::from(std::process::id()) {
            eprintln!("removing `{}`, left unfinished by an interrupted run (pid {pid})", db.name);
            server.drop_database(&db.name, true)?;
        }
    }
    Ok(())
}
