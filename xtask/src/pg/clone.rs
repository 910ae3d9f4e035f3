//! Cloning a template database: which method is correct right now, and doing it.
//!
//! - **template**: `CREATE DATABASE new TEMPLATE t` — a file-level copy, fast, but PostgreSQL
//!   refuses it while anyone is connected to `t` (or a prepared transaction uses it).
//! - **frozen copy**: the same from `<prefix>frozen_<hash>`, a connection-less
//!   (`ALLOW_CONNECTIONS false`) copy of the template, when that copy is current.
//! - **dump**: `pg_dump t | psql -1 -v ON_ERROR_STOP=1 new`, streamed process to process, owners
//!   and privileges included (a file copy keeps them, so every path gives the same clone). Works
//!   while the template is in use; slower.
//!
//! `auto` never terminates anyone's connection to the template, and its clone contains every
//! change committed to the template before the command started:
//!
//! 1. No one is connected to the template: clone it directly (always current).
//! 2. Otherwise, if the frozen copy is current, clone the frozen copy.
//! 3. Otherwise refresh the frozen copy from the template by dump, then clone it.
//!
//! # Why "current" cannot miss a committed change
//!
//! A copy (frozen copy or spare clone) records a [`FrozenState`]: what the server's statistics
//! and activity views said about the template right after the copy was complete. All of it is
//! read from the maintenance database: this tool never connects to the template to look at it,
//! so its own looking moves no counter. A check reads the same again and says "current" only
//! when nothing differs. The argument, for PostgreSQL 15 and later:
//!
//! - Every change to a database's contents — rows, DDL, sequences (`nextval`, `setval`, even in
//!   a rolled-back transaction), large objects, anything — is made by a backend **connected to
//!   that database**, inside a transaction. PostgreSQL has no cross-database writes; dblink and
//!   postgres_fdw open a backend of their own on the target; `COMMIT PREPARED` must be run from
//!   the database that prepared the transaction. (What lives in shared catalogs — roles, the
//!   database's own ACL, settings and comment — is not part of a clone on any path:
//!   `CREATE DATABASE … TEMPLATE` does not copy it either.)
//! - Every transaction that ends, committed or rolled back, counts in `pg_stat_database`'s
//!   `xact_commit`/`xact_rollback`. That counting does not depend on `track_counts` (it gates
//!   row counters only), and a backend flushes its counts to shared memory, at the latest, as it
//!   exits — in a `before_shmem_exit` hook, before its `pg_stat_activity` entry is removed.
//! - So take the copy's record as "backends B₁ (pid, start, `state_change`), then counters C₁".
//!   A change committed after the copy's snapshot was made by a backend that either
//!   - **is connected at the check**: then it ran a statement since, so its `state_change`
//!     differs from B₁'s (a new backend is not in B₁ at all), or it is running one now (a
//!     procedure or `DO` block that commits as it goes stays `active`): "current" requires the
//!     same set of backends, with the same `state_change`, all idle; or
//!   - **has disconnected before the check read the activity view**: then its transactions were
//!     flushed before that, and the counters, read after the activity view, include them. If it
//!     committed after C₁, the transaction count moved. If it committed between the snapshot and
//!     C₁, the copy's own record caught it: B₁ is read after the copy completed and compared
//!     with B₀, read before it began (a backend that was there is gone, or ran a statement), and
//!     a session that connected, committed and left within the copy shows in `sessions`, which
//!     must have grown by exactly this tool's own connections (the dump's one, or none). Such a
//!     copy is recorded *unverified* and is never current.
//! - Everything else that could make the counters lie counts as a change: the database
//!   re-created (oid), its statistics reset (`stats_reset`), a server restart or crash (which
//!   discards statistics: `pg_postmaster_start_time`, and the shared `pg_stat_archiver` reset
//!   time that the discard sets), prepared transactions appearing or going, a subscription or a
//!   logical replication slot on the template, a backend we may not inspect (another role's
//!   `state_change` is hidden without `pg_read_all_stats`), a backend that is not a plain client
//!   (walsenders and background workers are not counted in `sessions`), statistics collected
//!   asynchronously (before PostgreSQL 15: never current).
//!
//! The one thing it cannot see: a background worker or walsender that connects to the template,
//! commits only sequence changes, and leaves again entirely while a copy is being made (it is
//! not counted in `sessions`, and row counters do not move). No extension does that to a
//! development template; `--strategy dump` takes the template's own snapshot every time.
//!
//! Autovacuum workers are ignored: they change no contents. They are not in the backends
//! compared, and the transactions they end (a worker visits every database each
//! `autovacuum_naptime`, doing a few even when it finds nothing to do) are allowed for when
//! nothing else can have ended them: no session connected, no row changed, row changes counted
//! for every backend (`track_counts` on, set nowhere per role or database), and no preloaded
//! library that could start a background worker of its own (see [`only_autovacuum`]). Otherwise
//! any transaction that ended means "stale". This widens the blind spot above to: a walsender
//! (a `replication=database` connection, which needs the REPLICATION attribute) that changes
//! only sequences at any time between a copy and a check. `template create` ends with
//! `VACUUM (FREEZE, ANALYZE)`, so autovacuum finds nothing to analyze (which writes
//! `pg_statistic` rows: a row change) in a template nobody changed.
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
use serde::{Deserialize, Serialize};

use super::marker::{Copy, Kind, Marker};
use super::staging::{self, staging_marker, Old};
use super::{ident, literal, Creating, Lock, Server};
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
}

impl Method {
    pub fn describe(&self) -> &'static str {
        match self {
            Method::Spare => "the ready-made spare clone, renamed into place",
            Method::Template => "file copy of the template (CREATE DATABASE … TEMPLATE)",
            Method::Frozen { refresh: false } => "file copy of the frozen copy of the template",
            Method::Frozen { refresh: true } => "refresh the frozen copy by pg_dump | psql, then file copy of it",
            Method::Dump => "pg_dump | psql, streamed",
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
}

impl ClonePlan {
    pub fn describe(&self) -> &'static str {
        self.method.describe()
    }
}

/// A backend connected to the template, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub pid: i64,
    pub started: String,
    pub state_change: String,
    pub state: String,
    pub kind: String,
    #[serde(default)]
    pub app: String,
}

impl Backend {
    /// Idle, a plain client, and visible to us: it is not running anything right now.
    fn quiet(&self) -> bool {
        self.kind == "client backend"
            && !self.state_change.is_empty()
            && matches!(self.state.as_str(), "idle" | "idle in transaction" | "idle in transaction (aborted)")
    }
    fn same(&self, other: &Backend) -> bool {
        (self.pid, &self.started, &self.state_change, &self.state)
            == (other.pid, &other.started, &other.state_change, &other.state)
    }
}

/// The template's counters, as `pg_stat_database` and friends show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub oid: i64,
    pub sessions: i64,
    pub xacts: i64,
    pub writes: i64,
    pub stats_reset: String,
    pub shared_reset: String,
    pub server_start: String,
    pub prepared: String,
    pub feeds: i64,
    pub now: String,
    /// Row changes are counted for every backend: `track_counts` is on, and no per-role or
    /// per-database setting names it. (Absent in older records: then not known.)
    #[serde(default)]
    pub counted: bool,
    /// `shared_preload_libraries`: what could start background workers of its own.
    #[serde(default)]
    pub preload: String,
}

/// What a copy of the template records about the template it was made from: see the module
/// documentation for why comparing it with the present is enough.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrozenState {
    pub template: String,
    /// Backends on the template right after the copy, then the counters.
    pub backends: Vec<Backend>,
    pub counters: Option<Counters>,
    /// Why this copy can never be taken as current, when it cannot.
    pub unverified: Option<String>,
    pub frozen_at: String,
}

fn activity_sql(template: &str) -> String {
    format!(
        "SELECT a.pid::bigint AS pid, coalesce(a.backend_start::text, '') AS started, \
         coalesce(a.state_change::text, '') AS state_change, coalesce(a.state, '') AS state, \
         coalesce(a.backend_type, '') AS kind, coalesce(a.application_name, '') AS app \
         FROM pg_stat_activity a JOIN pg_database d ON d.oid = a.datid \
         WHERE d.datname = {} AND a.pid <> pg_backend_pid() \
         AND a.backend_type IS DISTINCT FROM 'autovacuum worker' ORDER BY a.pid",
        literal(template)
    )
}

fn counters_sql(template: &str) -> String {
    format!(
        "SELECT d.oid::bigint AS oid, s.sessions::bigint AS sessions, \
         (s.xact_commit + s.xact_rollback)::bigint AS xacts, \
         (s.tup_inserted + s.tup_updated + s.tup_deleted)::bigint AS writes, \
         coalesce(s.stats_reset::text, '') AS stats_reset, \
         (SELECT coalesce(stats_reset::text, '') FROM pg_stat_archiver) AS shared_reset, \
         pg_postmaster_start_time()::text AS server_start, \
         (SELECT coalesce(string_agg(format('%s@%s', p.gid, p.prepared), ',' ORDER BY p.gid), '') \
            FROM pg_prepared_xacts p WHERE p.database = d.datname) AS prepared, \
         (SELECT count(u.subdbid) FROM pg_subscription u WHERE u.subdbid = d.oid) \
           + (SELECT count(*) FROM pg_replication_slots r WHERE r.database = d.datname) AS feeds, \
         now()::text AS now, \
         (current_setting('track_counts') = 'on' AND NOT EXISTS (SELECT 1 FROM pg_db_role_setting r \
            WHERE array_to_string(r.setconfig, ',') ILIKE '%track_counts%')) AS counted, \
         current_setting('shared_preload_libraries') AS preload \
         FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid WHERE d.datname = {}",
        literal(template)
    )
}

/// Backends on the template (never ourselves: we look from the maintenance database).
pub fn activity(server: &Server, template: &str) -> Result<Vec<Backend>> {
    server
        .query(&server.maintenance_db, &activity_sql(template))
        .with_context(|| format!("inspecting the template `{template}`"))
}

/// The template's counters. Read them after [`activity`], never before (see the module docs).
pub fn counters(server: &Server, template: &str) -> Result<Counters> {
    server
        .query_one(&server.maintenance_db, &counters_sql(template))
        .with_context(|| format!("inspecting the template `{template}`"))
}

/// Why a copy whose record is `frozen` is not current now, or `None` when it is.
pub fn staleness(server: &Server, frozen: &FrozenState) -> Result<Option<String>> {
    if let Some(why) = too_old(server) {
        return Ok(Some(why));
    }
    if let Some(why) = &frozen.unverified {
        return Ok(Some(format!("it was made while the template was changing ({why})")));
    }
    let Some(then) = &frozen.counters else { return Ok(Some("it has no record of the template's state".into())) };
    let backends = activity(server, &frozen.template)?;
    let now = counters(server, &frozen.template)?;
    Ok(compare(then, &frozen.backends, &now, &backends, 0, 0))
}

/// Before PostgreSQL 15, statistics travel to a collector process asynchronously (and may be
/// dropped): a counter that did not move proves nothing.
fn too_old(server: &Server) -> Option<String> {
    (server.major < 15).then(|| {
        format!("PostgreSQL {} collects statistics asynchronously, so changes cannot be ruled out", server.major)
    })
}

/// Why the template as (`now`, `backends`) may hold a change that (`then`, `before`) did not.
/// `own_sessions`/`own_xacts`: connections and transactions this tool itself made in between
/// (a dump's); a negative `own_xacts` means "not known exactly": transactions are not compared.
fn compare(
    then: &Counters,
    before: &[Backend],
    now: &Counters,
    backends: &[Backend],
    own_sessions: i64,
    own_xacts: i64,
) -> Option<String> {
    if then.oid != now.oid {
        return Some("the template was re-created since".into());
    }
    if then.stats_reset != now.stats_reset || then.shared_reset != now.shared_reset {
        return Some("the server's statistics were reset since".into());
    }
    if then.server_start != now.server_start {
        return Some("the server was restarted since".into());
    }
    if now.feeds > 0 {
        return Some(
            "the template has a subscription or a logical replication slot, so changes can arrive without a session"
                .into(),
        );
    }
    if then.prepared != now.prepared {
        return Some("its prepared transactions changed since".into());
    }
    let busy = backends.iter().filter(|b| !b.quiet()).count();
    if busy > 0 {
        return Some(format!(
            "{busy} session(s) on the template are running a statement now (or cannot be inspected), and may commit at any moment"
        ));
    }
    let new = backends.iter().filter(|b| !before.iter().any(|o| o.pid == b.pid && o.started == b.started)).count();
    if new > 0 {
        return Some(format!("{new} session(s) connected to the template since"));
    }
    let gone = before.iter().filter(|o| !backends.iter().any(|b| b.pid == o.pid && b.started == o.started)).count();
    if gone > 0 {
        return Some(format!("{gone} session(s) that were connected to the template have disconnected since (they may have committed first)"));
    }
    let ran = backends.iter().filter(|b| !before.iter().any(|o| o.same(b))).count();
    if ran > 0 {
        return Some(format!("{ran} session(s) on the template ran statements since"));
    }
    if now.sessions - then.sessions > own_sessions {
        return Some(format!(
            "{} session(s) connected to the template and left since",
            now.sessions - then.sessions - own_sessions
        ));
    }
    if now.writes != then.writes {
        return Some(format!("{} row change(s) were written to the template since", now.writes - then.writes));
    }
    if own_xacts >= 0 && now.xacts - then.xacts != own_xacts && !only_autovacuum(then, now, own_sessions) {
        return Some(format!("{} transaction(s) ended on the template since", now.xacts - then.xacts - own_xacts));
    }
    None
}

/// Libraries in `shared_preload_libraries` known to start no background worker that writes to a
/// database (`pg_prewarm`'s reads; the others start none).
const QUIET_PRELOADS: &[&str] = &["pg_stat_statements", "auto_explain", "pg_prewarm", "plpgsql", "pg_hint_plan"];

/// Whether transactions that ended since, without a session connecting and without a row
/// changing, can only be autovacuum's (a worker visits every database each
/// `autovacuum_naptime`, and its transactions count, even when it finds nothing to do). Then
/// they changed no contents. Everything else that ends transactions without being counted in
/// `sessions` is ruled out: a client backend is counted; logical replication workers and logical
/// walsenders need a subscription or slot (`feeds`, already refused); parallel workers belong to a
/// client that is running a statement (refused); a dynamic background worker is started by a
/// client session (counted); other background workers need a library preloaded, and only
/// [`QUIET_PRELOADS`] are allowed. Row changes must be counted for every backend (`counted`)
/// then and now, or an uncounted write could hide here.
fn only_autovacuum(then: &Counters, now: &Counters, own_sessions: i64) -> bool {
    let preload_quiet = |p: &str| {
        p.split(',').map(|l| l.trim().trim_matches('"')).filter(|l| !l.is_empty()).all(|l| QUIET_PRELOADS.contains(&l))
    };
    now.sessions - then.sessions == own_sessions
        && now.writes == then.writes
        && then.counted
        && now.counted
        && then.preload == now.preload
        && preload_quiet(&now.preload)
}

/// Runs `copy` (which makes a copy of the template and connects to it `own_sessions` times) and
/// returns what the copy records: backends and counters before, the copy, backends and counters
/// after; unverified when anything happened in between that the copy may have missed.
fn freeze<T>(
    server: &Server,
    template: &str,
    own_sessions: i64,
    own_app: Option<&str>,
    copy: impl FnOnce() -> Result<T>,
) -> Result<(T, FrozenState)> {
    if let Some(why) = too_old(server) {
        let out = copy()?;
        let state = FrozenState {
            template: template.into(),
            backends: vec![],
            counters: None,
            unverified: Some(why),
            frozen_at: String::new(),
        };
        return Ok((out, state));
    }
    // Counters first, then backends: a backend that leaves in between is still in `before`.
    let then = counters(server, template)?;
    let before = activity(server, template)?;
    let out = copy()?;
    // Our own dump's backend may still be on its way out.
    if let Some(app) = own_app {
        for _ in 0..250 {
            if !activity(server, template)?.iter().any(|b| b.app == app) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let after = activity(server, template)?.into_iter().filter(|b| Some(b.app.as_str()) != own_app).collect::<Vec<_>>();
    let now = counters(server, template)?;
    // Transactions: ours are not counted exactly (pg_dump runs several), so not compared here;
    // a backend that committed during the copy shows as gone, changed or new, or in `sessions`.
    let mut unverified =
        before.iter().find(|b| !b.quiet()).map(|_| "a session was running a statement when the copy began".to_string());
    if unverified.is_none() {
        unverified = compare(&then, &before, &now, &after, own_sessions, -1);
    }
    let state = FrozenState {
        template: template.into(),
        backends: after,
        unverified,
        frozen_at: now.now.clone(),
        counters: Some(now),
    };
    Ok((out, state))
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

/// Decides how to clone `template` (read-only: looks, changes nothing).
pub fn plan(
    server: &Server,
    template: &str,
    frozen: &str,
    spare: Option<&str>,
    strategy: Strategy,
) -> Result<ClonePlan> {
    let Some(info) = server.database(template)? else {
        return Err(crate::error::fail(
            format!("the golden template `{template}` does not exist on {}", server.url.server_label()),
            "point WORKTREE_TEMPLATE_DB at an existing database, or build one with `cargo xtask db template create`",
        ));
    };
    let auto = strategy == Strategy::Auto;
    let plan = |method, why: String| {
        Ok(ClonePlan { method, why, frozen: frozen.to_string(), spare: spare.map(str::to_string), auto })
    };
    match strategy {
        Strategy::Template => return plan(Method::Template, "--strategy template".into()),
        Strategy::Dump => return plan(Method::Dump, "--strategy dump".into()),
        Strategy::Auto => {}
    }
    // A spare clone, prepared in the background after the previous run, if it is still current.
    let mut spare_note = String::new();
    if let Some(state) = spare.and_then(|name| marked_state(server, name, template).transpose()).transpose()? {
        match staleness(server, &state)? {
            None => return plan(Method::Spare, format!("a spare clone made at {} is current", state.frozen_at)),
            Some(why) => spare_note = format!(" (the spare clone is stale: {why})"),
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
    let Some(state) = marked_state(server, frozen, template)? else {
        return plan(Method::Frozen { refresh: true }, format!("{busy}; there is no frozen copy of it yet"));
    };
    match staleness(server, &state)? {
        None => plan(
            Method::Frozen { refresh: false },
            format!("{busy}; its frozen copy is current (nothing changed since {})", state.frozen_at),
        ),
        Some(why) => plan(Method::Frozen { refresh: true }, format!("{busy}; its frozen copy is stale: {why}")),
    }
}

/// The template state recorded in the marker of a frozen copy or spare clone of `template`.
fn marked_state(server: &Server, name: &str, template: &str) -> Result<Option<FrozenState>> {
    let state = server.database(name)?.and_then(|f| f.marker).and_then(|m| match m.kind {
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
/// transaction, under the spare's lock, after checking once more that it is current.
/// `Ok(false)`: no current spare after all (taken by another run, or stale by now).
pub fn take_spare(server: &Server, template: &str, spare: &str, target: &str, marker: &Marker) -> Result<bool> {
    let _lock = Lock::exclusive(server, &format!("spare:{spare}"), "the spare clone")?;
    let Some(state) = marked_state(server, spare, template)? else { return Ok(false) };
    if staleness(server, &state)?.is_some() {
        return Ok(false);
    }
    staging::publish(server, spare, target, marker, Old::None, &["ALLOW_CONNECTIONS true"])?;
    Ok(true)
}

/// Prepares the spare clone of `template` (nothing to do when the current one is up to date, or
/// when another refill is at it): cloned by the best method now, closed to connections, and
/// swapped in, with the record of what it contains, under the spare's lock (held only for the
/// swap: a run taking the spare never waits for a refill's copy).
pub fn refill_spare(server: &Server, template: &str, frozen: &str, spare: &str, prefix: &str) -> Result<bool> {
    let Some(_refilling) = Lock::try_exclusive(server, &format!("refill:{spare}"))? else {
        return Ok(false);
    };
    if let Some(state) = marked_state(server, spare, template)? {
        if staleness(server, &state)?.is_none() {
            return Ok(false);
        }
    }
    let how = plan(server, template, frozen, None, Strategy::Auto)?;
    let staging = staging::name(prefix, Staging::Spare);
    let (building, _, state) = execute(server, prefix, template, &staging, &how, staging_marker(spare))?;
    let state = state.context("a spare clone needs a record of the template's state")?;
    server.exec(&server.maintenance_db, &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", ident(&staging)))?;
    let marker = copy_marker(Kind::Spare, state);
    let _swapping = Lock::exclusive(server, &format!("spare:{spare}"), "the spare clone")?;
    let old = Old::Replace { prefix, force: true, what: "the old spare clone" };
    staging::publish(server, &staging, spare, &marker, old, &[])?;
    building.keep();
    Ok(true)
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
/// under a staging name of `prefix`. Returns, for the file-copy methods, the record of what the
/// clone contains.
pub fn execute<'s>(
    server: &'s Server,
    prefix: &str,
    template: &str,
    target: &str,
    plan: &ClonePlan,
    marker: Marker,
) -> Result<(Creating<'s>, Timings, Option<FrozenState>)> {
    let mut t = Timings::default();
    match plan.method {
        Method::Spare => anyhow::bail!("a spare clone is taken with take_spare, not copied"),
        Method::Template => {
            let start = Instant::now();
            let copied = freeze(server, template, 0, None, || copy_database(server, template, target, marker.clone()));
            match copied {
                Ok(((db, cow), state)) => {
                    t.copy = start.elapsed();
                    t.cow = cow;
                    Ok((db, t, Some(state)))
                }
                // Someone connected between the plan and the copy: auto takes the frozen path.
                Err(e) if plan.auto && format!("{e:#}").contains("is being accessed by other users") => {
                    let again = ClonePlan { method: Method::Frozen { refresh: true }, ..plan.clone() };
                    let (db, mut t, state) = execute(server, prefix, template, target, &again, marker)?;
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
            let db = server.create_database(target, "TEMPLATE template0", &marker)?;
            dump_restore(server, template, target, None)?;
            t.copy = start.elapsed();
            Ok((db, t, None))
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
    let mut dump = server.command(server.pg_dump()?, &["--no-subscriptions", "--format=plain"], source, &[])?;
    if let Some(app) = app {
        dump.env("PGAPPNAME", app);
    }
    let mut load = server.psql(target)?;
    load.arg("--single-transaction");
    proc::pipe(&mut dump, &mut load).map_err(|e| {
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
    let (db, state) = freeze(server, template, 1, Some(&app), || {
        let db = server.create_database(&staging, "TEMPLATE template0", &staging_marker(frozen))?;
        dump_restore(server, template, &staging, Some(&app))?;
        Ok(db)
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Counters {
        Counters {
            oid: 1,
            sessions: 5,
            xacts: 100,
            writes: 10,
            stats_reset: String::new(),
            shared_reset: "r".into(),
            server_start: "s".into(),
            prepared: String::new(),
            feeds: 0,
            now: "n".into(),
            counted: true,
            preload: String::new(),
        }
    }
    fn idle(pid: i64) -> Backend {
        Backend {
            pid,
            started: "t0".into(),
            state_change: "t1".into(),
            state: "idle".into(),
            kind: "client backend".into(),
            app: "psql".into(),
        }
    }

    #[test]
    fn staleness_rules() {
        let before = vec![idle(1), idle(2)];
        assert_eq!(compare(&counters(), &before, &counters(), &before, 0, 0), None);
        type Change = fn(&mut Counters, &mut Vec<Backend>);
        let cases: [(Change, &str); 15] = [
            // Transactions that only autovacuum can have ended are allowed for (below); with a
            // preloaded library that may run workers, or uncounted rows, they are not.
            (|c, _| (c.xacts += 1, c.preload = "pg_cron".into()).0, "1 transaction(s) ended"),
            (|c, _| (c.xacts += 1, c.counted = false).0, "1 transaction(s) ended"),
            (|c, _| (c.xacts += 1, c.preload = "pg_stat_statements".into()).0, "1 transaction(s) ended"),
            (|c, _| c.writes += 1, "row change"),
            (|c, _| c.sessions += 1, "connected to the template and left"),
            (|c, _| c.oid = 2, "re-created"),
            (|c, _| c.stats_reset = "now".into(), "reset"),
            (|c, _| c.shared_reset = "crash".into(), "reset"),
            (|c, _| c.server_start = "later".into(), "restarted"),
            (|c, _| c.prepared = "gid@t".into(), "prepared"),
            (|c, _| c.feeds = 1, "subscription"),
            (|_, b| b[0].state = "active".into(), "running a statement"),
            (|_, b| b[0].state_change = "t2".into(), "ran statements"),
            (|_, b| b.push(idle(3)), "connected to the template since"),
            (|_, b| drop(b.remove(1)), "disconnected since"),
        ];
        for (change, why) in cases {
            let (mut c, mut b) = (counters(), before.clone());
            change(&mut c, &mut b);
            let got = compare(&counters(), &before, &c, &b, 0, 0);
            assert!(got.as_deref().is_some_and(|s| s.contains(why)), "{why}: {got:?}");
        }
        // Hidden state (another role's session without pg_read_all_stats) and non-client
        // backends are never quiet.
        let mut hidden = before.clone();
        hidden[0].state_change = String::new();
        assert!(compare(&counters(), &before, &counters(), &hidden, 0, 0).is_some());
        let mut walsender = before.clone();
        walsender[0].kind = "walsender".into();
        assert!(compare(&counters(), &before, &counters(), &walsender, 0, 0).is_some());
        // Autovacuum's visits: transactions, no session, no row.
        let mut c = counters();
        c.xacts += 7;
        assert_eq!(compare(&counters(), &before, &c, &before, 0, 0), None);
        let mut both = counters();
        (both.preload, c.preload) =
            ("pg_stat_statements, auto_explain".into(), "pg_stat_statements, auto_explain".into());
        assert_eq!(compare(&both, &before, &c, &before, 0, 0), None);
        // This tool's own dump session is allowed for, when it is.
        let mut c = counters();
        c.sessions += 1;
        assert_eq!(compare(&counters(), &before, &c, &before, 1, -1), None);
        c.sessions += 1;
        assert!(compare(&counters(), &before, &c, &before, 1, -1).is_some());
    }
}
