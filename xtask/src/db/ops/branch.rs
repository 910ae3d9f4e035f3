//! A worktree's own database, cloned from the golden template: what `db worktree` does, in this
//! worktree or (for `db worktree BRANCH`) in the one just added.
//!
//! The flow: name → create unless it exists (under a temporary name, renamed into place when
//! complete) → point `.env` at it → apply the branch's pending migrations → regenerate → report.
//! Everything that decides is read-only and runs first, so `--dry-run` prints the same plan the
//! run carries out.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::owner::{self, Claim};
use super::{generate, migrations as migrate, Ctx};
use crate::env_file::EnvFile;
use crate::error::fail;
use crate::migrations::Applied;
use crate::naming::Staging;
use crate::pg::clone::{self, ClonePlan};
use crate::pg::marker::{self, Kind, Marker};
use crate::pg::staging::{self, sweep_abandoned, Old};
use crate::pg::{human_size, literal, Lock, PgUrl, Server};
use crate::term::{confirm, Answer};
use crate::{proc, time};

/// What `db worktree` is about to do.
struct Plan {
    label: String,
    db: String,
    url: PgUrl,
    /// `None`: the database exists and is reused.
    clone: Option<ClonePlan>,
    /// `--reset`: the existing database is replaced by the new clone once that is complete.
    replacing: bool,
    /// The database as found, when it exists, and how it relates to this worktree (ours, or an
    /// orphan adopted).
    existing: Option<crate::pg::DatabaseInfo>,
    claim: Option<Claim>,
    /// Names passed over because they belong to someone else.
    notes: Vec<String>,
    env_path: PathBuf,
    env_from_main: bool,
    port: u16,
}

/// How to set the database up (`db worktree`'s options).
#[derive(Debug, Clone)]
pub struct Setup {
    /// The name the database is derived from, instead of the branch.
    pub name: Option<String>,
    /// Replace an existing database with a new clone.
    pub reset: bool,
    pub strategy: clone::Strategy,
    pub skip_migrate: bool,
    pub skip_generate: bool,
    /// Drop the database instead.
    pub drop: bool,
    pub yes: bool,
    pub dry_run: bool,
}

/// Sets up (or with `drop`, drops) the database of the worktree `ctx` is of. `early`: a look at
/// the template started before the worktree was checked out (used when it is of the same
/// template on the same server).
pub fn set_up(ctx: &Ctx, setup: &Setup, early: Option<clone::Ahead>) -> Result<()> {
    let started = Instant::now();
    let label = database_label(ctx, setup.name.as_deref())?;
    let (url, _) = ctx.database_url()?;
    let server = Server::connect(url, &ctx.config.maintenance_db)?;
    if !setup.drop && ctx.worktrees.is_main() && setup.name.is_none() {
        return Err(fail(
            format!("this is the main worktree: its database is the golden template `{}` itself", ctx.config.template),
            "run it in a linked worktree (`just worktree NAME`), or pass --name NAME to create a database here anyway",
        ));
    }
    // Two runs for the same name (two terminals, two clones of the repository) take turns.
    let plain = owner::candidates(ctx, &label).remove(0);
    let _turn = Lock::exclusive(&server, &format!("db:{plain}"), &format!("the database of `{label}`"))?;
    let resolved = owner::resolve(ctx, &server, &label)?;
    // When a clone is to be made, the look at the template (read-only: what decides whether the
    // spare or the frozen copy may be taken) runs while this run sweeps what killed runs left
    // and reads the names and records it plans with.
    let cloning = !setup.drop && (resolved.existing.is_none() || setup.reset);
    let ahead = match cloning && setup.strategy == clone::Strategy::Auto {
        true => {
            match early.filter(|a| a.template() == ctx.config.template && a.server() == server.url.without_secrets()) {
                Some(early) => Some(early),
                None => {
                    let spare = ctx.config.spare_clone.then(|| ctx.config.spare_db());
                    clone::look_ahead(&server, &ctx.config.template, spare.as_deref(), &ctx.config.ledger_table)
                        .unwrap_or(None)
                }
            }
        }
        false => None,
    };
    if setup.drop {
        let answer = Answer::new(setup.yes, setup.dry_run);
        if drop_branch(&server, &ctx.config.prefix, &resolved, &label, answer, "")?
            && !server.database_exists(&resolved.db)?
        {
            // `.env` is the user's file: it is left as it is, and we say so.
            let named = EnvFile::load(&ctx.env_path())?
                .get("DATABASE_URL")?
                .and_then(|u| PgUrl::parse(u).ok())
                .and_then(|u| u.dbname().map(str::to_string));
            if named.as_deref() == Some(resolved.db.as_str()) {
                eprintln!(
                    "note: .env still names `{}`, which no longer exists: `cargo xtask db worktree` makes it again",
                    resolved.db
                );
            }
        }
        return Ok(());
    }
    // A dry run changes nothing: not even what killed runs left is swept.
    if !setup.dry_run {
        sweep_abandoned(&server, &ctx.config.prefix)?;
    }

    let plan = make_plan(ctx, &server, &label, resolved, setup, ahead)?;
    if setup.dry_run {
        print_plan(ctx, &plan);
        eprintln!("--dry-run: nothing is changed");
        return Ok(());
    }

    let mut report = Vec::new();
    let mut warnings = Vec::new();
    for note in &plan.notes {
        report.push(("name", format!("{note}: using `{}`", plan.db), Duration::ZERO));
    }
    if let Some(failure) = take_refill_failure(ctx) {
        warnings.push(failure);
    }
    // 1. Create unless it exists.
    let step = Instant::now();
    let mut cloned_now = false;
    let mut known_ledger: Option<Vec<Applied>> = None;
    match &plan.clone {
        None => {
            let how = match &plan.claim {
                Some(Claim::Orphan(why)) => format!("`{}` exists: adopted ({why}), kept as it is", plan.db),
                _ => format!("`{}` exists: kept as it is", plan.db),
            };
            claim_for_this_worktree(ctx, &server, &plan)?;
            report.push(("database", how, step.elapsed()))
        }
        Some(cp) => {
            if plan.replacing
                && !confirm_reset(&server, &plan, &ctx.config.template, Answer::new(setup.yes, setup.dry_run))?
            {
                eprintln!("nothing changed");
                return Ok(());
            }
            crate::term::announce(format_args!(
                "cloning `{}` into `{}`: {}",
                ctx.config.template,
                plan.db,
                cp.describe()
            ));
            let (timings, ledger) = create(ctx, &server, &plan, cp)?;
            known_ledger = ledger;
            let refresh = timings
                .refresh
                .map(|d| format!(" (frozen copy refreshed in {})", time::elapsed(d)))
                .unwrap_or_default();
            let cow = if timings.cow {
                ", by file_copy_method = clone (copy-on-write where the file system can)"
            } else {
                ""
            };
            let used = timings.fell_back.as_ref().unwrap_or(&cp.method);
            report.push((
                "database",
                format!("`{}` created: {}{cow}{refresh}", plan.db, used.describe()),
                step.elapsed(),
            ));
            let why = match &timings.fell_back {
                Some(_) => format!("{}; but {}", cp.why, timings.fallback_why),
                None => cp.why.clone(),
            };
            report.push(("why", why, Duration::ZERO));
            cloned_now = true;
        }
    }

    // 2. Point .env at it.
    let step = Instant::now();
    let left_out = write_env(ctx, &plan)?.map(|note| format!(" ({note})")).unwrap_or_default();
    let origin = if plan.env_from_main { " (copied from the main worktree)" } else { "" };
    report.push((
        ".env",
        format!("DATABASE_URL → `{}`{left_out}, PORT={}{origin}", plan.db, plan.port),
        step.elapsed(),
    ));

    // 3. Migrate on top.
    let step = Instant::now();
    let branch_url = plan.url.with_dbname(&plan.db);
    // With --skip-migrate the ledger is not even read (a broken migration must not stop you).
    let pending = match (setup.skip_migrate, &known_ledger) {
        (true, _) => 0,
        (false, Some(ledger)) => migrate::check_applied(ctx, &plan.db, ledger)?,
        (false, None) => migrate::check_ledger(ctx, &server, &plan.db)?,
    };
    if cloned_now && pending > ctx.config.template_max_behind {
        warnings.push(format!(
            "the template `{}` is {pending} migrations behind this branch (more than {}): refresh it — in the main worktree run `cargo xtask db migrate`, or rebuild it with `cargo xtask db template create --force`",
            ctx.config.template, ctx.config.template_max_behind
        ));
    }
    if setup.skip_migrate {
        report.push(("migrate", "skipped (--skip-migrate)".into(), Duration::ZERO));
    } else if pending == 0 {
        report.push(("migrate", "nothing pending".into(), step.elapsed()));
    } else {
        crate::term::announce(format_args!("applying {pending} pending migration(s)"));
        ctx.run_migrator(&branch_url, Some(plan.port))?;
        migrate::verify_applied(ctx, &server, &plan.db)?;
        report.push(("migrate", format!("{pending} applied"), step.elapsed()));
    }

    // 4. Generate.
    let step = Instant::now();
    if setup.skip_generate {
        report.push(("generate", "skipped (--skip-generate)".into(), Duration::ZERO));
    } else {
        let what = generate::if_stale(ctx, &server, plan.port).context("regenerating derived artifacts")?;
        report.push(("generate", what, step.elapsed()));
    }

    // 5. Report.
    eprintln!();
    for (what, text, took) in &report {
        let took = if took.is_zero() { String::new() } else { format!("  ({})", time::elapsed(*took)) };
        eprintln!("{what:>9}  {text}{took}");
    }
    eprintln!("{:>9}  {}", "total", time::elapsed(started.elapsed()));
    warnings.extend(ctx.shadowed_env_file(&plan.db));
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The name the database is derived from: `--name`, else the branch.
fn database_label(ctx: &Ctx, name: Option<&str>) -> Result<String> {
    if let Some(name) = name {
        if name.is_empty() {
            return Err(fail("--name is empty", "pass a name, e.g. --name my-feature"));
        }
        return Ok(name.to_string());
    }
    ctx.worktrees.branch()?.ok_or_else(|| {
        fail(
            "HEAD is detached: there is no branch to name the database after",
            "check out a branch, or pass --name NAME",
        )
    })
}

fn make_plan(
    ctx: &Ctx,
    server: &Server,
    label: &str,
    resolved: owner::Resolved,
    setup: &Setup,
    ahead: Option<crate::pg::freshness::Ahead>,
) -> Result<Plan> {
    let replacing = setup.reset && resolved.existing.is_some();
    let clone = match &resolved.existing {
        Some(_) if !setup.reset => None,
        _ => {
            let template = &ctx.config.template;
            // A missing template is refused here, with its fix. A reset copies (the spare would
            // be renamed onto the name still taken).
            let spare = (ctx.config.spare_clone && !replacing).then(|| ctx.config.spare_db());
            Some(clone::plan(
                server,
                template,
                &ctx.config.frozen_db(),
                spare.as_deref(),
                setup.strategy,
                ctx.config.spare_clone,
                ahead,
            )?)
        }
    };
    let env_path = ctx.env_path();
    let env_from_main = !env_path.exists() && ctx.main_env_path().exists() && !ctx.worktrees.is_main();
    let env = current_env(ctx)?;
    // Refused now rather than after the clone.
    env.check_writable()?;
    let port = choose_port(ctx, &env)?;
    Ok(Plan {
        label: label.to_string(),
        db: resolved.db,
        url: server.url.clone(),
        clone,
        replacing,
        existing: resolved.existing,
        claim: resolved.claim,
        notes: resolved.notes,
        env_path,
        env_from_main,
        port,
    })
}

/// The marker of this worktree's database.
fn branch_marker(ctx: &Ctx, plan: &Plan) -> Marker {
    Marker::new(Kind::Branch(marker::Branch {
        branch: plan.label.clone(),
        worktree: ctx.worktrees.current.clone(),
        worktree_id: ctx.worktrees.id(),
        repo: ctx.worktrees.main.clone(),
        template: ctx.config.template.clone(),
    }))
}

/// An existing database of this worktree keeps its marker when it already names this worktree;
/// an orphan of this repository (its worktree gone) or one recorded under the path the worktree
/// had before `git worktree move` is marked as this worktree's (its `created_at` kept).
fn claim_for_this_worktree(ctx: &Ctx, server: &Server, plan: &Plan) -> Result<()> {
    let Some(old) = plan.existing.as_ref().and_then(|i| i.marker.as_ref()) else { return Ok(()) };
    if let Kind::Branch(b) = &old.kind {
        if owner::same_path(&b.worktree, &ctx.worktrees.current) && b.worktree_id == ctx.worktrees.id() {
            return Ok(());
        }
    }
    let mut m = branch_marker(ctx, plan);
    m.created_at.clone_from(&old.created_at);
    server.set_marker(&plan.db, &m)
}

fn print_plan(ctx: &Ctx, plan: &Plan) {
    println!("branch    {}", plan.label);
    println!("database  {}", plan.db);
    match &plan.clone {
        None => println!("clone     none: the database exists"),
        Some(cp) => {
            println!("clone     from `{}`: {}", ctx.config.template, cp.describe());
            println!("          because {}", cp.why);
            if plan.replacing {
                println!("          replacing the existing `{}` once the clone is complete (--reset)", plan.db);
            }
        }
    }
    println!(
        "env       {}: DATABASE_URL={}, PORT={}",
        plan.env_path.display(),
        plan.url.with_dbname(&plan.db).redacted(),
        plan.port
    );
}

/// Clones under a temporary name, then renames and marks it in one transaction — or takes the
/// spare clone, which is the same rename. Afterwards a new spare is prepared in the background.
/// Also returns the new database's migration ledger when it is known without reading it (the
/// spare taken as the plan checked it, whose look read the ledger in the state it proved).
fn create(ctx: &Ctx, server: &Server, plan: &Plan, cp: &ClonePlan) -> Result<(clone::Timings, Option<Vec<Applied>>)> {
    let branch_marker = branch_marker(ctx, plan);
    let made = match (&cp.method, &cp.spare) {
        (clone::Method::Spare, Some(spare)) => {
            let taken = clone::take_spare(
                server,
                &ctx.config.template,
                spare,
                &plan.db,
                &branch_marker,
                cp.spare_state.as_ref(),
            )?;
            match taken {
                clone::Taken::AsChecked => (clone::Timings::default(), cp.spare_ledger.clone()),
                clone::Taken::Rechecked => (clone::Timings::default(), None),
                clone::Taken::None => {
                    // Taken by a concurrent run a moment ago, or stale by now: clone the ordinary way.
                    let again = clone::plan(
                        server,
                        &ctx.config.template,
                        &ctx.config.frozen_db(),
                        None,
                        clone::Strategy::Auto,
                        ctx.config.spare_clone,
                        None,
                    )?;
                    let mut t = copy_into_place(ctx, server, plan, &again, &branch_marker)?;
                    if t.fell_back.is_none() {
                        t.fell_back = Some(again.method.clone());
                        t.fallback_why = format!("the spare clone was gone or stale when taken; {}", again.why);
                    }
                    (t, None)
                }
            }
        }
        _ => (copy_into_place(ctx, server, plan, cp, &branch_marker)?, None),
    };
    if ctx.config.spare_clone {
        spawn_refill(ctx);
    }
    Ok(made)
}

/// The clone, built under this run's staging name and published as the worktree's database.
fn copy_into_place(
    ctx: &Ctx,
    server: &Server,
    plan: &Plan,
    cp: &ClonePlan,
    branch_marker: &Marker,
) -> Result<clone::Timings> {
    // A database being reset goes only now that its replacement is complete (its connections
    // were offered to be ended, and the user said yes).
    let prefix = &ctx.config.prefix;
    let old =
        if plan.replacing { Old::Replace { prefix, force: true, what: "the database being reset" } } else { Old::None };
    let build = staging::Build {
        prefix,
        what: Staging::Build,
        target: &plan.db,
        marker: branch_marker.clone(),
        old,
        settings: &[],
    };
    staging::build(server, build, |staging, marker| {
        let (building, timings, _) = clone::execute(server, prefix, &ctx.config.template, staging, cp, marker, false)?;
        Ok((building, timings))
    })
}

/// Starts `db refill-spare` detached, logging to `refill.log` in [`Ctx::state_dir`]. Best
/// effort: without a spare the next run simply copies.
fn spawn_refill(ctx: &Ctx) {
    let Ok(exe) = std::env::current_exe() else { return };
    let Ok(sh) = xshell::Shell::new() else { return };
    sh.change_dir(&ctx.worktrees.current);
    let sets = ctx.overrides.iter().flat_map(|o| ["--set", o.as_str()]);
    let mut cmd: Command = xshell::cmd!(sh, "{exe} db {sets...} refill-spare").into();
    // The refill's dump and copies start once this run is over, and a moment later: on a small
    // machine they would slow the rest of this run and what the user starts right after it.
    cmd.env(REFILL_AFTER_ENV, std::process::id().to_string());
    let _ = proc::spawn_detached(&mut cmd, &ctx.state_dir().join("refill.log"), &[]);
}

/// The process whose end a background refill waits for before it starts (the run that spawned it).
const REFILL_AFTER_ENV: &str = "XTASK_REFILL_AFTER";

/// How long after that run's end the refill starts: it serves the next worktree, minutes away,
/// while what the user runs right after this one (`cd "$(cargo xtask db worktree NAME)" && cargo
/// xtask db status`) is theirs to wait for. Measured: the first command in the new worktree took
/// 2.9x the same command in the main worktree with the refill's copies running beside it, 1.5x
/// with them 1 s later (docs/performance.md).
const REFILL_DELAY: Duration = Duration::from_millis(1500);

/// Waits (at most 10 minutes) until the process `pid` has exited.
fn wait_for_exit(pid: i32) {
    let start = Instant::now();
    // SAFETY: signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 && start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `db refill-spare`: prepare the spare clone of the template. A failure is logged and left in
/// `refill.failed` for the next `db worktree` to report.
pub fn refill_spare(ctx: &Ctx) -> Result<()> {
    // It runs in the worktree just made, which may be removed before it starts (a script that
    // makes and removes worktrees): from here on it runs in the repository's state directory.
    let _ = std::fs::create_dir_all(ctx.state_dir()).and_then(|()| std::env::set_current_dir(ctx.state_dir()));
    if let Some(pid) = std::env::var(REFILL_AFTER_ENV).ok().and_then(|p| p.parse::<i32>().ok()).filter(|p| *p > 0) {
        wait_for_exit(pid);
        std::thread::sleep(REFILL_DELAY);
    }
    let failed = ctx.state_dir().join("refill.failed");
    let result = (|| {
        let server = ctx.server()?;
        let spare = ctx.config.spare_db();
        let made =
            clone::refill_spare(&server, &ctx.config.template, &ctx.config.frozen_db(), &spare, &ctx.config.prefix)?;
        eprintln!(
            "{} {}: spare clone `{spare}` of `{}`",
            time::now_rfc3339(),
            if made { "prepared" } else { "kept the current (or another refill is at it)" },
            ctx.config.template
        );
        Ok(())
    })();
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_file(&failed);
        }
        Err(e) => {
            let line = format!("{}: {e:#}", time::now_rfc3339()).replace('\n', " / ");
            eprintln!("{line}");
            let _ = std::fs::write(&failed, line);
        }
    }
    result
}

/// The last background refill's failure, once (the file is removed as it is reported).
fn take_refill_failure(ctx: &Ctx) -> Option<String> {
    let dir = ctx.state_dir();
    let text = std::fs::read_to_string(dir.join("refill.failed")).ok()?;
    let _ = std::fs::remove_file(dir.join("refill.failed"));
    Some(format!(
        "the last background refill of the spare clone failed ({}); runs copy without it meanwhile — log: {}",
        text.trim(),
        dir.join("refill.log").display()
    ))
}

/// This worktree's `.env` as it will be edited: its own, else a copy of the main worktree's.
fn current_env(ctx: &Ctx) -> Result<EnvFile> {
    let own = EnvFile::load(&ctx.env_path())?;
    if own.exists() || ctx.worktrees.is_main() {
        return Ok(own);
    }
    Ok(EnvFile::load(&ctx.main_env_path())?.copy_to(&ctx.env_path()))
}

/// Returns what it left out of `DATABASE_URL`, if anything (see [`super::url_for_env_file`]).
fn write_env(ctx: &Ctx, plan: &Plan) -> Result<Option<String>> {
    let mut env = current_env(ctx)?;
    let (url, left_out) = super::ctx::url_for_env_file(&plan.url.with_dbname(&plan.db), &env);
    env.set("DATABASE_URL", &url);
    env.set("PORT", &plan.port.to_string());
    env.save()?;
    Ok(left_out)
}

/// This worktree's port: kept if no other worktree's `.env` uses it, else the first port above
/// the main worktree's (or `base_port`) that no other worktree uses and nothing listens on.
fn choose_port(ctx: &Ctx, env: &EnvFile) -> Result<u16> {
    let mut taken = HashSet::new();
    let mut base = ctx.config.base_port;
    for dir in ctx.worktrees.paths()? {
        if dir == ctx.worktrees.current {
            continue;
        }
        let Ok(other) = EnvFile::load(&dir.join(".env")) else { continue };
        // Another worktree's conflicting PORT lines are an error for its own runs, not this one.
        if let Some(p) = other.get("PORT").ok().flatten().and_then(|p| p.trim().parse::<u16>().ok()) {
            taken.insert(p);
            if dir == ctx.worktrees.main {
                base = p;
            }
        }
    }
    if let Some(p) = env.get("PORT")?.and_then(|p| p.trim().parse::<u16>().ok()) {
        if !taken.contains(&p) {
            return Ok(p);
        }
    }
    (base.saturating_add(1)..=u16::MAX)
        .find(|p| !taken.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| fail("no free port above the main worktree's", "set PORT in this worktree's .env"))
}

/// `--reset`: asks before the existing database is replaced, naming its open connections (this
/// branch's own: they are ended when it is dropped).
fn confirm_reset(server: &Server, plan: &Plan, template: &str, answer: Answer) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct Conn {
        pid: i64,
        application_name: String,
        client: String,
        state: String,
    }
    let db = &plan.db;
    let size = plan.existing.as_ref().map(|i| human_size(i.size_bytes)).unwrap_or_default();
    let conns: Vec<Conn> = server.query(
        &server.maintenance_db,
        &format!(
            "SELECT pid, application_name, coalesce(host(client_addr), 'local socket') AS client, coalesce(state, '') AS state \
             FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() ORDER BY pid",
            literal(db)
        ),
    )?;
    let question = format!("Re-clone `{db}` ({size}) from `{template}`? Its data will be gone");
    if conns.is_empty() {
        return confirm(&question, answer);
    }
    eprintln!("`{db}` has {} open connection(s):", conns.len());
    for c in &conns {
        let app = if c.application_name.is_empty() { "(no application name)" } else { &c.application_name };
        eprintln!("  pid {}  {app}  from {}  {}", c.pid, c.client, c.state);
    }
    confirm(&format!("{question}, and these connections ended"), answer)
}

/// `db worktree --drop` in `ctx`'s worktree: only this worktree's own database (checked by its
/// marker: this repository, this worktree); whether it is gone now (dropped, or there was none). `and_then` is added to the question: what the caller does next (removing the
/// worktree), so that the question names everything the answer destroys.
pub fn drop_own(ctx: &Ctx, answer: Answer, and_then: &str) -> Result<bool> {
    let label = database_label(ctx, None)?;
    let (url, _) = ctx.database_url()?;
    let server = Server::connect(url, &ctx.config.maintenance_db)?;
    let plain = owner::candidates(ctx, &label).remove(0);
    let _turn = Lock::exclusive(&server, &format!("db:{plain}"), &format!("the database of `{label}`"))?;
    let resolved = owner::resolve(ctx, &server, &label)?;
    drop_branch(&server, &ctx.config.prefix, &resolved, &label, answer, and_then)
}

fn drop_branch(
    server: &Server,
    prefix: &str,
    resolved: &owner::Resolved,
    label: &str,
    answer: Answer,
    and_then: &str,
) -> Result<bool> {
    let db = &resolved.db;
    let info = match (&resolved.existing, &resolved.claim) {
        (Some(info), Some(Claim::Ours)) => info,
        (Some(_), Some(Claim::Orphan(why))) => {
            return Err(fail(
                format!("`{db}` was made for another worktree of this repository ({why}); it is left alone"),
                "drop databases whose worktree is gone with `cargo xtask db worktrees --prune`",
            ))
        }
        _ => {
            let others =
                if resolved.notes.is_empty() { String::new() } else { format!(" ({})", resolved.notes.join("; ")) };
            eprintln!("`{label}` has no database of this worktree{others}: nothing to drop");
            return Ok(true);
        }
    };
    if info.connections > 0 {
        return Err(fail(
            format!("`{db}` has {} open connection(s)", info.connections),
            "stop what uses it (this worktree's app?) and run again",
        ));
    }
    let question = format!("Drop database `{db}` ({}) of `{label}`{and_then}?", human_size(info.size_bytes));
    if !confirm(&question, answer)? {
        eprintln!("nothing dropped");
        return Ok(false);
    }
    // A copy of it a killed `--reset` renamed aside goes first: with the name free, a later
    // sweep would rename it back over the drop.
    sweep_abandoned(server, prefix)?;
    server.drop_database(db, false)?;
    eprintln!("dropped `{db}`");
    Ok(true)
}
