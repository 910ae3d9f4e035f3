//! `cargo xtask bench worktree`: `db worktree` against the seed pipeline it replaces, measured in
//! the same run on the same templates, reported as ratios (targets in docs/performance.md).
//!
//! Everything runs on a throwaway cluster with default durability settings (fsync on). Templates:
//! the app's golden template plus pagila (in schema `pagila`, ~16 MB of data), and the app's
//! template plus `pgbench -i -s 20` (~300 MB). `db worktree` runs as users run it — `cargo xtask
//! db worktree …` in a linked git worktree of this repository, after a warm-up build.
//!
//! The seed pipeline is the programs a user's shell line runs, run directly as the shell would
//! run them: `createdb`, then `pg_dump` piped into `psql` by [`proc::pipe`] (no `sh -c`). Every
//! program the benchmarks start is written as xshell's `cmd!` in one place — cargo in
//! `cargo_in`, the app's migrator in `app_migrate`, the xtask binary in `xtask_binary`, here;
//! git in `git.rs`; the PostgreSQL clients in `pg::client` — and run through [`proc`].

pub mod dump;
pub mod mask;
pub mod rehearse;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::find_workspace_root;
use crate::error::fail;
use crate::flags::BenchWorktree;
use crate::pg::cluster::Throwaway;
use crate::pg::{ident, tools, PgUrl, Server};
use crate::term::step;
use crate::{git, proc, time};

pub fn worktree(flags: BenchWorktree) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if flags.only_first_command {
        return first_command(&root, &cargo, flags.runs.max(1));
    }
    let pagila = flags.pagila.clone().unwrap_or_else(|| root.join("../shared/fixtures/pagila"));
    for f in ["pagila-schema.sql", "pagila-data.sql"] {
        if !pagila.join(f).is_file() {
            return Err(fail(
                format!("{} not found", pagila.join(f).display()),
                "pass --pagila DIR (the fixture's directory)",
            ));
        }
    }
    let bindir = tools::server_bindir()?;
    let client = |p: &str| -> Result<PathBuf> { tools::find(p) };

    let Bench { cluster, admin_url, server, app } = Bench::start(&root, &cargo)?;
    let dir = cluster.dir().to_path_buf();

    // Templates.
    let t_pagila = "bench_tpl_pagila";
    let t_big = "bench_tpl_big";
    step("template: app schema + seed + pagila", || {
        app_template(&server, &app, &root, t_pagila)?;
        load_pagila(&server, &pagila, t_pagila)
    })?;
    if !flags.skip_big {
        step("template: app schema + seed + pgbench -s 20", || {
            app_template(&server, &app, &root, t_big)?;
            let mut cmd = server.command(&bindir.join("pgbench"), &["-i", "-s", "20", "-q"], t_big, &[])?;
            proc::capture(&mut cmd, None).map(drop)
        })?;
        server.exec("postgres", "VACUUM")?;
    }
    // The baselines' identical copies (see `measure`), made before anything watches the
    // templates; the benchmark's own look at them is over before the first timed run.
    for t in [t_pagila, t_big].iter().take(if flags.skip_big { 1 } else { 2 }) {
        // As `template create` leaves a template: nothing for autovacuum to do.
        server.exec(t, "VACUUM (FREEZE, ANALYZE)")?;
        server.exec("postgres", &format!("CREATE DATABASE {} TEMPLATE {}", ident(&format!("{t}_copy")), ident(t)))?;
    }

    // A linked worktree of this repository, built once (warm), for `cargo xtask db worktree`.
    let wt = dir.join("wt");
    git::add_worktree(&root, &wt, "", git::Checkout::DetachedHead)?
        .map_err(|(status, why)| anyhow::anyhow!("adding a git worktree for the benchmark ({status}): {why}"))?;
    let _wt_guard = WorktreeGuard(root.clone(), wt.clone());
    let target = crate::test_harness::target_dir(&cargo, &root)?;
    // `full`: the whole command, migrate and generate included; else the clone alone.
    let xtask = |name: &str, template: &str, full: bool| -> Result<Command> {
        let spare = format!("spare_clone={}", !flags.no_spare);
        let mut args = vec!["xtask", "db", "--set", spare.as_str(), "worktree", "--name", name];
        if !full {
            args.extend(["--skip-migrate", "--skip-generate"]);
        }
        let mut cmd = cargo_in(&cargo, &wt, &args)?;
        cmd.env("CARGO_TARGET_DIR", &target)
            .env("DATABASE_URL", admin_url.with_dbname(template).expose_secret())
            .env("WORKTREE_TEMPLATE_DB", template);
        Ok(cmd)
    };
    step("warm-up build of the xtask in the worktree", || {
        proc::capture(&mut xtask("warmup", t_pagila, false)?, None).map(drop)
    })?;

    let (createdb, pg_dump, psql) = (client("createdb")?, client("pg_dump")?, client("psql")?);
    // The seed pipeline exactly as the seed's script runs it: programs from PATH (on Debian that
    // is `pg_wrapper`, a Perl script in front of each), and, stricter, the real binaries.
    let as_written = ["createdb".into(), "pg_dump".into(), "psql".into()];
    let real = [createdb, pg_dump, psql.clone()];
    // The seed's pipeline, with `programs`: the same programs its shell runs, run here directly.
    let seed = |programs: &[PathBuf; 3], template: &str| -> Result<Duration> {
        let target = format!("seed_{}", SEED.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let mut seed = Seed::new(&server, programs, template, &target)?;
        settle(&server)?;
        let start = Instant::now();
        seed.run()?;
        Ok(start.elapsed())
    };
    let seed_as_written = |template: &str| seed(&as_written, template);
    let seed_pipeline = |template: &str| seed(&real, template);
    let verbose = flags.verbose;
    let no_spare = flags.no_spare;
    let mut counter = 0;
    let mut ours = |template: &str, full: bool| -> Result<Duration> {
        // The steady state a developer sees: the background refill after the previous run is done
        // (also keeps it from competing with the baseline's timed runs).
        if !no_spare {
            wait_for_spare(&server, template)?;
        }
        counter += 1;
        let name = format!("b{counter}");
        settle(&server)?;
        time_ours(&mut xtask(&name, template, full)?, verbose, true)
    };

    let runs = flags.runs.max(1);
    // One cell: `runs` times the seed pipeline as written, with the real binaries, and ours.
    let measure =
        |label: String, template: &str, full: bool, first, ours: &mut dyn FnMut(&str, bool) -> Result<Duration>| {
            let (mut path, mut base, mut mine) = (Vec::new(), Vec::new(), Vec::new());
            // The baseline reads an identical copy: its pg_dump connecting to and leaving our
            // template would rightly make our next run refresh (a session that came and went
            // may have written); that cost is the "first" figure.
            let copy = format!("{template}_copy");
            for _ in 0..runs {
                path.push(seed_as_written(&copy)?);
                base.push(seed_pipeline(&copy)?);
                mine.push(ours(template, full)?);
            }
            anyhow::Ok(Row { label, as_written: median(&path), base: median(&base), ours: median(&mine), first })
        };
    let mut rows: Vec<Row> = Vec::new();
    let mut scenarios = vec![("pagila", t_pagila)];
    if !flags.skip_big {
        scenarios.push(("pgbench -s 20", t_big));
    }
    if flags.skip_inner {
        scenarios.clear();
    }
    for (label, template) in scenarios {
        let size = server.database(template)?.map(|d| d.size_bytes).unwrap_or(0);
        for connected in [false, true] {
            let held =
                if connected { Some(Held::open(&psql, &admin_url.with_dbname(template), "SELECT 1;")?) } else { None };
            crate::term::announce(format_args!(
                "{label} ({}), template {}: {runs} runs each",
                crate::pg::human_size(size),
                if connected { "with an open connection" } else { "idle" }
            ));
            // With a connection, the first clone refreshes the frozen copy; report it apart.
            // Idle, an untimed first run prepares the first spare clone.
            let first = if connected { Some(ours(template, false)?) } else { ours(template, false).map(|_| None)? };
            let label = format!("{label}, {}", if connected { "template in use" } else { "template idle" });
            rows.push(measure(label, template, false, first, &mut ours)?);
            drop(held);
            drop_clones(&server)?;
        }
    }
    // The full command (migrate + generate, nothing pending) against the seed pipeline alone.
    if !flags.skip_inner {
        let label = "pagila, full command (migrate + generate, nothing pending)".to_string();
        rows.push(measure(label, t_pagila, true, None, &mut ours)?);
        drop_clones(&server)?;
    }

    // The user's path: a brand-new git worktree per run, made by the command the README gives,
    // with what users have on the template between runs. Every baseline dumps the template
    // itself: a `pg_dump` between runs is part of every row.
    let user = UserPath { root: &root, cargo: &cargo, dir: &dir, admin_url: &admin_url, server: &server, real: &real };
    user.warm_up()?;
    let mut scenarios = vec![
        ("pagila", t_pagila, Activity::Idle),
        ("pagila", t_pagila, Activity::PoolSettled),
        ("pagila", t_pagila, Activity::Report),
        ("pagila", t_pagila, Activity::Write),
        ("pagila", t_pagila, Activity::PoolJustNow),
    ];
    if !flags.skip_big {
        scenarios.push(("pgbench -s 20", t_big, Activity::Idle));
    }
    let mut user_rows = Vec::new();
    for (label, template, activity) in scenarios {
        let url = admin_url.with_dbname(template);
        // The main worktree's app: an idle session on the template, all along.
        let _app = Held::open(&psql, &url, "SELECT 1;")?;
        let _report = match activity {
            Activity::Report => Some(Held::open(&psql, &url, "SELECT pg_sleep(1000000);")?),
            _ => None,
        };
        let mut pool = match activity {
            Activity::PoolSettled | Activity::PoolJustNow => Some(Pool::open(&psql, &url)?),
            _ => None,
        };
        let row = format!("{label}, {}", activity.describe());
        crate::term::announce(format_args!("{row}: a brand-new worktree per run, {runs} runs each"));
        let (mut base, mut mine) = (Vec::new(), Vec::new());
        // Untimed: the frozen copy and the spare, as after any earlier run.
        crate::build_cache::wait(&user.ours(template, verbose)?.1);
        for _ in 0..runs {
            // The steady state: the refill after the previous run is done before anything happens.
            wait_for_spare(&server, template)?;
            let cycled = Instant::now();
            match activity {
                Activity::PoolSettled => pool.as_mut().expect("a pool").cycle(&psql, &url)?,
                Activity::Write => server.exec(
                    template,
                    "INSERT INTO crm.organizations (name, slug) VALUES ('bench', 'bench-' || gen_random_uuid())",
                )?,
                _ => {}
            }
            base.push(user.baseline(template)?);
            if activity == Activity::PoolSettled {
                // Its counts are certain to be published 12 s after its last statement.
                std::thread::sleep(
                    (crate::pg::freshness::FLUSHED_AFTER + Duration::from_secs(1)).saturating_sub(cycled.elapsed()),
                );
            }
            if activity == Activity::PoolJustNow {
                pool.as_mut().expect("a pool").cycle(&psql, &url)?;
            }
            let (took, made) = user.ours(template, verbose)?;
            mine.push(took);
            // The steady state: the new worktree's build cache is seeded before the next run
            // (a developer makes worktrees minutes apart; the seed's file copies would slow the
            // next run's `git worktree add`, on both sides).
            crate::build_cache::wait(&made);
        }
        user_rows.push((row, median(&base), median(&mine), activity.target(template == t_big)));
        drop(pool);
        user.clean()?;
        drop_clones(&server)?;
    }
    let builds = if flags.skip_build { None } else { Some(user.builds(t_pagila)?) };
    user.clean()?;
    drop_clones(&server)?;

    println!("The user's path: each run makes a brand-new git worktree (nothing built in it) and ends when its database and `.env` are ready.\n");
    println!("| scenario | `git worktree add` + seed pipeline + `.env` rewrite | `cargo xtask db worktree NAME` (from the main worktree) | ratio | target |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, b, m, target) in &user_rows {
        let ratio = m.as_secs_f64() / b.as_secs_f64();
        let verdict = if ratio <= *target { "met" } else { "NOT MET" };
        println!(
            "| {label} | {} | {} | {ratio:.2}x | ≤ {target:.1}x: {verdict} |",
            time::elapsed(*b),
            time::elapsed(*m),
        );
    }
    if let Some((cold, seeded)) = builds {
        println!(
            "| first `cargo build -p app` in a new worktree: cold (empty `target/`) vs. seeded by the command | {} | {} | {:.2}x |",
            time::elapsed(cold),
            time::elapsed(seeded),
            seeded.as_secs_f64() / cold.as_secs_f64()
        );
    }
    if !rows.is_empty() {
        println!("\nThe inner loop: `db worktree` in a worktree that exists and is built.\n");
        println!("| scenario | seed pipeline as written (PATH) | seed pipeline, real binaries | `cargo xtask db worktree` | ratio (as written) | ratio (real binaries) |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    }
    for r in &rows {
        let first =
            r.first.map(|f| format!(" (first, refreshing the frozen copy: {})", time::elapsed(f))).unwrap_or_default();
        let ratio = |base: Duration| r.ours.as_secs_f64() / base.as_secs_f64();
        println!(
            "| {} | {} | {} | {}{first} | {:.2}x | {:.2}x |",
            r.label,
            time::elapsed(r.as_written),
            time::elapsed(r.base),
            time::elapsed(r.ours),
            ratio(r.as_written),
            ratio(r.base)
        );
    }
    println!(
        "\n{runs} runs per cell; PostgreSQL {}; {} cores.",
        server.version,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("\nThe first command in a new worktree.\n");
    first_command(&root, &cargo, runs)
}

/// Runs one timed command of ours (its report shown with --verbose); a failure ends the
/// benchmark with its output. `refills`: it is a `db worktree` that makes a database, so it
/// spawns a background refill (which logs a line when it is done: see `wait_for_spare`).
fn time_ours(cmd: &mut Command, verbose: bool, refills: bool) -> Result<Duration> {
    if refills {
        REFILLS_BEFORE.store(refill_log_len(), std::sync::atomic::Ordering::SeqCst);
    }
    let start = Instant::now();
    // Registered: a Ctrl-C reaches it, and the benchmark stops instead of timing an interrupted run.
    let (status, _, stderr) = proc::output(cmd, None)?;
    let took = start.elapsed();
    proc::check_interrupt()?;
    if !status.success() {
        return Err(fail(
            format!("`{}` failed: {}", proc::display(cmd), String::from_utf8_lossy(&stderr)),
            "see above",
        ));
    }
    if verbose {
        eprint!("{}", String::from_utf8_lossy(&stderr));
    }
    Ok(took)
}

static SEED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The seed pipeline the benchmark measures against, `createdb NEW && pg_dump --no-owner
/// --no-privileges -d TEMPLATE | psql -q -v ON_ERROR_STOP=1 -d NEW`: the same programs a
/// shell would run, run directly (`createdb`, then `pg_dump` piped into `psql` process to
/// process, as the shell connects them), the URLs without secrets, the secrets in the
/// environment. Built before the clock starts.
struct Seed {
    createdb: Command,
    pg_dump: Command,
    psql: Command,
}

impl Seed {
    /// `programs`: `createdb`, `pg_dump` and `psql`, as paths or as names looked up on `PATH`.
    fn new(server: &Server, programs: &[PathBuf; 3], template: &str, target: &str) -> Result<Seed> {
        let [createdb, pg_dump, psql] = programs;
        let sh = xshell::Shell::new().context("reading the current directory")?;
        let maintenance = format!("--maintenance-db={}", server.arg_url("postgres"));
        let mut createdb: Command = xshell::cmd!(sh, "{createdb} {maintenance} {target}").into();
        server.libpq_env(&mut createdb);
        Ok(Seed {
            createdb,
            pg_dump: server.command(pg_dump, &["--no-owner", "--no-privileges"], template, &[])?,
            psql: server.command(psql, &["-q", "-v", "ON_ERROR_STOP=1"], target, &[])?,
        })
    }

    fn run(&mut self) -> Result<()> {
        proc::capture(&mut self.createdb, None)?;
        proc::pipe(&mut self.pg_dump, &mut self.psql)
    }
}

/// The user's path: `cargo xtask db worktree NAME` run in this repository (its own `target/`, as
/// a developer's checkout has it) makes a new worktree per run; the baseline is what it replaces,
/// by hand: `git worktree add`, the seed pipeline, and writing `.env`.
struct UserPath<'a> {
    root: &'a Path,
    cargo: &'a std::ffi::OsStr,
    dir: &'a Path,
    admin_url: &'a PgUrl,
    server: &'a Server,
    real: &'a [PathBuf; 3],
}

static USER_RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whatever ends the benchmark, the worktrees and branches it made go.
impl Drop for UserPath<'_> {
    fn drop(&mut self) {
        let _ = self.clean();
    }
}

impl UserPath<'_> {
    /// `cargo ARGS…` in `dir` with the repository's default `target/` (not a
    /// CARGO_TARGET_DIR), as a developer's checkout.
    fn cargo<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Result<Command> {
        let mut cmd = cargo_in(self.cargo, dir, args)?;
        cmd.env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR");
        Ok(cmd)
    }

    fn warm_up(&self) -> Result<()> {
        // The app in `debug/`, the xtask in its own profile's `xtask/` (as `cargo xtask` builds it).
        step("building the app and the xtask in the repository's own target/ (the main worktree's build)", || {
            proc::show(&mut self.cargo(self.root, &["build", "--package", "app"])?)?;
            proc::show(&mut self.cargo(self.root, &["build", "--package", "xtask", "--profile", "xtask"])?)
        })
    }

    fn next(&self, kind: &str) -> (String, PathBuf) {
        let n = USER_RUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let branch = format!("xtask-bench-{}-{kind}{n}", std::process::id());
        (branch.clone(), self.dir.join(branch))
    }

    fn ours(&self, template: &str, verbose: bool) -> Result<(Duration, PathBuf)> {
        let (branch, path) = self.next("u");
        let args: [&OsStr; 6] =
            ["xtask".as_ref(), "db".as_ref(), "worktree".as_ref(), branch.as_ref(), "--path".as_ref(), path.as_ref()];
        let mut cmd = self.cargo(self.root, &args)?;
        cmd.env("DATABASE_URL", self.admin_url.with_dbname(template).expose_secret())
            .env("WORKTREE_TEMPLATE_DB", template);
        settle(self.server)?;
        Ok((time_ours(&mut cmd, verbose, true)?, path))
    }

    /// `git worktree add -q -b BRANCH PATH HEAD && <the seed pipeline> && printf
    /// 'DATABASE_URL=%s\nPORT=%s\n' URL 3999 > PATH/.env`, each step run directly: `git`
    /// through `git.rs`, the pipeline's programs as [`Seed`] runs them, the `.env` written.
    fn baseline(&self, template: &str) -> Result<Duration> {
        let (branch, path) = self.next("b");
        let target = format!("seed_{}", SEED.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let mut seed = Seed::new(self.server, self.real, template, &target)?;
        let env = format!("DATABASE_URL={}\nPORT={}\n", self.admin_url.with_dbname(&target).without_secrets(), 3999);
        settle(self.server)?;
        let start = Instant::now();
        git::add_worktree(self.root, &path, &branch, git::Checkout::NewFromHead)?
            .map_err(|(status, why)| anyhow::anyhow!("git worktree add {} ({status}): {why}", path.display()))?;
        seed.run()?;
        std::fs::write(path.join(".env"), env).with_context(|| format!("writing {}", path.join(".env").display()))?;
        Ok(start.elapsed())
    }

    /// The first `cargo build -p app` in a new worktree: cold (a plain `git worktree add`, empty
    /// `target/`) and seeded (made by the command).
    fn builds(&self, template: &str) -> Result<(Duration, Duration)> {
        let (branch, cold) = self.next("c");
        git::add_worktree(self.root, &cold, &branch, git::Checkout::NewFromHead)?
            .map_err(|(status, why)| anyhow::anyhow!("git worktree add {} ({status}): {why}", cold.display()))?;
        let build = |dir: &Path| -> Result<Duration> {
            let start = Instant::now();
            proc::capture(&mut self.cargo(dir, &["build", "--package", "app"])?, None)?;
            Ok(start.elapsed())
        };
        let cold_took =
            step("first `cargo build -p app` in a plain new worktree (cold; a minute or more)", || build(&cold))?;
        let (_, seeded) = self.ours(template, false)?;
        let seeded_took =
            step("first `cargo build -p app` in a worktree the command made (seeded)", || build(&seeded))?;
        Ok((cold_took, seeded_took))
    }

    /// Removes the worktrees and branches of the runs so far.
    fn clean(&self) -> Result<()> {
        let prefix = format!("xtask-bench-{}-", std::process::id());
        let Ok(entries) = std::fs::read_dir(self.dir) else { return Ok(()) };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) {
                continue;
            }
            let _ = git::remove_worktree(self.root, &e.path(), true);
            git::delete_branch(self.root, &name);
        }
        Ok(())
    }
}

struct Row {
    label: String,
    as_written: Duration,
    base: Duration,
    ours: Duration,
    first: Option<Duration>,
}

/// Drops the clones of a scenario, untimed, and lets the disk settle: dropping hundreds of MB
/// right before a timed run (ext4 with `discard` trims synchronously) would stall that run.
fn drop_clones(server: &Server) -> Result<()> {
    for db in server.databases("", &[])? {
        if db.name.starts_with("seed_") || db.name.starts_with("app_b") {
            server.drop_database(&db.name, true)?;
        }
    }
    server.exec("postgres", "CHECKPOINT")?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// The size of the repository's `refill.log` (every background refill appends a line when it
/// is done), and its size before the last run of ours.
fn refill_log_len() -> u64 {
    let log = || -> Option<PathBuf> {
        let root = find_workspace_root(&std::env::current_dir().ok()?).ok()?;
        let worktrees = crate::git::Worktrees::discover(&root, &root).ok()?;
        Some(worktrees.common_dir()?.join("xtask-db").join("refill.log"))
    };
    static LOG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    LOG.get_or_init(log).as_ref().and_then(|l| std::fs::metadata(l).ok()).map_or(0, |m| m.len())
}
static REFILLS_BEFORE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// Waits (at most a minute) until the refill the last run of ours spawned is done, the spare
/// clone of `template` is ready and no refill is running.
fn wait_for_spare(server: &Server, template: &str) -> Result<()> {
    let spare = format!("app_spare_{}", crate::naming::short_hash(template));
    let start = Instant::now();
    // The refill the last run spawned has not even started (it waits for that run to exit)
    // until it has logged its line.
    while refill_log_len() <= REFILLS_BEFORE.load(std::sync::atomic::Ordering::SeqCst)
        && REFILLS_BEFORE.load(std::sync::atomic::Ordering::SeqCst) != u64::MAX
        && start.elapsed() < Duration::from_secs(60)
    {
        proc::check_interrupt()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    while start.elapsed() < Duration::from_secs(60) {
        let dbs = server.databases("app_", &[])?;
        let ready = dbs.iter().any(|d| d.name == spare && matches!(d.kind(), Some(crate::pg::Kind::Spare(_))));
        // A refill refreshes the frozen copy before it makes the spare: none may be at work.
        let refilling = dbs.iter().any(|d| d.name.starts_with("app_tmp_"))
            || server.count(
                "postgres",
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()",
            )? > 0;
        if ready && !refilling {
            return Ok(());
        }
        proc::check_interrupt()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// What every benchmark starts with: a throwaway cluster (default durability, fsync on), its
/// admin URL and server, and the app built (its binary's path).
struct Bench {
    cluster: Throwaway,
    admin_url: PgUrl,
    server: Server,
    app: PathBuf,
}

impl Bench {
    fn start(root: &Path, cargo: &std::ffi::OsStr) -> Result<Bench> {
        // One benchmark may start several (each its own directory).
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = match N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => "xtask-bench".to_string(),
            n => format!("xtask-bench{n}"),
        };
        let cluster = Throwaway::start(&std::env::temp_dir(), &name, &["max_wal_size = 4GB"])?;
        let admin_url = cluster.cluster.url("postgres")?;
        let server = Server::connect(admin_url.clone(), "postgres")?;
        crate::term::announce(format_args!(
            "benchmark server: PostgreSQL {} (throwaway cluster, fsync on)",
            server.version
        ));
        crate::term::announce(format_args!(
            "building the app and the xtask (in its own profile, as `cargo xtask` builds it)"
        ));
        build(cargo, root)?;
        let app = crate::test_harness::target_dir(cargo, root)?.join("debug/app");
        Ok(Bench { cluster, admin_url, server, app })
    }
}

/// `cargo build` of the app, then of the xtask in its own profile (as `cargo xtask` builds it).
fn build(cargo: &OsStr, root: &Path) -> Result<()> {
    proc::show(&mut cargo_in(cargo, root, &["build", "--package", "app"])?)?;
    proc::show(&mut cargo_in(cargo, root, &["build", "--package", "xtask", "--profile", "xtask"])?)
}

/// `cargo ARGS…` in `dir`, written as xshell's `cmd!` (argv as written: no shell) and run by
/// the caller through [`proc`]: every cargo the benchmarks run is built here.
fn cargo_in<S: AsRef<OsStr>>(cargo: &OsStr, dir: &Path, args: &[S]) -> Result<Command> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    sh.change_dir(dir);
    Ok(xshell::cmd!(sh, "{cargo} {args...}").into())
}

/// The app's migrator, `APP migrate`, with `DATABASE_URL` (a secret) in its environment: every
/// run of the app the benchmarks make is built here.
fn app_migrate(app: &Path, database_url: &str) -> Result<Command> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    Ok(xshell::cmd!(sh, "{app} migrate").env("DATABASE_URL", database_url).into())
}

/// The xtask binary itself (`cargo run`'s own ~0.1 s check is not the work measured), `XTASK
/// ARGS…` in `root`, with `DATABASE_URL` (a secret) in its environment.
fn xtask_binary(xtask: &Path, root: &Path, args: &[&str], database_url: &str) -> Result<Command> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    sh.change_dir(root);
    Ok(xshell::cmd!(sh, "{xtask} {args...}").env("DATABASE_URL", database_url).into())
}

/// Every timed run starts from the same state: no dirty buffers left by the previous run for the
/// checkpointer to write while we measure (it would slow whichever side came next).
fn settle(server: &Server) -> Result<()> {
    server.exec("postgres", "CHECKPOINT")
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// The app's golden template in `name`: migrations and seed.
fn app_template(server: &Server, app: &Path, root: &Path, name: &str) -> Result<()> {
    server.exec("postgres", &format!("CREATE DATABASE {} TEMPLATE template0", ident(name)))?;
    let mut migrate = app_migrate(app, &server.url.with_dbname(name).expose_secret())?;
    migrate.current_dir(root);
    proc::capture(&mut migrate, None)?;
    let mut seed = server.psql(name)?;
    seed.arg("--single-transaction").arg("-f").arg(root.join("app/seed.sql"));
    proc::capture(&mut seed, None).map(drop)
}

/// pagila into schema `pagila` of `db` (the fixture's README: rewrite the qualifier).
fn load_pagila(server: &Server, dir: &Path, db: &str) -> Result<()> {
    server.exec(db, "CREATE SCHEMA pagila")?;
    for file in ["pagila-schema.sql", "pagila-data.sql"] {
        let text = std::fs::read_to_string(dir.join(file))?;
        let text: String = text
            .lines()
            .filter(|l| {
                !(l.starts_with("ALTER SCHEMA public")
                    || l.starts_with("COMMENT ON SCHEMA public")
                    || l.contains(" OWNER TO "))
            })
            .map(|l| l.replace("public.", "pagila."))
            .collect::<Vec<_>>()
            .join("\n");
        let mut psql = server.psql(db)?;
        psql.arg("--single-transaction");
        proc::capture(&mut psql, Some(text.as_bytes())).with_context(|| format!("loading {file}"))?;
    }
    Ok(())
}

/// A session on a template that ran `statement` (and may still be running it), held open for
/// the duration of a scenario (registered: ended when it is dropped, as on a Ctrl-C).
struct Held {
    _session: proc::Registered,
}
impl Held {
    fn open(psql: &Path, url: &PgUrl, statement: &str) -> Result<Held> {
        let mut cmd = crate::pg::client::command(psql, &["-X", "-q"], url, &[])?;
        let mut session = proc::Registered::spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::null()))?;
        use std::io::Write;
        writeln!(session.child.stdin.as_mut().context("psql's stdin")?, "{statement}")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Held { _session: session })
    }
}

/// What happens on the template between runs of a user's-path row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// Only the app's idle session (and the baseline's `pg_dump`).
    Idle,
    /// An idle pool replaces a connection (the new one pings) 13 s before the run.
    PoolSettled,
    /// The same, right before the run.
    PoolJustNow,
    /// A report: a read-only statement running since before the first run.
    Report,
    /// A row written (by a session that leaves) before each run.
    Write,
}

impl Activity {
    fn describe(self) -> &'static str {
        match self {
            Activity::Idle => "template in use (an idle session), unchanged",
            Activity::PoolSettled => "an idle pool replaced a connection 13 s before the run, unchanged",
            Activity::Report => "a report running (a long read-only statement), unchanged",
            Activity::Write => "a row written before each run (changed)",
            Activity::PoolJustNow => {
                "an idle pool replaced a connection just before the run (unchanged: the counters cannot tell, the rows do)"
            }
        }
    }
    /// The target ratio (issue 23).
    fn target(self, big: bool) -> f64 {
        match self {
            Activity::Write => 1.0,
            _ if big => 0.1,
            _ => 0.4,
        }
    }
}

/// An idle connection pool on the template: three sessions; `cycle` closes the oldest and opens a
/// new one that pings, as a pool does at its idle timeout or a connection's maximum lifetime.
struct Pool(std::collections::VecDeque<Held>);
impl Pool {
    fn open(psql: &Path, url: &PgUrl) -> Result<Pool> {
        Ok(Pool((0..3).map(|_| Held::open(psql, url, "SELECT 1;")).collect::<Result<_>>()?))
    }
    fn cycle(&mut self, psql: &Path, url: &PgUrl) -> Result<()> {
        self.0.pop_front();
        self.0.push_back(Held::open(psql, url, "SELECT 1;")?);
        Ok(())
    }
}

struct WorktreeGuard(PathBuf, PathBuf);
impl Drop for WorktreeGuard {
    fn drop(&mut self) {
        let _ = git::remove_worktree(&self.0, &self.1, true);
    }
}

/// The first command in a new worktree: `cargo xtask db status` (as the README writes it) run in
/// a worktree `cargo xtask db worktree NAME` has just made from this repository (nothing built
/// in it; its `target/` seeded in the background, which cargo waits for), against the same
/// command, with the same environment, in this repository — its own `target/` built once
/// before, as a developer's main worktree is. Medians of `runs`, in one run; prints the ratio.
fn first_command(root: &Path, cargo: &std::ffi::OsStr, runs: usize) -> Result<()> {
    let Bench { cluster, admin_url, server, app } = Bench::start(root, cargo)?;
    let template = "bench_tpl_status";
    step("template: app schema + seed", || app_template(&server, &app, root, template))?;
    server.exec(template, "VACUUM (FREEZE, ANALYZE)")?;
    let dir = cluster.dir().to_path_buf();
    let real = [tools::find("createdb")?, tools::find("pg_dump")?, tools::find("psql")?];
    let user = UserPath { root, cargo, dir: &dir, admin_url: &admin_url, server: &server, real: &real };
    user.warm_up()?;
    let status = |dir: &Path| -> Result<Duration> {
        let mut cmd = user.cargo(dir, &["xtask", "db", "status"])?;
        cmd.env("DATABASE_URL", admin_url.with_dbname(template).expose_secret())
            .env("WORKTREE_TEMPLATE_DB", template)
            .stdout(Stdio::null());
        time_ours(&mut cmd, false, false)
    };
    // Untimed: the command once here, and one worktree made (the frozen copy and the spare).
    status(root)?;
    user.ours(template, false)?;
    crate::term::announce(format_args!(
        "first `cargo xtask db status` in a new worktree vs. here: {runs} runs each way"
    ));
    let (mut here, mut first, mut seeded) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs * 2 {
        here.push(status(root)?);
        wait_for_spare(&server, template)?;
        let (_, new) = user.ours(template, false)?;
        if i % 2 == 0 {
            // Right away, as `cd "$(cargo xtask db worktree NAME)" && cargo xtask db status`
            // runs it: cargo waits for the background seed of the xtask's profile directory.
            first.push(status(&new)?);
        } else {
            // Once the seed is done (cargo's locks on the new target/'s profile directories free),
            // as a person typing.
            for profile in crate::build_cache::PROFILES {
                wait_unlocked(&new.join("target").join(profile).join(".cargo-lock"))?;
            }
            seeded.push(status(&new)?);
        }
    }
    let h = median(&here);
    println!("| measurement | in the main worktree | first in a new worktree | ratio | target |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, v) in [
        ("right away (waits for the background seed of the xtask's units)", &first),
        ("once the seed is done", &seeded),
    ] {
        let f = median(v);
        println!(
            "| first `cargo xtask db status` in a worktree `cargo xtask db worktree NAME` just made (nothing built there), {label}, vs. in the main worktree | {} | {} | {:.2}x | ≤ 1.5x |",
            time::elapsed(h),
            time::elapsed(f),
            f.as_secs_f64() / h.as_secs_f64()
        );
    }
    println!(
        "\n{runs} runs of each in the new worktree, {} in the main one (medians); PostgreSQL {}; {} cores.",
        runs * 2,
        server.version,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    Ok(())
}

/// Waits until no process holds the lock on `path` (the file may not exist yet: then nobody does).
fn wait_unlocked(path: &Path) -> Result<()> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(()) };
    crate::flock::lock(&file, crate::flock::Mode::Shared).context("waiting for the seed's lock")
}

/// `cargo xtask bench schema-diff`: `db schema-diff` of two databases with the app's schema
/// against the two `pg_dump -s` runs one after the other; and canonicalizing a 5 MB dump.
pub fn schema_diff(flags: crate::flags::BenchSchemaDiff) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cluster = Throwaway::start(&std::env::temp_dir(), "xtask-bench", &[])?;
    let admin_url = cluster.cluster.url("postgres")?;
    let server = Server::connect(admin_url.clone(), "postgres")?;
    crate::term::announce(format_args!("benchmark server: PostgreSQL {} (throwaway cluster)", server.version));
    build(&cargo, &root)?;
    let target = crate::test_harness::target_dir(&cargo, &root)?;
    // The xtask as `cargo xtask` builds it: profile `xtask` (dev's settings), in `xtask/`.
    let (app, xtask) = (target.join("debug/app"), target.join("xtask/xtask"));
    step("two databases with the app's schema", || {
        app_template(&server, &app, &root, "bench_a")?;
        app_template(&server, &app, &root, "bench_b")
    })?;

    let pg_dump = tools::find("pg_dump")?;
    let runs = flags.runs.max(1);
    let pair = |a: &str, b: &str, runs: usize| -> Result<(Duration, Duration)> {
        let (mut base, mut mine) = (Vec::new(), Vec::new());
        let baseline = || -> Result<Duration> {
            let start = Instant::now();
            for db in [a, b] {
                proc::capture(&mut server.command(&pg_dump, &["--schema-only"], db, &[])?, None)?;
            }
            Ok(start.elapsed())
        };
        let ours = || -> Result<Duration> {
            // The xtask binary itself: `cargo run`'s own ~0.1 s check is not the diff's work.
            let mut cmd =
                xtask_binary(&xtask, &root, &["db", "schema-diff", "--a", a, "--b", b], &admin_url.expose_secret())?;
            let start = Instant::now();
            proc::capture(&mut cmd, None)?;
            Ok(start.elapsed())
        };
        // One untimed run of each first: the binaries and the catalogs into memory.
        baseline()?;
        ours()?;
        for i in 0..runs {
            // Alternate which goes first, so neither always runs on a warmer machine.
            if i % 2 == 0 {
                base.push(baseline()?);
                mine.push(ours()?);
            } else {
                mine.push(ours()?);
                base.push(baseline()?);
            }
        }
        Ok((median(&base), median(&mine)))
    };
    let (b, m) = pair("bench_a", "bench_b", runs)?;

    // How it grows with the number of objects: schemas of many tables, each with a primary key,
    // a foreign key to the one before, an index, a default and a comment (5 objects a table).
    let mut wide = Vec::new();
    for n in flags.tables.iter().copied() {
        let (a, bb) = (format!("bench_wide{n}_a"), format!("bench_wide{n}_b"));
        step(&format!("two databases of {n} tables"), || {
            server.exec("postgres", &format!("CREATE DATABASE {a}"))?;
            server.exec(&a, &wide_schema(n))?;
            server.exec("postgres", &format!("CREATE DATABASE {bb} TEMPLATE {a}"))
        })?;
        let runs = (runs / 4).max(3);
        let (wb, wm) = pair(&a, &bb, runs)?;
        wide.push((n, wb, wm, runs));
    }

    // Canonicalizing a ~5 MB dump: the app's schema repeated under other schema names.
    let text = proc::capture(&mut server.command(&pg_dump, &["--schema-only"], "bench_a", &[])?, None)?;
    let mut big = String::new();
    let mut n = 0;
    while big.len() < 5 * 1024 * 1024 {
        big.push_str(&text.replace("crm.", &format!("crm{n}.")).replace("audit.", &format!("audit{n}.")));
        n += 1;
    }
    let mut canon = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let c = crate::schema::canonical(&big, crate::schema::Options::default());
        canon.push(start.elapsed());
        std::hint::black_box(c);
    }
    let c = median(&canon);

    println!("| measurement | baseline | ours | ratio | target |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| `db schema-diff` of two app-schema databases vs. two `pg_dump -s` one after the other | {} | {} | {:.2}x | ≤ 0.7x |", time::elapsed(b), time::elapsed(m), m.as_secs_f64() / b.as_secs_f64());
    for (n, wb, wm, r) in &wide {
        println!(
            "| the same, {n} tables ({} objects; {r} runs) | {} | {} | {:.2}x | {} |",
            n * 5,
            time::elapsed(*wb),
            time::elapsed(*wm),
            wm.as_secs_f64() / wb.as_secs_f64(),
            if *n >= 2000 { "≤ 0.6x" } else { "" }
        );
    }
    println!(
        "| canonicalizing a {:.1} MB schema dump ({} copies of the app's schema) | | {} | | < 200ms |",
        big.len() as f64 / 1048576.0,
        n,
        time::elapsed(c)
    );
    println!(
        "\n{runs} runs per cell (medians) unless said; PostgreSQL {}; the xtask's profile (dev's settings), as `cargo xtask` runs it.",
        server.version
    );
    Ok(())
}

/// `n` tables in schema `wide`, each with a primary key, a foreign key to the one before, an
/// index, a default and a comment: one DO block, so the server builds them without round trips.
fn wide_schema(n: usize) -> String {
    format!(
        "CREATE SCHEMA wide;
DO $wide$
BEGIN
  FOR i IN 1..{n} LOOP
    EXECUTE format('CREATE TABLE wide.t%s (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(10,2) DEFAULT 0, created_at timestamptz DEFAULT now(), prev_id bigint %s)',
                   i, CASE WHEN i > 1 THEN format('REFERENCES wide.t%s (id)', i - 1) ELSE '' END);
    EXECUTE format('CREATE INDEX t%s_created_at_idx ON wide.t%s (created_at)', i, i);
    EXECUTE format('COMMENT ON TABLE wide.t%s IS %L', i, 'table number ' || i);
  END LOOP;
END
$wide$;"
    )
}
