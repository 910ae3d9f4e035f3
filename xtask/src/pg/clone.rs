//! Cloning a template database: which method is correct right now, and doing it.
//!
//! - **template**: `CREATE DATABASE new TEMPLATE t` — a file-level copy, fast, but PostgreSQL
//!   refuses it while anyone is connected to `t`.
//! - **frozen copy**: the same from `<prefix>frozen_<hash>`, a connection-less
//!   (`ALLOW_CONNECTIONS false`) copy of the template, when that copy is current.
//! - **dump**: `pg_dump --no-owner --no-privileges t | psql -1 -v ON_ERROR_STOP=1 new`, streamed
//!   process to process. Works while the template is in use; slower.
//!
//! `auto` never terminates anyone's connection to the template, and its clone contains every
//! change committed to the template before the command started:
//!
//! 1. No one is connected to the template: clone it directly (always current).
//! 2. Otherwise, if the frozen copy is current, clone the frozen copy.
//! 3. Otherwise refresh the frozen copy from the template by dump, then clone it.
//!
//! **When is the frozen copy current?** Its marker records, taken *before* the dump's snapshot:
//! the template's oid, its cumulative write counters (the sum of `pg_stat_database`'s
//! `tup_inserted`, `tup_updated`, `tup_deleted`, and `stats_reset`), a digest of its sequences' positions, and the server time
//! `frozen_at`. A change committed to the template after the snapshot came from a backend that
//! either has since disconnected — a backend flushes its statistics when it exits, before it leaves
//! `pg_stat_activity`, so the write counters moved (DDL writes catalog rows, so it counts too) — or is
//! still connected, and then its `state_change` is at or after `frozen_at`. Sequence advances do not
//! move the counters: the digest covers them. So the copy is current when the oid, counters and
//! digest are unchanged and no other backend on the template has changed state since `frozen_at`.
//! Every uncertainty counts as "changed" (statistics or activity tracking off, `state_change`
//! hidden by privileges, a statistics reset): the worst case is an unneeded refresh, never a
//! stale clone.
//!
//! On PostgreSQL 18+, `file_copy_method = clone` with `STRATEGY = FILE_COPY` makes the copy a
//! copy-on-write clone on filesystems that support it (size-independent); where it fails, the
//! default strategy is used.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{ident, literal, Creating, Server};
use crate::proc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// The fastest method that is correct right now (never disconnects anyone).
    Auto,
    /// CREATE DATABASE … TEMPLATE: fails while anyone is connected to the template.
    Template,
    /// pg_dump | psql, streamed: works while the template is in use.
    Dump,
}

/// What will be done, and why: the plan `--dry-run` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// Rename the ready-made spare clone into place (prepared in the background, checked current).
    Spare,
    /// `CREATE DATABASE … TEMPLATE <template>`.
    Template,
    /// `CREATE DATABASE … TEMPLATE <frozen>`; `refresh` first re-makes the frozen copy by dump.
    Frozen { refresh: bool },
    /// `pg_dump | psql` from the template.
    Dump,
}

#[derive(Debug, Clone)]
pub struct ClonePlan {
    pub method: Method,
    pub why: String,
    pub frozen: String,
    pub spare: Option<String>,
}

impl ClonePlan {
    pub fn describe(&self) -> &'static str {
        match self.method {
            Method::Spare => "the ready-made spare clone, renamed into place",
            Method::Template => "file copy of the template (CREATE DATABASE … TEMPLATE)",
            Method::Frozen { refresh: false } => "file copy of the frozen copy of the template",
            Method::Frozen { refresh: true } => "refresh the frozen copy by pg_dump | psql, then file copy of it",
            Method::Dump => "pg_dump | psql, streamed",
        }
    }
}

/// The template's state as the frozen-copy check sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub oid: i64,
    pub writes: i64,
    pub stats_reset: String,
    pub sequences: String,
    /// Server time of the probe.
    pub now: String,
    pub tracking: bool,
    /// Other backends on the template, and those whose state changed at/after `since`.
    pub connections: i64,
    pub active_since: i64,
}

/// What the frozen copy's marker records about the template it was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrozenState {
    pub template: String,
    pub oid: i64,
    pub writes: i64,
    pub stats_reset: String,
    pub sequences: String,
    pub frozen_at: String,
}

impl FrozenState {
    /// What a copy made after `probe` records about `template`.
    fn of(template: &str, probe: Probe) -> FrozenState {
        FrozenState {
            template: template.to_string(),
            oid: probe.oid,
            writes: probe.writes,
            stats_reset: probe.stats_reset,
            sequences: probe.sequences,
            frozen_at: probe.now,
        }
    }
}

/// Probes the template from a session connected to it (our own session excluded).
pub fn probe(server: &Server, template: &str, since: Option<&str>) -> Result<Probe> {
    let since = literal(since.unwrap_or("infinity"));
    server
        .query_one(
            template,
            &format!(
                "SELECT d.oid::bigint AS oid, \
                 (s.tup_inserted + s.tup_updated + s.tup_deleted)::bigint AS writes, \
                 coalesce(s.stats_reset::text, '') AS stats_reset, \
                 (SELECT md5(coalesce(string_agg(format('%I.%I=%s', schemaname, sequencename, last_value), ',' \
                    ORDER BY schemaname, sequencename), '')) FROM pg_sequences) AS sequences, \
                 now()::text AS now, \
                 current_setting('track_counts') = 'on' AND current_setting('track_activities') = 'on' AS tracking, \
                 (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid()) AS connections, \
                 (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid() \
                    AND (a.state_change IS NULL OR a.state_change >= {since}::timestamptz)) AS active_since \
                 FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid WHERE d.datname = current_database()"
            ),
        )
        .with_context(|| format!("inspecting the template `{template}`"))
}

/// Why the frozen copy is not current, or `None` when it is.
pub fn staleness(frozen: &FrozenState, now: &Probe) -> Option<String> {
    if !now.tracking {
        return Some("statistics or activity tracking is off on the server, so changes cannot be ruled out".into());
    }
    if frozen.oid != now.oid {
        return Some("the template was re-created since".into());
    }
    if frozen.stats_reset != now.stats_reset {
        return Some("the template's statistics were reset".into());
    }
    if frozen.writes != now.writes {
        return Some(format!("{} row change(s) were written to the template since", now.writes - frozen.writes));
    }
    if frozen.sequences != now.sequences {
        return Some("a sequence of the template advanced since".into());
    }
    if now.active_since > 0 {
        return Some(format!("{} session(s) on the template were active since", now.active_since));
    }
    None
}

/// Decides how to clone `template` (read-only: looks, changes nothing).
pub fn plan(
    server: &Server,
    template: &str,
    frozen: &str,
    spare: Option<&str>,
    strategy: Strategy,
) -> Result<ClonePlan> {
    let info = server.database(template)?.context("the template disappeared")?;
    let plan = |method, why: String| {
        Ok(ClonePlan { method, why, frozen: frozen.to_string(), spare: spare.map(str::to_string) })
    };
    match strategy {
        Strategy::Template => return plan(Method::Template, "--strategy template".into()),
        Strategy::Dump => return plan(Method::Dump, "--strategy dump".into()),
        Strategy::Auto => {}
    }
    // A spare clone, prepared in the background after the previous run, if it is still current.
    let mut spare_note = String::new();
    if let Some(state) = spare.and_then(|name| marked_state(server, name, template).transpose()).transpose()? {
        let now = probe(server, template, Some(&state.frozen_at))?;
        match staleness(&state, &now) {
            None => return plan(Method::Spare, format!("a spare clone made at {} is current", state.frozen_at)),
            Some(why) => spare_note = format!(" (the spare clone is stale: {why})"),
        }
    }
    let plan = |method, why: String| plan(method, format!("{why}{spare_note}"));
    if info.connections == 0 {
        return plan(Method::Template, "no one is connected to the template, so it is copied directly".into());
    }
    let busy = format!("the template has {} open connection(s)", info.connections);
    if !info.allow_connections {
        return plan(Method::Dump, format!("{busy} and does not allow ours"));
    }
    let Some(state) = marked_state(server, frozen, template)? else {
        return plan(Method::Frozen { refresh: true }, format!("{busy}; there is no frozen copy of it yet"));
    };
    let now = probe(server, template, Some(&state.frozen_at))?;
    match staleness(&state, &now) {
        None => plan(
            Method::Frozen { refresh: false },
            format!("{busy}; its frozen copy is current (nothing changed since {})", state.frozen_at),
        ),
        Some(why) => plan(Method::Frozen { refresh: true }, format!("{busy}; its frozen copy is stale: {why}")),
    }
}

/// The template state recorded in the marker of a frozen copy or spare clone of `template`.
fn marked_state(server: &Server, name: &str, template: &str) -> Result<Option<FrozenState>> {
    let state =
        server.database(name)?.and_then(|f| f.marker).and_then(|m| serde_json::from_value::<FrozenState>(m).ok());
    Ok(state.filter(|s| s.template == template))
}

/// Renames the spare clone into place as `target`, open for connections, marked: one transaction.
pub fn take_spare(server: &Server, spare: &str, target: &str, marker: &serde_json::Value) -> Result<()> {
    server.transaction(&[
        format!("ALTER DATABASE {} RENAME TO {}", ident(spare), ident(target)),
        format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", ident(target)),
        format!("COMMENT ON DATABASE {} IS {}", ident(target), literal(&format!("{}{marker}", super::MARKER_PREFIX))),
    ])
}

/// Prepares the spare clone of `template` (nothing to do when the current one is up to date):
/// state probed first, then cloned by the best method now, closed to connections, renamed in.
pub fn refill_spare(
    server: &Server,
    template: &str,
    frozen: &str,
    spare: &str,
    staging: (String, serde_json::Value),
    frozen_staging: (String, serde_json::Value),
) -> Result<bool> {
    if let Some(state) = marked_state(server, spare, template)? {
        if staleness(&state, &probe(server, template, Some(&state.frozen_at))?).is_none() {
            return Ok(false);
        }
    }
    // Whatever the clone below contains is at least as recent as this probe.
    let before = probe(server, template, None)?;
    // Let our probe's session leave the template, or the copy would see it as in use.
    for _ in 0..50 {
        match server.database(template)? {
            Some(d) if d.connections > before.connections => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    let how = plan(server, template, frozen, None, Strategy::Auto)?;
    let (building, _) = execute(server, template, &staging.0, &how, staging.1, frozen_staging)?;
    server
        .exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", ident(&staging.0)))?;
    let mut marker = serde_json::to_value(FrozenState::of(template, before))?;
    marker["kind"] = "spare".into();
    // Swap: a run that looks in between finds no spare and takes the ordinary path.
    server.drop_database(spare, true)?;
    server.transaction(&[
        format!("ALTER DATABASE {} RENAME TO {}", ident(&staging.0), ident(spare)),
        format!("COMMENT ON DATABASE {} IS {}", ident(spare), literal(&format!("{}{marker}", super::MARKER_PREFIX))),
    ])?;
    building.keep();
    Ok(true)
}

/// Timings of what [`execute`] did.
#[derive(Debug, Default)]
pub struct Timings {
    pub refresh: Option<Duration>,
    pub copy: Duration,
    pub cow: bool,
}

/// Clones `template` into the new database `target` (created here, guarded: dropped again on any
/// failure unless the caller keeps it).
pub fn execute<'s>(
    server: &'s Server,
    template: &str,
    target: &str,
    plan: &ClonePlan,
    marker: serde_json::Value,
    frozen_staging: (String, serde_json::Value),
) -> Result<(Creating<'s>, Timings)> {
    let mut t = Timings::default();
    let source = match plan.method {
        Method::Spare => anyhow::bail!("a spare clone is taken with take_spare, not copied"),
        Method::Template => template.to_string(),
        Method::Frozen { refresh } => {
            if refresh {
                let start = Instant::now();
                refresh_frozen(server, template, &plan.frozen, frozen_staging)?;
                t.refresh = Some(start.elapsed());
            }
            plan.frozen.clone()
        }
        Method::Dump => {
            let start = Instant::now();
            let db = server.create_database(target, "TEMPLATE template0", marker)?;
            dump_restore(server, template, target)?;
            t.copy = start.elapsed();
            return Ok((db, t));
        }
    };
    let start = Instant::now();
    let (db, cow) = copy_database(server, &source, target, marker)?;
    t.copy = start.elapsed();
    t.cow = cow;
    Ok((db, t))
}

/// `CREATE DATABASE target TEMPLATE source`, as a copy-on-write clone where the server can.
fn copy_database<'s>(
    server: &'s Server,
    source: &str,
    target: &str,
    marker: serde_json::Value,
) -> Result<(Creating<'s>, bool)> {
    if server.major >= 18 {
        let sql = format!(
            "SET file_copy_method = clone; CREATE DATABASE {} TEMPLATE {} STRATEGY = FILE_COPY",
            ident(target),
            ident(source)
        );
        if server.exec(&server.maintenance_db, &sql).is_ok() {
            server.set_marker(target, &marker)?;
            return Ok((Creating::adopt(server, target), true));
        }
    }
    let db = server
        .create_database(target, &format!("TEMPLATE {}", ident(source)), marker)
        .with_context(|| format!("copying `{source}`"))?;
    Ok((db, false))
}

/// `pg_dump … source | psql … target`, streamed, in one transaction on the receiving side.
pub fn dump_restore(server: &Server, source: &str, target: &str) -> Result<()> {
    let mut dump = Command::new(server.pg_dump()?);
    dump.args(["--no-owner", "--no-privileges", "--no-publications", "--no-subscriptions", "--format=plain", "-d"])
        .arg(server.arg_url(source));
    server.libpq_env(&mut dump);
    let mut load = server.psql(target);
    load.arg("--single-transaction");
    proc::pipe(&mut dump, &mut load).with_context(|| format!("copying `{source}` into `{target}` with pg_dump | psql"))
}

/// Re-makes the frozen copy of `template`: probe, dump into a new database, swap it in.
fn refresh_frozen(
    server: &Server,
    template: &str,
    frozen: &str,
    (staging, staging_marker): (String, serde_json::Value),
) -> Result<()> {
    // Probe first: whatever the dump's snapshot sees is at least this recent.
    let state = FrozenState::of(template, probe(server, template, None)?);
    let db = server.create_database(&staging, "TEMPLATE template0", staging_marker)?;
    dump_restore(server, template, &staging)?;
    server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", ident(&staging)))?;
    if server.database_exists(frozen)? {
        server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH IS_TEMPLATE false", ident(frozen)))?;
        server.drop_database(frozen, false).context("dropping the old frozen copy")?;
    }
    server.rename_database(&staging, frozen)?;
    db.keep();
    let mut marker = serde_json::to_value(&state)?;
    marker["kind"] = "frozen".into();
    server.set_marker(frozen, &marker)?;
    // IS_TEMPLATE protects it from a stray DROP DATABASE.
    server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH IS_TEMPLATE true", ident(frozen)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FrozenState {
        FrozenState {
            template: "t".into(),
            oid: 1,
            writes: 10,
            stats_reset: String::new(),
            sequences: "abc".into(),
            frozen_at: "x".into(),
        }
    }
    fn probe() -> Probe {
        Probe {
            oid: 1,
            writes: 10,
            stats_reset: String::new(),
            sequences: "abc".into(),
            now: "y".into(),
            tracking: true,
            connections: 1,
            active_since: 0,
        }
    }

    #[test]
    fn staleness_rules() {
        assert_eq!(staleness(&state(), &probe()), None);
        type Change = fn(&mut Probe);
        let cases: [(Change, &str); 6] = [
            (|p| p.writes = 11, "1 row change"),
            (|p| p.active_since = 1, "active since"),
            (|p| p.sequences = "d".into(), "sequence"),
            (|p| p.oid = 2, "re-created"),
            (|p| p.stats_reset = "now".into(), "reset"),
            (|p| p.tracking = false, "tracking is off"),
        ];
        for (change, why) in cases {
            let mut p = probe();
            change(&mut p);
            assert!(staleness(&state(), &p).is_some_and(|s| s.contains(why)), "{why}");
        }
    }
}
