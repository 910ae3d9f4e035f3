//! What a reviewer would say of a traced statement: the safer form of what it did, where one is
//! known. Pure: the rules read the statement's text and what the trace saw (its locks, its
//! rewrites), never the database.

use super::trace::{LockTrace, MigrationTrace, Rewrite};
use crate::sql::{self, Statement};

/// Safer forms of what a statement did, where one is known.
pub(super) fn hints(stmt: &Statement, locks: &[LockTrace], rewrites: &[Rewrite]) -> Vec<String> {
    let text = sql::strip_comments(&stmt.sql).to_ascii_uppercase();
    let words: Vec<&str> = text.split_whitespace().collect();
    let has = |phrase: &str| {
        let p: Vec<&str> = phrase.split(' ').collect();
        words.windows(p.len()).any(|w| w == p.as_slice())
    };
    let on_existing = |m: &str| locks.iter().any(|l| l.mode == m);
    let mut out = Vec::new();
    let kw = stmt.keywords(3);
    if (kw.starts_with("CREATE INDEX") || kw.starts_with("CREATE UNIQUE INDEX"))
        && !has("CONCURRENTLY")
        && on_existing("SHARE")
    {
        out.push("CREATE INDEX CONCURRENTLY, in a migration of its own that starts with `-- no-transaction`, builds the index without blocking writes (SHARE UPDATE EXCLUSIVE)".into());
    }
    if kw.starts_with("ALTER TABLE") && (has("FOREIGN KEY") || has("REFERENCES")) && !has("NOT VALID") {
        out.push("ADD CONSTRAINT … FOREIGN KEY … NOT VALID, then ALTER TABLE … VALIDATE CONSTRAINT in a later migration: the check of existing rows then takes only SHARE UPDATE EXCLUSIVE (reads and writes go on)".into());
    }
    if kw.starts_with("ALTER TABLE") && has("ADD CONSTRAINT") && text.contains(" CHECK") && !has("NOT VALID") {
        out.push("ADD CONSTRAINT … CHECK (…) NOT VALID, then VALIDATE CONSTRAINT in a later migration: existing rows are checked without blocking writes".into());
    }
    if kw.starts_with("ALTER TABLE") && has("SET NOT NULL") {
        out.push("add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL: PostgreSQL 12+ uses the valid constraint and skips the full scan under ACCESS EXCLUSIVE".into());
    }
    if !rewrites.is_empty() {
        if has("TYPE") || has("SET DATA TYPE") {
            out.push("the type change rewrote the table under ACCESS EXCLUSIVE: add a column of the new type, backfill it in batches, then swap (or pick a binary-compatible type, e.g. varchar(n) → text)".into());
        } else if has("ADD COLUMN") || has("ADD") {
            out.push("the new column's default is volatile (or the column is a stored generated one), so every row was rewritten under ACCESS EXCLUSIVE: add the column without a default, backfill in batches, then SET DEFAULT".into());
        } else {
            out.push(
                "the table was rewritten under ACCESS EXCLUSIVE: every read and write waited for the whole rewrite"
                    .into(),
            );
        }
    }
    out
}

/// The hint for a slow statement that ran with blocking locks already held (a migration in one
/// transaction holds every lock until its commit).
pub(super) fn held_through(out: &mut MigrationTrace, transaction: bool) {
    // A slow statement after blocking locks were taken keeps them held all the while: any
    // blocking lock a statement before it took counts, not only each relation's strongest.
    let blocking: Vec<(usize, String, String)> = out
        .statements
        .iter()
        .flat_map(|s| s.locks.iter())
        .filter(|l| l.blocks_reads_ms.is_some() || l.blocks_writes_ms.is_some())
        .map(|l| (l.statement, l.mode.clone(), l.relation.clone()))
        .collect();
    for s in &mut out.statements {
        if !transaction || s.duration_ms < 100.0 {
            continue;
        }
        let held: Vec<&(usize, String, String)> = blocking.iter().filter(|(at, _, _)| *at < s.index).collect();
        if let Some((at, mode, relation)) = held.first() {
            let more = if held.len() > 1 { format!(" (and {} more)", held.len() - 1) } else { String::new() };
            s.hints.push(format!(
                "{mode} on {relation}{more} was held all through this statement ({:.0} ms), since statement {at}: in a migration of its own, after this one, it would not hold those locks",
                s.duration_ms
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_safer_form() {
        let st = |sql: &str| Statement { sql: sql.into(), line: 1, meta: false };
        let share = vec![LockTrace {
            oid: 1,
            relation: "t".into(),
            kind: "table",
            mode: "SHARE".into(),
            statement: 1,
            held_ms: 1.0,
            blocks_reads_ms: None,
            blocks_writes_ms: Some(1.0),
            rows: None,
            size_bytes: 0,
        }];
        assert!(hints(&st("CREATE INDEX i ON t (c)"), &share, &[])[0].contains("CONCURRENTLY"));
        assert!(hints(&st("CREATE INDEX CONCURRENTLY i ON t (c)"), &share, &[]).is_empty());
        assert!(hints(&st("ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES u (id)"), &[], &[])[0].contains("NOT VALID"));
        assert!(hints(&st("ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES u (id) NOT VALID"), &[], &[]).is_empty());
        let rw = vec![Rewrite { relation: "t".into(), rows: None, size_before: 0 }];
        assert!(hints(&st("ALTER TABLE t ALTER COLUMN c TYPE bigint"), &[], &rw)[0].contains("backfill"));
    }
}
