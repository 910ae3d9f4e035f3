//! `xtask-aws`: the AWS verbs of `cargo xtask db` (run by the xtask with the same command line).
//! Nothing but this crate calls AWS.

mod aurora;
mod clone_prod;
mod credentials;
mod dump;
mod kit;
mod list_clones;
mod rds;
mod tunnel;
mod wait;

use anyhow::{Context, Result};
use xtask::flags::{Command, DbVerb, Xtask};

fn main() {
    std::process::exit(xtask::entry(|flags| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
        let result = runtime.block_on(run(flags));
        // A rehearsal thread still running after an interrupted pipeline (its instance deleted
        // by now) must not hold the exit.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        result
    }));
}

async fn run(flags: Xtask) -> Result<()> {
    let Command::Db(db) = flags.command else { anyhow::bail!("xtask-aws runs only the AWS verbs of `cargo xtask db`") };
    let ctx = xtask::db::Ctx::load(&db.config.overrides())?;
    match db.verb {
        DbVerb::CloneProd(c) => clone_prod::run(&ctx, c).await,
        DbVerb::ListClones(l) => list_clones::run(&ctx, l).await,
        _ => anyhow::bail!("xtask-aws runs only the AWS verbs of `cargo xtask db`"),
    }
}
