//! Masking a database in place (`load-clone --mask`, before the copy takes its name): the rules
//! (which `db mask --check` reads too), the key, the database as the pipeline reaches it. The
//! rules' syntax and the SQL are [`crate::mask`]'s.

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::fail;
use crate::mask;
use crate::pg::Server;

/// The rules, parsed.
pub fn rules(ctx: &Ctx) -> Result<std::collections::BTreeMap<String, mask::Rule>> {
    mask::parse_rules(&ctx.config.mask.rules)
        .map_err(|e| fail(format!("{e:#}"), "fix [workspace.metadata.db.mask.rules] in Cargo.toml"))
}

/// The database as the masking pipeline reaches it: its psql.
pub fn psql<'a>(server: &'a Server, db: &'a str) -> impl Fn(&str) -> Result<String> + 'a {
    move |input: &str| server.script(db, input)
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
