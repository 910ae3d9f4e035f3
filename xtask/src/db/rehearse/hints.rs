//! What a reviewer would say of a traced statement: the safer form of what it did, where one is
//! known, and why. Pure: the rules read the statement's text, the relations as they were before
//! the migration, and what the trace saw (its locks, its rewrites, its rows), never the database.
//!
//! Each rule names its sources: PostgreSQL's documentation, and the rule of the migration linters
//! that know it — squawk (its rule names), eugene (its hint ids), strong_migrations (its check
//! names). A hint says what happened, why, and the safe form.

use super::model::{ForeignKey, LockTrace, MigrationTrace, Relation, Rewrite};
use crate::sql::Statement;

/// An UPDATE or DELETE of at least this many rows inside a migration is a backfill worth moving
/// out (strong_migrations' "backfilling data"; its batch sizes are of this order).
pub const BACKFILL_ROWS: u64 = 10_000;

/// `COMMIT` / `ROLLBACK` / `BEGIN` inside a migration sqlx already runs in a transaction.
///
/// Sources: squawk: transaction-nesting; sqlx's migrator (one transaction per migration).
pub(super) const TRANSACTION_CONTROL: &str = "the migrator already runs the migration in a transaction: a COMMIT or ROLLBACK here ends it part-way (and sqlx's own COMMIT then finds none)";

/// The first statement of a migration to take a lock that blocks writes, with `lock_timeout`
/// unset (the generic hint, once a migration).
///
/// Sources: eugene: E9 (taking a dangerous lock without a timeout); PostgreSQL docs, "Client
/// Connection Defaults", lock_timeout.
pub(super) const LOCK_TIMEOUT: &str = "SET lock_timeout = '2s' at the top of the migration: behind a long-running query this statement waits for its lock, and every query on the table queues behind it; with a timeout it fails fast and can be retried";

/// What the rules look at, for one statement.
pub(super) struct Context<'a> {
    pub stmt: &'a Statement,
    /// Locks on existing relations this statement took first.
    pub locks: &'a [LockTrace],
    pub rewrites: &'a [Rewrite],
    /// The relations (tables, indexes, …) as they were before the migration.
    pub before: &'a [Relation],
    /// The migration's statements before this one.
    pub earlier: &'a [Statement],
    /// Rows the statement reported (UPDATE, DELETE, INSERT).
    pub rows: Option<u64>,
}

/// The statement's text, comments out: its tokens as written and upper-cased.
#[derive(Clone)]
struct Text {
    tokens: Vec<String>,
    upper: Vec<String>,
}

impl Text {
    fn new(stmt: &Statement) -> Text {
        Text::of(tokens(&stmt.sql))
    }

    fn of(tokens: Vec<String>) -> Text {
        let upper =
            tokens.iter().map(|t| if t.starts_with('"') { t.clone() } else { t.to_ascii_uppercase() }).collect();
        Text { tokens, upper }
    }

    /// An `ALTER TABLE` of several actions (comma-separated, outside parentheses), as one
    /// `ALTER TABLE name action` each: what one action says (`NOT VALID`, `ADD COLUMN`, `USING
    /// INDEX`) says nothing of the others. Anything else: itself.
    fn actions(&self) -> Vec<Text> {
        let Some(at) = self.find("ALTER TABLE").filter(|at| *at == 0) else { return vec![self.clone()] };
        let mut head = at + 2;
        while self.upper.get(head).is_some_and(|w| matches!(w.as_str(), "IF" | "EXISTS" | "ONLY")) {
            head += 1;
        }
        head += 1; // the table's name
        if head >= self.tokens.len() {
            return vec![self.clone()];
        }
        let mut out = Vec::new();
        let (mut depth, mut from) = (0i32, head);
        for i in head..=self.tokens.len() {
            let t = self.tokens.get(i).map(String::as_str);
            match t {
                Some("(") => depth += 1,
                Some(")") => depth -= 1,
                Some(",") | Some(";") | None if depth <= 0 => {
                    if i > from {
                        let mut words = self.tokens[..head].to_vec();
                        words.extend_from_slice(&self.tokens[from..i]);
                        out.push(Text::of(words));
                    }
                    from = i + 1;
                }
                _ => {}
            }
        }
        if out.is_empty() {
            out.push(self.clone());
        }
        out
    }

    /// Where the words of `phrase` (upper case, space-separated) occur in a row.
    fn find(&self, phrase: &str) -> Option<usize> {
        let p: Vec<&str> = phrase.split(' ').collect();
        self.upper.windows(p.len()).position(|w| w.iter().zip(&p).all(|(a, b)| a == b))
    }

    fn has(&self, phrase: &str) -> bool {
        self.find(phrase).is_some()
    }

    fn starts(&self, phrase: &str) -> bool {
        self.find(phrase) == Some(0)
    }

    /// The token after `phrase`, skipping `skip` words (`ONLY`, `IF EXISTS`, `CONCURRENTLY`).
    fn after(&self, phrase: &str, skip: &[&str]) -> Option<&str> {
        let mut i = self.find(phrase)? + phrase.split(' ').count();
        while self.upper.get(i).is_some_and(|w| skip.contains(&w.as_str())) {
            i += 1;
        }
        self.tokens.get(i).map(String::as_str).filter(|t| !matches!(*t, "(" | ")" | "," | ";"))
    }
}

/// Words, quoted identifiers (kept whole, with their quotes), string literals (whole) and
/// `(`, `)`, `,`, `;` each on their own. A comment separates tokens as a space does
/// (`t/* … */ADD` is two words, as the server reads it).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            cur.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '(' | ')' | ',' | ';' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut cur, &mut out);
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut cur, &mut out);
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('/') if chars.peek() == Some(&'*') => {
                            chars.next();
                            depth += 1;
                        }
                        Some('*') if chars.peek() == Some(&'/') => {
                            chars.next();
                            depth -= 1;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// A name as written (`big.t`, `"My T".x`, `T`): its parts as the catalog spells them.
fn name_parts(written: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = written.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().unwrap_or(&mut String::new()).push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c if quoted => parts.last_mut().unwrap_or(&mut String::new()).push(c),
            c => parts.last_mut().unwrap_or(&mut String::new()).extend(c.to_lowercase()),
        }
    }
    parts
}

/// The relation that existed before the migration under the name `written` (an unqualified
/// name: the first of that name, as a search path would find one).
fn existing<'a>(before: &'a [Relation], written: &str) -> Option<&'a Relation> {
    match name_parts(written).as_slice() {
        [schema, name] => before.iter().find(|r| r.schema == *schema && r.relname == *name),
        [name] => before.iter().find(|r| r.relname == *name),
        _ => None,
    }
}

/// Whether an earlier statement of the migration created a table named `written` (after
/// dropping the one that existed, say): what is done to it blocks nobody either.
fn created_here(c: &Context, written: &str) -> bool {
    let name = name_parts(written);
    c.earlier.iter().map(Text::new).any(|e| {
        let made = ["CREATE TABLE", "CREATE UNLOGGED TABLE"].iter().any(|p| e.starts(p));
        let Some(n) = e.after("TABLE", &["IF", "NOT", "EXISTS"]).filter(|_| made) else { return false };
        let made = name_parts(n);
        match (made.as_slice(), name.as_slice()) {
            ([s1, n1], [s2, n2]) => s1 == s2 && n1 == n2,
            (a, b) => a.last() == b.last(),
        }
    })
}

/// The table an `ALTER TABLE` names, if it existed before the migration (a table created in the
/// same migration is empty and unused: what is done to it needs no safer form).
fn altered<'a>(c: &Context<'a>, t: &Text) -> Option<&'a Relation> {
    if !t.starts("ALTER TABLE") {
        return None;
    }
    let name = t.after("ALTER TABLE", &["IF", "EXISTS", "ONLY"])?;
    if created_here(c, name) {
        return None;
    }
    existing(c.before, name).filter(|r| matches!(r.kind.as_str(), "r" | "p" | "f"))
}

/// Safer forms of what a statement did, where one is known.
pub(super) fn statement(c: &Context) -> Vec<String> {
    let t = Text::new(c.stmt);
    let statement: [fn(&Context, &Text) -> Option<String>; 7] =
        [create_index, drop_index, reindex, alter_domain_constraint, backfill, refresh_materialized_view, rewrite];
    // What an ALTER TABLE does to its table, one action at a time.
    let action: [fn(&Context, &Text) -> Option<String>; 7] = [
        unique_in_place,
        foreign_key_not_valid,
        check_not_valid,
        validate_in_the_same_migration,
        set_not_null,
        detach_partition,
        attach_partition,
    ];
    let mut out: Vec<String> = Vec::new();
    let actions = t.actions();
    for rule in action {
        for a in &actions {
            if let Some(h) = rule(c, a).filter(|h| !out.contains(h)) {
                out.push(h);
            }
        }
    }
    out.extend(statement.iter().filter_map(|rule| rule(c, &t)));
    out
}

/// CREATE INDEX without CONCURRENTLY on a table that existed: SHARE on it, writes wait for the
/// whole build. (On a partitioned table CONCURRENTLY is refused: the index is made on the parent
/// only, then built concurrently on each partition and attached.)
///
/// Sources: PostgreSQL docs, CREATE INDEX, "Building Indexes Concurrently"; squawk:
/// require-concurrent-index-creation; eugene: E6; strong_migrations: adding an index
/// non-concurrently.
fn create_index(c: &Context, t: &Text) -> Option<String> {
    if !(t.starts("CREATE INDEX") || t.starts("CREATE UNIQUE INDEX")) || t.has("CONCURRENTLY") {
        return None;
    }
    let on = t.after("ON", &["ONLY"]);
    if on.is_some_and(|n| created_here(c, n)) {
        return None;
    }
    let table = on.and_then(|n| existing(c.before, n));
    let took_share = c.locks.iter().any(|l| l.mode == "SHARE");
    let table = match table {
        Some(r) => r,
        None if took_share => {
            return Some(format!(
                "{CONCURRENT_INDEX}: without it, SHARE blocks writes to the table for the whole build"
            ))
        }
        None => return None,
    };
    if table.kind == "p" {
        // `ON ONLY` the parent is the first step of the safe form: instant, the index invalid.
        if t.has("ON ONLY") {
            return None;
        }
        return Some(format!(
            "{} is partitioned, where CONCURRENTLY is refused: CREATE INDEX … ON ONLY {} (instant, the index starts invalid), then CREATE INDEX CONCURRENTLY on each partition (each in a `-- no-transaction` migration of its own) and ALTER INDEX … ATTACH PARTITION each: writes to the partitions go on",
            table.name, table.name
        ));
    }
    Some(format!("{CONCURRENT_INDEX}: without it, SHARE on {} blocks writes for the whole build", table.name))
}

const CONCURRENT_INDEX: &str = "CREATE INDEX CONCURRENTLY, in a migration of its own that starts with `-- no-transaction`, builds the index without blocking writes (SHARE UPDATE EXCLUSIVE)";

/// DROP INDEX without CONCURRENTLY: ACCESS EXCLUSIVE on the table, reads and writes wait.
///
/// Sources: PostgreSQL docs, DROP INDEX (CONCURRENTLY); squawk: require-concurrent-index-deletion.
fn drop_index(c: &Context, t: &Text) -> Option<String> {
    if !t.starts("DROP INDEX") || t.has("CONCURRENTLY") {
        return None;
    }
    let index = t.after("DROP INDEX", &["IF", "EXISTS"]).and_then(|n| existing(c.before, n));
    if index.is_none() && c.locks.is_empty() {
        return None;
    }
    Some("DROP INDEX CONCURRENTLY, in a migration of its own that starts with `-- no-transaction` (one index per statement): it waits for the queries using the index instead of taking ACCESS EXCLUSIVE on the table, which blocks every read and write of it".into())
}

/// REINDEX without CONCURRENTLY: SHARE on the table (writes wait) and ACCESS EXCLUSIVE on the
/// index (queries that would use it wait) for the whole rebuild.
///
/// Sources: PostgreSQL docs, REINDEX, "Rebuilding Indexes Concurrently" (PostgreSQL 12+).
fn reindex(_: &Context, t: &Text) -> Option<String> {
    if !t.starts("REINDEX") || t.has("CONCURRENTLY") {
        return None;
    }
    Some("REINDEX … CONCURRENTLY (PostgreSQL 12+), in a migration of its own that starts with `-- no-transaction`: it builds the new index beside the old one and swaps them, without blocking writes; a plain REINDEX blocks writes to the table (SHARE) and every query that uses the index (ACCESS EXCLUSIVE on it) for the whole rebuild".into())
}

/// `ALTER TABLE … ADD UNIQUE / PRIMARY KEY (…)` on an existing table: the index is built under
/// ACCESS EXCLUSIVE (and a primary key first scans for NULLs to set NOT NULL). The safe form
/// builds the index concurrently and attaches it.
///
/// Sources: PostgreSQL docs, ALTER TABLE, "ADD table_constraint_using_index"; squawk:
/// disallowed-unique-constraint; eugene: E7; strong_migrations: adding a unique constraint.
fn unique_in_place(c: &Context, t: &Text) -> Option<String> {
    let table = altered(c, t)?;
    if t.has("USING INDEX") || t.has("ADD COLUMN") {
        return None;
    }
    let pk = t.has("PRIMARY KEY");
    if !pk && !t.upper.iter().any(|w| w == "UNIQUE") {
        return None;
    }
    let what = if pk { "PRIMARY KEY" } else { "UNIQUE" };
    let mut hint = format!(
        "CREATE UNIQUE INDEX CONCURRENTLY name ON {} (…) in a migration of its own that starts with `-- no-transaction`, then ALTER TABLE {} ADD CONSTRAINT name {what} USING INDEX name: the index builds without blocking writes and the constraint takes ACCESS EXCLUSIVE only for a moment; added in place, the index was built under ACCESS EXCLUSIVE (reads and writes wait)",
        table.name, table.name
    );
    if pk {
        hint.push_str("; make the key's columns NOT NULL first (ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then SET NOT NULL), or ADD PRIMARY KEY … USING INDEX scans the whole table for NULLs under ACCESS EXCLUSIVE");
    }
    Some(hint)
}

/// A foreign key added valid: SHARE ROW EXCLUSIVE on both tables while every row is checked.
///
/// Sources: PostgreSQL docs, ALTER TABLE, ADD CONSTRAINT … NOT VALID; squawk:
/// adding-foreign-key-constraint; eugene: E1; strong_migrations: adding a foreign key.
fn foreign_key_not_valid(c: &Context, t: &Text) -> Option<String> {
    altered(c, t)?;
    if !(t.has("FOREIGN KEY") || t.has("REFERENCES")) || t.has("NOT VALID") || t.has("ADD COLUMN") {
        return None;
    }
    Some("ADD CONSTRAINT … FOREIGN KEY … NOT VALID, then ALTER TABLE … VALIDATE CONSTRAINT in a later migration: the check of existing rows then takes only SHARE UPDATE EXCLUSIVE (reads and writes go on)".into())
}

/// A CHECK constraint added valid: every row checked under ACCESS EXCLUSIVE.
///
/// Sources: PostgreSQL docs, ALTER TABLE, ADD CONSTRAINT … NOT VALID; squawk:
/// constraint-missing-not-valid; eugene: E1; strong_migrations: adding a check constraint.
fn check_not_valid(c: &Context, t: &Text) -> Option<String> {
    altered(c, t)?;
    let adds = t.has("ADD CONSTRAINT") || t.has("ADD CHECK");
    if !adds || !t.upper.iter().any(|w| w == "CHECK") || t.has("NOT VALID") {
        return None;
    }
    Some("ADD CONSTRAINT … CHECK (…) NOT VALID, then VALIDATE CONSTRAINT in a later migration: existing rows are checked without blocking writes".into())
}

/// VALIDATE CONSTRAINT of a constraint added NOT VALID earlier in the same migration: the
/// validation runs in the ADD's transaction, which still holds the ADD's lock (SHARE ROW
/// EXCLUSIVE for a foreign key, ACCESS EXCLUSIVE for a CHECK): the scan blocks writes all the
/// same, and NOT VALID gained nothing.
///
/// Sources: PostgreSQL docs, ALTER TABLE, VALIDATE CONSTRAINT; strong_migrations: adding a
/// foreign key / a check constraint (validate in a separate migration); squawk:
/// adding-foreign-key-constraint.
fn validate_in_the_same_migration(c: &Context, t: &Text) -> Option<String> {
    let table = altered(c, t)?;
    let name = name_parts(t.after("VALIDATE CONSTRAINT", &[])?).pop()?;
    let added_here = c.earlier.iter().map(Text::new).flat_map(|e| e.actions()).any(|e| {
        altered(c, &e).is_some_and(|r| r.oid == table.oid)
            && e.has("NOT VALID")
            && e.after("ADD CONSTRAINT", &[]).and_then(|n| name_parts(n).pop()).is_some_and(|n| n == name)
    });
    if !added_here {
        return None;
    }
    Some(format!(
        "{name} was added NOT VALID earlier in this migration: validated in the same transaction, the scan runs while the ADD's lock on {} is still held (writes wait), so NOT VALID gained nothing; VALIDATE CONSTRAINT in a later migration",
        table.name
    ))
}

/// SET NOT NULL: a full scan under ACCESS EXCLUSIVE, unless a valid CHECK (col IS NOT NULL)
/// proves it — valid before the migration, or validated earlier in it (strong_migrations' second
/// step: VALIDATE CONSTRAINT, then SET NOT NULL). Any other CHECK on the table proves nothing.
///
/// Sources: PostgreSQL docs, ALTER TABLE, SET NOT NULL (PostgreSQL 12+ skips the scan given a
/// valid CHECK); squawk: adding-not-nullable-field; eugene: E2; strong_migrations: setting NOT
/// NULL on an existing column.
fn set_not_null(c: &Context, t: &Text) -> Option<String> {
    let table = altered(c, t)?;
    let at = t.find("SET NOT NULL")?;
    let column = name_parts(t.tokens.get(at.checked_sub(1)?)?).pop()?;
    let validated: Vec<String> = c
        .earlier
        .iter()
        .map(Text::new)
        .flat_map(|e| e.actions())
        .filter(|e| altered(c, e).is_some_and(|r| r.oid == table.oid))
        .filter_map(|e| e.after("VALIDATE CONSTRAINT", &[]).and_then(|n| name_parts(n).pop()))
        .collect();
    let proven = table.not_null_checks.iter().any(|k| k.column == column && (k.valid || validated.contains(&k.name)));
    if proven {
        return None;
    }
    Some("add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL: PostgreSQL 12+ uses the valid constraint and skips the full scan under ACCESS EXCLUSIVE".into())
}

/// DETACH PARTITION without CONCURRENTLY: ACCESS EXCLUSIVE on the parent, every query on the
/// partitioned table waits.
///
/// Sources: PostgreSQL docs, ALTER TABLE, DETACH PARTITION … CONCURRENTLY (PostgreSQL 14+).
fn detach_partition(c: &Context, t: &Text) -> Option<String> {
    let parent = altered(c, t)?;
    if !t.has("DETACH PARTITION") || t.has("CONCURRENTLY") || t.has("FINALIZE") {
        return None;
    }
    Some(format!(
        "ALTER TABLE {} DETACH PARTITION … CONCURRENTLY (PostgreSQL 14+), in a migration of its own that starts with `-- no-transaction`: it takes SHARE UPDATE EXCLUSIVE on {} instead of ACCESS EXCLUSIVE, which blocks every read and write of the partitioned table (not possible while it has a DEFAULT partition)",
        parent.name, parent.name
    ))
}

/// ATTACH PARTITION of an existing table without a valid CHECK that implies the bound: every
/// row of it is scanned under ACCESS EXCLUSIVE (on it) to prove the bound.
///
/// Sources: PostgreSQL docs, "Partition Maintenance" (ddl-partitioning: a CHECK constraint
/// matching the partition constraint, added beforehand, lets ATTACH skip the scan) and ALTER
/// TABLE, ATTACH PARTITION.
fn attach_partition(c: &Context, t: &Text) -> Option<String> {
    altered(c, t)?;
    let child = existing(c.before, t.after("ATTACH PARTITION", &[])?)?;
    if child.checks > 0 {
        return None;
    }
    // A CHECK added valid (or validated) on it earlier in this migration counts too.
    let checked_now = c.earlier.iter().any(|e| {
        let e = Text::new(e);
        let on_child = e.after("ALTER TABLE", &["IF", "EXISTS", "ONLY"]).and_then(|n| existing(c.before, n));
        on_child.is_some_and(|r| r.oid == child.oid)
            && ((e.upper.iter().any(|w| w == "CHECK") && !e.has("NOT VALID")) || e.has("VALIDATE CONSTRAINT"))
    });
    if checked_now {
        return None;
    }
    Some(format!(
        "ATTACH PARTITION scanned every row of {} under ACCESS EXCLUSIVE to prove the partition bound: first ALTER TABLE {} ADD CONSTRAINT … CHECK (the bound's condition, with IS NOT NULL) NOT VALID and VALIDATE CONSTRAINT it (SHARE UPDATE EXCLUSIVE: reads and writes go on), then ATTACH skips the scan; drop the CHECK after",
        child.name, child.name
    ))
}

/// ALTER DOMAIN … ADD CONSTRAINT without NOT VALID: every column of the domain's type, in every
/// table, is checked while writes to those tables wait.
///
/// Sources: PostgreSQL docs, ALTER DOMAIN (ADD … NOT VALID, VALIDATE CONSTRAINT); squawk:
/// ban-alter-domain-with-add-constraint.
fn alter_domain_constraint(_: &Context, t: &Text) -> Option<String> {
    if !t.starts("ALTER DOMAIN") || !t.has("ADD") || t.has("NOT VALID") || t.has("ADD NOT NULL") {
        return None;
    }
    Some("adding a domain constraint checks every column of the domain's type in every table while writes to them wait (SHARE): prefer a CHECK constraint on each table (ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT in a later migration); on the domain, ALTER DOMAIN … ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT in a later migration".into())
}

/// A large UPDATE or DELETE inside a migration: one transaction holds every changed row (and
/// the migration's other locks) until commit, and writes it all at once (WAL, bloat, replicas).
///
/// Sources: strong_migrations: backfilling data; PostgreSQL docs, "Routine Vacuuming" (dead
/// rows of one huge update).
fn backfill(c: &Context, t: &Text) -> Option<String> {
    let verb = if t.starts("UPDATE") {
        "UPDATE"
    } else if t.starts("DELETE") {
        "DELETE"
    } else {
        return None;
    };
    let rows = c.rows.filter(|n| *n >= BACKFILL_ROWS)?;
    Some(format!(
        "this {verb} changed {rows} rows inside the migration's transaction: every one stays locked until the migration commits, and they are written in one go (WAL, dead rows, replica lag); backfill in batches of a few thousand rows by key range, each its own transaction, from a script or job outside the migration (or from a `-- no-transaction` migration, one batch a statement)"
    ))
}

/// REFRESH MATERIALIZED VIEW without CONCURRENTLY: ACCESS EXCLUSIVE on the view, every SELECT of
/// it waits for the whole refresh. CONCURRENTLY needs a unique index on plain columns.
///
/// Sources: PostgreSQL docs, REFRESH MATERIALIZED VIEW (CONCURRENTLY).
fn refresh_materialized_view(c: &Context, t: &Text) -> Option<String> {
    if !t.starts("REFRESH MATERIALIZED VIEW") || t.has("CONCURRENTLY") {
        return None;
    }
    let view = existing(c.before, t.after("REFRESH MATERIALIZED VIEW", &[])?)?;
    Some(match &view.unique_index {
        Some(index) => format!(
            "REFRESH MATERIALIZED VIEW CONCURRENTLY {}: its unique index {index} allows it, and readers then keep reading the old rows during the refresh (EXCLUSIVE); without it the refresh holds ACCESS EXCLUSIVE and every SELECT of {} waits",
            view.name, view.name
        ),
        None => format!(
            "the refresh holds ACCESS EXCLUSIVE on {}: every SELECT of it waits; give it a unique index on plain columns (no expression, no WHERE), then REFRESH MATERIALIZED VIEW CONCURRENTLY lets readers go on",
            view.name
        ),
    })
}

/// What a rewrite cost, by its cause: a type change, a volatile default, an identity or serial
/// column, a stored generated column, a domain with constraints, VACUUM FULL or CLUSTER.
///
/// Sources: PostgreSQL docs, ALTER TABLE, Notes (which forms rewrite); VACUUM (FULL) and
/// CLUSTER (ACCESS EXCLUSIVE for the whole rewrite), pg_repack's documentation (the online
/// form); squawk: changing-column-type, adding-field-with-default; eugene: E5 (type change),
/// E10 (rewrite under ACCESS EXCLUSIVE), E11 (SERIAL or stored generated column);
/// strong_migrations: changing the type of a column, adding a column with a volatile default
/// value, adding an auto-incrementing column, adding a stored generated column.
fn rewrite(c: &Context, t: &Text) -> Option<String> {
    if t.starts("CLUSTER") || (t.starts("VACUUM") && t.has("FULL")) {
        return Some("VACUUM FULL and CLUSTER rewrite the table under ACCESS EXCLUSIVE: every read and write waits for the whole rewrite; pg_repack (or pg_squeeze) rebuilds it online, holding ACCESS EXCLUSIVE only for a moment at the end — run it as maintenance, outside the migrations".into());
    }
    // A refresh always fills a new file: its own rule says what to do.
    if c.rewrites.is_empty() || t.starts("REFRESH") {
        return None;
    }
    let adds = t.has("ADD COLUMN") || (t.starts("ALTER TABLE") && t.has("ADD"));
    // `ALTER [COLUMN] c TYPE`, not a column named `type`.
    let changes_type = t.has("SET DATA TYPE")
        || t.upper.iter().enumerate().any(|(i, w)| {
            w == "TYPE" && i >= 2 && matches!(t.upper[i - 2].as_str(), "ALTER" | "COLUMN") && t.upper[i - 1] != "COLUMN"
        });
    Some(if changes_type {
        "the type change rewrote the table under ACCESS EXCLUSIVE: add a column of the new type, backfill it in batches, then swap (or pick a binary-compatible type, e.g. varchar(n) → text)".into()
    } else if adds && t.has("AS IDENTITY") {
        "an identity column is filled from its sequence in every row, so the table was rewritten under ACCESS EXCLUSIVE: add a nullable bigint column, set its DEFAULT nextval(…) for new rows, backfill the old ones in batches, make it NOT NULL (CHECK … NOT VALID, VALIDATE, SET NOT NULL), then ALTER COLUMN … ADD GENERATED … AS IDENTITY (no rewrite)".into()
    } else if adds
        && t.upper
            .iter()
            .any(|w| matches!(w.as_str(), "SERIAL" | "BIGSERIAL" | "SMALLSERIAL" | "SERIAL4" | "SERIAL8" | "SERIAL2"))
    {
        "a serial column's DEFAULT nextval(…) gives every row a value, so the table was rewritten under ACCESS EXCLUSIVE: add a nullable column without a default, SET DEFAULT nextval(…) for new rows, backfill the old ones in batches".into()
    } else if adds && t.has("GENERATED ALWAYS AS") {
        "a stored generated column is computed for every row, so the table was rewritten under ACCESS EXCLUSIVE: add a plain column, fill new rows with a trigger, backfill the old ones in batches (or compute it in the query or a view)".into()
    } else if adds && t.has("DEFAULT") {
        "the new column's default is volatile (clock_timestamp(), random(), nextval(…), …), so every row was rewritten under ACCESS EXCLUSIVE: add the column without a default, SET DEFAULT for new rows, backfill the old ones in batches".into()
    } else if adds {
        "the new column's type has constraints (a domain with CHECK or NOT NULL), which PostgreSQL checks by rewriting every row under ACCESS EXCLUSIVE: add the column with the domain's base type, backfill in batches, then add a CHECK … NOT VALID and VALIDATE it (or switch to the domain once the data is known good)".into()
    } else {
        "the table was rewritten under ACCESS EXCLUSIVE: every read and write waited for the whole rewrite".into()
    })
}

/// Why a failed statement failed, and the form that works.
///
/// Sources: PostgreSQL docs, CREATE INDEX / DROP INDEX / REINDEX / VACUUM (what cannot run in a
/// transaction block); sqlx's `-- no-transaction` migrations (sent as one query string: several
/// statements are one implicit transaction); squawk: ban-concurrent-index-creation-in-transaction.
pub(super) fn failure(
    stmt: &Statement,
    sqlstate: &str,
    error: &str,
    no_transaction: bool,
    statements: usize,
) -> Vec<String> {
    let t = Text::new(stmt);
    let mut out = Vec::new();
    if sqlstate == "25001" || error.contains("cannot run inside a transaction block") {
        // The command as written, up to its CONCURRENTLY (`DROP INDEX CONCURRENTLY`).
        let what = match t.find("CONCURRENTLY") {
            Some(i) => t.tokens[..=i].join(" "),
            None => stmt.keywords(2),
        };
        out.push(if no_transaction && statements > 1 {
            format!("{what} cannot run in a transaction, and sqlx sends a migration of {statements} statements as one query string (one implicit transaction) even with `-- no-transaction`: give it a migration of its own, this one statement, whose first line is `-- no-transaction`")
        } else {
            format!("{what} cannot run in a transaction: give it a migration of its own, this one statement, whose first line is `-- no-transaction` (sqlx then runs it outside a transaction)")
        });
        if t.starts("VACUUM") && t.has("FULL") {
            out.push("VACUUM FULL would then still hold ACCESS EXCLUSIVE for the whole rewrite: pg_repack (or pg_squeeze) does it online, outside the migrations".into());
        }
    }
    match sqlstate {
        "23505" => out.push("existing rows have duplicate keys: find them (SELECT the key columns, count(*) … GROUP BY … HAVING count(*) > 1) and resolve them in an earlier migration or a script, then build the unique index (CONCURRENTLY)".into()),
        "23514" | "23503" | "23502" => out.push("existing rows violate the constraint: fix them first (a batched data migration), then add the constraint NOT VALID and VALIDATE CONSTRAINT it in a later migration (SET NOT NULL: after a valid CHECK (col IS NOT NULL))".into()),
        _ => {}
    }
    out
}

/// The hints of a whole migration, once every statement has run: a statement's row count is the
/// rows it rewrote when it reported none; the ACCESS EXCLUSIVE held through the statements after
/// it; and a slow statement that ran with blocking locks already held.
pub(super) fn migration(out: &mut MigrationTrace, transaction: bool) {
    for s in &mut out.statements {
        if !s.rewrites.is_empty() && s.rows.unwrap_or(0) == 0 {
            let rewritten: i64 = s.rewrites.iter().filter_map(|r| r.rows).sum();
            s.rows = Some(rewritten.max(0) as u64);
        }
    }
    access_exclusive_then_more(out, transaction);
    held_through(out, transaction);
}

/// A statement that takes ACCESS EXCLUSIVE on an existing relation, with more statements after it
/// in the same transaction: the lock is held through all of them, however fast each is (and any
/// of them may wait for another lock meanwhile, with every query on the relation queued behind).
///
/// Sources: eugene: E4 (running more statements after taking ACCESS EXCLUSIVE); PostgreSQL docs,
/// "Explicit Locking" (locks are held until the end of the transaction).
fn access_exclusive_then_more(out: &mut MigrationTrace, transaction: bool) {
    if !transaction {
        return;
    }
    let n = out.statements.len();
    let Some(s) = out.statements.iter_mut().find(|s| s.locks.iter().any(|l| l.mode == "ACCESS EXCLUSIVE")) else {
        return;
    };
    let after = n - s.index.min(n);
    if after == 0 {
        return;
    }
    let on: Vec<&str> = s.locks.iter().filter(|l| l.mode == "ACCESS EXCLUSIVE").map(|l| l.relation.as_str()).collect();
    s.hints.push(format!(
        "ACCESS EXCLUSIVE on {} (every read and write waits) is held until the migration commits, through the {after} statement(s) after this one, whatever their duration: put this statement last, or in a migration of its own, with the others before it (several ALTER TABLEs of one table: one ALTER TABLE with its actions comma-separated)",
        on.join(", ")
    ));
}

/// The hint for a slow statement that ran with blocking locks already held (a migration in one
/// transaction holds every lock until its commit).
///
/// Sources: eugene: E4; PostgreSQL docs, "Explicit Locking".
fn held_through(out: &mut MigrationTrace, transaction: bool) {
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

/// Foreign keys a statement made that no index serves when the migration ends (the statement's
/// index, the key): every DELETE of a referenced row, or UPDATE of its key, scans the referencing
/// table, and the validation of the key itself is slower.
///
/// Sources: PostgreSQL docs, "Constraints", Foreign Keys ("it is often a good idea to index the
/// referencing columns too").
pub(super) fn unindexed_foreign_keys(out: &mut MigrationTrace, made: &[(usize, ForeignKey)], at_end: &[ForeignKey]) {
    for (index, fk) in made {
        if !at_end.iter().any(|f| f.oid == fk.oid) {
            continue;
        }
        let Some(s) = out.statements.iter_mut().find(|s| s.index == *index) else { continue };
        s.hints.push(format!(
            "foreign key {} has no index on its referencing columns {} ({}): every DELETE of a row of {} (or UPDATE of its key) scans {}; CREATE INDEX CONCURRENTLY ON {} ({}), in a migration of its own that starts with `-- no-transaction`",
            fk.name, fk.table, fk.columns, fk.references, fk.table, fk.table, fk.columns
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(sql: &str) -> Statement {
        Statement { sql: sql.into(), line: 1, meta: false }
    }

    fn rel(name: &str, kind: &str) -> Relation {
        let (schema, relname) = name.split_once('.').unwrap();
        serde_json::from_value(serde_json::json!({
            "oid": name.len(), "name": name, "schema": schema, "relname": relname, "kind": kind,
            "size": 0, "index_size": 0, "rows": 100_000, "checks": 0, "unique_index": null, "table": null,
        }))
        .unwrap()
    }

    fn lock(mode: &str) -> LockTrace {
        LockTrace {
            oid: 1,
            relation: "big.t".into(),
            kind: "table",
            mode: mode.into(),
            statement: 1,
            held_ms: 1.0,
            blocks_reads_ms: None,
            blocks_writes_ms: Some(1.0),
            rows: None,
            size_bytes: 0,
            table: None,
        }
    }

    fn hints_of(sql: &str, locks: &[LockTrace], rewrites: &[Rewrite], before: &[Relation]) -> Vec<String> {
        statement(&Context { stmt: &st(sql), locks, rewrites, before, earlier: &[], rows: None })
    }

    #[test]
    fn hints_name_the_safer_form() {
        let before = [rel("big.t", "r"), rel("big.u", "r")];
        let share = [lock("SHARE")];
        assert!(hints_of("CREATE INDEX i ON big.t (c)", &[], &[], &before)[0].contains("CONCURRENTLY"));
        assert!(hints_of("CREATE INDEX i ON t (c)", &share, &[], &[])[0].contains("CONCURRENTLY"));
        assert!(hints_of("CREATE INDEX CONCURRENTLY i ON big.t (c)", &share, &[], &before).is_empty());
        // A table made in the same migration needs none.
        assert!(hints_of("CREATE INDEX i ON big.new (c)", &[], &[], &before).is_empty());
        assert!(hints_of("ALTER TABLE big.new ADD FOREIGN KEY (a) REFERENCES big.u (id)", &[], &[], &before).is_empty());
        assert!(hints_of("ALTER TABLE big.t ADD FOREIGN KEY (a) REFERENCES u (id)", &[], &[], &before)[0]
            .contains("NOT VALID"));
        assert!(
            hints_of("ALTER TABLE big.t ADD FOREIGN KEY (a) REFERENCES u (id) NOT VALID", &[], &[], &before).is_empty()
        );
        let rw = [Rewrite { relation: "big.t".into(), rows: None, size_before: 0 }];
        assert!(hints_of("ALTER TABLE big.t ALTER COLUMN c TYPE bigint", &[], &rw, &before)[0].contains("backfill"));
        let identity =
            hints_of("ALTER TABLE big.t ADD COLUMN i bigint GENERATED ALWAYS AS IDENTITY", &[], &rw, &before);
        assert!(identity[0].starts_with("an identity column") && !identity[0].contains("volatile"), "{identity:?}");
        let domain = hints_of("alter table big.t add column p positive", &[], &rw, &before);
        assert!(domain[0].contains("domain") && !domain[0].contains("volatile"), "{domain:?}");
        let unique = hints_of("ALTER TABLE big.t ADD CONSTRAINT u UNIQUE(n)", &[], &[], &before);
        assert!(unique[0].contains("USING INDEX") && !unique[0].contains("NOT NULL first"), "{unique:?}");
        let pk = hints_of("ALTER TABLE ONLY big.t ADD PRIMARY KEY (n)", &[], &[], &before);
        assert!(pk[0].contains("PRIMARY KEY USING INDEX") && pk[0].contains("NOT NULL first"), "{pk:?}");
        assert!(hints_of("ALTER TABLE big.t ADD CONSTRAINT u UNIQUE USING INDEX u", &[], &[], &before).is_empty());
        assert!(hints_of("VACUUM (FULL, ANALYZE) big.t", &[], &[], &before)[0].contains("pg_repack"));
        assert!(hints_of("VACUUM big.t", &[], &[], &before).is_empty());
        // A partitioned table refuses CONCURRENTLY: the hint says how to do it per partition.
        let parted = [rel("big.events", "p")];
        let h = hints_of("CREATE INDEX ON big.events (at)", &[], &[], &parted);
        assert!(h[0].contains("ON ONLY big.events") && h[0].contains("ATTACH PARTITION"), "{h:?}");
        // A volatile default is still called one.
        let h = hints_of("ALTER TABLE big.t ADD COLUMN s timestamptz DEFAULT clock_timestamp()", &[], &rw, &before);
        assert!(h[0].contains("default is volatile"), "{h:?}");
    }

    #[test]
    fn names_are_found_as_the_catalog_spells_them() {
        assert_eq!(name_parts("Big.\"My \"\"T\""), ["big", "My \"T"]);
        assert_eq!(
            tokens("ALTER TABLE \"a b\".c/* a /* nested */ one */ADD CHECK(x>0) -- 'no'\n'--'"),
            ["ALTER", "TABLE", "\"a b\".c", "ADD", "CHECK", "(", "x>0", ")", "'--'"]
        );
        let before = [rel("big.t", "r")];
        assert!(existing(&before, "BIG.T").is_some() && existing(&before, "T").is_some());
        assert!(existing(&before, "\"T\"").is_none() && existing(&before, "other.t").is_none());
    }

    /// Each action of an ALTER TABLE is judged by itself, and a comment is a space.
    #[test]
    fn every_action_of_an_alter_table_is_judged() {
        let before = [rel("big.t", "r"), rel("big.u", "r")];
        let one = |sql: &str, needle: &str| {
            let h = hints_of(sql, &[], &[], &before);
            assert!(h.len() == 1 && h[0].contains(needle), "{sql}: {h:?}");
        };
        one("ALTER TABLE big.t/* why */ADD CONSTRAINT c CHECK (x > 0)", "CHECK (…) NOT VALID");
        one(
            "ALTER TABLE big.t ADD COLUMN x int, ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES big.u (id)",
            "FOREIGN KEY … NOT VALID",
        );
        one(
            "ALTER TABLE big.t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES big.u (id) NOT VALID, ADD CONSTRAINT c CHECK (x > 0)",
            "CHECK (…) NOT VALID",
        );
        one("ALTER TABLE big.t ADD COLUMN x int, ADD CONSTRAINT u UNIQUE (n)", "UNIQUE USING INDEX");
        one(
            "ALTER TABLE ONLY big.t ADD CONSTRAINT a UNIQUE USING INDEX a, ADD CONSTRAINT b UNIQUE (n)",
            "UNIQUE USING INDEX",
        );
        one("ALTER TABLE big.t ADD CHECK (a > 0), ADD CHECK (b IN (1, 2)) -- two, one hint", "CHECK (…) NOT VALID");
        // Commas inside parentheses are not actions; safe actions stay unhinted.
        let none = [
            "ALTER TABLE big.t ADD CONSTRAINT c CHECK (a IN (1, 2)) NOT VALID, VALIDATE CONSTRAINT d",
            "ALTER TABLE big.t ADD CONSTRAINT a UNIQUE USING INDEX a, ADD CONSTRAINT f FOREIGN KEY (a, b) REFERENCES big.u (a, b) NOT VALID",
            "ALTER TABLE big.t ADD COLUMN x int, ADD COLUMN y text",
            "ALTER TABLE big.t",
            "ALTER TABLE",
        ];
        for sql in none {
            assert!(hints_of(sql, &[], &[], &before).is_empty(), "{sql}");
        }
    }

    /// SET NOT NULL is spared its hint only by a valid CHECK proving that very column.
    #[test]
    fn set_not_null_needs_a_check_of_its_column() {
        let table = |checks: i64, nn: serde_json::Value| -> Relation {
            serde_json::from_value(serde_json::json!({
                "oid": 7, "name": "big.t", "schema": "big", "relname": "t", "kind": "r", "size": 0, "index_size": 0,
                "rows": 100_000, "checks": checks, "not_null_checks": nn, "unique_index": null, "table": null,
            }))
            .unwrap()
        };
        let hinted = |before: &Relation, earlier: &[&str], sql: &str| {
            let earlier: Vec<Statement> = earlier.iter().map(|e| st(e)).collect();
            let c = Context {
                stmt: &st(sql),
                locks: &[],
                rewrites: &[],
                before: std::slice::from_ref(before),
                earlier: &earlier,
                rows: None,
            };
            statement(&c).iter().any(|h| h.contains("then SET NOT NULL"))
        };
        let set = "ALTER TABLE big.t ALTER COLUMN c SET NOT NULL";
        // A CHECK (price > 0) proves nothing of c.
        assert!(hinted(&table(1, serde_json::json!([])), &[], set));
        let valid_c = table(1, serde_json::json!([{"name": "t_c_nn", "column": "c", "valid": true}]));
        assert!(!hinted(&valid_c, &[], set));
        assert!(!hinted(&valid_c, &[], "alter table ONLY big.t alter \"c\" set not null"));
        assert!(hinted(&valid_c, &[], "ALTER TABLE big.t ALTER COLUMN d SET NOT NULL"));
        assert!(hinted(&valid_c, &[], "ALTER TABLE big.t ALTER COLUMN c SET NOT NULL, ALTER COLUMN d SET NOT NULL"));
        // NOT VALID before the migration, validated in it before the SET NOT NULL.
        let not_valid = table(0, serde_json::json!([{"name": "t_c_nn", "column": "c", "valid": false}]));
        assert!(hinted(&not_valid, &[], set));
        assert!(!hinted(&not_valid, &["ALTER TABLE big.t VALIDATE CONSTRAINT t_c_nn"], set));
        assert!(hinted(&not_valid, &["ALTER TABLE big.t VALIDATE CONSTRAINT other"], set));
    }

    /// The safe forms the hints themselves name get no hint; a column named `type` is no type
    /// change.
    #[test]
    fn the_named_safe_form_is_not_hinted() {
        let before = [rel("big.events", "p")];
        assert!(hints_of("CREATE INDEX events_at ON ONLY big.events (at)", &[], &[], &before).is_empty());
        assert!(!hints_of("CREATE INDEX events_at ON big.events (at)", &[], &[], &before).is_empty());
        let before = [rel("big.t", "r")];
        let rw = [Rewrite { relation: "big.t".into(), rows: None, size_before: 0 }];
        let h = hints_of("ALTER TABLE big.t ADD COLUMN type uuid DEFAULT gen_random_uuid()", &[], &rw, &before);
        assert!(h.len() == 1 && h[0].contains("default is volatile"), "{h:?}");
        for change in
            ["ALTER TABLE big.t ALTER COLUMN c TYPE bigint", "alter table big.t alter c type bigint using c::bigint"]
        {
            let h = hints_of(change, &[], &rw, &before);
            assert!(h.len() == 1 && h[0].contains("the type change"), "{change}: {h:?}");
        }
    }

    /// NOT VALID, then VALIDATE in the same migration, is no safer than a valid ADD; in a later
    /// migration (another `before`, no ADD among the earlier statements) it is the safe form.
    #[test]
    fn validate_in_the_migration_that_added_it_is_hinted() {
        let before = [rel("big.t", "r")];
        let add = st("ALTER TABLE big.t ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES big.u (id) NOT VALID");
        let other = st("ALTER TABLE big.t ADD CONSTRAINT other CHECK (a > 0) NOT VALID");
        let validate = st("ALTER TABLE big.t VALIDATE CONSTRAINT \"t_fk\"");
        let hinted = |earlier: &[Statement]| {
            let c = Context { stmt: &validate, locks: &[], rewrites: &[], before: &before, earlier, rows: None };
            statement(&c).iter().any(|h| h.contains("NOT VALID gained nothing"))
        };
        assert!(hinted(std::slice::from_ref(&add)));
        assert!(!hinted(&[]));
        assert!(!hinted(std::slice::from_ref(&other)));
    }

    /// A table dropped and made again earlier in the migration is new: no hint for its index or
    /// its constraints.
    #[test]
    fn a_table_made_again_in_the_migration_is_new() {
        let before = [rel("big.t", "r")];
        let earlier = [st("DROP TABLE big.t"), st("CREATE TABLE IF NOT EXISTS big.t (id int, c int)")];
        for sql in ["CREATE INDEX t_c ON big.t (c)", "ALTER TABLE big.t ADD CONSTRAINT c_pos CHECK (c > 0)"] {
            let c =
                Context { stmt: &st(sql), locks: &[], rewrites: &[], before: &before, earlier: &earlier, rows: None };
            assert!(statement(&c).is_empty(), "{sql}: {:?}", statement(&c));
            let other = [st("CREATE TABLE big.other (id int)")];
            let c = Context { stmt: &st(sql), locks: &[], rewrites: &[], before: &before, earlier: &other, rows: None };
            assert!(!statement(&c).is_empty(), "{sql}");
        }
    }

    #[test]
    fn a_failure_gets_the_form_that_works() {
        let f = failure(
            &st("CREATE INDEX CONCURRENTLY i ON t (c)"),
            "25001",
            "CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
            false,
            2,
        );
        assert!(f[0].contains("-- no-transaction") && f[0].starts_with("CREATE INDEX CONCURRENTLY"), "{f:?}");
        let f = failure(&st("VACUUM FULL t"), "25001", "", true, 3);
        assert!(f[0].contains("one implicit transaction") && f[1].contains("pg_repack"), "{f:?}");
        assert!(failure(&st("SELECT 1"), "42601", "syntax error", false, 1).is_empty());
    }

    #[test]
    fn random_statements_never_panic_the_rules() {
        let mut rng = crate::sql::fuzz::Rng::new(0x41a7_2026);
        let before = [rel("big.t", "r"), rel("big.events", "p"), rel("big.t_n_old", "i"), rel("big.m", "m")];
        let modes = ["ACCESS EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "ROW EXCLUSIVE"];
        for _ in 0..20_000 {
            let text = crate::sql::fuzz::sql(&mut rng, 16);
            let statements = crate::sql::split(&text);
            for (i, stmt) in statements.iter().enumerate() {
                let locks: Vec<LockTrace> = (0..rng.below(3)).map(|_| lock(rng.pick(&modes))).collect();
                let rewrites: Vec<Rewrite> = (0..rng.below(2))
                    .map(|_| Rewrite {
                        relation: "big.t".into(),
                        rows: Some(rng.below(200_000) as i64),
                        size_before: 1,
                    })
                    .collect();
                let _ = statement(&Context {
                    stmt,
                    locks: &locks,
                    rewrites: &rewrites,
                    before: &before[..rng.below(before.len() + 1)],
                    earlier: &statements[..i],
                    rows: Some(rng.below(200_000) as u64).filter(|_| rng.below(2) == 0),
                });
                let state = rng.pick(&["25001", "23505", "23514", "42601", ""]);
                let _ = failure(stmt, state, &text, rng.below(2) == 0, statements.len());
            }
        }
    }
}
