//! `cargo xtask bench mask`: the masking script against a plain `UPDATE … SET col = md5(col)` of
//! the same columns, on identical copies of one table on a throwaway cluster (fsync on), medians
//! of alternating runs, reported as a ratio (target in docs/performance.md).

use std::time::{Duration, Instant};

use anyhow::Result;

use super::median;
use crate::config::find_workspace_root;
use crate::flags::BenchMask;
use crate::mask::{self, Column, Rule};
use crate::{proc, time};

pub fn run(flags: BenchMask) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let super::Bench { cluster: _cluster, server, app, .. } = super::Bench::start(&root, &cargo)?;
    let rows = flags.rows;
    if rows == 0 {
        return check_with_sampling(&server, &app, &root, &flags);
    }
    crate::term::step(&format!("a table of {rows} people (id, email, first_name, phone, signed_up)"), || {
        server.exec("postgres", "CREATE DATABASE bench_people")?;
        server.exec(
            "bench_people",
            &format!(
                "CREATE TABLE people (id bigint PRIMARY KEY, email text UNIQUE, first_name text NOT NULL, phone text, signed_up date); \
                 INSERT INTO people SELECT g, 'person' || g || '@mail.example.org', 'First' || g, '+1555' || lpad(g::text, 8, '0'), \
                   DATE '2020-01-01' + (g % 1000) FROM generate_series(1, {rows}) g; \
                 VACUUM (FREEZE, ANALYZE) people"
            ),
        )?;
        server.exec("postgres", "CREATE DATABASE bench_template TEMPLATE bench_people")
    })?;
    let col = |name: &str| Column {
        schema: "public".into(),
        table: "people".into(),
        column: name.into(),
        type_name: "text".into(),
        base: "text".into(),
        not_null: name == "first_name",
        generated: false,
        kind: "r".into(),
        category: "S".into(),
        empty: Some(String::new()),
        pages: 0.0,
    };
    let masked = vec![(col("email"), Rule::Email), (col("first_name"), Rule::FirstName), (col("phone"), Rule::Phone)];
    let script = mask::script(&mask::Classified::masking(masked), b"a benchmark key, not a secret");
    let fresh = || -> Result<()> {
        server.drop_database("bench_people", true)?;
        server.exec("postgres", "CREATE DATABASE bench_people TEMPLATE bench_template")?;
        server.exec("postgres", "CHECKPOINT")
    };
    // Masking, then the rewrite `load-clone --mask` does after it (VACUUM FULL), timed apart.
    let ours = || -> Result<(Duration, Duration)> {
        fresh()?;
        let start = Instant::now();
        proc::capture(&mut server.psql("bench_people")?, Some(script.as_bytes()))?;
        let masked = start.elapsed();
        let start = Instant::now();
        server.exec("bench_people", "VACUUM FULL people")?;
        Ok((masked, start.elapsed()))
    };
    let md5 = || -> Result<Duration> {
        fresh()?;
        let start = Instant::now();
        server.exec(
            "bench_people",
            "UPDATE people SET email = md5(email), first_name = md5(first_name), phone = md5(phone)",
        )?;
        Ok(start.elapsed())
    };
    crate::term::step("warm-up: one untimed run of each", || {
        ours()?;
        md5().map(drop)
    })?;
    let (mut mine, mut base, mut rewrite) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..flags.runs.max(1) {
        crate::term::announce(format_args!("run {}/{}", i + 1, flags.runs.max(1)));
        if i % 2 == 0 {
            let (m, r) = ours()?;
            mine.push(m);
            rewrite.push(r);
            base.push(md5()?);
        } else {
            base.push(md5()?);
            let (m, r) = ours()?;
            mine.push(m);
            rewrite.push(r);
        }
    }
    let (m, b, r) = (median(&mine), median(&base), median(&rewrite));
    let ratio = m.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!("\nmedians of {}; {rows} rows, three masked columns (email, first_name, phone)\n", flags.runs.max(1));
    println!("| cell | masking | md5() update | ratio | target |\n|---|---|---|---|---|");
    println!(
        "| mask vs `UPDATE … SET col = md5(col)` | {} | {} | {ratio:.2}x | ≤ 2x: {} |",
        time::elapsed(m),
        time::elapsed(b),
        if ratio <= 2.0 { "met" } else { "NOT met" }
    );
    println!(
        "| then the rewrite `load-clone --mask` adds (VACUUM FULL) | +{} | | {:.2}x masking alone | — |",
        time::elapsed(r),
        (m + r).as_secs_f64() / m.as_secs_f64().max(1e-9)
    );
    check_with_sampling(&server, &app, &root, &flags)
}

/// `db mask --check` on the app's schema with `--customers` customers and the repository's
/// rules, run as users run it (the xtask binary, a process a run), and what its content sample
/// costs in it: the same survey in-process with the sample and without it (one psql session
/// each, as the command opens), the difference. Reported: the command's time against the
/// command's time less the sample's cost — what sampling adds to the command.
fn check_with_sampling(
    server: &crate::pg::Server,
    app: &std::path::Path,
    root: &std::path::Path,
    flags: &BenchMask,
) -> Result<()> {
    let n = flags.customers;
    crate::term::step(&format!("the app's schema and seed with {n} more customers"), || {
        super::app_template(server, app, root, "bench_app")?;
        server.exec(
            "bench_app",
            &format!(
                "INSERT INTO crm.customers (organization_id, first_name, last_name, email, phone, lifecycle_stage, attributes) \
                 SELECT (SELECT min(id) FROM crm.organizations), 'First' || g, 'Last' || g, 'c' || g || '@mail.example.org', \
                   '+1555' || lpad(g::text, 7, '0'), 'active', '{{\"insurance\": \"Cigna\"}}' FROM generate_series(1, {n}) g"
            ),
        )?;
        server.exec("bench_app", "VACUUM (FREEZE, ANALYZE)")
    })?;
    let text = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let manifest: toml::Value = toml::from_str(&text)?;
    let specs: std::collections::BTreeMap<String, mask::RuleSpec> = manifest
        .get("workspace")
        .and_then(|w| w.get("metadata"))
        .and_then(|m| m.get("db"))
        .and_then(|d| d.get("mask"))
        .and_then(|m| m.get("rules"))
        .cloned()
        .map(toml::Value::try_into)
        .transpose()?
        .unwrap_or_default();
    let rules = mask::parse_rules(&specs)?;
    let known = mask::repository_sql(&root.join("migrations"));
    let survey = |sample: bool| -> Result<Duration> {
        let start = Instant::now();
        let db = mask::SessionPsql::open(server, "bench_app")?;
        let c = mask::survey_with(&db, &rules, "public._sqlx_migrations", &known, sample)?;
        anyhow::ensure!(mask::problems(&c).is_empty(), "the repository's rules do not pass: {:?}", mask::problems(&c));
        Ok(start.elapsed())
    };
    let command = || -> Result<Duration> {
        // The binary `Bench::start` just built, beside the app's.
        let xtask = app.with_file_name("xtask");
        let url = server.url.with_dbname("postgres").expose_secret();
        let mut cmd = super::xtask_binary(&xtask, root, &["db", "mask", "bench_app", "--check"], &url)?;
        let start = Instant::now();
        proc::capture(&mut cmd, None)?;
        Ok(start.elapsed())
    };
    // Warm-up.
    survey(true)?;
    survey(false)?;
    command()?;
    let (mut with, mut without, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    let runs = flags.runs.max(1) * 5;
    for i in 0..runs {
        whole.push(command()?);
        if i % 2 == 0 {
            with.push(survey(true)?);
            without.push(survey(false)?);
        } else {
            without.push(survey(false)?);
            with.push(survey(true)?);
        }
    }
    let (w, wo, cmd) = (median(&with), median(&without), median(&whole));
    let sample = w.saturating_sub(wo);
    let ratio = cmd.as_secs_f64() / cmd.saturating_sub(sample).as_secs_f64().max(1e-9);
    println!("\nmedians of {runs}; the app's schema with {n} more customers, the repository's rules\n");
    println!("| cell | with the content sample | without | ratio | target |\n|---|---|---|---|---|");
    println!(
        "| the survey in-process (catalog, sample, classification) | {} | {} | {:.2}x | — |",
        time::elapsed(w),
        time::elapsed(wo),
        w.as_secs_f64() / wo.as_secs_f64().max(1e-9)
    );
    println!(
        "| `cargo xtask db mask bench_app --check` (the binary) | {} | {} (less the sample) | {ratio:.2}x | ≤ 1.10x: {} |",
        time::elapsed(cmd),
        time::elapsed(cmd.saturating_sub(sample)),
        if ratio <= 1.10 { "met" } else { "NOT met" }
    );
    Ok(())
}
