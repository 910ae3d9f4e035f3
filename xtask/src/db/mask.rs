//! `db mask [DB] --check`: every column classified by `[workspace.metadata.db.mask.rules]`; and
//! [`apply`], which masks a database in place (`load-clone --mask`, before the copy takes its
//! name). The rules and the SQL are [`crate::mask`]'s.

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::{fail, Verdict};
use crate::flags::Mask;
use crate::mask::{self, Classified, Column};
use crate::pg::Server;
use crate::proc;
use crate::term::step;

fn columns(server: &Server, db: &str, ledger: &str) -> Result<Vec<Column>> {
    let out = server.script(db, &format!("{};", mask::columns_query(ledger)))?;
    serde_json::from_str(out.trim()).with_context(|| format!("reading the columns of `{db}`"))
}

/// The columns of `db` against the rules.
fn classified(ctx: &Ctx, server: &Server, db: &str) -> Result<Classified> {
    let rules = mask::parse_rules(&ctx.config.mask.rules)
        .map_err(|e| fail(format!("{e:#}"), "fix [workspace.metadata.db.mask.rules] in Cargo.toml"))?;
    Ok(mask::classify(&columns(server, db, &ctx.config.ledger_table)?, &rules))
}

pub fn check(ctx: &Ctx, flags: Mask) -> Result<()> {
    let server = ctx.server()?;
    let db = if flags.db == "fresh" { ctx.fresh_db() } else { flags.db.clone() };
    if !server.database_exists(&db)? {
        let fix = if flags.db == "fresh" {
            "build it first: `cargo xtask db fresh`"
        } else {
            "name a database on the server"
        };
        return Err(fail(format!("there is no database `{db}` to classify"), fix));
    }
    let c = classified(ctx, &server, &db)?;
    for (col, rule) in &c.masked {
        println!("mask  {}  {}", col.key(), rule.describe());
    }
    let problems = mask::problems(&c);
    for p in &problems {
        println!("{p}");
    }
    eprintln!(
        "`{db}`: {} column(s) masked, {} kept, {} unreviewed, {} stale rule(s), {} invalid",
        c.masked.len(),
        c.kept,
        c.unreviewed.len(),
        c.stale.len(),
        c.invalid.len()
    );
    if !problems.is_empty() && flags.check {
        return Err(Verdict(format!(
            "{} masking problem(s): add a rule for each unreviewed column in [workspace.metadata.db.mask.rules]",
            problems.len()
        ))
        .into());
    }
    Ok(())
}

/// The secret key, from the environment variable `mask.key_env`.
pub fn key(ctx: &Ctx) -> Result<Vec<u8>> {
    mask::key_from_env(&ctx.config.mask.key_env)
}

/// Masks `db` in place, every column classified first (strict: anything unreviewed stops it
/// before a row is touched). One transaction, the application's triggers off.
pub fn apply(ctx: &Ctx, server: &Server, db: &str, key: &[u8]) -> Result<()> {
    if ctx.config.mask.rules.is_empty() {
        return Err(fail(
            "there are no masking rules",
            "write [workspace.metadata.db.mask.rules] in Cargo.toml (`cargo xtask db mask` lists the columns)",
        ));
    }
    let c = classified(ctx, server, db)?;
    mask::refuse_unreviewed(&c, "nothing was masked", "")?;
    let script = mask::script(&c.masked, key);
    let tables: std::collections::BTreeSet<_> = c.masked.iter().map(|(col, _)| (&col.schema, &col.table)).collect();
    step(&format!("masking {} column(s) in {} table(s) (triggers off)", c.masked.len(), tables.len()), || {
        let mut cmd = server.psql(db)?;
        proc::capture(&mut cmd, Some(script.as_bytes())).map(drop).map_err(explain)
    })
    .context("masking")
}

/// A masked value that collides under a UNIQUE constraint, in the words of the fix.
fn explain(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("duplicate key value violates unique constraint") {
        let line = crate::error::telling_line(&text).to_string();
        return fail(
            format!("masked values collide under a UNIQUE constraint ({line}): nothing was masked"),
            "give that column a rule with more distinct outputs (email, hash), or keep it",
        );
    }
    if text.contains("violates check constraint") {
        let line = crate::error::telling_line(&text).to_string();
        return fail(
            format!("masked values break a CHECK constraint ({line}): nothing was masked"),
            "give that column a rule whose values pass it (a `fixed` value keeps NULL as NULL)",
        );
    }
    e
}
