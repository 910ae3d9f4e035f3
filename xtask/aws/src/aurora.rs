//! Aurora PostgreSQL sources: the source cluster (named, or found through one of its instances),
//! its copy-on-write clone and the one instance in it, waiting for them, the clone's one-time
//! master password (ModifyDBCluster), and listing the throwaway clusters. Deleting them is
//! `rds.rs`'s, like every deletion.
//!
//! No snapshot: `RestoreDBClusterToPointInTime` with `RestoreType=copy-on-write` clones the live
//! cluster's storage (pages are copied only when either side writes them), in minutes.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use aws_sdk_rds::types::Tag;
use aws_sdk_rds::Client;
use xtask::db::clone_prod::Source as Configured;
use xtask::error::{fail, WithFix};

use crate::kit::aws_error;
use crate::rds::{self, Described, Endpoint, Source, Throwaway};
use crate::wait::{self, Poll};

pub const ENGINE: &str = "aurora-postgresql";

/// The source cluster, beyond what [`Source`] holds.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Its instances (never deleted, whatever their tags).
    pub members: Vec<String>,
    /// The instance `source_instance` named, which stands for its cluster.
    pub via: Option<String>,
}

/// The source as configured: an RDS instance, or an Aurora cluster (named, or through one of
/// its instances); the cluster's members and how it was found when it is one.
pub async fn find_source(rds: &Client, configured: &Configured, region: &str) -> Result<(Source, Option<Cluster>)> {
    match configured {
        Configured::Cluster(id) => {
            let (source, cluster) = describe(rds, id, None, region).await?;
            Ok((source, Some(cluster)))
        }
        Configured::Instance(id) => match rds::describe_source(rds, id, region).await? {
            Described::Instance(source) => Ok((source, None)),
            Described::AuroraMember { cluster } => {
                let (source, cluster) = describe(rds, &cluster, Some(id.clone()), region).await?;
                Ok((source, Some(cluster)))
            }
        },
    }
}

/// Reads the source cluster; refuses what is not Aurora PostgreSQL.
async fn describe(rds: &Client, id: &str, via: Option<String>, region: &str) -> Result<(Source, Cluster)> {
    let out = match rds.describe_db_clusters().db_cluster_identifier(id).send().await {
        Ok(out) => out,
        Err(e) if rds::error_code(&e) == Some("DBClusterNotFoundFault") => {
            return Err(fail(
                format!("the source cluster `{id}` does not exist in {region}"),
                "check --source-cluster (`source_cluster` in [workspace.metadata.db.aws]) and --region",
            ))
        }
        Err(e) => return Err(aws_error(&format!("reading the source cluster `{id}`"), e)),
    };
    let Some(c) = out.db_clusters().first() else {
        return Err(fail(format!("the source cluster `{id}` does not exist in {region}"), "check --source-cluster"));
    };
    let engine = c.engine().unwrap_or("");
    if engine != ENGINE {
        return Err(fail(
            format!("the cluster `{id}` runs the engine `{engine}`, not Aurora PostgreSQL"),
            "point --source-cluster (or --source-instance) at an Aurora PostgreSQL cluster or an RDS for PostgreSQL instance",
        ));
    }
    let engine_version = c.engine_version().unwrap_or("").to_string();
    let major = engine_version.split('.').next().and_then(|m| m.parse().ok()).ok_or_else(|| {
        fail(format!("`{id}` reports the engine version `{engine_version}`, which is not understood"), "report this")
    })?;
    let members: Vec<String> =
        c.db_cluster_members().iter().filter_map(|m| m.db_instance_identifier()).map(str::to_string).collect();
    let source = Source {
        id: c.db_cluster_identifier().unwrap_or(id).to_string(),
        engine_version,
        major,
        class: String::new(),
        storage_gib: 0,
        subnet_group: c.db_subnet_group().map(str::to_string),
        security_groups: c
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(str::to_string)
            .collect(),
        parameter_group: c.db_cluster_parameter_group().filter(|n| !n.starts_with("default.")).map(str::to_string),
        master_username: c.master_username().unwrap_or_default().to_string(),
        db_name: c.database_name().map(str::to_string),
    };
    Ok((source, Cluster { members, via }))
}

/// The clone: the cluster's id is the plan's `clone_id`; this is the rest.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: Cluster,
    /// The instance made in the clone.
    pub instance: String,
    pub class: String,
    /// Why the class is not the configured one.
    pub class_note: Option<String>,
}

/// The instance class RDS's default stands for: db.t4g.small is not offered for Aurora
/// PostgreSQL; db.t4g.medium is the smallest that is.
pub const AURORA_DEFAULT_CLASS: &str = "db.t4g.medium";

pub fn plan(source: Cluster, instance: String, configured_class: &str) -> Plan {
    let (class, class_note) = if configured_class == "db.t4g.small" {
        (
            AURORA_DEFAULT_CLASS.to_string(),
            Some(format!("{configured_class} is not offered for Aurora PostgreSQL; --instance-class to choose")),
        )
    } else {
        (configured_class.to_string(), None)
    };
    Plan { source, instance, class, class_note }
}

/// The plan's lines for the source and the throwaway (no snapshot).
pub fn show(plan: &Plan, source: &Source, clone_id: &str, region: &str, expires: &str) {
    let via = match &plan.source.via {
        Some(i) => format!(" (`{i}` is one of its instances: its cluster is the source)"),
        None => String::new(),
    };
    eprintln!(
        "  source       Aurora cluster {} in {region}{via}: Aurora PostgreSQL {}, instances {}, subnet group {}, security groups {}",
        source.id,
        source.engine_version,
        if plan.source.members.is_empty() { "(none)".to_string() } else { plan.source.members.join(",") },
        source.subnet_group.as_deref().unwrap_or("(default)"),
        if source.security_groups.is_empty() { "(default)".to_string() } else { source.security_groups.join(",") }
    );
    eprintln!("  snapshot     none: a copy-on-write clone of the live cluster (its latest restorable time)");
    eprintln!(
        "  throwaway    cluster {clone_id} + instance {} ({}{}, private, no deletion protection; expires {expires}; both always deleted at the end, the instance first)",
        plan.instance,
        plan.class,
        plan.class_note.as_deref().map(|n| format!(": {n}")).unwrap_or_default(),
    );
}

/// Makes the clone and its instance, recording each in its slot just before asking for it (the
/// cleanup deletes what is recorded); the instance's endpoint once it is available.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    rds: &Client,
    plan: &Plan,
    clone_id: &str,
    source: &Source,
    tags: Vec<Tag>,
    iam_auth: bool,
    cluster_slot: &Mutex<Option<String>>,
    instance_slot: &Mutex<Option<String>>,
) -> Result<Endpoint> {
    let set = |slot: &Mutex<Option<String>>, v: Option<String>| *slot.lock().unwrap_or_else(|e| e.into_inner()) = v;
    xtask::term::announce(format_args!("cloning the cluster {} copy-on-write into {clone_id}", source.id));
    set(cluster_slot, Some(clone_id.to_string()));
    rds.restore_db_cluster_to_point_in_time()
        .db_cluster_identifier(clone_id)
        .source_db_cluster_identifier(&source.id)
        .restore_type("copy-on-write")
        .use_latest_restorable_time(true)
        .set_db_subnet_group_name(source.subnet_group.clone())
        .set_vpc_security_group_ids(Some(source.security_groups.clone()).filter(|v| !v.is_empty()))
        .set_db_cluster_parameter_group_name(source.parameter_group.clone())
        .deletion_protection(false)
        .set_enable_iam_database_authentication(iam_auth.then_some(true))
        .set_tags(Some(tags.clone()))
        .customize()
        .config_override(rds::once())
        .send()
        .await
        .map_err(|e| {
            // Another run (the same second's) owns that cluster: not ours to delete.
            if rds::error_code(&e) == Some("DBClusterAlreadyExistsFault") {
                set(cluster_slot, None);
            }
            aws_error(&format!("cloning the cluster `{}` into `{clone_id}`", source.id), e)
        })?;
    wait_cluster(rds, clone_id).await?;
    xtask::proc::check_interrupt()?;
    xtask::term::announce(format_args!("creating the instance {} ({}) in {clone_id}", plan.instance, plan.class));
    set(instance_slot, Some(plan.instance.clone()));
    rds.create_db_instance()
        .db_instance_identifier(&plan.instance)
        .db_cluster_identifier(clone_id)
        .engine(ENGINE)
        .db_instance_class(&plan.class)
        .publicly_accessible(false)
        .set_tags(Some(tags))
        .customize()
        .config_override(rds::once())
        .send()
        .await
        .map_err(|e| {
            if rds::error_code(&e) == Some("DBInstanceAlreadyExists") {
                set(instance_slot, None);
            }
            aws_error(&format!("creating the instance `{}` in `{clone_id}`", plan.instance), e)
        })?;
    rds::wait_instance(rds, &plan.instance, "an Aurora instance takes 5-15 minutes").await
}

/// Statuses a cluster does not come back from by waiting.
const DEAD_ENDS: &[&str] = &[
    "failed",
    "incompatible-restore",
    "incompatible-network",
    "incompatible-parameters",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "deleting",
];

/// Reads the cluster `id` (an error when it is gone).
async fn read(rds: &Client, id: &str) -> Result<aws_sdk_rds::types::DbCluster> {
    let out = rds
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
        .map_err(|e| aws_error(&format!("reading the cluster `{id}`"), e))?;
    out.db_clusters()
        .first()
        .cloned()
        .ok_or_else(|| fail(format!("the cluster `{id}` disappeared while being made"), "run again"))
}

/// Waits until the clone is available.
pub async fn wait_cluster(rds: &Client, id: &str) -> Result<()> {
    let what = format!("waiting for the cluster `{id}` to be available (a clone takes 5-20 minutes)");
    wait::until(&what, rds::EVERY, rds::LIMIT, || async {
        let c = read(rds, id).await?;
        match c.status().unwrap_or("?") {
            "available" => Ok(Poll::Done(())),
            s if DEAD_ENDS.contains(&s) => Err(fail(
                format!("the clone `{id}` failed: status `{s}`"),
                "look at the cluster's RDS events (subnet group, security groups, parameter group, KMS key), then run again",
            )),
            s => Ok(Poll::Pending(s.to_string())),
        }
    })
    .await
}

/// Gives the clone `id` a new master password (ModifyDBCluster, apply-immediately) and waits
/// until it is in force: the cluster `available` again with no password change pending.
/// Production's password is never read; the new one goes to AWS in this one request only.
pub async fn set_master_password(rds: &Client, id: &str, password: &str) -> Result<()> {
    let managed = read(rds, id).await?.master_user_secret().is_some();
    rds.modify_db_cluster()
        .db_cluster_identifier(id)
        .master_user_password(password)
        // A clone of a cluster whose password Secrets Manager manages: the throwaway's is ours.
        .set_manage_master_user_password(managed.then_some(false))
        .apply_immediately(true)
        .send()
        .await
        .map_err(|e| aws_error(&format!("setting a one-time master password on the cluster `{id}`"), e))
        .fix("allow rds:ModifyDBCluster on the throwaway (the runbook's IAM policy), or log in with --iam-auth or --credentials-parameter / --credentials-secret")?;
    let what = format!("waiting for the cluster `{id}` to take its one-time password");
    wait::until(&what, Duration::from_secs(5), rds::LIMIT, || async {
        let c = read(rds, id).await?;
        let status = c.status().unwrap_or("?");
        let pending = c.pending_modified_values().is_some_and(|p| p.master_user_password().is_some());
        match (status, pending) {
            ("available", false) => Ok(Poll::Done(())),
            (s, _) if DEAD_ENDS.contains(&s) => Err(fail(
                format!("the cluster `{id}` went `{s}` while its password was being set"),
                "look at the cluster's RDS events, then run again",
            )),
            (s, true) => Ok(Poll::Pending(format!("{s}, password change pending"))),
            (s, false) => Ok(Poll::Pending(s.to_string())),
        }
    })
    .await
}

/// The clusters carrying our tag, with their instances.
pub async fn list(rds: &Client, now: SystemTime) -> Result<Vec<Throwaway>> {
    let mut out = Vec::new();
    let mut pages = rds.describe_db_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("listing RDS clusters", e))?;
        for c in page.db_clusters() {
            let (id, status) = (c.db_cluster_identifier().unwrap_or(""), c.status().unwrap_or("unknown"));
            if let Some(mut t) = Throwaway::ours("cluster", id, status, &rds::tag_pairs(c.tag_list()), now) {
                t.members = c
                    .db_cluster_members()
                    .iter()
                    .filter_map(|m| m.db_instance_identifier())
                    .map(str::to_string)
                    .collect();
                out.push(t);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_s_default_class_becomes_an_aurora_one_and_the_plan_says_why() {
        let c = Cluster { members: vec![], via: None };
        let p = plan(c.clone(), "x-1".into(), "db.t4g.small");
        assert_eq!(p.class, "db.t4g.medium");
        assert!(p.class_note.unwrap().contains("not offered for Aurora"));
        let p = plan(c, "x-1".into(), "db.r6g.large");
        assert_eq!((p.class.as_str(), p.class_note), ("db.r6g.large", None));
    }
}
