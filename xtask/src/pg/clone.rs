//! Cloning a template database: which method is correct right now, and doing it.
//!
//! - **template**: `CREATE DATABASE new TEMPLATE t` — a file-level copy, fast, but PostgreSQL
//!   refuses it while anyone is connected to `t` (or a prepared transaction uses it).
//! - **frozen copy**: the same from `<prefix>frozen_<hash>`, a connection-less
//!   (`ALLOW_CONNECTIONS false`) copy of the template, when that copy is current.
//! - **dump**: `pg_dump t | psql -1 -v ON_ERROR_STOP=1 new`, streamed process to process, owners
//!   and privileges included (a file copy keeps them, so every path gives the same clone). Works
//!   while the template is in use.
//!
//! `auto` never terminates anyone's connection to the template, and its clone contains every
//! change committed to the template before the command started:
//!
//! 1. The spare clone (made in the background after the previous run), if it is current.
//! 2. No one is connected to the template: clone it directly (always current).
//! 3. Otherwise, if the frozen copy is current, clone the frozen copy.
//! 4. Otherwise, when a spare clone exists (stale) whose record holds per-relation counts, take
//!    it and copy over from the template the rows of the tables written since ([`super::patch`]);
//!    when more than rows changed, or that fails:
//! 5. Dump the template straight into the new database (as fast as the pipeline it replaces);
//!    the background refill that follows refreshes the frozen copy and the spare.
//!
//! # Why "current" cannot miss a committed change
//!
//! See [`super::freshness`]: what a copy records, the probe, and the argument.
//!
//! # Concurrency
//!
//! Runs and background refills serialise on advisory locks (see [`super::Lock`]): refreshing
//! the frozen copy is exclusive, copying from it shared; taking and refilling the spare are
//! exclusive. Whoever gets the lock after waiting looks again (the other may have done the work).
//!
//! On PostgreSQL 18+, `file_copy_method = clone` with `STRATEGY = FILE_COPY` makes the copy a
//! copy-on-write clone on filesystems that support it (size-independent); where it fails, the
//! default strategy is used.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

pub use super::freshness::Ahead;
use super::freshness::{freeze, restamp, staleness, staleness_seen, FrozenState};
use super::marker::{Copy, Kind, Marker};
use super::patch;
use super::staging::{self, staging_marker, Old};
use super::{ident, literal, Creating, Lock, PgUrl, Server};
use crate::naming::Staging;
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
    /// Take the stale spare clone and copy over from the template only the rows of the tables
    /// written since its record ([`super::patch`]); a dump when that is refused.
    Patch,
}

impl Method {
    pub fn describe(&self) -> &'static str {
        match self {
            Method::Spare => "the ready-made spare clone, renamed into place",
            Method::Template => "file copy of the template (CREATE DATABASE … TEMPLATE)",
            Method::Frozen { refresh: false } => "file copy of the frozen copy of the template",
            Method::Frozen { refresh: true } => "refresh the frozen copy by pg_dump | psql, then file copy of it",
            Method::Dump => "pg_dump | psql, streamed",
            Method::Patch => "the spare clone, with the rows of the tables written since copied over from the template",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClonePlan {
    pub method: Method,
    pub why: String,
    pub frozen: String,
    pub spare: Option<String>,
    /// Chosen by `auto`: a direct copy that finds the template busy after all falls back.
    pub auto: bool,
    /// The record of the spare clone that was found current (taking it need not look again).
    pub spare_state: Option<FrozenState>,
    /// That spare clone's migration ledger, when the look that found it current read it.
    pub spare_ledger: Option<Vec<crate::migrations::Applied>>,
}

impl ClonePlan {
    pub fn describe(&self) -> &'static str {
        self.method.describe()
    }
}

/// Whether the template is in use: connections, or prepared transactions (which also make
/// `CREATE DATABASE … TEMPLATE` refuse).
fn users(server: &Server, template: &str) -> Result<(i64, i64)> {
    #[derive(Deserialize)]
    struct U {
        connections: i64,
        prepared: i64,
    }
    let u: U = server.query_one(
        &server.maintenance_db,
        &format!(
            "SELECT (SELECT count(*) FROM pg_stat_activity a JOIN pg_database d ON d.oid = a.datid \
               WHERE d.datname = {t} AND a.backend_type IS DISTINCT FROM 'autovacuum worker') AS connections, \
             (SELECT count(*) FROM pg_prepared_xacts WHERE database = {t}) AS prepared",
            t = literal(template)
        ),
    )?;
    Ok((u.connections, u.prepared))
}

/// Decides how to clone `template` (read-only: looks, changes nothing). `dump_when_stale`: a
/// stale frozen copy is not refreshed first; the template is dumped straight into the new
/// database (for a run followed by a background refill, which refreshes the frozen copy).
/// `ahead`: a probe of the template started earlier (see [`Ahead`]), collected first.
pub fn plan(
    server: &Server,
    template: &str,
    frozen: &str,
    spare: Option<&str>,
    strategy: Strategy,
    dump_when_stale: bool,
    ahead: Option<Ahead>,
) -> Result<ClonePlan> {
    // Collected before anything else: its session is gone before any copy of the template.
    let mut seen = match ahead {
        Some(a) if a.template() == template => a.finish(server)?,
        _ => None,
    };
    let Some(info) = server.database_unsized(template)? else {
        return Err(crate::error::fail(
            format!("the golden template `{template}` does not exist on {}", server.url.server_label()),
            "point WORKTREE_TEMPLATE_DB at an existing database, or build one with `cargo xtask db template create`",
        ));
    };
    let auto = strategy == Strategy::Auto;
    let plan = |method, why: String| {
        Ok(ClonePlan {
            method,
            why,
            frozen: frozen.to_string(),
            spare: spare.map(str::to_string),
            auto,
            spare_state: None,
            spare_ledger: None,
        })
    };
    match strategy {
        Strategy::Template => return plan(Method::Template, "--strategy template".into()),
        Strategy::Dump => return plan(Method::Dump, "--strategy dump".into()),
        Strategy::Auto => {}
    }
    // A spare clone, prepared in the background after the previous run, if it is still current.
    let mut spare_note = String::new();
    let mut patchable = false;
    if let Some(state) = spare.and_then(|name| marked_state(server, name, template).transpose()).transpose()? {
        match staleness_seen(server, &state, &mut seen)? {
            None => {
                let how = seen.as_ref().and_then(|p| p.note.as_ref()).map(|n| format!(" ({n})")).unwrap_or_default();
                let why = format!("a spare clone made at {} is current{how}", state.frozen_at);
                let spare_ledger = seen
                    .as_ref()
                    .and_then(|p| p.current_ledger.as_deref())
                    .and_then(|json| serde_json::from_str(json).ok());
                return plan(Method::Spare, why).map(|p| ClonePlan { spare_state: Some(state), spare_ledger, ..p });
            }
            Some(why) => {
                spare_note = format!(" (the spare clone is stale: {why})");
                patchable = state.unverified.is_none() && state.rows.as_ref().is_some_and(|r| !r.per.is_empty());
            }
        }
    }
    let plan = |method, why: String| plan(method, format!("{why}{spare_note}"));
    let (connections, prepared) = users(server, template)?;
    if connections == 0 && prepared == 0 {
        return plan(Method::Template, "no one is connected to the template, so it is copied directly".into());
    }
    let busy = match (connections, prepared) {
        (c, 0) => format!("the template has {c} open connection(s)"),
        (0, p) => format!("the template has {p} prepared transaction(s)"),
        (c, p) => format!("the template has {c} open connection(s) and {p} prepared transaction(s)"),
    };
    if !info.allow_connections {
        return plan(Method::Dump, format!("{busy} and does not allow ours"));
    }
    let refresh = |why: String| {
        match dump_when_stale {
        true if patchable => plan(
            Method::Patch,
            format!("{busy}; {why}: the spare clone is taken and the rows written since are copied over (a dump if more than rows changed)"),
        ),
        true => plan(
            Method::Dump,
            format!("{busy}; {why}: dumped straight into the new database (the frozen copy is refreshed in the background afterwards)"),
        ),
        false => plan(Method::Frozen { refresh: true }, format!("{busy}; {why}")),
    }
    };
    let Some(state) = marked_state(server, frozen, template)? else {
        return refresh("there is no frozen copy of it yet".into());
    };
    match staleness_seen(server, &state, &mut seen)? {
        None => {
            let how = seen.as_ref().and_then(|p| p.note.as_ref()).map(|n| format!("; {n}")).unwrap_or_default();
            plan(
                Method::Frozen { refresh: false },
                format!("{busy}; its frozen copy is current (nothing changed since {}{how})", state.frozen_at),
            )
        }
        Some(why) => refresh(format!("its frozen copy is stale: {why}")),
    }
}

/// Starts the look at `template` that [`plan`] collects (see [`Ahead`]), knowing the record of
/// the spare clone `spare`, if there is one: when the counters cannot tell, its scan comes along.
/// `ledger`: the migration ledger table, read too when it is schema-qualified (the look's session
/// names PostgreSQL's own schema first), so that a spare taken as checked needs no connection
/// of its own to tell what is pending ([`ClonePlan::spare_ledger`]).
pub fn look_ahead(server: &Server, template: &str, spare: Option<&str>, ledger: &str) -> Result<Option<Ahead>> {
    let record = match spare {
        Some(spare) => marked_state(server, spare, template)?,
        None => None,
    };
    let read = ledger.contains('.').then(|| crate::migrations::ledger_script(ledger, "ledger_"));
    Ahead::start(server, template, record.as_ref(), read)
}

/// [`look_ahead`] from a thread of its own, which connects by itself: started before the caller
/// has a [`Server`] (while a new worktree is checked out, its look is already under way).
pub fn look_ahead_from(url: PgUrl, maintenance_db: &str, template: &str, spare: Option<String>, ledger: &str) -> Ahead {
    let (label, maintenance_db, name) = (url.without_secrets(), maintenance_db.to_string(), template.to_string());
    let ledger = ledger.to_string();
    let thread = std::thread::spawn(move || {
        let server = Server::connect(url, &maintenance_db).ok()?;
        let ahead = look_ahead(&server, &name, spare.as_deref(), &ledger).ok()??;
        ahead.finish(&server).ok()?
    });
    Ahead::spawned(template, label, thread)
}

/// The template state recorded in the marker of a frozen copy or spare clone of `template`.
fn marked_state(server: &Server, name: &str, template: &str) -> Result<Option<FrozenState>> {
    let state = server.database_unsized(name)?.and_then(|f| f.marker).and_then(|m| match m.kind {
        Kind::Frozen(copy) | Kind::Spare(copy) => copy.state,
        _ => None,
    });
    Ok(state.filter(|s| s.template == template))
}

/// The marker of a copy of the template whose state is `state`: [`Kind::Frozen`] or
/// [`Kind::Spare`].
fn copy_marker(kind: fn(Copy) -> Kind, state: FrozenState) -> Marker {
    Marker::new(kind(Copy { template: state.template.clone(), state: Some(state) }))
}

/// Renames the spare clone into place as `target`, open for connections, marked: one
/// transaction, under the spare's lock, after checking that it is current — unless it is the
/// very copy the plan found current a moment ago (`checked`) and the lock was free (a run that
/// waited for it looks again: what was committed while it waited belongs in its clone too).
/// What it came to: [`Taken::None`] when there was no current spare after all (taken by another
/// run, or stale by now).
pub fn take_spare(
    server: &Server,
    template: &str,
    spare: &str,
    target: &str,
    marker: &Marker,
    checked: Option<&FrozenState>,
) -> Result<Taken> {
    let key = format!("spare:{spare}");
    let (_lock, waited) = match Lock::try_exclusive(server, &key)? {
        Some(lock) => (lock, false),
        None => (Lock::exclusive(server, &key, "the spare clone")?, true),
    };
    let Some(state) = marked_state(server, spare, template)? else { return Ok(Taken::None) };
    let checked = !waited && checked.is_some_and(|c| c.same(&state));
    if !checked && staleness(server, &state)?.is_some() {
        return Ok(Taken::None);
    }
    staging::publish(server, spare, target, marker, Old::None, &["ALLOW_CONNECTIONS true"])?;
    Ok(if checked { Taken::AsChecked } else { Taken::Rechecked })
}

/// What [`take_spare`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// No current spare after all.
    None,
    /// The very spare the plan found current, with no look in between.
    AsChecked,
    /// A spare found current when taken (after waiting for its lock).
    Rechecked,
}

/// Takes the spare clone of `template` as `target` (open to connections, marked `marker`) and
/// brings it up to date ([`patch::patch`]). `Ok(Err(why))` when it cannot (no spare any more, or
/// the patch refused): nothing named `target` is left then, and the spare is gone or untouched.
fn patch_spare<'s>(
    server: &'s Server,
    template: &str,
    spare: &str,
    target: &str,
    marker: &Marker,
) -> Result<std::result::Result<Creating<'s>, String>> {
    let state = {
        let _taking = Lock::exclusive(server, &format!("spare:{spare}"), "the spare clone")?;
        let Some(state) = marked_state(server, spare, template)? else {
            return Ok(Err("another run took it a moment ago".into()));
        };
        staging::publish(server, spare, target, marker, Old::None, &["ALLOW_CONNECTIONS true"])?;
        state
    };
    let db = Creating::adopt(server, target);
    match patch::patch(server, template, &state, target)? {
        patch::Patched::Done { .. } => Ok(Ok(db)),
        patch::Patched::Refused(why) => {
            db.discard()?;
            Ok(Err(why))
        }
    }
}

/// Prepares the spare clone of `template` (nothing to do when the current one is up to date, or
/// when another refill is at it): cloned by the best method now, closed to connections, and
/// swapped in, with the record of what it contains, under the spare's lock (held only for the
/// swap: a run taking the spare never waits for a refill's copy).
pub fn refill_spare(server: &Server, template: &str, frozen: &str, spare: &str, prefix: &str) -> Result<bool> {
    let Some(_refilling) = Lock::try_exclusive(server, &format!("refill:{spare}"))? else {
        return Ok(false);
    };
    // A copy current only by a scan of its rows (the counters could not tell) is recorded
    // again, so that the next run's check is the counters' alone: the frozen copy first (a spare
    // made from it takes its record), then the spare.
    restamp_if_scanned(server, template, frozen, Kind::Frozen, "frozen")?;
    if let Some(current) = restamp_if_scanned(server, template, spare, Kind::Spare, "spare")? {
        if current {
            return Ok(false);
        }
    }
    let how = plan(server, template, frozen, None, Strategy::Auto, false, None)?;
    let staging = staging::name(prefix, Staging::Spare);
    let (building, _, state) = execute(server, prefix, template, &staging, &how, staging_marker(spare), true)?;
    let state = state.context("a spare clone needs a record of the template's state")?;
    server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", ident(&staging)))?;
    let marker = copy_marker(Kind::Spare, state);
    let _swapping = Lock::exclusive(server, &format!("spare:{spare}"), "the spare clone")?;
    let old = Old::Replace { prefix, force: true, what: "the old spare clone" };
    staging::publish(server, &staging, spare, &marker, old, &[])?;
    building.keep();
    Ok(true)
}

/// Whether the copy `name` of `template` is current (`None`: there is none); when it is only by
/// a scan of its rows, its record is made again ([`restamp`]), under the lock `{lock}:{name}`
/// that readers of its record take, if the record is still the one checked.
fn restamp_if_scanned(
    server: &Server,
    template: &str,
    name: &str,
    kind: fn(Copy) -> Kind,
    lock: &str,
) -> Result<Option<bool>> {
    let Some(state) = marked_state(server, name, template)? else { return Ok(None) };
    let mut seen = None;
    if staleness_seen(server, &state, &mut seen)?.is_some() {
        return Ok(Some(false));
    }
    if seen.is_some_and(|p| p.note.is_some()) {
        if let Some(new) = restamp(server, &state)? {
            let _held = Lock::exclusive(server, &format!("{lock}:{name}"), "the copy's record")?;
            if marked_state(server, name, template)?.is_some_and(|s| s.same(&state)) {
                server.set_marker(name, &copy_marker(kind, new))?;
            }
        }
    }
    Ok(Some(true))
}

/// Timings of what [`execute`] did, and the method it ended up using.
#[derive(Debug, Default)]
pub struct Timings {
    pub refresh: Option<Duration>,
    pub copy: Duration,
    pub cow: bool,
    /// Set when the method differs from the plan's (a direct copy found the template busy).
    pub fell_back: Option<Method>,
    /// Why it fell back.
    pub fallback_why: String,
}

/// Clones `template` into the new database `target` (created here, marked `marker`, guarded:
/// dropped again on any failure unless the caller keeps it). A frozen copy it refreshes is built
/// under a staging name of `prefix`. Returns, for the file-copy methods and when asked to
/// (`record`: the copy is to be kept as a spare), the record of what the clone contains.
pub fn execute<'s>(
    server: &'s Server,
    prefix: &str,
    template: &str,
    target: &str,
    plan: &ClonePlan,
    marker: Marker,
    record: bool,
) -> Result<(Creating<'s>, Timings, Option<FrozenState>)> {
    let mut t = Timings::default();
    match plan.method {
        Method::Spare => anyhow::bail!("a spare clone is taken with take_spare, not copied"),
        Method::Patch => {
            let start = Instant::now();
            let why = match plan.spare.as_deref() {
                Some(spare) => match patch_spare(server, template, spare, target, &marker)? {
                    Ok(db) => {
                        t.copy = start.elapsed();
                        return Ok((db, t, None));
                    }
                    Err(why) => why,
                },
                None => "there is no spare clone".to_string(),
            };
            let again = ClonePlan { method: Method::Dump, ..plan.clone() };
            let (db, mut t, state) = execute(server, prefix, template, target, &again, marker, record)?;
            t.fell_back = Some(Method::Dump);
            t.fallback_why = format!("the spare clone could not be brought up to date: {why}");
            Ok((db, t, state))
        }
        Method::Template => {
            let start = Instant::now();
            let copy = || copy_database(server, template, target, marker.clone());
            let copied = match record {
                true => freeze(server, template, |_| target.to_string(), None, copy).map(|(c, s)| (c, Some(s))),
                false => copy().map(|c| (c, None)),
            };
            match copied {
                Ok(((db, cow), state)) => {
                    t.copy = start.elapsed();
                    t.cow = cow;
                    Ok((db, t, state))
                }
                // Someone connected between the plan and the copy: auto takes the frozen path.
                Err(e) if plan.auto && format!("{e:#}").contains("is being accessed by other users") => {
                    let again = ClonePlan { method: Method::Frozen { refresh: true }, ..plan.clone() };
                    let (db, mut t, state) = execute(server, prefix, template, target, &again, marker, record)?;
                    t.fell_back = Some(again.method);
                    t.fallback_why = "someone connected to the template before the copy began".into();
                    Ok((db, t, state))
                }
                Err(e) => Err(busy_hint(server, e, template)),
            }
        }
        Method::Frozen { refresh } => {
            if refresh {
                let start = Instant::now();
                refresh_frozen(server, prefix, template, &plan.frozen)?;
                t.refresh = Some(start.elapsed());
            }
            // What is copied is what the marker describes: read both under the lock that keeps
            // a refresh from replacing it in between.
            let _reading = Lock::shared(server, &format!("frozen:{}", plan.frozen), "the frozen copy")?;
            let state = marked_state(server, &plan.frozen, template)?
                .context("the frozen copy disappeared while it was being copied; run again")?;
            let start = Instant::now();
            let (db, cow) = copy_database(server, &plan.frozen, target, marker)?;
            t.copy = start.elapsed();
            t.cow = cow;
            Ok((db, t, Some(state)))
        }
        Method::Dump => {
            let start = Instant::now();
            // The new database is made while pg_dump reads the template's catalogs.
            let mut db = None;
            dump_restore_with(server, template, target, None, || {
                db = Some(server.create_database(target, "TEMPLATE template0", &marker)?);
                Ok(())
            })?;
            t.copy = start.elapsed();
            Ok((db.context("the new database was not made")?, t, None))
        }
    }
}

/// A direct copy refused because the template is in use: say what uses it and what to do.
fn busy_hint(server: &Server, e: anyhow::Error, template: &str) -> anyhow::Error {
    let text = format!("{e:#}");
    if !text.contains("is being accessed by other users") {
        return e;
    }
    let (connections, prepared) = users(server, template).unwrap_or((0, 0));
    let what = match (connections, prepared) {
        (_, 0) => format!("{connections} open connection(s)"),
        (0, p) => format!("{p} prepared transaction(s)"),
        (c, p) => format!("{c} open connection(s) and {p} prepared transaction(s)"),
    };
    let fix = if prepared > 0 {
        format!("finish the prepared transaction (in `{template}`: SELECT gid FROM pg_prepared_xacts; then COMMIT PREPARED or ROLLBACK PREPARED), or use --strategy auto")
    } else {
        "stop what is connected to it, or use --strategy auto (copies it while in use)".to_string()
    };
    crate::error::fail(format!("the template `{template}` is in use ({what}), so it cannot be copied directly"), fix)
}

/// `CREATE DATABASE target TEMPLATE source`, as a copy-on-write clone where the server can.
fn copy_database<'s>(server: &'s Server, source: &str, target: &str, marker: Marker) -> Result<(Creating<'s>, bool)> {
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
        .create_database(target, &format!("TEMPLATE {}", ident(source)), &marker)
        .with_context(|| format!("copying `{source}`"))?;
    Ok((db, false))
}

/// `pg_dump … source | psql … target`, streamed, in one transaction on the receiving side.
/// Owners and privileges are kept (as in a file copy); subscriptions are not (a file copy does
/// not copy them either). `app` names the dump's session (`application_name`).
pub fn dump_restore(server: &Server, source: &str, target: &str, app: Option<&str>) -> Result<()> {
    dump_restore_with(server, source, target, app, || Ok(()))
}

/// [`dump_restore`], running `make_target` once pg_dump has started and before psql connects.
fn dump_restore_with(
    server: &Server,
    source: &str,
    target: &str,
    app: Option<&str>,
    make_target: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let mut dump = server.command(server.pg_dump()?, &["--no-subscriptions", "--format=plain"], source, &[])?;
    if let Some(app) = app {
        dump.env("PGAPPNAME", app);
    }
    let mut load = server.psql(target)?;
    load.arg("--single-transaction");
    proc::pipe_with(&mut dump, &mut load, make_target).map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("must be able to SET ROLE") || text.contains("must be member of role") {
            return crate::error::fail(
                format!("copying `{source}` with pg_dump | psql: {}", crate::error::telling_line(&text)),
                format!("the template has objects owned by roles that {} cannot hand them to: connect as their owner or a superuser, or use --strategy template when nobody is connected", server.url.user().unwrap_or("this user")),
            );
        }
        e.context(format!("copying `{source}` into `{target}` with pg_dump | psql"))
    })
}

/// Re-makes the frozen copy of `template` under its exclusive lock: dump into a new database,
/// swap it in with its record. Nothing to do when another run refreshed it while we waited for
/// the lock and it is current.
fn refresh_frozen(server: &Server, prefix: &str, template: &str, frozen: &str) -> Result<()> {
    let _lock = Lock::exclusive(server, &format!("frozen:{frozen}"), "the frozen copy")?;
    if let Some(state) = marked_state(server, frozen, template)? {
        if staleness(server, &state)?.is_none() {
            return Ok(());
        }
    }
    let app = format!("xtask-db-dump-{}-{}", std::process::id(), crate::time::now_rfc3339());
    let staging = staging::name(prefix, Staging::Frozen);
    let (db, state) = freeze(
        server,
        template,
        |_| staging.clone(),
        Some(&app),
        || {
            let db = server.create_database(&staging, "TEMPLATE template0", &staging_marker(frozen))?;
            dump_restore(server, template, &staging, Some(&app))?;
            Ok(db)
        },
    )?;
    server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", ident(&staging)))?;
    let marker = copy_marker(Kind::Frozen, state);
    if server.database_exists(frozen)? {
        server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH IS_TEMPLATE false", ident(frozen)))?;
    }
    // IS_TEMPLATE protects it from a stray DROP DATABASE.
    let old = Old::Replace { prefix, force: false, what: "the old frozen copy" };
    staging::publish(server, &staging, frozen, &marker, old, &["IS_TEMPLATE true"])?;
    db.keep();
    Ok(())
}
