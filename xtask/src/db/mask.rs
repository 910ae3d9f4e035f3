//! `db mask [DB] --check`: every column classified by `[workspace.metadata.db.mask.rules]`.
//! Masking itself is [`super::ops::mask`]'s; the rules and the SQL are [`crate::mask`]'s.

use anyhow::{Context, Result};

use super::ops::mask::rules;
use super::Ctx;
use crate::error::{fail, Verdict};
use crate::flags::Mask;
use crate::mask;

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
