//! `cargo xtask bench rehearse`: `db rehearse` against what it replaces, measured in the same run
//! on the same data, reported as ratios (targets in docs/performance.md).
//!
//! "Production": the app's schema at migration 0008 with `--contacts` contacts (their audit
//! events too), analyzed, on a throwaway cluster (fsync on); pending: the repository's later
//! migrations (0009 renames contacts to customers and rewrites their audit events). Two cells:
//!
//! - the traced migration (`migrate_ms` of `cargo xtask db rehearse --format json`, as the README
//!   writes the command) against the app's migrator alone (`app migrate`) on an identical copy;
//! - starting an iteration (`copy_ms`: the file copy of the pristine database) against
//!   `createdb` + `pg_restore -j <cores>` of a dump of it.

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::median;
use crate::config::find_workspace_root;
use crate::error::fail;
use crate::flags::BenchRehearse;
use crate::pg::{ident, tools, Server};
use crate::term::step;
use crate::{proc, time};

pub fn run(flags: BenchRehearse) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let super::Bench { cluster, admin_url, server, app } = super::Bench::start(&root, &cargo)?;
    let dir = cluster.dir().to_path_buf();

    // Production at 0008, with data.
    let early = dir.join("migrations-0008");
    std::fs::create_dir_all(&early)?;
    for m in crate::migrations::in_repo(&root.join("migrations"))?.into_iter().filter(|m| m.version <= 8) {
        std::fs::copy(&m.file, early.join(m.file.file_name().context("a migration without a name")?))?;
    }
    let prod = "bench_prod";
    step(
        &format!("production: the app's schema at 0008, {} contacts with their audit events", flags.contacts),
        || {
            server.exec("postgres", &format!("CREATE DATABASE {prod}"))?;
            let mut migrate = super::app_migrate(&app, &server.url.with_dbname(prod).expose_secret())?;
            migrate.env("APP_MIGRATIONS_DIR", &early);
            proc::capture(&mut migrate, None)?;
            server.exec(
                prod,
                &format!(
                    "INSERT INTO crm.organizations (name, slug) VALUES ('Acme', 'acme'); \
                 INSERT INTO crm.contacts (organization_id, first_name, last_name, email) \
                 SELECT 1, 'First' || g, 'Last' || g, 'c' || g || '@example.com' FROM generate_series(1, {}) g; \
                 VACUUM (FREEZE, ANALYZE)",
                    flags.contacts
                ),
            )
        },
    )?;
    let size = server.database(prod)?.map(|d| crate::pg::human_size(d.size_bytes)).unwrap_or_default();
    let dump = dir.join("prod.dump");
    step(&format!("pg_dump -Fc of production ({size}), for the pg_restore baseline"), || {
        let f = dump.to_string_lossy();
        proc::capture(&mut server.command(&tools::find("pg_dump")?, &["-Fc", "-f", &f], prod, &[])?, None).map(drop)
    })?;

    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
    let pg_restore = tools::find("pg_restore")?;
    let xtask = |report: &std::path::Path| -> Result<Command> {
        let args = ["xtask", "db", "rehearse", "--from", prod, "--no-smoke", "--format", "json", "--report"];
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).chain([report.as_os_str()]).collect();
        let mut cmd = super::cargo_in(&cargo, &root, &args)?;
        cmd.env("DATABASE_URL", admin_url.expose_secret());
        Ok(cmd)
    };
    let rehearse = |i: usize| -> Result<(Duration, Duration)> {
        settle(&server)?;
        let mut cmd = xtask(&dir.join(format!("report-{i}.md")))?;
        let (status, out, err) = proc::output(&mut cmd, None)?;
        proc::check_interrupt()?;
        // Exit 1 is a verdict (0009 holds its locks through the audit rewrite): the run is complete.
        if !matches!(status.code(), Some(0 | 1)) {
            return Err(fail(
                format!("`{}` failed: {}", proc::display(&cmd), String::from_utf8_lossy(&err)),
                "see above",
            ));
        }
        let r: serde_json::Value = serde_json::from_slice(&out).context("reading the rehearsal's JSON report")?;
        if r["migrations"].as_array().map_or(true, |m| m.is_empty()) || r["gate"]["equal"] != true {
            return Err(fail("the rehearsal did not migrate and pass the gate", String::from_utf8_lossy(&err)));
        }
        let ms = |k: &str| Duration::from_millis(r[k].as_u64().unwrap_or(0));
        Ok((ms("copy_ms"), ms("migrate_ms")))
    };
    let migrator = || -> Result<Duration> {
        server.exec("postgres", &format!("CREATE DATABASE bench_m TEMPLATE {prod}"))?;
        settle(&server)?;
        let mut cmd = super::app_migrate(&app, &server.url.with_dbname("bench_m").expose_secret())?;
        let start = Instant::now();
        proc::capture(&mut cmd, None)?;
        let took = start.elapsed();
        server.drop_database("bench_m", true)?;
        Ok(took)
    };
    let restore = || -> Result<Duration> {
        settle(&server)?;
        let start = Instant::now();
        server.exec("postgres", &format!("CREATE DATABASE {} TEMPLATE template0", ident("bench_r")))?;
        let f = dump.to_string_lossy().into_owned();
        proc::capture(
            &mut server.command(&pg_restore, &["-j", &jobs, "--no-owner"], "bench_r", &[std::path::Path::new(&f)])?,
            None,
        )?;
        let took = start.elapsed();
        server.drop_database("bench_r", true)?;
        Ok(took)
    };

    // One untimed round first (builds, binaries and catalogs into memory).
    step("warm-up: one untimed round", || {
        rehearse(0)?;
        migrator()?;
        restore().map(drop)
    })?;
    let runs = flags.runs.max(1);
    let (mut copies, mut traced, mut apps, mut restores) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        crate::term::announce(format_args!("run {}/{runs}", i + 1));
        // Alternate which goes first, so neither always runs on a warmer machine.
        let (c, t, a, r) = if i % 2 == 0 {
            let (c, t) = rehearse(i + 1)?;
            (c, t, migrator()?, restore()?)
        } else {
            let r = restore()?;
            let a = migrator()?;
            let (c, t) = rehearse(i + 1)?;
            (c, t, a, r)
        };
        copies.push(c);
        traced.push(t);
        apps.push(a);
        restores.push(r);
    }
    let cell = |name: &str, ours: Duration, base: Duration, target: f64| {
        let ratio = ours.as_secs_f64() / base.as_secs_f64().max(1e-9);
        println!(
            "| {name} | {} | {} | {ratio:.2}x | {} |",
            time::elapsed(ours),
            time::elapsed(base),
            if ratio <= target { format!("≤ {target}x: met") } else { format!("≤ {target}x: NOT met") }
        );
    };
    println!("\nmedians of {runs}; production: {} contacts, {size}\n", flags.contacts);
    println!("| cell | ours | baseline | ratio | target |\n|---|---|---|---|---|");
    cell("traced migration vs `app migrate` on an identical copy", median(&traced), median(&apps), 1.2);
    cell(
        &format!("new iteration (file copy) vs createdb + pg_restore -j {jobs}"),
        median(&copies),
        median(&restores),
        0.1,
    );
    Ok(())
}

fn settle(server: &Server) -> Result<()> {
    server.exec("postgres", "CHECKPOINT")
}
