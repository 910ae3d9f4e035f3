//! The throwaway RDS instances: listing them, and deleting them — the only place this tool deletes
//! anything in AWS, behind guards that hold whatever the caller passes in.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use aws_sdk_rds::Client;
use serde::Serialize;

use crate::aws_error;

/// The tag every instance this tool creates carries, and nothing else does.
pub const CREATED_BY_KEY: &str = "CreatedBy";
pub const CREATED_BY_VALUE: &str = "xtask-db clone-prod";

/// A throwaway instance, as `list-clones` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Throwaway {
    pub id: String,
    pub status: String,
    pub clone_of: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    /// Past `ExpiresAt`.
    pub overdue: bool,
    pub age_seconds: Option<u64>,
}

/// Why deleting `id` is refused, if it is. The tags must be read from AWS just before (never
/// taken from the caller), `protected` holds the source instance(s).
pub fn refusal(id: &str, tags: &[(String, String)], protected: &[&str]) -> Option<String> {
    let norm = |s: &str| s.trim().to_ascii_lowercase();
    if id.trim().is_empty() {
        return Some("an empty instance identifier".into());
    }
    if protected.iter().any(|p| norm(p) == norm(id)) {
        return Some(format!("`{id}` is the source instance; this tool never deletes it"));
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
            let tags: Vec<(String, String)> = db
                .tag_list()
                .iter()
                .map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string()))
                .collect();
            if !tags.iter().any(|(k, v)| k == CREATED_BY_KEY && v == CREATED_BY_VALUE) {
                continue;
            }
            let tag = |k: &str| tags.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone());
            let expires_at = tag("ExpiresAt");
            let created_at = tag("CreatedAt");
            let expires = expires_at.as_deref().and_then(xtask::time::parse_rfc3339);
            let created = created_at.as_deref().and_then(xtask::time::parse_rfc3339);
            out.push(Throwaway {
                id: db.db_instance_identifier().unwrap_or("").to_string(),
                status: db.db_instance_status().unwrap_or("unknown").to_string(),
                clone_of: tag("CloneOf"),
                overdue: expires.is_some_and(|e| e < now),
                age_seconds: created.and_then(|c| now.duration_since(c).ok()).map(|d| d.as_secs()),
                created_at,
                expires_at,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
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
    let tags = match rds.describe_db_instances().db_instance_identifier(id).send().await {
        Ok(out) => out
            .db_instances()
            .first()
            .map(|db| {
                db.tag_list()
                    .iter()
                    .map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        Err(e) if error_code(&e) == Some("DBInstanceNotFound") => return Ok(Deletion::NotFound),
        Err(e) => return Err(aws_error(&format!("reading the tags of `{id}`"), e).context(manual)),
    };
    if let Some(why) = refusal(id, &tags, protected) {
        anyhow::bail!("refusing to delete: {why}");
    }
    let start = std::time::Instant::now();
    let mut delay = Duration::from_secs(2);
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
                    Some("InvalidDBInstanceState") if start.elapsed() < patience => {
                        eprintln!("  `{id}` cannot be deleted yet ({message}); retrying in {}s", delay.as_secs());
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    _ => return Err(aws_error(&format!("deleting `{id}`"), e).context(manual)),
                }
            }
        }
    }
}

fn error_code<E: aws_sdk_rds::error::ProvideErrorMetadata>(e: &aws_sdk_rds::error::SdkError<E>) -> Option<&str> {
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

    #[test]
    fn guards() {
        assert_eq!(refusal("prod-clone-20261122062500", &ours(), &["prod"]), None);
        // The source, whatever the tags say, however it is spelled.
        for id in ["prod", "PROD", " prod ", "Prod"] {
            assert!(refusal(id, &ours(), &["prod"]).unwrap().contains("source"), "{id}");
        }
        // No tag, a wrong value, a look-alike key.
        assert!(refusal("prod-clone-1", &[], &["prod"]).is_some());
        assert!(refusal("prod-clone-1", &[(CREATED_BY_KEY.into(), "someone else".into())], &["prod"]).is_some());
        assert!(refusal("prod-clone-1", &[("createdby".into(), CREATED_BY_VALUE.into())], &["prod"]).is_some());
        assert!(refusal("", &ours(), &[]).is_some());
    }
}
