//! The throwaway RDS instances: listing them, and deleting them and the throwaway Aurora clusters —
//! the only place this tool deletes anything in AWS, behind guards that hold whatever the caller
//! passes in.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use aws_sdk_rds::types::Tag;
use aws_sdk_rds::Client;
use serde::Serialize;
use xtask::error::fail;

use crate::kit::aws_error;
use crate::wait::{self, Poll};

/// The tag every instance this tool creates carries, and nothing else does.
pub const CREATED_BY_KEY: &str = "CreatedBy";
pub const CREATED_BY_VALUE: &str = "xtask-db clone-prod";

/// A throwaway instance or Aurora cluster, as `list-clones` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Throwaway {
    /// `instance` or `cluster`.
    pub kind: &'static str,
    pub id: String,
    pub status: String,
    pub clone_of: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    /// Past `ExpiresAt`.
    pub overdue: bool,
    pub age_seconds: Option<u64>,
    /// An instance's Aurora cluster; a cluster's instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

impl Throwaway {
    /// `kind` `id` (in `status`) as `list-clones` lists it, when its tags say it is ours.
    pub fn ours(
        kind: &'static str,
        id: &str,
        status: &str,
        tags: &[(String, String)],
        now: SystemTime,
    ) -> Option<Throwaway> {
        if !tags.iter().any(|(k, v)| k == CREATED_BY_KEY && v == CREATED_BY_VALUE) {
            return None;
        }
        let tag = |k: &str| tags.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone());
        let expires_at = tag("ExpiresAt");
        let created_at = tag("CreatedAt");
        let expires = expires_at.as_deref().and_then(xtask::time::parse_rfc3339);
        let created = created_at.as_deref().and_then(xtask::time::parse_rfc3339);
        Some(Throwaway {
            kind,
            id: id.to_string(),
            status: status.to_string(),
            clone_of: tag("CloneOf"),
            overdue: expires.is_some_and(|e| e < now),
            age_seconds: created.and_then(|c| now.duration_since(c).ok()).map(|d| d.as_secs()),
            created_at,
            expires_at,
            cluster: None,
            members: Vec::new(),
        })
    }
}

/// What is to be deleted.
#[derive(Debug, Clone, Copy)]
pub enum What<'a> {
    /// An RDS instance; AWS says it belongs to this Aurora cluster, if any.
    Instance { cluster: Option<&'a str> },
    /// An Aurora cluster.
    Cluster,
}

/// Why deleting `id` is refused, if it is. The tags (and an instance's cluster) must be read from
/// AWS just before (never taken from the caller); `protected` holds the source: the instance, or
/// the Aurora cluster (and its instances) — a name there is never deleted as an instance or as a
/// cluster, nor is any instance of a cluster named there.
pub fn refusal(what: What<'_>, id: &str, tags: &[(String, String)], protected: &[&str]) -> Option<String> {
    let norm = |s: &str| s.trim().to_ascii_lowercase();
    let is_protected = |name: &str| protected.iter().any(|p| norm(p) == norm(name));
    if id.trim().is_empty() {
        return Some("an empty identifier".into());
    }
    match what {
        What::Instance { .. } if is_protected(id) => {
            return Some(format!("`{id}` is the source instance; this tool never deletes it"))
        }
        What::Instance { cluster: Some(c) } if is_protected(c) => {
            return Some(format!("`{id}` is an instance of the source cluster `{c}`; this tool never deletes it"))
        }
        What::Cluster if is_protected(id) => {
            return Some(format!("`{id}` is the source cluster; this tool never deletes it"))
        }
        _ => {}
    }
    if !tags.iter().any(|(k, v)| k == CREATED_BY_KEY && v == CREATED_BY_VALUE) {
        return Some(format!(
            "`{id}` does not carry the tag {CREATED_BY_KEY}={CREATED_BY_VALUE}, so this tool did not create it"
        ));
    }
    None
}

/// The instances carrying our tag (RDS cannot filter by tag: every instance's `TagList` is read).
pub async fn list(rds: &Client, now: SystemTime) -> Result<Vec<Throwaway>> {
    let mut out = Vec::new();
    let mut pages = rds.describe_db_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error("listing RDS instances", e))?;
        for db in page.db_instances() {
            let id = db.db_instance_identifier().unwrap_or("");
            let status = db.db_instance_status().unwrap_or("unknown");
            if let Some(mut t) = Throwaway::ours("instance", id, status, &tag_pairs(db.tag_list()), now) {
                t.cluster = db.db_cluster_identifier().map(str::to_string);
                out.push(t);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Tags as (key, value) pairs.
pub fn tag_pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter().map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string())).collect()
}

/// How a deletion ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Deletion {
    /// AWS accepted the request.
    Requested,
    /// Someone (an earlier run?) is deleting it already.
    InProgress,
    /// It is gone.
    NotFound,
}

/// Deletes a throwaway instance: its tags are read back from AWS and checked first; retried while
/// AWS answers `InvalidDBInstanceState` (e.g. still being created); "already being deleted" and
/// "not found" count as done. On final failure the error carries the exact manual command.
pub async fn delete(rds: &Client, id: &str, protected: &[&str], region: &str, patience: Duration) -> Result<Deletion> {
    let manual = format!(
        "delete it by hand: aws rds delete-db-instance --region {region} --db-instance-identifier {id} --skip-final-snapshot --delete-automated-backups"
    );
    let (tags, cluster) = match rds.describe_db_instances().db_instance_identifier(id).send().await {
        Ok(out) => out
            .db_instances()
            .first()
            .map(|db| (tag_pairs(db.tag_list()), db.db_cluster_identifier().map(str::to_string)))
            .unwrap_or_default(),
        Err(e) if error_code(&e) == Some("DBInstanceNotFound") => return Ok(Deletion::NotFound),
        Err(e) => return Err(by_hand(aws_error(&format!("reading the tags of `{id}`"), e), &manual)),
    };
    if let Some(why) = refusal(What::Instance { cluster: cluster.as_deref() }, id, &tags, protected) {
        anyhow::bail!("refusing to delete: {why}");
    }
    let start = std::time::Instant::now();
    let mut delay = Duration::from_secs(2);
    let mut unprotected = false;
    loop {
        let sent = rds
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await;
        match sent {
            Ok(_) => return Ok(Deletion::Requested),
            Err(e) => {
                let (code, message) = (error_code(&e).map(str::to_string), error_message(&e));
                match code.as_deref() {
                    Some("DBInstanceNotFound") => return Ok(Deletion::NotFound),
                    Some("InvalidDBInstanceState") if message.contains("already being deleted") => {
                        return Ok(Deletion::InProgress)
                    }
                    // Restored with deletion protection off; if it is on anyway (changed since,
                    // or inherited), switch it off: the tags were checked above.
                    Some("InvalidParameterCombination") if message.contains("protection") && !unprotected => {
                        unprotected = true;
                        eprintln!("  `{id}` has deletion protection on; switching it off");
                        rds.modify_db_instance()
                            .db_instance_identifier(id)
                            .deletion_protection(false)
                            .apply_immediately(true)
                            .send()
                            .await
                            .map_err(|e| {
                                let e = aws_error(&format!("switching off the deletion protection of `{id}`"), e);
                                by_hand(e, &manual)
                            })?;
                    }
                    Some("InvalidDBInstanceState") if start.elapsed() < patience => {
                        eprintln!("  `{id}` cannot be deleted yet ({message}); retrying in {}s", delay.as_secs());
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    _ => return Err(by_hand(aws_error(&format!("deleting `{id}`"), e), &manual)),
                }
            }
        }
    }
}

/// Deletes a throwaway Aurora cluster (its instances first: see [`delete`]): its tags are read
/// back from AWS and checked first; no final snapshot; retried while AWS answers
/// `InvalidDBClusterStateFault` (an instance still being deleted, the clone still being made);
/// "not found" counts as done. On final failure the error carries the exact manual command.
pub async fn delete_cluster(
    rds: &Client,
    id: &str,
    protected: &[&str],
    region: &str,
    patience: Duration,
) -> Result<Deletion> {
    let manual = format!("delete it by hand: {}", delete_cluster_command(region, id));
    let tags = match rds.describe_db_clusters().db_cluster_identifier(id).send().await {
        Ok(out) => out.db_clusters().first().map(|c| tag_pairs(c.tag_list())).unwrap_or_default(),
        Err(e) if error_code(&e) == Some("DBClusterNotFoundFault") => return Ok(Deletion::NotFound),
        Err(e) => return Err(by_hand(aws_error(&format!("reading the tags of the cluster `{id}`"), e), &manual)),
    };
    if let Some(why) = refusal(What::Cluster, id, &tags, protected) {
        anyhow::bail!("refusing to delete: {why}");
    }
    let start = std::time::Instant::now();
    let mut delay = Duration::from_secs(2);
    let mut unprotected = false;
    loop {
        match rds.delete_db_cluster().db_cluster_identifier(id).skip_final_snapshot(true).send().await {
            Ok(_) => return Ok(Deletion::Requested),
            Err(e) => {
                let (code, message) = (error_code(&e).map(str::to_string), error_message(&e));
                match code.as_deref() {
                    Some("DBClusterNotFoundFault") => return Ok(Deletion::NotFound),
                    Some("InvalidDBClusterStateFault") if message.contains("already being deleted") => {
                        return Ok(Deletion::InProgress)
                    }
                    Some("InvalidParameterCombination") if message.contains("protect") && !unprotected => {
                        unprotected = true;
                        eprintln!("  `{id}` has deletion protection on; switching it off");
                        rds.modify_db_cluster()
                            .db_cluster_identifier(id)
                            .deletion_protection(false)
                            .apply_immediately(true)
                            .send()
                            .await
                            .map_err(|e| {
                                let e = aws_error(&format!("switching off the deletion protection of `{id}`"), e);
                                by_hand(e, &manual)
                            })?;
                    }
                    Some("InvalidDBClusterStateFault") if start.elapsed() < patience => {
                        eprintln!("  `{id}` cannot be deleted yet ({message}); retrying in {}s", delay.as_secs());
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    _ => return Err(by_hand(aws_error(&format!("deleting the cluster `{id}`"), e), &manual)),
                }
            }
        }
    }
}

/// The command that deletes the cluster `id` by hand.
pub fn delete_cluster_command(region: &str, id: &str) -> String {
    format!("aws rds delete-db-cluster --region {region} --db-cluster-identifier {id} --skip-final-snapshot")
}

/// The production instance, as far as the clone needs it.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub engine_version: String,
    /// The PostgreSQL major version (`pg_dump` must be at least this).
    pub major: u32,
    pub class: String,
    pub storage_gib: i32,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub parameter_group: Option<String>,
    /// The master user (the one-time password is set for it).
    pub master_username: String,
    /// The database the instance was created with (RDS's `DBName`), if any.
    pub db_name: Option<String>,
}

/// What the source instance turned out to be.
pub enum Described {
    Instance(Source),
    /// An instance of this Aurora cluster: the cluster is the source.
    AuroraMember {
        cluster: String,
    },
}

/// Reads the source instance; refuses what `clone-prod` cannot clone.
pub async fn describe_source(rds: &Client, id: &str, region: &str) -> Result<Described> {
    let out = match rds.describe_db_instances().db_instance_identifier(id).send().await {
        Ok(out) => out,
        Err(e) if error_code(&e) == Some("DBInstanceNotFound") => {
            return Err(fail(
                format!("the source instance `{id}` does not exist in {region}"),
                "check --source-instance (`source_instance` in [workspace.metadata.db.aws]) and --region",
            ))
        }
        Err(e) => return Err(aws_error(&format!("reading the source instance `{id}`"), e)),
    };
    let Some(db) = out.db_instances().first() else {
        return Err(fail(format!("the source instance `{id}` does not exist in {region}"), "check --source-instance"));
    };
    let engine = db.engine().unwrap_or("");
    if let Some(cluster) = db.db_cluster_identifier() {
        return Ok(Described::AuroraMember { cluster: cluster.to_string() });
    }
    if engine.starts_with("aurora") {
        return Err(fail(
            format!("`{id}` runs `{engine}` but AWS names no cluster for it"),
            "name its Aurora cluster with --source-cluster (`source_cluster` in [workspace.metadata.db.aws])",
        ));
    }
    if engine != "postgres" {
        return Err(fail(
            format!("`{id}` runs the engine `{engine}`, not PostgreSQL"),
            "point --source-instance at an RDS for PostgreSQL instance",
        ));
    }
    let engine_version = db.engine_version().unwrap_or("").to_string();
    let major = engine_version.split('.').next().and_then(|m| m.parse().ok()).ok_or_else(|| {
        fail(format!("`{id}` reports the engine version `{engine_version}`, which is not understood"), "report this")
    })?;
    Ok(Described::Instance(Source {
        id: db.db_instance_identifier().unwrap_or(id).to_string(),
        engine_version,
        major,
        class: db.db_instance_class().unwrap_or("?").to_string(),
        storage_gib: db.allocated_storage().unwrap_or(0),
        subnet_group: db.db_subnet_group().and_then(|g| g.db_subnet_group_name()).map(str::to_string),
        security_groups: db
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(str::to_string)
            .collect(),
        parameter_group: db
            .db_parameter_groups()
            .first()
            .and_then(|g| g.db_parameter_group_name())
            .filter(|n| !n.starts_with("default."))
            .map(str::to_string),
        master_username: db.master_username().unwrap_or_default().to_string(),
        db_name: db.db_name().map(str::to_string),
    }))
}

/// A snapshot of the source instance.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    /// `automated` or `manual`.
    pub kind: String,
    pub status: String,
    pub created: Option<SystemTime>,
}

/// Every snapshot of `source` (automated and manual), whatever its status.
pub async fn snapshots(rds: &Client, source: &str) -> Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let mut pages = rds.describe_db_snapshots().db_instance_identifier(source).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws_error(&format!("listing the snapshots of `{source}`"), e))?;
        for s in page.db_snapshots() {
            out.push(Snapshot {
                id: s.db_snapshot_identifier().unwrap_or("").to_string(),
                kind: s.snapshot_type().unwrap_or("?").to_string(),
                status: s.status().unwrap_or("?").to_string(),
                created: s.snapshot_create_time().map(system_time),
            });
        }
    }
    Ok(out)
}

fn system_time(t: &aws_sdk_rds::primitives::DateTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.secs().max(0) as u64)
}

/// Which snapshot the clone starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotChoice {
    /// The newest available one, this old.
    Reuse { id: String, kind: String, age: Duration },
    /// A new manual snapshot, and why.
    Create { id: String, why: String },
}

/// The newest *available* snapshot if younger than `freshness` (and not `force_fresh`), else a
/// new manual one named `new_id`.
pub fn choose(
    snaps: &[Snapshot],
    now: SystemTime,
    freshness: Duration,
    force_fresh: bool,
    new_id: &str,
) -> SnapshotChoice {
    let newest = snaps
        .iter()
        .filter(|s| s.status == "available")
        .filter_map(|s| s.created.map(|c| (c, s)))
        .max_by_key(|(c, _)| *c);
    let create = |why: String| SnapshotChoice::Create { id: new_id.to_string(), why };
    if force_fresh {
        return create("--fresh-snapshot".into());
    }
    match newest {
        None => create("no available snapshot of the source".into()),
        Some((created, s)) => {
            let age = now.duration_since(created).unwrap_or_default();
            if age < freshness {
                SnapshotChoice::Reuse { id: s.id.clone(), kind: s.kind.clone(), age }
            } else {
                create(format!("the newest available snapshot, `{}`, is {} old", s.id, hours(age)))
            }
        }
    }
}

pub fn hours(d: Duration) -> String {
    let m = d.as_secs() / 60;
    format!("{}h{:02}m", m / 60, m % 60)
}

/// An RDS identifier made of `base` and `suffix`: at most 63 characters, letters, digits and
/// single hyphens, starting with a letter (the base is shortened when needed).
pub fn identifier(base: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len());
    let mut b: String = base.chars().take(room).collect();
    while b.ends_with('-') {
        b.pop();
    }
    format!("{b}{suffix}")
}

/// For a request that creates something: sent once, never retried by the SDK. A retry after a
/// lost answer would meet what its first attempt made as "already exists", which a run takes for
/// another run's and must not delete; sent once, a lost answer is an error, and the id recorded
/// before the request has the cleanup delete whatever was made.
pub fn once() -> aws_sdk_rds::config::Builder {
    aws_sdk_rds::config::Builder::default().retry_config(aws_sdk_rds::config::retry::RetryConfig::disabled())
}

/// The tags of everything `clone-prod` creates.
pub fn tags(source: &str, now: SystemTime, ttl: Duration) -> Vec<Tag> {
    let tag = |k: &str, v: String| Tag::builder().key(k).value(v).build();
    vec![
        tag(CREATED_BY_KEY, CREATED_BY_VALUE.into()),
        tag("CloneOf", source.into()),
        tag("CreatedAt", xtask::time::rfc3339(now)),
        tag("ExpiresAt", xtask::time::rfc3339(now + ttl)),
    ]
}

/// How long the waits may last (a restore of a large instance takes a long time).
pub const LIMIT: Duration = Duration::from_secs(3 * 3600);
pub const EVERY: Duration = Duration::from_secs(15);

/// Creates a manual snapshot of the source and waits until it is available.
pub async fn create_snapshot(rds: &Client, source: &str, id: &str, tags: Vec<Tag>) -> Result<()> {
    rds.create_db_snapshot()
        .db_instance_identifier(source)
        .db_snapshot_identifier(id)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| aws_error(&format!("creating the snapshot `{id}` of `{source}`"), e))?;
    wait::until(&format!("waiting for the snapshot `{id}`"), EVERY, LIMIT, || async {
        let out = rds
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .send()
            .await
            .map_err(|e| aws_error(&format!("reading the snapshot `{id}`"), e))?;
        let Some(s) = out.db_snapshots().first() else {
            return Err(fail(format!("the snapshot `{id}` disappeared while being created"), "run again"));
        };
        match s.status().unwrap_or("?") {
            "available" => Ok(Poll::Done(())),
            "failed" | "error" => Err(fail(
                format!("the snapshot `{id}` failed (status `{}`)", s.status().unwrap_or("?")),
                "look at the RDS events of the source instance, then run again",
            )),
            other => Ok(Poll::Pending(match s.percent_progress() {
                Some(p) => format!("{other}, {p}%"),
                None => other.to_string(),
            })),
        }
    })
    .await
}

/// What the throwaway instance is made from and with.
pub struct Restore<'a> {
    pub id: &'a str,
    pub snapshot: &'a str,
    pub class: &'a str,
    pub source: &'a Source,
    pub tags: Vec<Tag>,
    /// IAM database authentication on (for `--iam-auth`).
    pub iam_auth: bool,
}

/// Asks for the throwaway instance: the source's network placement, nothing that outlives it.
pub async fn restore(rds: &Client, r: Restore<'_>) -> Result<()> {
    rds.restore_db_instance_from_db_snapshot()
        .db_instance_identifier(r.id)
        .db_snapshot_identifier(r.snapshot)
        .db_instance_class(r.class)
        .set_db_subnet_group_name(r.source.subnet_group.clone())
        .set_vpc_security_group_ids(Some(r.source.security_groups.clone()).filter(|v| !v.is_empty()))
        .set_db_parameter_group_name(r.source.parameter_group.clone())
        .publicly_accessible(false)
        .multi_az(false)
        .backup_retention_period(0)
        .deletion_protection(false)
        .storage_type("gp3")
        .auto_minor_version_upgrade(false)
        .copy_tags_to_snapshot(false)
        .set_enable_iam_database_authentication(r.iam_auth.then_some(true))
        .set_tags(Some(r.tags))
        .customize()
        .config_override(once())
        .send()
        .await
        .map_err(|e| aws_error(&format!("restoring `{}` from the snapshot `{}`", r.id, r.snapshot), e))?;
    Ok(())
}

/// Gives the throwaway `id` a new master password (apply-immediately) and waits until it is in
/// force: the instance `available` again with no password change pending. Production's password
/// is never read; the new one goes to AWS in this one request and nowhere else.
pub async fn set_master_password(rds: &Client, id: &str, password: &str) -> Result<()> {
    use xtask::error::WithFix;
    let managed = rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .map_err(|e| aws_error(&format!("reading `{id}`"), e))?
        .db_instances()
        .first()
        .is_some_and(|db| db.master_user_secret().is_some());
    rds.modify_db_instance()
        .db_instance_identifier(id)
        .master_user_password(password)
        // A restore of an instance whose password Secrets Manager manages: the throwaway's is ours.
        .set_manage_master_user_password(managed.then_some(false))
        .apply_immediately(true)
        .send()
        .await
        .map_err(|e| aws_error(&format!("setting a one-time master password on `{id}`"), e))
        .fix("allow rds:ModifyDBInstance on the throwaway (the runbook's IAM policy), or log in with --iam-auth or --credentials-parameter / --credentials-secret")?;
    wait::until(&format!("waiting for `{id}` to take its one-time password"), Duration::from_secs(5), LIMIT, || async {
        let out = rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| aws_error(&format!("reading `{id}`"), e))?;
        let Some(db) = out.db_instances().first() else {
            return Err(fail(format!("`{id}` disappeared while its password was being set"), "run again"));
        };
        let status = db.db_instance_status().unwrap_or("?");
        let pending = db.pending_modified_values().is_some_and(|p| p.master_user_password().is_some());
        match (status, pending) {
            ("available", false) => Ok(Poll::Done(())),
            (s, _) if DEAD_ENDS.contains(&s) => Err(fail(
                format!("`{id}` went `{s}` while its password was being set"),
                "look at the instance's RDS events, then run again",
            )),
            (s, true) => Ok(Poll::Pending(format!("{s}, password change pending"))),
            (s, false) => Ok(Poll::Pending(s.to_string())),
        }
    })
    .await
}

/// Where a database instance listens.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Statuses an instance does not come back from by waiting.
pub const DEAD_ENDS: &[&str] = &[
    "failed",
    "incompatible-restore",
    "incompatible-network",
    "incompatible-parameters",
    "incompatible-option-group",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "storage-full",
    "deleting",
];

/// Waits until the throwaway instance is available; its endpoint.
pub async fn wait_available(rds: &Client, id: &str) -> Result<Endpoint> {
    wait_instance(rds, id, "restores take 10-30 minutes").await
}

/// Waits until the instance `id` is available (`note`: how long that takes); its endpoint.
pub async fn wait_instance(rds: &Client, id: &str, note: &str) -> Result<Endpoint> {
    wait::until(&format!("waiting for `{id}` to be available ({note})"), EVERY, LIMIT, || async {
        let out = rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| aws_error(&format!("reading `{id}`"), e))?;
        let Some(db) = out.db_instances().first() else {
            return Err(fail(format!("`{id}` disappeared while being restored"), "run again"));
        };
        let status = db.db_instance_status().unwrap_or("?");
        if DEAD_ENDS.contains(&status) {
            return Err(fail(
                format!("the restore of `{id}` failed: status `{status}`"),
                "look at the instance's RDS events (subnet group, security groups, parameter group, KMS key), then run again",
            ));
        }
        match (status, db.endpoint()) {
            ("available", Some(e)) if e.address().is_some() => Ok(Poll::Done(Endpoint {
                host: e.address().unwrap_or_default().to_string(),
                port: e.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(5432),
            })),
            _ => Ok(Poll::Pending(status.to_string())),
        }
    })
    .await
}

/// The error, with the manual deletion command as its fix.
pub fn by_hand(e: anyhow::Error, manual: &str) -> anyhow::Error {
    use xtask::error::WithFix;
    Err::<(), _>(e).fix(manual).unwrap_err()
}

pub fn error_code<E: aws_sdk_rds::error::ProvideErrorMetadata>(e: &aws_sdk_rds::error::SdkError<E>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn error_message<E: aws_sdk_rds::error::ProvideErrorMetadata>(e: &aws_sdk_rds::error::SdkError<E>) -> String {
    e.as_service_error().and_then(|s| s.message()).unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Vec<(String, String)> {
        vec![(CREATED_BY_KEY.into(), CREATED_BY_VALUE.into())]
    }

    fn snap(id: &str, status: &str, hours_ago: u64) -> Snapshot {
        Snapshot {
            id: id.into(),
            kind: "automated".into(),
            status: status.into(),
            created: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - hours_ago * 3600)),
        }
    }

    #[test]
    fn snapshot_policy() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(24 * 3600);
        let snaps = vec![snap("old", "available", 30), snap("newer", "available", 5), snap("newest", "creating", 1)];
        // The newest *available* one, when fresh enough.
        assert!(matches!(choose(&snaps, now, day, false, "new"), SnapshotChoice::Reuse { id, .. } if id == "newer"));
        // Too old, forced, or none at all: a new one.
        assert!(
            matches!(choose(&snaps, now, Duration::from_secs(3600), false, "new"), SnapshotChoice::Create { why, .. } if why.contains("newer"))
        );
        assert!(matches!(choose(&snaps, now, day, true, "new"), SnapshotChoice::Create { id, .. } if id == "new"));
        assert!(matches!(choose(&[snap("x", "creating", 1)], now, day, false, "new"), SnapshotChoice::Create { .. }));
    }

    #[test]
    fn identifiers_fit_rds_rules() {
        assert_eq!(identifier("prod", "-clone-20261122101500"), "prod-clone-20261122101500");
        let long = "a".repeat(60) + "-b";
        let id = identifier(&long, "-clone-20261122101500");
        assert_eq!(id.len(), 63);
        assert!(!id.contains("--"), "{id}");
        let id = identifier(&("a".repeat(41) + "-xyz"), "-clone-20261122101500");
        assert!(id.len() <= 63 && !id.contains("--"), "{id}");
    }

    const INSTANCE: What<'static> = What::Instance { cluster: None };

    #[test]
    fn guards() {
        assert_eq!(refusal(INSTANCE, "prod-clone-20261122062500", &ours(), &["prod"]), None);
        // The source, whatever the tags say, however it is spelled.
        for id in ["prod", "PROD", " prod ", "Prod"] {
            assert!(refusal(INSTANCE, id, &ours(), &["prod"]).unwrap().contains("source"), "{id}");
        }
        // No tag, a wrong value, a look-alike key.
        assert!(refusal(INSTANCE, "prod-clone-1", &[], &["prod"]).is_some());
        let other = [(CREATED_BY_KEY.to_string(), "someone else".to_string())];
        assert!(refusal(INSTANCE, "prod-clone-1", &other, &["prod"]).is_some());
        let lookalike = [("createdby".to_string(), CREATED_BY_VALUE.to_string())];
        assert!(refusal(INSTANCE, "prod-clone-1", &lookalike, &["prod"]).is_some());
        assert!(refusal(INSTANCE, "", &ours(), &[]).is_some());
    }

    #[test]
    fn cluster_guards() {
        let protected = ["prod-aurora", "prod-aurora-1"];
        // Our clone and its instance.
        assert_eq!(refusal(What::Cluster, "prod-aurora-clone-20261122062500", &ours(), &protected), None);
        let clone_member = What::Instance { cluster: Some("prod-aurora-clone-20261122062500") };
        assert_eq!(refusal(clone_member, "prod-aurora-clone-20261122062500-1", &ours(), &protected), None);
        // The source cluster, tagged ours or not, however it is spelled.
        for id in ["prod-aurora", "PROD-AURORA", " prod-aurora ", "Prod-Aurora"] {
            for tags in [ours(), vec![]] {
                let why = refusal(What::Cluster, id, &tags, &protected).unwrap();
                assert!(why.contains("is the source cluster"), "{id}: {why}");
            }
        }
        // Any instance of the source cluster, tagged ours, whatever its name (the cluster as
        // AWS reports it, however spelled), and the source's own instances by name.
        for cluster in ["prod-aurora", "PROD-aurora", " prod-aurora"] {
            let member = What::Instance { cluster: Some(cluster) };
            let why = refusal(member, "prod-aurora-clone-20261122062500-1", &ours(), &protected).unwrap();
            assert!(why.contains("an instance of the source cluster"), "{cluster}: {why}");
        }
        for id in ["prod-aurora-1", "PROD-AURORA-1", " prod-aurora-1 "] {
            let member = What::Instance { cluster: Some("prod-aurora") };
            assert!(refusal(member, id, &ours(), &protected).unwrap().contains("source"), "{id}");
            assert!(refusal(INSTANCE, id, &ours(), &protected).unwrap().contains("source"), "{id}");
        }
        // A cluster without our tag, with a wrong value or a look-alike key; an empty id.
        let other = [(CREATED_BY_KEY.to_string(), "someone else".to_string())];
        let lookalike = [("createdby".to_string(), CREATED_BY_VALUE.to_string())];
        for tags in [&[][..], &other[..], &lookalike[..]] {
            let why = refusal(What::Cluster, "prod-aurora-clone-1", tags, &protected).unwrap();
            assert!(why.contains("does not carry the tag"), "{why}");
        }
        assert!(refusal(What::Cluster, " ", &ours(), &[]).is_some());
        // An instance named like the source cluster is not deleted either.
        assert!(refusal(INSTANCE, "prod-aurora", &ours(), &protected).is_some());
    }
}
