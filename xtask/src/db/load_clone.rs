//! `db load-clone [DUMP]` and `db drop-clone`: the local copy of a production dump.

use anyhow::Result;

use super::ops::load::load as load_dump;
use super::Ctx;
use crate::error::fail;
use crate::flags::{DropClone, LoadClone};
use crate::pg::staging::sweep_abandoned;
use crate::pg::{human_size, Kind};
use crate::term::{confirm, Answer};

pub fn load(ctx: &Ctx, flags: LoadClone) -> Result<()> {
    let Some(warnings) = load_dump(ctx, flags.dump, flags.mask, flags.dry_run)? else { return Ok(()) };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let name = ctx.config.prod_clone_db();
    eprintln!("`{name}` is ready ({} warning(s)). Point the app at it with:", warnings.len());
    eprintln!("  APP_DB_NAME_OVERRIDE={name} cargo run -p app -- serve");
    Ok(())
}

/// `db drop-clone`: the local copies of production — `<prefix>prod_clone` and a migrated copy
/// kept by `db rehearse --keep` — each only if this tool made it as that.
pub fn drop(ctx: &Ctx, flags: DropClone) -> Result<()> {
    let server = ctx.server()?;
    let mut found = Vec::new();
    for (name, made_by) in
        [(ctx.config.prod_clone_db(), "db load-clone"), (ctx.config.rehearsal_db(), "db rehearse --keep")]
    {
        let Some(info) = server.database(&name)? else { continue };
        let ours = match made_by {
            "db load-clone" => matches!(info.kind(), Some(Kind::ProdClone { .. })),
            _ => matches!(info.kind(), Some(Kind::Rehearsal { .. })),
        };
        if !ours {
            return Err(fail(
                format!("`{name}` was not made by `{made_by}`; it is left alone"),
                "drop it yourself if you mean to",
            ));
        }
        found.push((name, info.size_bytes));
    }
    if found.is_empty() {
        eprintln!(
            "there is no `{}` and no `{}`: nothing to drop",
            ctx.config.prod_clone_db(),
            ctx.config.rehearsal_db()
        );
        return Ok(());
    }
    let list = found.iter().map(|(n, size)| format!("`{n}` ({})", human_size(*size))).collect::<Vec<_>>().join(" and ");
    if !confirm(&format!("Drop {list}, the local copies of production?"), Answer::new(flags.yes, flags.dry_run))? {
        eprintln!("nothing dropped");
        return Ok(());
    }
    // A copy of them a killed run renamed aside goes first: with their names free, a later
    // sweep would rename it back, and a production copy dropped on purpose would return.
    sweep_abandoned(&server, &ctx.config.prefix)?;
    for (name, _) in &found {
        server.drop_database(name, true)?;
    }
    eprintln!(
        "dropped {list}; the dumps in {} remain (they hold production data: delete them when done)",
        ctx.config.aws.dump_dir.display()
    );
    Ok(())
}
