//! The lifecycle of every database this tool builds: created under a staging name of this run
//! and marked staging, built, then published — renamed into place and marked for what it is, in
//! one transaction — or dropped by its guard ([`Creating`]). A run killed outright leaves a
//! staging database that [`sweep_abandoned`] recognises by name, pid and marker.
//!
//! Markers are the JSON in a database's comment (`xtask-db {…}`, [`super::MARKER_PREFIX`]): `kind`
//! (`staging`, `template`, `branch`, `fresh`, `prod_clone`, `frozen`, `spare`), `created_at`,
//! and what that kind records.

use anyhow::{Context, Result};

use super::{ident, mark_statement, Creating, Server};
use crate::naming::{self, Staging};

/// A database's marker: `kind`, `created_at` and `fields`.
pub fn marker(kind: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::json!({ "kind": kind, "created_at": crate::time::now_rfc3339() });
    if let (Some(m), serde_json::Value::Object(fields)) = (m.as_object_mut(), fields) {
        m.extend(fields);
    }
    m
}

/// The marker of a database this process is building to become `target`.
pub fn staging_marker(target: &str) -> serde_json::Value {
    marker("staging", serde_json::json!({ "for": target, "pid": std::process::id(), "host": hostname() }))
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

/// Creates `staging` (`CREATE DATABASE … clause`) marked as being built for `target`; the guard
/// drops it unless it is kept.
pub fn create<'s>(server: &'s Server, staging: &str, clause: &str, target: &str) -> Result<Creating<'s>> {
    server.create_database(staging, clause, staging_marker(target))
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
    marker: &serde_json::Value,
    old: Old,
    settings: &[&str],
) -> Result<()> {
    let mut tx = Vec::new();
    match old {
        Old::None => {}
        Old::Drop { force, what } => server.drop_database(target, force).with_context(|| format!("dropping {what}"))?,
        Old::Retire { to } => {
            tx.push(format!("ALTER DATABASE {} RENAME TO {}", ident(target), ident(to)));
            tx.push(mark_statement(to, &staging_marker(target)));
        }
    }
    tx.push(format!("ALTER DATABASE {} RENAME TO {}", ident(staging), ident(target)));
    for s in settings {
        tx.push(format!("ALTER DATABASE {} WITH {s}", ident(target)));
    }
    tx.push(mark_statement(target, marker));
    server.transaction(&tx).with_context(|| format!("renaming the finished `{staging}` to `{target}`"))
}

/// Drops staging databases left by runs of this tool on this machine that died before their
/// cleanup could run. Never touches a database marked as anything but staging, one whose marker
/// names another pid, or one whose run is alive.
pub fn sweep_abandoned(server: &Server, prefix: &str) -> Result<()> {
    let host = host_tag();
    for db in server.databases(prefix, &[])? {
        let Some(pid) = naming::staging_pid(prefix, &host, &db.name) else { continue };
        if db.marker.is_some() && db.kind() != Some("staging") {
            continue;
        }
        // A staging marker names the pid that made it: it must be the one in the name.
        let marked_pid = db.marker.as_ref().and_then(|m| m.get("pid")).and_then(|p| p.as_i64());
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
