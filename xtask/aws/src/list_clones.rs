//! `db list-clones`: the throwaway instances `clone-prod` made, and `--prune` of the overdue.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use xtask::error::{fail, report};
use xtask::flags::ListClones;

use crate::kit::connect;
use crate::rds;

pub async fn run(ctx: &xtask::db::Ctx, flags: ListClones) -> Result<()> {
    let aws = connect(ctx, &flags.aws).await?;
    let clones = rds::list(&aws.rds, SystemTime::now()).await?;
    if flags.format.json(flags.json) {
        println!("{}", serde_json::to_string_pretty(&clones)?);
    } else if clones.is_empty() {
        println!("no throwaway instances (none carries {}={})", rds::CREATED_BY_KEY, rds::CREATED_BY_VALUE);
    } else {
        println!("{:<48} {:<14} {:>8}  {:<22} CLONE OF", "INSTANCE", "STATUS", "AGE", "EXPIRES");
        for c in &clones {
            let age =
                c.age_seconds.map(|s| format!("{}h{:02}m", s / 3600, s % 3600 / 60)).unwrap_or_else(|| "?".into());
            let flag = if c.overdue { "  OVERDUE" } else { "" };
            println!(
                "{:<48} {:<14} {:>8}  {:<22} {}{flag}",
                c.id,
                c.status,
                age,
                c.expires_at.as_deref().unwrap_or("?"),
                c.clone_of.as_deref().unwrap_or("?")
            );
        }
    }
    if !flags.prune {
        return Ok(());
    }
    if std::env::args().any(|a| a == "--delete-expired") {
        eprintln!("warning: --delete-expired is deprecated and will be removed: use --prune");
    }
    let expired: Vec<&rds::Throwaway> = clones.iter().filter(|c| c.overdue).collect();
    if expired.is_empty() {
        eprintln!("nothing is past its expiry");
        return Ok(());
    }
    let names: Vec<&str> = expired.iter().map(|c| c.id.as_str()).collect();
    let protected: Vec<&str> = aws.source.iter().map(String::as_str).collect();
    if flags.dry_run {
        // The listed instances carry our tag; what else the deletion refuses, it says.
        let ours = [(rds::CREATED_BY_KEY.to_string(), rds::CREATED_BY_VALUE.to_string())];
        let shown: Vec<String> = names
            .iter()
            .map(|id| match rds::refusal(id, &ours, &protected) {
                Some(why) => format!("{id} (refused: {why})"),
                None => id.to_string(),
            })
            .collect();
        eprintln!("--dry-run: would delete {} expired instance(s): {}", names.len(), shown.join(", "));
        return Ok(());
    }
    let answer = xtask::term::Answer::new(flags.yes, flags.dry_run);
    if !xtask::term::confirm(&format!("Delete {} expired instance(s): {}?", names.len(), names.join(", ")), answer)? {
        eprintln!("nothing deleted");
        return Ok(());
    }
    let mut failures = Vec::new();
    for id in names {
        match rds::delete(&aws.rds, id, &protected, &aws.region, Duration::from_secs(300)).await {
            Ok(outcome) => eprintln!("{id}: {outcome:?}"),
            Err(e) => {
                eprintln!("{id}: {}", report(&e).line);
                failures.push(id.to_string());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(fail(
            format!("{} instance(s) were not deleted: {}", failures.len(), failures.join(", ")),
            "see the lines above",
        ))
    }
}
