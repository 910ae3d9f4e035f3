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
    let super::Bench { cluster: _cluster, server, .. } = super::Bench::start(&root, &cargo)?;
    let rows = flags.rows;
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
    };
    let masked = [(col("email"), Rule::Email), (col("first_name"), Rule::FirstName), (col("phone"), Rule::Phone)];
    let script = mask::script(&masked, b"a benchmark key, not a secret");
    let fresh = || -> Result<()> {
        server.drop_database("bench_people", true)?;
        server.exec("postgres", "CREATE DATABASE bench_people TEMPLATE bench_template")?;
        server.exec("postgres", "CHECKPOINT")
    };
    let ours = || -> Result<Duration> {
        fresh()?;
        let start = Instant::now();
        proc::capture(&mut server.psql("bench_people")?, Some(script.as_bytes()))?;
        Ok(start.elapsed())
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
    let (mut mine, mut base) = (Vec::new(), Vec::new());
    for i in 0..flags.runs.max(1) {
        eprintln!("▸ run {}/{}", i + 1, flags.runs.max(1));
        if i % 2 == 0 {
            mine.push(ours()?);
            base.push(md5()?);
        } else {
            base.push(md5()?);
            mine.push(ours()?);
        }
    }
    let (m, b) = (median(&mine), median(&base));
    let ratio = m.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!("\nmedians of {}; {rows} rows, three masked columns (email, first_name, phone)\n", flags.runs.max(1));
    println!("| cell | masking | md5() update | ratio | target |\n|---|---|---|---|---|");
    println!(
        "| mask vs `UPDATE … SET col = md5(col)` | {} | {} | {ratio:.2}x | ≤ 2x: {} |",
        time::elapsed(m),
        time::elapsed(b),
        if ratio <= 2.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
