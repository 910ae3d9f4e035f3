//! A database built from nothing by every migration (the app's migrator on an empty database),
//! checked to have every migration of this checkout applied.

use anyhow::Result;

use super::Ctx;
use crate::naming::Staging;
use crate::pg::staging;
use crate::pg::{Creating, Marker, Server};
use crate::term::step;

/// A database built from nothing by every migration, under a temporary name (dropped again unless
/// the caller keeps the guard).
pub fn build<'s>(ctx: &Ctx, server: &'s Server) -> Result<Creating<'s>> {
    let staging = staging::name(&ctx.config.prefix, Staging::Fresh);
    build_into(ctx, server, &staging, &staging::staging_marker(&ctx.fresh_db()))
}

/// Creates `staging` (marked `marker`) and applies every migration to it.
pub fn build_into<'s>(ctx: &Ctx, server: &'s Server, staging: &str, marker: &Marker) -> Result<Creating<'s>> {
    let db = step("creating an empty database and applying every migration", || {
        let db = server.create_database(staging, "TEMPLATE template0", marker)?;
        ctx.run_migrator(&server.url.with_dbname(staging), None)?;
        Ok(db)
    })?;
    super::migrations::verify_applied(ctx, server, staging)?;
    Ok(db)
}
