//! `db generate [--check]`: the artifacts derived from the migrated schema, regenerated from a
//! database built fresh from every migration (see [`super::ops::generate`]).

use anyhow::Result;

use super::ops::generate::generate;
use super::Ctx;

pub fn run(ctx: &Ctx, check: bool) -> Result<()> {
    let server = ctx.server()?;
    generate(ctx, &server, check, None)
}
