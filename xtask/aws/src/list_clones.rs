//! `db list-clones`: the throwaway instances and Aurora clusters `clone-prod` made, and `--prune`
//! of the overdue (a cluster's instances first).

use std::time::{Duration, SystemTime};

use anyhow::Result;
use xtask::error::{fail, report};
use xtask::flags::ListClones;

use crate::kit::{aws_error, connect};
use crate::{aurora, rds};

pub async fn run(ctx: &xtask::db::Ctx, flags: ListClones) -> Result<()> {
    let aws = connect(ctx, &flags.aws).await?;
    let now = SystemTime::now();
    let mut clones = rds::list(&aws.rds, now).await?;
    clones.extend(aurora::list(&aws.rds, now).await?);
    if flags.format.json(flags.json) {
        println!("{}", serde_json::to_string_pretty(&clones)?);
    } else if clones.is_empty() {
        println!("no throwaway instances or clusters (none carries {}={})", rds::CREATED_BY_KEY, rds::CREATED_BY_VALUE);
    } else {
        println!("{:<8} {:<48} {:<14} {:>8}  {:<22} CLONE OF", "KIND", "ID", "STATUS", "AGE", "EXPIRES");
        for c in &clones {
            let age =
                c.age_seconds.map(|s| format!("{}h{:02}m", s / 3600, s % 3600 / 60)).unwrap_or_else(|| "?".into());
            let flag = if c.overdue { "  OVERDUE" } else { "" };
            println!(
                "{:<8} {:<48} {:<14} {:>8}  {:<22} {}{flag}",
                c.kind,
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
    let names: Vec<String> = expired.iter().map(|c| shown(c)).collect();
    // Every source named, and the cluster of a source instance that belongs to one.
    let mut sources = aws.sources.clone();
    for s in &aws.sources {
        // Identifiers are stored in lower case (and compared without case).
        match aws.rds.describe_db_instances().db_instance_identifier(s.trim().to_ascii_lowercase()).send().await {
            Ok(out) => {
                sources.extend(out.db_instances().iter().filter_map(|d| d.db_cluster_identifier()).map(str::to_string))
            }
            Err(e) if rds::error_code(&e) == Some("DBInstanceNotFound") => {}
            Err(e) => return Err(aws_error(&format!("reading the source `{s}`"), e)),
        }
    }
    let protected: Vec<&str> = sources.iter().map(String::as_str).collect();
    if flags.dry_run {
        // The listed ones carry our tag; what else the deletion refuses, it says.
        let ours = [(rds::CREATED_BY_KEY.to_string(), rds::CREATED_BY_VALUE.to_string())];
        let shown: Vec<String> = expired
            .iter()
            .zip(&names)
            .map(|(c, name)| match rds::refusal(what(c), &c.id, &ours, &protected) {
                Some(why) => format!("{name} (refused: {why})"),
                None => name.clone(),
            })
            .collect();
        eprintln!("--dry-run: would delete {} expired clone(s): {}", names.len(), shown.join(", "));
        return Ok(());
    }
    let answer = xtask::term::Answer::new(flags.yes, flags.dry_run);
    if !xtask::term::confirm(&format!("Delete {} expired clone(s): {}?", names.len(), names.join(", ")), answer)? {
        eprintln!("nothing deleted");
        return Ok(());
    }
    let mut failures = Vec::new();
    let delete = |id: String| {
        let protected = protected.clone();
        let aws = aws.clone();
        async move {
            match rds::delete(&aws.rds, &id, &protected, &aws.region, Duration::from_secs(300)).await {
                Ok(outcome) => {
                    eprintln!("{id}: {outcome:?}");
                    true
                }
                Err(e) => {
                    eprintln!("{id}: {}", report(&e).line);
                    false
                }
            }
        }
    };
    // Instances first: a cluster goes only once its instances are being deleted.
    for c in expired.iter().filter(|c| c.kind == "instance") {
        if !delete(c.id.clone()).await {
            failures.push(c.id.clone());
        }
    }
    let ours = [(rds::CREATED_BY_KEY.to_string(), rds::CREATED_BY_VALUE.to_string())];
    for c in expired.iter().filter(|c| c.kind == "cluster") {
        // Not a single instance of a cluster that is refused (the deletion checks it again).
        if let Some(why) = rds::refusal(rds::What::Cluster, &c.id, &ours, &protected) {
            eprintln!("cluster {}: refusing to delete: {why}", c.id);
            failures.push(format!("cluster {}", c.id));
            continue;
        }
        let mut members_gone = true;
        for m in &c.members {
            members_gone &= delete(m.clone()).await;
        }
        if !members_gone {
            eprintln!("cluster {}: not deleted, since an instance of it was not", c.id);
            failures.push(format!("cluster {}", c.id));
            continue;
        }
        match rds::delete_cluster(&aws.rds, &c.id, &protected, &aws.region, Duration::from_secs(900)).await {
            Ok(outcome) => eprintln!("cluster {}: {outcome:?}", c.id),
            Err(e) => {
                eprintln!("cluster {}: {}", c.id, report(&e).line);
                failures.push(format!("cluster {}", c.id));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(fail(
            format!("{} clone(s) were not deleted: {}", failures.len(), failures.join(", ")),
            "see the lines above",
        ))
    }
}

/// An instance by its id; a cluster as `cluster ID (instances …)`.
fn shown(c: &rds::Throwaway) -> String {
    match (c.kind, c.members.is_empty()) {
        ("cluster", true) => format!("cluster {}", c.id),
        ("cluster", false) => format!("cluster {} (and its instances {})", c.id, c.members.join(", ")),
        _ => c.id.clone(),
    }
}

fn what(c: &rds::Throwaway) -> rds::What<'_> {
    if c.kind == "cluster" {
        rds::What::Cluster
    } else {
        rds::What::Instance { cluster: c.cluster.as_deref() }
    }
}
