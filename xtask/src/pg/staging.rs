//! The lifecycle of every database this tool builds: created under a staging name of this run
//! and marked staging, built, then published — renamed into place and marked for what it is, in
//! one transaction — or dropped by its guard ([`Creating`]). A run killed outright leaves a
//! staging database that [`sweep_abandoned`] recognises by name, pid and marker. A database that
//! already has the name is replaced in the same transaction ([`Old::Replace`]): renamed aside,
//! then dropped; under the name there is always the old one or the new one.
//!
//! [`build`] is the whole of it in one call; [`publish`] is its last step, for the template's
//! copies, which publish under locks of their own ([`super::clone`]). What a database is marked
//! with is a [`Marker`].

use anyhow::{Context, Result};

use super::marker::{Kind, Marker, Retired};
use super::{ident, literal, mark_statement, Creating, DatabaseInfo, Server};
use crate::error::fail;
use crate::naming::{self, Staging};
use crate::proc;

/// The marker of a database this process is building to become `target`.
pub fn staging_marker(target: &str) -> Marker {
    Marker::new(Kind::Staging {
        target: target.to_string(),
        pid: Some(i64::from(std::process::id())),
        host: hostname(),
        retired: None,
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

impl Build<'_> {
    /// Whether this build may replace what has its target's name: see [`may_replace`]; a database
    /// made as the marker's kind (by variant) is ours, and `Old::Replace { force: true }` ends the
    /// sessions of the old one instead of refusing them.
    pub fn may_replace(&self, server: &Server, made_by: &str, fix: &str) -> Result<Option<DatabaseInfo>> {
        let kind = std::mem::discriminant(&self.marker.kind);
        let force = matches!(self.old, Old::Replace { force: true, .. });
        may_replace(server, self.target, |k| std::mem::discriminant(k) == kind, made_by, fix, force)
    }
}

/// "May I replace `target`?", asked before anything is made (a dry run too) by the verbs that
/// refuse what they did not make (`fresh`, `load-clone`, `rehearse --keep`; the template's
/// rebuild and `worktree --reset` ask the user instead): yes when there is none; when there is one, only if `ours`
/// says this tool made it as what is being built (`made_by`: "made by `db fresh`", for the
/// refusal, with `fix`), and nobody is connected to it unless `force` (its sessions are ended).
/// Returns what is there.
pub fn may_replace(
    server: &Server,
    target: &str,
    ours: impl Fn(&Kind) -> bool,
    made_by: &str,
    fix: &str,
    force: bool,
) -> Result<Option<DatabaseInfo>> {
    let Some(old) = server.database(target)? else { return Ok(None) };
    if !old.kind().is_some_and(ours) {
        return Err(fail(format!("`{target}` exists and was not {made_by}; it is left alone"), fix));
    }
    if old.connections > 0 && !force {
        return Err(fail(format!("`{target}` has {} open connection(s)", old.connections), "close them and run again"));
    }
    Ok(Some(old))
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
    /// Replaced atomically: renamed aside to this run's retired name ([`Staging::Retired`]) and
    /// marked as retired in the very transaction that renames the new one in, then dropped
    /// (`force`: its sessions are ended first). Killed before the commit, the old one keeps its
    /// name; after it, the new one has it, and the retired copy is swept by the next run — or
    /// renamed back by it, should its name be free ([`sweep_abandoned`]).
    Replace { prefix: &'a str, force: bool, what: &'a str },
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
    let mut retired = None;
    match old {
        Old::None => {}
        Old::Replace { prefix, force, what } => {
            if let Some(was) = what_it_was(server, target)? {
                let to = name(prefix, Staging::Retired);
                if force {
                    // Its sessions end now; the rename waits (up to 5 s) for them to be gone.
                    tx.push(format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                        literal(target)
                    ));
                }
                tx.push(format!("ALTER DATABASE {} RENAME TO {}", ident(target), ident(&to)));
                let mut m = staging_marker(target);
                if let Kind::Staging { retired, .. } = &mut m.kind {
                    *retired = Some(Retired { comment: was.comment, allow_connections: was.allow_connections });
                }
                tx.push(mark_statement(&to, &m)?);
                retired = Some((to, force, what));
            }
        }
    }
    tx.push(format!("ALTER DATABASE {} RENAME TO {}", ident(staging), ident(target)));
    for s in settings {
        tx.push(format!("ALTER DATABASE {} WITH {s}", ident(target)));
    }
    tx.push(mark_statement(target, marker)?);
    server.transaction(&tx).with_context(|| format!("renaming the finished `{staging}` to `{target}`"))?;
    if let Some((to, force, what)) = retired {
        // Told before it happens: a run killed now leaves `to` for the next run's sweep.
        eprintln!("`{target}` is in place; dropping {what}, renamed aside to `{to}`");
        if let Err(e) = server.drop_database(&to, force) {
            eprintln!(
                "warning: {what} could not be dropped ({e:#}); it is left as `{to}`, which the next run of this tool removes"
            );
        }
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Was {
    comment: Option<String>,
    allow_connections: bool,
}

/// What a retired copy must record to take its name back: its comment (our marker or anyone's
/// text) and whether it took connections. `None`: there is no database `name`.
fn what_it_was(server: &Server, name: &str) -> Result<Option<Was>> {
    let sql = format!(
        "SELECT shobj_description(oid, 'pg_database') AS comment, datallowconn AS allow_connections \
         FROM pg_database WHERE datname = {}",
        literal(name)
    );
    Ok(server.query::<Was>(&server.maintenance_db, &sql)?.pop())
}

/// Drops staging databases left by runs of this tool on this machine that died before their
/// cleanup could run. Never touches a database marked as anything but staging, one whose marker
/// names another pid, or one whose run is alive. A database such a run had retired (renamed
/// aside while replacing it) gets its name back instead when that name is free: it is never the
/// only copy lost.
pub fn sweep_abandoned(server: &Server, prefix: &str) -> Result<()> {
    let host = host_tag();
    for db in server.databases_unsized(prefix, &[])? {
        let Some(pid) = naming::staging_pid(prefix, &host, &db.name) else { continue };
        // Unmarked (killed between CREATE and COMMENT), or marked staging by the pid in its name.
        let (marked_pid, target, retired) = match db.kind() {
            None => (None, "", None),
            Some(Kind::Staging { pid, target, retired, .. }) => (*pid, target.as_str(), retired.as_ref()),
            Some(_) => continue,
        };
        if marked_pid.is_some_and(|m| m != pid) || db.name.len() >= naming::MAX_NAME {
            continue;
        }
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive || pid == i64::from(std::process::id()) {
            continue;
        }
        if let Some(r) = retired.filter(|_| !target.is_empty()) {
            if !server.database_exists(target)? {
                eprintln!(
                    "`{target}` is missing and `{}` is what it was before an interrupted run (pid {pid}) replaced it: renaming it back",
                    db.name
                );
                let mut tx = vec![format!("ALTER DATABASE {} RENAME TO {}", ident(&db.name), ident(target))];
                tx.push(match &r.comment {
                    Some(c) => format!("COMMENT ON DATABASE {} IS {}", ident(target), literal(c)),
                    None => format!("COMMENT ON DATABASE {} IS NULL", ident(target)),
                });
                if r.allow_connections != db.allow_connections {
                    tx.push(format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}", ident(target), r.allow_connections));
                }
                server.transaction(&tx).with_context(|| format!("renaming `{}` back to `{target}`", db.name))?;
                continue;
            }
        }
        eprintln!("removing `{}`, left unfinished by an interrupted run (pid {pid})", db.name);
        server.drop_database(&db.name, true)?;
    }
    Ok(())
}
