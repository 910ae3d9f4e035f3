//! `db rehearse`: this branch's pending migrations on a file copy of the production copy —
//! smoke test, traced migration ([`trace`]), the gate (schema-diff against a fresh build), smoke
//! test again — and the report ([`report`]) for the pull request.
//!
//! The pristine copy is only ever the source of `CREATE DATABASE … TEMPLATE`: nothing connects to
//! it, nothing writes to it. The rehearsal database is built under this run's staging name
//! (`Staging::Rehearsal`), so an error, Ctrl-C or a panic drops it and a run killed outright
//! leaves a name the next run's sweep removes; `--keep` publishes it as `<prefix>rehearsal`.

mod cluster;
mod hints;
mod model;
mod report;
mod smoke;
mod statements;
mod trace;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::ops::compare::{compare, Compare};
use super::Ctx;
use crate::error::{fail, Verdict};
use crate::flags::{Format, Rehearse};
use crate::migrations;
use crate::naming::Staging;
use crate::pg::marker::{Kind, Marker};
use crate::pg::session::Session;
use crate::pg::staging::{self, staging_marker, sweep_abandoned, Old};
use crate::pg::{ident, Server};
use crate::proc;
use crate::term::step;

pub use report::Report;

pub fn run(ctx: &Ctx, flags: Rehearse) -> Result<()> {
    let started = Instant::now();
    let server = ctx.server()?;
    sweep_abandoned(&server, &ctx.config.prefix)?;
    let thresholds = thresholds(ctx, flags.max_lock_ms, flags.max_statement_ms);
    let report_path = report_path(ctx, flags.report.as_deref())?;
    let pristine = pristine(ctx, &server, flags.from.as_deref())?;
    if flags.keep {
        keepable(ctx, &server, &pristine)?;
    }

    // The copy: a file copy of the pristine one, dropped at the end unless --keep.
    let copy = staging::name(&ctx.config.prefix, Staging::Rehearsal);
    let target = if flags.keep { ctx.config.rehearsal_db() } else { copy.clone() };
    let copy_started = Instant::now();
    let building = step(&format!("copying `{pristine}` (CREATE DATABASE … TEMPLATE; it is not modified)"), || {
        server
            .create_database(&copy, &copy_clause(&server, &pristine)?, &staging_marker(&target))
            .map_err(|e| busy(&server, e, &pristine))
    })?;
    let mut r = Report::new(&pristine, &copy, thresholds, &server.version);
    r.copy_ms = copy_started.elapsed().as_millis() as u64;
    let place = Place { server: &server, db: &copy, pristine: &pristine, side: Side::Local };
    rehearse(ctx, &place, &mut r, !flags.no_smoke)?;
    r.duration_ms = started.elapsed().as_millis() as u64;

    if flags.keep {
        let marker = Marker::new(Kind::Rehearsal { from: pristine.clone() });
        let previous = format!("the previous `{target}`");
        staging::publish(
            &server,
            &copy,
            &target,
            &marker,
            Old::Replace { prefix: &ctx.config.prefix, force: true, what: &previous },
            &[],
        )?;
        building.keep();
        r.database = target.clone();
    } else {
        building.discard()?;
        r.database = String::new();
    }
    finish(&report_path, &mut r, flags.format)?;
    if flags.keep {
        eprintln!("the migrated copy is kept as `{target}`");
    }
    verdict(&mut r)
}

/// What `clone-prod --rehearse` asks for: the rehearsal's own flags.
pub struct Remote<'a> {
    /// The production instance the throwaway was restored from (the report's "a copy of").
    pub source: &'a str,
    pub report: Option<&'a Path>,
    pub format: Format,
    pub max_lock_ms: Option<u64>,
    pub max_statement_ms: Option<u64>,
    pub smoke: bool,
}

/// The rehearsal on a throwaway instance restored from production, reached through a tunnel:
/// `server` connects to it and `db` is its database, migrated in place (the throwaway is
/// deleted afterwards). The smoke tests point the local app at it through the tunnel; the gate
/// compares its schema (`pg_dump --schema-only`: no row leaves it) with a fresh build on the local
/// server. What the migrations change of its cluster is reported, not undone. Writes the same
/// report as `db rehearse`; a finding is the same `Verdict` (exit 1).
pub fn remote(ctx: &Ctx, server: &Server, db: &str, opts: Remote<'_>) -> Result<()> {
    let started = Instant::now();
    let report_path = report_path(ctx, opts.report)?;
    // The local server is needed for the gate's fresh build: checked before any migration runs.
    let local = ctx.server().map_err(|e| {
        let r = crate::error::report(&e);
        fail(
            format!("the gate needs the local server for a fresh build: {}", r.line.trim_start_matches("error: ")),
            "start it with `cargo xtask db up`, then run again",
        )
    })?;
    let thresholds = thresholds(ctx, opts.max_lock_ms, opts.max_statement_ms);
    let mut r = Report::new(opts.source, db, thresholds, &server.version);
    let url = server.url.with_dbname(db);
    let place = Place { server, db, pristine: "", side: Side::Remote { local: &local, url: &url } };
    rehearse(ctx, &place, &mut r, opts.smoke)?;
    r.duration_ms = started.elapsed().as_millis() as u64;
    r.database = String::new();
    finish(&report_path, &mut r, opts.format)?;
    verdict(&mut r)
}

fn thresholds(ctx: &Ctx, max_lock_ms: Option<u64>, max_statement_ms: Option<u64>) -> report::Thresholds {
    report::Thresholds {
        max_lock_ms: max_lock_ms.unwrap_or(ctx.config.rehearse.max_lock_ms),
        max_statement_ms: max_statement_ms.unwrap_or(ctx.config.rehearse.max_statement_ms),
    }
}

/// Where a rehearsal runs.
struct Place<'a> {
    server: &'a Server,
    /// The database migrated: a copy, or the throwaway's own.
    db: &'a str,
    /// What the copy was made from ("" on a throwaway).
    pristine: &'a str,
    side: Side<'a>,
}

enum Side<'a> {
    /// On the local server: what the migrations change of its cluster is undone; the gate's
    /// fresh build is made beside the copy.
    Local,
    /// On a throwaway through a tunnel (`url` names its database): nothing is undone there (it is
    /// deleted); the gate's fresh build is made on the `local` server.
    Remote { local: &'a Server, url: &'a crate::pg::PgUrl },
}

/// The rehearsal proper, on `place`: the ledger, the smoke test, every pending migration traced,
/// the gate, the smoke test again — into `r`.
fn rehearse(ctx: &Ctx, place: &Place<'_>, r: &mut Report, smoke: bool) -> Result<()> {
    let (server, copy) = (place.server, place.db);
    let repo = migrations::in_repo(&ctx.config.migrations_path())?;
    let ledger = &ctx.config.ledger_table;
    let applied = migrations::ledger(server, copy, ledger)?;
    let comparison = migrations::compare(&repo, &applied);
    if let Some(refusal) = refusal(ctx, &comparison) {
        r.refused = Some(refusal);
    }
    let pending: Vec<&migrations::Migration> =
        repo.iter().filter(|m| comparison.pending.contains(&m.version)).collect();
    r.pending = pending.iter().map(|m| file_name(&m.file)).collect();

    if smoke {
        r.smoke_before = Some(smoke::run(ctx, server, copy, "before migrating")?);
    }
    let mut cluster_watch = None;
    if r.refused.is_none() {
        analyze_if_needed(server, copy)?;
        let migrate_started = Instant::now();
        let mut session = Session::open(migrating_session(server, copy)?)?;
        let pid: i64 = session
            .run("SELECT pg_backend_pid()")
            .map_err(|_| anyhow::anyhow!("the migrating session did not answer"))?
            .trim()
            .parse()
            .context("reading the migrating session's pid")?;
        if !pending.is_empty() {
            trace::ensure_ledger(&mut session, ledger)?;
        }
        let mut watch = cluster::Watch::new(server, &mut session, copy, place.pristine)?;
        let mut t = trace::Target { server, db: copy, session: &mut session, pid, ledger, cluster: &mut watch };
        let mut stopped = Ok(());
        for m in &pending {
            let name = file_name(&m.file);
            match step(&format!("migrating: {name}, traced statement by statement"), || trace::migration(&mut t, m)) {
                Ok(traced) => {
                    let failed = traced.failure.is_some();
                    r.migrations.push(traced);
                    if failed {
                        break;
                    }
                }
                Err(e) => {
                    stopped = Err(e);
                    break;
                }
            }
        }
        r.migrate_ms = migrate_started.elapsed().as_millis() as u64;
        // Whatever the migrations changed outside the copy is put back before anything else
        // runs — the gate's fresh build would meet it (a role that exists already) —, and on an
        // error or interruption too, before the run ends. Not on a throwaway: it is deleted.
        watch.close();
        drop(session);
        let undone = match place.side {
            Side::Local => watch.undo(server, copy),
            Side::Remote { .. } => {
                watch.leave("left on the throwaway instance, which is deleted at the end");
                Ok(())
            }
        };
        if stopped.is_err() {
            // No report is written for a run that stopped: what was put back is said here.
            for c in &watch.changes {
                eprintln!("{} had changed the cluster: {} — {}", c.file, c.describe(), c.undo);
            }
        }
        stopped?;
        undone?;
        for m in &mut r.migrations {
            m.cluster = watch.of(&m.file);
        }
        cluster_watch = Some(watch);
    }
    let migrated = r.refused.is_none() && r.migrations.iter().all(|m| m.failure.is_none());
    if migrated {
        let gate = match place.side {
            Side::Local => gate(ctx, server, copy),
            Side::Remote { local, url } => gate(ctx, local, &url.expose_secret()),
        };
        // The fresh build ran the same migrations (through the app's migrator): what they
        // changed of the local cluster is undone again — after a failed build or comparison too.
        if let (Side::Local, Some(watch)) = (&place.side, cluster_watch.as_mut().filter(|w| !w.changes.is_empty())) {
            watch.undo_again(server, copy)?;
            for m in &mut r.migrations {
                m.cluster = watch.of(&m.file);
            }
        }
        r.gate = Some(gate?);
    }
    if migrated && smoke {
        r.smoke_after = Some(smoke::run(ctx, server, copy, "after migrating")?);
    }
    Ok(())
}

/// Writes the report and prints the summary (stdout: text or JSON).
fn finish(path: &Path, r: &mut Report, format: Format) -> Result<()> {
    write_report(path, &r.markdown())?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&*r)?),
        Format::Text => print!("{}", r.summary_text()),
    }
    eprintln!("report: {}", path.display());
    Ok(())
}

fn verdict(r: &mut Report) -> Result<()> {
    match r.verdict() {
        report::Verdict::Clear => Ok(()),
        report::Verdict::Findings(n) => Err(Verdict(format!("{n} finding(s): see the report")).into()),
    }
}

/// Where the report goes (default `dump/rehearse/rehearse-<UTC time>-<pid>.md`: two runs at
/// once write two files), checked before anything is made, not after minutes of work.
fn report_path(ctx: &Ctx, given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => {
            if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') {
                return Err(fail(
                    format!("--report {} is a directory", p.display()),
                    "name the file to write, e.g. --report dump/rehearse/my-migration.md",
                ));
            }
            p.to_path_buf()
        }
        None => ctx.config.root.join(&ctx.config.aws.dump_dir).join("rehearse").join(format!(
            "rehearse-{}-{}.md",
            crate::time::compact(std::time::SystemTime::now()),
            std::process::id()
        )),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(
                format!("cannot write the report to {}: {e}", dir.display()),
                "pass --report FILE in a writable directory",
            )
        })?;
    }
    Ok(path)
}

/// `--keep` replaces `<prefix>rehearsal`: only one this tool kept, never the source itself.
fn keepable(ctx: &Ctx, server: &Server, pristine: &str) -> Result<()> {
    let target = ctx.config.rehearsal_db();
    if pristine == target {
        return Err(fail(
            format!("--keep would replace `{target}`, the database rehearsed from"),
            "rehearse from the production copy, or leave out --keep",
        ));
    }
    staging::may_replace(
        server,
        &target,
        |k| matches!(k, Kind::Rehearsal { .. }),
        "kept by `db rehearse --keep`",
        "drop or rename it, or leave out --keep",
        false,
    )?;
    Ok(())
}

/// The database to rehearse from: `--from` a database or a dump (loaded into `<prefix>prod_clone`
/// first), or `<prefix>prod_clone`.
fn pristine(ctx: &Ctx, server: &Server, from: Option<&str>) -> Result<String> {
    let prod_clone = ctx.config.prod_clone_db();
    let name = match from {
        Some(f) if f.starts_with("postgres://") || f.starts_with("postgresql://") => {
            return Err(fail(
                "--from takes a database on this server or a dump file, not a URL",
                "name the database (DATABASE_URL says which server), or dump it and pass the file",
            ));
        }
        Some(f) if Path::new(f).is_dir() && !crate::pg::dump::is_dump(Path::new(f)) => {
            return Err(fail(
                format!("--from {f} is a directory without toc.dat: not a `pg_dump -Fd` dump"),
                "name a dump (a pg_dump -Fc file or a pg_dump -Fd directory) or a database",
            ));
        }
        Some(f) if crate::pg::dump::is_dump(Path::new(f)) => {
            for w in super::ops::load::load(ctx, Some(PathBuf::from(f)), false, false)?.unwrap_or_default() {
                eprintln!("warning: {w}");
            }
            prod_clone
        }
        Some(f) if f.contains('/') || f.ends_with(".dump") => {
            return Err(fail(
                format!("dump {f} does not exist"),
                "name an existing dump (file or directory), or a database on the server",
            ));
        }
        Some(f) => f.to_string(),
        None => prod_clone,
    };
    let Some(info) = server.database(&name)? else {
        let fix = if from.is_none() {
            "load a production dump first: `cargo xtask db load-clone` (or pass --from DUMP)".to_string()
        } else {
            format!("name a database on {} or a dump file", server.url.server_label())
        };
        return Err(fail(format!("there is no database `{name}` to rehearse from"), fix));
    };
    if name == ctx.config.template
        || name == ctx.config.maintenance_db
        || info.is_template
        || matches!(info.kind(), Some(Kind::Staging { .. }))
    {
        return Err(fail(
            format!("`{name}` is not a copy to rehearse on"),
            "rehearse from the production copy (`db load-clone`) or another database of production's data",
        ));
    }
    Ok(name)
}

/// The gate: the migrated copy's schema against a fresh build of this branch on `server`. `copy`
/// is a database on it, or a URL (a throwaway's, through the tunnel). A fresh build that fails is
/// a finding of the report, not an error of the run.
fn gate(ctx: &Ctx, server: &Server, copy: &str) -> Result<report::Gate> {
    let fresh = match super::ops::fresh::build(ctx, server) {
        Ok(fresh) => fresh,
        Err(e) => {
            proc::check_interrupt()?;
            return Ok(report::Gate::fresh_failed(&e));
        }
    };
    let diff = Compare {
        a: copy,
        b: &fresh.name,
        schemas: &[],
        ignore: &[],
        options: crate::schema::Options { with_privileges: false, strict_column_order: false },
    };
    let outcome = step("the gate: schema-diff of the migrated copy against a fresh build of this branch", || {
        compare(ctx, &diff)
    })?;
    fresh.discard()?;
    Ok(report::Gate::from(&outcome))
}

/// How the pristine copy is copied. PostgreSQL 15+ copies through the WAL by default
/// (`STRATEGY = WAL_LOG`): every byte written twice, fine for a small template, slow for a
/// production copy. Above 64 MB the files are copied instead (`FILE_COPY`: a checkpoint, then a
/// file copy — on PostgreSQL 18 a copy-on-write clone where the file system can).
fn copy_clause(server: &Server, pristine: &str) -> Result<String> {
    let size = server.database(pristine)?.map_or(0, |d| d.size_bytes);
    let mut clause = format!("TEMPLATE {}", ident(pristine));
    if server.major >= 15 && size > 64 << 20 {
        clause.push_str(" STRATEGY = FILE_COPY");
    }
    Ok(clause)
}

/// `CREATE DATABASE … TEMPLATE` refused: the pristine copy is in use.
fn busy(server: &Server, e: anyhow::Error, pristine: &str) -> anyhow::Error {
    if !format!("{e:#}").contains("is being accessed by other users") {
        return e;
    }
    let n = server.database(pristine).ok().flatten().map_or(0, |i| i.connections);
    fail(
        format!("`{pristine}` is in use ({n} open connection(s)), so it cannot be copied"),
        format!("close what is connected to it (an app server started on `{pristine}`? a psql?) and run again"),
    )
}

/// What sqlx would refuse before migrating anything: an applied migration changed, one that
/// failed part-way, or one this branch does not have.
fn refusal(ctx: &Ctx, c: &migrations::Comparison) -> Option<String> {
    if let Some((version, file)) = c.modified.first() {
        let file = file.strip_prefix(&ctx.config.root).unwrap_or(file);
        return Some(format!(
            "migration {version} ({}) was changed after production applied it: the migrator refuses to run (checksum mismatch)",
            file.display()
        ));
    }
    if let Some(v) = c.failed.first() {
        return Some(format!("migration {v} is marked failed in production's ledger: the migrator refuses to run"));
    }
    if let Some(v) = c.unknown.first() {
        return Some(format!(
            "production has migration {v} applied, which this branch does not have: merge the branch it came from first"
        ));
    }
    None
}

/// A restored dump has no statistics (pg_restore does not ANALYZE): row counts in the report
/// come from them, so the copy is analyzed first when any table lacks them.
fn analyze_if_needed(server: &Server, db: &str) -> Result<()> {
    let unknown: i64 = server.query_one::<serde_json::Value>(
        db,
        "SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm') AND c.reltuples < 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%'",
    )?["n"]
        .as_i64()
        .unwrap_or(0);
    if unknown > 0 {
        step(
            &format!("ANALYZE: {unknown} table(s) of the copy have no statistics (row counts for the report)"),
            || server.exec(db, "ANALYZE"),
        )?;
    }
    Ok(())
}

/// `psql` on the copy with the settings sqlx's connection starts with (its startup message:
/// `DateStyle`, `TimeZone`, `client_encoding`, `extra_float_digits`): a migration that reads
/// `'2024-01-01 00:00'::timestamptz` or prints a date reads and prints it as under the app.
fn migrating_session(server: &Server, db: &str) -> Result<std::process::Command> {
    let mut cmd = server.psql_session(db)?;
    cmd.env("PGOPTIONS", "-c DateStyle=ISO,MDY -c TimeZone=UTC -c extra_float_digits=2")
        .env("PGCLIENTENCODING", "UTF8");
    Ok(cmd)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

fn write_report(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("md.{}.partial", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
