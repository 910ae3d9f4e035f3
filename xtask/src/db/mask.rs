//! `db mask [DB] --check`: every column classified by `[workspace.metadata.db.mask.rules]`; and
//! [`apply`], which masks a database in place (`load-clone --mask`, before the copy takes its
//! name). The rules and the SQL are [`crate::mask`]'s.

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::{fail, Verdict};
use crate::flags::Mask;
use crate::mask;
use crate::pg::Server;

/// The rules, parsed.
fn rules(ctx: &Ctx) -> Result<std::collections::BTreeMap<String, mask::Rule>> {
    mask::parse_rules(&ctx.config.mask.rules)
        .map_err(|e| fail(format!("{e:#}"), "fix [workspace.metadata.db.mask.rules] in Cargo.toml"))
}

/// The database as the masking pipeline reaches it: its psql.
fn psql<'a>(server: &'a Server, db: &'a str) -> impl Fn(&str) -> Result<String> + 'a {
    move |input: &str| server.script(db, input)
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
    // One session for the catalog and the sample.
    let known = mask::repository_sql(&ctx.config.root.join(&ctx.config.migrations_dir));
    let c = mask::survey(&mask::SessionPsql::open(&server, &db)?, &rules(ctx)?, &ctx.config.ledger_table, &known)
        .with_context(|| format!("classifying the columns of `{db}`"))?;
    for (col, rule) in &c.masked {
        println!("mask  {}  {}", col.key(), rule.describe());
    }
    for (comment, kinds) in &c.comments {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.describe()).collect();
        println!("redact  comment on {} {} (holds {})", comment.object_type, comment.identity, kinds.join(", "));
    }
    for mv in &c.matviews {
        println!("refresh  materialized view {mv}");
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
    mask::key_from_env(
        &ctx.config.mask.key_env,
        "run `db load-clone` without --mask (the copy then holds the dump's data as it is)",
    )
}

/// Masks `db` in place ([`mask::apply`]: every column classified first — strict: anything
/// unreviewed stops it before a row is touched —, one transaction, the application's triggers
/// off), then rewrites the masked tables so the copy has the sizes a restore gives.
pub fn apply(ctx: &Ctx, server: &Server, db: &str, key: &[u8]) -> Result<()> {
    if ctx.config.mask.rules.is_empty() {
        return Err(fail(
            "there are no masking rules",
            "write [workspace.metadata.db.mask.rules] in Cargo.toml (`cargo xtask db mask` lists the columns)",
        ));
    }
    let place = format!("in `{db}`");
    let known = mask::repository_sql(&ctx.config.root.join(&ctx.config.migrations_dir));
    let how = mask::Apply { place: &place, known: &known, nothing: "nothing was masked", escape: "", compact: true };
    mask::apply(&psql(server, db), &rules(ctx)?, &ctx.config.ledger_table, key, &how).context("masking")
}
