//! What a migration changes outside its own database: the cluster's shared catalogs and
//! `postgresql.auto.conf`. A rehearsal runs on a copy, but roles, database-level settings,
//! `ALTER SYSTEM`, other databases and tablespaces belong to the whole server: a migration that
//! changes them changes the rehearsal server (and, on production, more than its database).
//!
//! Each shared catalog, and what is done with it:
//!
//! | catalog | snapshotted as | undone by |
//! |---|---|---|
//! | `pg_authid` | `role` (attributes; the password hash when readable) | `DROP ROLE` (after `REASSIGN OWNED`/`DROP OWNED` in the copy), `ALTER ROLE`, `CREATE ROLE` |
//! | `pg_auth_members` | `membership` | `REVOKE`/`GRANT` role |
//! | `pg_db_role_setting` | `setting` (per role, database, both, or every role: `ALTER ROLE ALL`) | `ALTER ROLE`/`DATABASE … RESET ALL`, then `SET` each |
//! | `pg_database` | `database` (name, owner, limits, flags, privileges) | `DROP DATABASE` (one the migration's `CREATE DATABASE` named), `ALTER DATABASE`, `GRANT`/`REVOKE` |
//! | `pg_tablespace` | `tablespace` | `DROP TABLESPACE`, `ALTER TABLESPACE`, `GRANT`/`REVOKE` |
//! | `pg_shdescription` | `comment` on a role, database or tablespace | `COMMENT ON … IS` |
//! | `pg_parameter_acl` (15+) | `parameter privileges` (a row granting nothing is none: PostgreSQL keeps a row emptied by `REVOKE`) | `GRANT`/`REVOKE … ON PARAMETER` |
//! | `pg_replication_origin` | `replication origin` (when readable) | `pg_replication_origin_drop` |
//! | `pg_subscription`, `pg_shseclabel` | reported | not undone (said so) |
//! | `pg_shdepend` | not snapshotted: it follows the others | — |
//! | `postgresql.auto.conf` (`pg_file_settings`) | `ALTER SYSTEM` | `ALTER SYSTEM SET`/`RESET`, then `pg_reload_conf()` |
//!
//! The copy's own rows (its `pg_database` row, its marker, its database-level settings) are its
//! own: they go with it.
//!
//! Whose change is it? Other sessions change the shared catalogs too (this tool's other runs
//! rename, mark, create and drop databases). In a migration's transaction the answer is exact:
//! the rows the migrating session sees written by a transaction still in progress are its own
//! (another session's uncommitted rows are invisible to it), and a row it no longer sees that a
//! second session still does (before and after) is one it deleted. A statement run on its own has
//! committed before anyone can look. One that runs only at top level (`CREATE DATABASE`, `CREATE
//! TABLESPACE`, `ALTER SYSTEM`, `VACUUM`, `CREATE INDEX CONCURRENTLY`…: never from a function)
//! changes only what its text names: the database or tablespace it creates, the setting it sets.
//! A `-- no-transaction` `DO` or `CALL` (or the part of a migration before a COMMIT of its own)
//! may change anything: its changes are the rows written within its window of transaction ids,
//! read right before and right after it; of another database's rows only settings and privileges
//! count (which this tool never writes), plus the pristine copy. The blind spot: another session's
//! change to a shared catalog within that window is taken for the migration's.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pg::session::{Failure, Session};
use crate::pg::xid;
use crate::pg::{ident, literal, Server};
use crate::sql::Statement;

/// One row of a shared catalog, keyed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Item {
    pub kind: String,
    pub key: String,
    /// How a person names it: `role app_reader`, `database app_prod`.
    pub name: String,
    /// The database it belongs to (its oid), when it belongs to one.
    pub db: Option<i64>,
    pub value: Value,
    /// The row's `xmin` as a 64-bit transaction id, when the catalog can be read with it.
    pub xid: Option<i64>,
    /// Written by a transaction still in progress: when read from inside the migrating
    /// transaction, by that transaction.
    #[serde(default)]
    pub mine: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    items: BTreeMap<(String, String), Item>,
    /// The next transaction id when it was taken.
    next_xid: i64,
}

/// One change to the cluster, and what undoing it did.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub kind: String,
    pub name: String,
    /// The migration that made it.
    pub file: String,
    /// `created`, `changed`, `removed`.
    pub what: &'static str,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// `undone`, or why not.
    pub undo: String,
    /// A role's password hash before (for `CREATE ROLE` when it was removed): never shown.
    #[serde(skip)]
    password: Option<String>,
}

#[cfg(test)]
impl Change {
    /// A change as the report receives it, for the report's own tests.
    pub fn sample(
        kind: String,
        name: String,
        what: &'static str,
        before: Option<Value>,
        after: Option<Value>,
        undo: String,
    ) -> Change {
        Change { kind, name, file: "1.sql".into(), what, before, after, undo, password: None }
    }
}

impl Change {
    pub fn describe(&self) -> String {
        let detail = match (self.what, &self.before, &self.after) {
            ("changed", Some(b), Some(a)) => format!(" ({})", differences(b, a)),
            _ => String::new(),
        };
        format!("{} {}{detail}", self.name, self.what)
    }
}

/// The fields of two JSON objects that differ, `field: before → after`.
fn differences(before: &Value, after: &Value) -> String {
    match (before.as_object(), after.as_object()) {
        (Some(b), Some(a)) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            keys.into_iter()
                .filter(|k| b.get(*k) != a.get(*k))
                .map(|k| format!("{k}: {} → {}", short(b.get(k)), short(a.get(k))))
                .collect::<Vec<_>>()
                .join(", ")
        }
        _ => format!("{} → {}", short(Some(before)), short(Some(after))),
    }
}

fn short(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The query: every item, as `json_agg` rows. `$MINE` is replaced by the in-progress test.
fn query(readable: &Readable, major: u32) -> String {
    // (The widening is against the snapshot's xmax: see `pg::xid` for why "nearest", not "below".)
    let x = |col: &str| xid::widen(col, "(SELECT n FROM nx)");
    let mine = |col: &str| xid::written_by_this_transaction(col, "(SELECT n FROM nx)");
    let mut parts = Vec::new();
    let role = if readable.authid {
        format!(
            "SELECT 'role', a.oid::text, 'role ' || quote_ident(a.rolname), NULL::bigint, json_build_object('name', a.rolname, \
             'superuser', a.rolsuper, 'inherit', a.rolinherit, 'createrole', a.rolcreaterole, 'createdb', a.rolcreatedb, \
             'login', a.rolcanlogin, 'replication', a.rolreplication, 'bypassrls', a.rolbypassrls, 'connection_limit', \
             a.rolconnlimit, 'valid_until', a.rolvaliduntil, 'password', a.rolpassword), {}, {} FROM pg_authid a",
            x("a.xmin"),
            mine("a.xmin")
        )
    } else {
        "SELECT 'role', a.oid::text, 'role ' || quote_ident(a.rolname), NULL::bigint, json_build_object('name', a.rolname, \
         'superuser', a.rolsuper, 'inherit', a.rolinherit, 'createrole', a.rolcreaterole, 'createdb', a.rolcreatedb, \
         'login', a.rolcanlogin, 'replication', a.rolreplication, 'bypassrls', a.rolbypassrls, 'connection_limit', \
         a.rolconnlimit, 'valid_until', a.rolvaliduntil), NULL::bigint, false FROM pg_roles a"
            .to_string()
    };
    parts.push(role);
    parts.push(format!(
        "SELECT 'membership', m.roleid || ':' || m.member, 'membership of ' || quote_ident(pg_get_userbyid(m.member)) || ' in ' || \
         quote_ident(pg_get_userbyid(m.roleid)), NULL, json_build_object('role', pg_get_userbyid(m.roleid), 'member', \
         pg_get_userbyid(m.member), 'admin', m.admin_option), {}, {} FROM pg_auth_members m",
        x("m.xmin"),
        mine("m.xmin")
    ));
    parts.push(format!(
        "SELECT 'setting', s.setdatabase || ':' || s.setrole, CASE WHEN s.setrole = 0 AND s.setdatabase = 0 THEN \
         'settings of every role (ALTER ROLE ALL)' WHEN s.setrole = 0 THEN 'settings of database ' || quote_ident(d.datname) WHEN s.setdatabase = 0 THEN 'settings of role ' || quote_ident(pg_get_userbyid(s.setrole)) \
         ELSE 'settings of role ' || quote_ident(pg_get_userbyid(s.setrole)) || ' in database ' || quote_ident(d.datname) END, \
         nullif(s.setdatabase, 0)::bigint, json_build_object('database', d.datname, 'role', CASE WHEN s.setrole <> 0 THEN \
         pg_get_userbyid(s.setrole) END, 'config', s.setconfig), {}, {} FROM pg_db_role_setting s LEFT JOIN pg_database d ON \
         d.oid = s.setdatabase",
        x("s.xmin"),
        mine("s.xmin")
    ));
    parts.push(format!(
        "SELECT 'database', d.oid::text, 'database ' || quote_ident(d.datname), d.oid::bigint, json_build_object('name', \
         d.datname, 'owner', pg_get_userbyid(d.datdba), 'connection_limit', d.datconnlimit, 'allow_connections', \
         d.datallowconn, 'is_template', d.datistemplate, 'privileges', coalesce(d.datacl, acldefault('d', d.datdba))::text[], \
         'tablespace', (SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace)), {}, {} FROM pg_database d",
        x("d.xmin"),
        mine("d.xmin")
    ));
    parts.push(format!(
        "SELECT 'tablespace', t.oid::text, 'tablespace ' || quote_ident(t.spcname), NULL, json_build_object('name', t.spcname, \
         'owner', pg_get_userbyid(t.spcowner), 'privileges', coalesce(t.spcacl, acldefault('t', t.spcowner))::text[], \
         'options', t.spcoptions, 'location', pg_tablespace_location(t.oid)), {}, {} FROM pg_tablespace t",
        x("t.xmin"),
        mine("t.xmin")
    ));
    parts.push(format!(
        "SELECT 'comment', c.classoid::regclass::text || ':' || c.objoid, 'comment on ' || CASE c.classoid WHEN \
         'pg_database'::regclass THEN 'database ' || quote_ident((SELECT datname FROM pg_database WHERE oid = c.objoid)) \
         WHEN 'pg_authid'::regclass THEN 'role ' || quote_ident(pg_get_userbyid(c.objoid)) WHEN 'pg_tablespace'::regclass \
         THEN 'tablespace ' || quote_ident((SELECT spcname FROM pg_tablespace WHERE oid = c.objoid)) ELSE c.classoid::regclass::text \
         || ' ' || c.objoid END, CASE WHEN c.classoid = 'pg_database'::regclass THEN c.objoid::bigint END, \
         to_json(c.description), {}, {} FROM pg_shdescription c",
        x("c.xmin"),
        mine("c.xmin")
    ));
    parts.push(format!(
        "SELECT 'security label', l.classoid::regclass::text || ':' || l.objoid || ':' || l.provider, 'security label of ' || \
         l.classoid::regclass::text || ' ' || l.objoid, NULL, to_json(l.label), {}, {} FROM pg_shseclabel l",
        x("l.xmin"),
        mine("l.xmin")
    ));
    if readable.subscriptions {
        parts.push(format!(
        "SELECT 'subscription', s.oid::text, 'subscription ' || quote_ident(s.subname), s.subdbid::bigint, json_build_object('name', \
         s.subname, 'enabled', s.subenabled), {}, {} FROM pg_subscription s",
        x("s.xmin"),
        mine("s.xmin")
    ));
    }
    if major >= 15 {
        parts.push(format!(
            "SELECT 'parameter privileges', p.parname, 'privileges on parameter ' || p.parname, NULL, json_build_object('name', \
             p.parname, 'privileges', coalesce(p.paracl, acldefault('p', 10))::text[], 'default', acldefault('p', 10)::text[]), {}, {} FROM pg_parameter_acl p \
             WHERE coalesce(p.paracl, acldefault('p', 10)) <> acldefault('p', 10)",
            x("p.xmin"),
            mine("p.xmin")
        ));
    }
    if readable.origins {
        parts.push(format!(
            "SELECT 'replication origin', o.roname, 'replication origin ' || o.roname, NULL, to_json(o.roname), {}, {} FROM \
             pg_replication_origin o",
            x("o.xmin"),
            mine("o.xmin")
        ));
    }
    if readable.auto_conf {
        parts.push(
            "SELECT 'ALTER SYSTEM', f.name, 'ALTER SYSTEM ' || f.name || ' (postgresql.auto.conf)', NULL, \
             json_build_object('name', f.name, 'setting', f.setting), NULL, false FROM pg_file_settings f WHERE \
             f.sourcefile ~ '(^|/)postgresql\\.auto\\.conf$' AND f.name IS NOT NULL"
                .to_string(),
        );
    }
    format!(
        "WITH nx AS (SELECT {} AS n) \
         SELECT json_build_object('next', (SELECT n FROM nx), 'items', coalesce(json_agg(json_build_object('kind', kind, \
         'key', key, 'name', name, 'db', db, 'value', value, 'xid', xid, 'mine', mine)), '[]')) FROM ({}) i(kind, key, name, \
         db, value, xid, mine)",
        xid::SNAPSHOT_XMAX,
        parts.join(" UNION ALL ")
    )
}

/// What the session may read: `pg_authid` (superuser), `pg_file_settings`
/// (`pg_read_all_settings`), `pg_replication_origin`, `pg_subscription` whole (others may read
/// some of its columns, not `xmin`).
#[derive(Debug, Clone, Deserialize)]
struct Readable {
    authid: bool,
    auto_conf: bool,
    origins: bool,
    subscriptions: bool,
}

#[derive(Debug, Deserialize)]
struct Raw {
    next: i64,
    items: Vec<Item>,
}

/// Watches the cluster across a run's migrations: what each changed, and at the end, undoes it.
pub struct Watch {
    readable: Readable,
    major: u32,
    /// The rehearsal copy (its own rows are its own) and the pristine copy.
    copy: i64,
    pristine: i64,
    /// Before the migration being run.
    before: Snapshot,
    /// A second session on the copy: what others see while the migrating transaction is open.
    observer: Option<Session>,
    copy_name: String,
    /// Every change, in order, across the run.
    pub changes: Vec<Change>,
}

fn run(session: &mut Session, sql: &str) -> Result<String> {
    match session.run(sql) {
        Ok(out) => Ok(out),
        Err(Failure::Sql(msg)) => {
            crate::proc::check_interrupt()?;
            anyhow::bail!("ERROR: {msg}")
        }
        Err(Failure::Dead(e)) => Err(e),
        Err(Failure::NotSent) => anyhow::bail!("psql exited before the statement was sent"),
    }
}

impl Watch {
    pub fn new(server: &Server, session: &mut Session, copy: &str, pristine: &str) -> Result<Watch> {
        let out = run(
            session,
            &format!(
                "SELECT json_build_object('authid', has_table_privilege('pg_catalog.pg_authid', 'SELECT'), \
                 'auto_conf', has_function_privilege('pg_catalog.pg_show_all_file_settings()', 'EXECUTE'), \
                 'origins', has_table_privilege('pg_catalog.pg_replication_origin', 'SELECT'), \
                 'subscriptions', has_table_privilege('pg_catalog.pg_subscription', 'SELECT'), \
                 'copy', (SELECT oid::bigint FROM pg_database WHERE datname = {}), \
                 'pristine', (SELECT oid::bigint FROM pg_database WHERE datname = {}))",
                literal(copy),
                literal(pristine)
            ),
        )?;
        let v: Value = serde_json::from_str(out.trim()).context("reading what the session may read")?;
        let readable: Readable = serde_json::from_value(v.clone()).context("reading what the session may read")?;
        let mut w = Watch {
            readable,
            major: server.major,
            copy: v["copy"].as_i64().unwrap_or(-1),
            pristine: v["pristine"].as_i64().unwrap_or(-1),
            before: Snapshot::default(),
            observer: None,
            copy_name: copy.to_string(),
            changes: Vec::new(),
        };
        w.before = w.snapshot(session)?;
        Ok(w)
    }

    /// Whether `ALTER SYSTEM` can be watched (`pg_file_settings` is readable).
    pub fn sees_auto_conf(&self) -> bool {
        self.readable.auto_conf
    }

    fn snapshot(&self, session: &mut Session) -> Result<Snapshot> {
        let out = run(session, &query(&self.readable, self.major)).context("reading the cluster's shared catalogs")?;
        let raw: Raw = serde_json::from_str(out.trim()).context("reading the cluster's shared catalogs")?;
        let items = raw.items.into_iter().map(|i| ((i.kind.clone(), i.key.clone()), i)).collect();
        Ok(Snapshot { items, next_xid: raw.next })
    }

    /// Before a migration (outside any transaction).
    pub fn begin(&mut self, session: &mut Session) -> Result<()> {
        self.before = self.snapshot(session)?;
        Ok(())
    }

    /// The copy's own rows (they go with it), and rows of a database no longer there (dropped
    /// by someone else: a migration's DROP DATABASE is refused).
    fn own(&self, item: &Item, now: &BTreeMap<(String, String), Item>) -> bool {
        item.db.is_some_and(|d| d == self.copy || !now.contains_key(&("database".to_string(), d.to_string())))
    }

    /// Inside the migrating transaction, after its last statement: its changes, exactly — the
    /// rows it wrote (in progress, visible only to it), and the rows it deleted (still seen by
    /// a second session, before and after, and there before the migration).
    pub fn in_transaction(&mut self, server: &Server, session: &mut Session, file: &str) -> Result<()> {
        if self.observer.is_none() {
            self.observer = Some(Session::open(server.psql_session(&self.copy_name)?)?);
        }
        let q = query(&self.readable, self.major);
        let observer = self.observer.as_mut().expect("just opened");
        let seen_before = run(observer, &q)?;
        // (A savepoint so that a failed look cannot abort the migration's transaction.)
        let ours = run(session, &format!("SAVEPOINT xtask_cluster; {q}"));
        if ours.is_err() {
            let _ = run(session, "ROLLBACK TO SAVEPOINT xtask_cluster");
        }
        let ours = ours?;
        let _ = run(session, "RELEASE SAVEPOINT xtask_cluster");
        let seen_after = run(observer, &q)?;
        let parse = |s: &str| -> Result<BTreeMap<(String, String), Item>> {
            let raw: Raw = serde_json::from_str(s.trim()).context("reading the cluster's shared catalogs")?;
            Ok(raw.items.into_iter().map(|i| ((i.kind.clone(), i.key.clone()), i)).collect())
        };
        let (others1, mine, others2) = (parse(&seen_before)?, parse(&ours)?, parse(&seen_after)?);
        let mut changes = Vec::new();
        for (k, item) in &mine {
            if !item.mine || self.own(item, &mine) {
                continue;
            }
            let old = others2.get(k).or_else(|| others1.get(k));
            if old.is_some_and(|o| o.value == item.value) {
                continue;
            }
            changes.push(change(file, item, old, Some(item)));
        }
        for (k, item) in &others1 {
            if mine.contains_key(k) || !others2.contains_key(k) || !self.before.items.contains_key(k) {
                continue;
            }
            if self.own(item, &others2) {
                continue;
            }
            changes.push(change(file, item, Some(item), None));
        }
        self.changes.extend(changes);
        Ok(())
    }

    /// After a migration that ran (in part) outside one transaction: the changes within its
    /// window of transaction ids (see the module header for whose they are taken to be).
    pub fn after_window(&mut self, session: &mut Session, file: &str, statements: &[Statement]) -> Result<()> {
        let after = self.snapshot(session)?;
        let created = created_names(statements);
        let (from, to) = (self.before.next_xid, after.next_xid);
        let in_window = |i: &Item| i.xid.map_or(true, |x| x >= from && x < to);
        // Only a DO or CALL can remove a row here (besides ALTER SYSTEM RESET): a removal has no
        // transaction id to check, so without one none is taken for the migration's.
        let may_remove = statements.iter().any(|s| matches!(s.keywords(1).as_str(), "DO" | "CALL"));
        // Statements that only run at top level can change only what they name: a database or
        // tablespace they create, the setting ALTER SYSTEM sets. Anything else (a DO, several
        // statements around a COMMIT of the file's own) may change anything.
        let broad = statements.iter().any(|s| !super::statements::refuses_transaction(s));
        let altered = altered_settings(statements);
        let mut changes = Vec::new();
        let keys: BTreeSet<&(String, String)> = self.before.items.keys().chain(after.items.keys()).collect();
        for k in keys {
            let (b, a) = (self.before.items.get(k), after.items.get(k));
            if b == a || b.zip(a).is_some_and(|(b, a)| b.value == a.value) {
                continue;
            }
            let item = a.or(b).expect("one of them");
            if self.own(item, &after.items) || (a.is_none() && !may_remove && item.kind != "ALTER SYSTEM") {
                continue;
            }
            let ours = match item.kind.as_str() {
                "database" | "tablespace" if !broad => {
                    b.is_none()
                        && a.is_some_and(|a| in_window(a) && created.iter().any(|n| a.value["name"] == n.as_str()))
                }
                "ALTER SYSTEM" if !broad => {
                    let name = a.or(b).and_then(|i| i.value["name"].as_str()).unwrap_or("").to_lowercase();
                    altered.iter().any(|n| *n == name || n == "all")
                }
                _ if !broad => false,
                // The database this migration created (named in its text), or the pristine one.
                "database" => match (b, a) {
                    (None, Some(a)) => {
                        in_window(a) && created.contains(&a.value["name"].as_str().unwrap_or("").to_string())
                    }
                    (_, Some(a)) => item.db == Some(self.pristine) && in_window(a),
                    _ => false,
                },
                "comment" if item.db.is_some() => item.db == Some(self.pristine) && a.map_or(true, in_window),
                "subscription" => false,
                _ => a.map_or(true, in_window),
            };
            if ours {
                changes.push(change(file, item, b, a));
            }
        }
        self.changes.extend(changes);
        self.before = after;
        Ok(())
    }

    /// Undoes every change recorded, most recent first; each change says whether it was.
    /// `copy` is the rehearsal copy (where a role to be dropped may own objects or hold grants).
    pub fn undo(&mut self, server: &Server, copy: &str) -> Result<()> {
        let outcomes = undo_all(server, copy, &self.changes)?;
        for (c, o) in self.changes.iter_mut().zip(outcomes) {
            c.undo = o;
        }
        Ok(())
    }

    /// After the gate's fresh build (every migration again, by the app's migrator, on a database
    /// of its own, dropped since): what it changed again of what the rehearsal changed, by
    /// name, is undone too.
    pub fn undo_again(&mut self, server: &Server, copy: &str) -> Result<()> {
        let mut session = Session::open(server.psql_session(&server.maintenance_db)?)?;
        let now = self.snapshot(&mut session)?;
        let by_name: BTreeMap<(&str, &str), &Item> =
            now.items.values().map(|i| ((i.kind.as_str(), i.name.as_str()), i)).collect();
        let mut seen = BTreeSet::new();
        let mut again = Vec::new();
        for (i, c) in self.changes.iter().enumerate() {
            let current = by_name.get(&(c.kind.as_str(), c.name.as_str())).map(|i| i.value.clone());
            if current == c.before || !seen.insert((c.kind.clone(), c.name.clone())) {
                continue;
            }
            again.push((i, Change { before: c.before.clone(), after: current, ..c.clone() }));
        }
        let changes: Vec<Change> = again.iter().map(|(_, c)| c.clone()).collect();
        let outcomes = undo_all(server, copy, &changes)?;
        for ((i, _), note) in again.into_iter().zip(outcomes) {
            let c = &mut self.changes[i];
            c.undo = format!("{}; the gate's fresh build did it again: {note}", c.undo);
        }
        Ok(())
    }

    /// Records on every change that it is not undone, and why.
    pub fn leave(&mut self, why: &str) {
        for c in &mut self.changes {
            c.undo = why.to_string();
        }
    }

    /// Closes the second session (the copy is renamed or dropped next: nothing may be
    /// connected to it).
    pub fn close(&mut self) {
        self.observer = None;
    }

    /// The changes `file` made.
    pub fn of(&self, file: &str) -> Vec<Change> {
        self.changes.iter().filter(|c| c.file == file).cloned().collect()
    }
}

/// Undoes `changes`, each as [`undo_one`]; what each came to. What hangs on a role the
/// migration created goes before the role, and a role it removed comes back before what hangs
/// on it; most recent first within each step.
fn undo_all(server: &Server, copy: &str, changes: &[Change]) -> Result<Vec<String>> {
    let rank = |c: &Change| match (c.kind.as_str(), c.what) {
        ("role", "removed") => 3,
        (_, "removed") => 4,
        ("role", _) => 1,
        ("database" | "tablespace", _) => 2,
        _ => 0,
    };
    let mut order: Vec<usize> = (0..changes.len()).rev().collect();
    order.sort_by_key(|&i| rank(&changes[i]));
    let mut out = vec![String::new(); changes.len()];
    // A cleanup: it runs to the end even after Ctrl-C (the programs it starts come after the
    // signal and do not get it).
    for i in order {
        out[i] = outcome(undo_one(server, copy, &changes[i]));
    }
    Ok(out)
}

fn outcome(r: Result<Option<String>>) -> String {
    match r {
        Ok(None) => "undone".into(),
        Ok(Some(why)) => format!("not undone: {why}"),
        Err(e) => format!("not undone: {}", crate::error::report(&e).line.trim_start_matches("error: ")),
    }
}

fn change(file: &str, item: &Item, before: Option<&Item>, after: Option<&Item>) -> Change {
    // A password hash is a secret: the report says only whether there is one, and if it changed.
    let hash = |i: Option<&Item>| i.and_then(|i| i.value.get("password")).and_then(Value::as_str).map(str::to_string);
    let (old, new) = (hash(before), hash(after));
    let shown = |i: Option<&Item>, mine: &Option<String>| {
        i.map(|i| {
            let mut v = i.value.clone();
            if let Some(o) = v.as_object_mut().filter(|o| o.contains_key("password")) {
                let text = match mine {
                    None => Value::Null,
                    Some(h) if old.is_some() && Some(h) != old.as_ref() => "set (another)".into(),
                    Some(_) => "set".into(),
                };
                o.insert("password".into(), text);
            }
            v
        })
    };
    let (before_v, after_v) = (shown(before, &old), shown(after, &new));
    Change {
        password: old.clone(),
        file: file.to_string(),
        kind: item.kind.clone(),
        name: item.name.clone(),
        what: match (before, after) {
            (None, _) => "created",
            (_, None) => "removed",
            _ => "changed",
        },
        before: before_v,
        after: after_v,
        undo: String::new(),
    }
}

/// The names `CREATE DATABASE` and `CREATE TABLESPACE` statements of the migration give, as the
/// server stores them (unquoted names folded to lower case).
fn created_names(statements: &[Statement]) -> Vec<String> {
    statements
        .iter()
        .filter(|s| matches!(s.keywords(2).as_str(), "CREATE DATABASE" | "CREATE TABLESPACE"))
        .filter_map(|s| {
            let words = super::statements::words(&crate::sql::strip_comments(&s.sql));
            words.get(2).map(|w| identifier(w))
        })
        .collect()
}

/// The settings `ALTER SYSTEM SET|RESET name` statements name (`all` for `RESET ALL`).
fn altered_settings(statements: &[Statement]) -> Vec<String> {
    statements
        .iter()
        .filter(|s| s.keywords(2) == "ALTER SYSTEM")
        .filter_map(|s| super::statements::words(&crate::sql::strip_comments(&s.sql)).get(3).map(|w| identifier(w)))
        .collect()
}

/// An identifier as the server stores it.
fn identifier(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(q) => q.replace("\"\"", "\""),
        None => word.to_lowercase(),
    }
}

/// GUCs whose stored value is a list of quoted elements: written back as SQL, not a literal.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

fn setting_value(name: &str, value: &str) -> String {
    if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) && !value.is_empty() {
        value.to_string()
    } else {
        literal(value)
    }
}

fn s<'a>(v: &'a Option<Value>, field: &str) -> Option<&'a str> {
    v.as_ref().and_then(|v| v[field].as_str())
}

/// The privileges an ACL grants: (grantee or `PUBLIC`, letter, with grant option).
fn acl(v: &Option<Value>) -> BTreeSet<(String, char, bool)> {
    let mut out = BTreeSet::new();
    for item in v.as_ref().and_then(|v| v["privileges"].as_array()).into_iter().flatten() {
        let Some(text) = item.as_str() else { continue };
        let Some((grantee, rest)) = text.rsplit_once('/').map(|(g, _)| g).and_then(|g| g.rsplit_once('=')) else {
            continue;
        };
        let grantee = if grantee.is_empty() { "PUBLIC".to_string() } else { ident(&identifier(grantee)) };
        let letters: Vec<char> = rest.chars().collect();
        for (i, c) in letters.iter().enumerate() {
            if *c != '*' {
                out.insert((grantee.clone(), *c, letters.get(i + 1) == Some(&'*')));
            }
        }
    }
    out
}

/// `GRANT`/`REVOKE` statements that take privileges `after` back to `before` on `object`
/// (`DATABASE x`, `PARAMETER p`, `TABLESPACE t`).
fn acl_undo(object: &str, before: &Option<Value>, after: &Option<Value>, names: &[(char, &str)]) -> Vec<String> {
    // No row (a parameter nobody was granted anything on) has the default privileges.
    let default = |other: &Option<Value>| other.as_ref().map(|v| serde_json::json!({ "privileges": v["default"] }));
    let before = if before.is_none() { &default(after) } else { before };
    let after = if after.is_none() { &default(before) } else { after };
    let (b, a) = (acl(before), acl(after));
    let name = |c: char| names.iter().find(|(l, _)| *l == c).map(|(_, n)| *n);
    let mut out = Vec::new();
    for (grantee, c, _) in a.difference(&b) {
        if let Some(p) = name(*c) {
            out.push(format!("REVOKE {p} ON {object} FROM {grantee} CASCADE"));
        }
    }
    for (grantee, c, option) in b.difference(&a) {
        if let Some(p) = name(*c) {
            let with = if *option { " WITH GRANT OPTION" } else { "" };
            out.push(format!("GRANT {p} ON {object} TO {grantee}{with}"));
        }
    }
    out
}

const DATABASE_PRIVILEGES: &[(char, &str)] = &[('C', "CREATE"), ('c', "CONNECT"), ('T', "TEMPORARY")];
const PARAMETER_PRIVILEGES: &[(char, &str)] = &[('s', "SET"), ('A', "ALTER SYSTEM")];
const TABLESPACE_PRIVILEGES: &[(char, &str)] = &[('C', "CREATE")];

fn role_options(v: &Value, password: Option<&str>) -> String {
    let flag = |f: &str, yes: &str| {
        if v[f].as_bool().unwrap_or(false) {
            yes.to_string()
        } else {
            format!("NO{yes}")
        }
    };
    let mut o = vec![
        flag("superuser", "SUPERUSER"),
        flag("inherit", "INHERIT"),
        flag("createrole", "CREATEROLE"),
        flag("createdb", "CREATEDB"),
        flag("login", "LOGIN"),
        flag("replication", "REPLICATION"),
        flag("bypassrls", "BYPASSRLS"),
        format!("CONNECTION LIMIT {}", v["connection_limit"].as_i64().unwrap_or(-1)),
        format!("VALID UNTIL {}", literal(v["valid_until"].as_str().unwrap_or("infinity"))),
    ];
    if let Some(p) = password {
        o.push(format!("PASSWORD {}", literal(p)));
    }
    o.join(" ")
}

/// The statements that undo `c`, run on the maintenance database (a role's objects first
/// reassigned in the copy). `Ok(Some(why))` when it is not undone.
fn undo_one(server: &Server, copy: &str, c: &Change) -> Result<Option<String>> {
    let maint = server.maintenance_db.clone();
    let (b, a) = (&c.before, &c.after);
    let mut stmts: Vec<String> = Vec::new();
    match c.kind.as_str() {
        "role" => match (s(b, "name"), s(a, "name")) {
            (None, Some(name)) => {
                let r = ident(name);
                server.exec(copy, &format!("REASSIGN OWNED BY {r} TO CURRENT_USER"))?;
                server.exec(copy, &format!("DROP OWNED BY {r}"))?;
                stmts.push(format!("DROP ROLE {r}"));
            }
            (Some(name), None) => stmts.push(format!(
                "CREATE ROLE {} WITH {}",
                ident(name),
                role_options(b.as_ref().expect("before"), c.password.as_deref())
            )),
            (Some(old), Some(new)) => {
                if old != new {
                    stmts.push(format!("ALTER ROLE {} RENAME TO {}", ident(new), ident(old)));
                }
                let password = c.password.as_deref();
                stmts.push(format!(
                    "ALTER ROLE {} WITH {}",
                    ident(old),
                    role_options(b.as_ref().expect("before"), password)
                ));
                if password.is_none() && b.as_ref().is_some_and(|b| b.get("password").is_some()) {
                    stmts.push(format!("ALTER ROLE {} WITH PASSWORD NULL", ident(old)));
                }
            }
            (None, None) => {}
        },
        "membership" => {
            let v = a.as_ref().or(b.as_ref()).expect("a side");
            let (role, member) = (ident(v["role"].as_str().unwrap_or("")), ident(v["member"].as_str().unwrap_or("")));
            match (b, a) {
                (None, Some(_)) => stmts.push(format!("REVOKE {role} FROM {member}")),
                (Some(b), None) => stmts.push(format!(
                    "GRANT {role} TO {member}{}",
                    if b["admin"].as_bool().unwrap_or(false) { " WITH ADMIN OPTION" } else { "" }
                )),
                (Some(b), Some(_)) => stmts.push(if b["admin"].as_bool().unwrap_or(false) {
                    format!("GRANT {role} TO {member} WITH ADMIN OPTION")
                } else {
                    format!("REVOKE ADMIN OPTION FOR {role} FROM {member}")
                }),
                (None, None) => {}
            }
        }
        "setting" => {
            let v = a.as_ref().or(b.as_ref()).expect("a side");
            let target = match (v["role"].as_str(), v["database"].as_str()) {
                (Some(r), Some(d)) => format!("ROLE {} IN DATABASE {}", ident(r), ident(d)),
                (Some(r), None) => format!("ROLE {}", ident(r)),
                (None, Some(d)) => format!("DATABASE {}", ident(d)),
                (None, None) => "ROLE ALL".to_string(),
            };
            stmts.push(format!("ALTER {target} RESET ALL"));
            for entry in b.as_ref().and_then(|b| b["config"].as_array()).into_iter().flatten() {
                if let Some((name, value)) = entry.as_str().and_then(|e| e.split_once('=')) {
                    stmts.push(format!("ALTER {target} SET {} = {}", ident(name), setting_value(name, value)));
                }
            }
        }
        "database" => match (s(b, "name"), s(a, "name")) {
            (None, Some(name)) => stmts.push(format!("DROP DATABASE {}", ident(name))),
            (Some(old), Some(new)) => {
                let bv = b.as_ref().unwrap();
                let d = ident(old);
                if old != new {
                    stmts.push(format!("ALTER DATABASE {} RENAME TO {d}", ident(new)));
                }
                stmts.push(format!("ALTER DATABASE {d} OWNER TO {}", ident(bv["owner"].as_str().unwrap_or(""))));
                stmts.push(format!(
                    "ALTER DATABASE {d} WITH CONNECTION LIMIT {} ALLOW_CONNECTIONS {} IS_TEMPLATE {}",
                    bv["connection_limit"].as_i64().unwrap_or(-1),
                    bv["allow_connections"].as_bool().unwrap_or(true),
                    bv["is_template"].as_bool().unwrap_or(false)
                ));
                stmts.extend(acl_undo(&format!("DATABASE {d}"), b, a, DATABASE_PRIVILEGES));
            }
            _ => return Ok(Some("a database cannot be brought back".into())),
        },
        "tablespace" => match (s(b, "name"), s(a, "name")) {
            (None, Some(name)) => stmts.push(format!("DROP TABLESPACE {}", ident(name))),
            (Some(old), Some(new)) => {
                let t = ident(old);
                if old != new {
                    stmts.push(format!("ALTER TABLESPACE {} RENAME TO {t}", ident(new)));
                }
                stmts.push(format!("ALTER TABLESPACE {t} OWNER TO {}", ident(s(b, "owner").unwrap_or(""))));
                stmts.extend(acl_undo(&format!("TABLESPACE {t}"), b, a, TABLESPACE_PRIVILEGES));
            }
            _ => return Ok(Some("a tablespace's files cannot be brought back".into())),
        },
        "parameter privileges" => {
            let p = s(a, "name").or(s(b, "name")).unwrap_or("");
            stmts.extend(acl_undo(&format!("PARAMETER {p}"), b, a, PARAMETER_PRIVILEGES));
        }
        "comment" => {
            let object = c.name.trim_start_matches("comment on ");
            let text = b.as_ref().and_then(Value::as_str).map_or("NULL".to_string(), literal);
            if !["database ", "role ", "tablespace "].iter().any(|p| object.starts_with(p)) {
                return Ok(Some(format!("a comment on {object}")));
            }
            stmts.push(format!("COMMENT ON {object} IS {text}"));
        }
        "ALTER SYSTEM" => {
            let name = s(a, "name").or(s(b, "name")).unwrap_or("");
            stmts.push(match s(b, "setting") {
                Some(v) => format!("ALTER SYSTEM SET {} = {}", ident(name), setting_value(name, v)),
                None => format!("ALTER SYSTEM RESET {}", ident(name)),
            });
            // The migration (or a later one) may have reloaded it: the server reads the file
            // as it was again, or it goes on with the migration's value.
            stmts.push("SELECT pg_reload_conf()".into());
        }
        "replication origin" => match (b, a) {
            (None, Some(v)) => {
                stmts.push(format!("SELECT pg_replication_origin_drop({})", literal(v.as_str().unwrap_or(""))))
            }
            _ => return Ok(Some("a replication origin's progress cannot be brought back".into())),
        },
        other => return Ok(Some(format!("this tool does not undo a {other}"))),
    }
    for stmt in stmts {
        // (A password hash stays out of the message.)
        let shown = stmt.split(" PASSWORD ").next().unwrap_or_default().to_string();
        server.exec(&maint, &stmt).with_context(|| format!("undoing: {shown}"))?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_taken_back_to_what_they_were() {
        let v = |items: &[&str]| Some(serde_json::json!({ "privileges": items }));
        let undo = acl_undo(
            "DATABASE d",
            &v(&["=Tc/o", "o=CTc/o"]),
            &v(&["=Tc/o", "o=CTc/o", "\"Web User\"=c*/o"]),
            DATABASE_PRIVILEGES,
        );
        assert_eq!(undo, ["REVOKE CONNECT ON DATABASE d FROM \"Web User\" CASCADE"]);
        let undo = acl_undo("DATABASE d", &v(&["=Tc/o", "o=CTc/o"]), &v(&["o=CTc/o"]), DATABASE_PRIVILEGES);
        assert_eq!(undo, ["GRANT TEMPORARY ON DATABASE d TO PUBLIC", "GRANT CONNECT ON DATABASE d TO PUBLIC"]);
        let undo = acl_undo("PARAMETER work_mem", &v(&[]), &v(&["r=sA/postgres"]), PARAMETER_PRIVILEGES);
        assert_eq!(undo.len(), 2, "{undo:?}");
        // A parameter without a row had the default privileges: the owner's stay.
        let granted = Some(serde_json::json!({
            "privileges": ["postgres=sA/postgres", "r=s/postgres"], "default": ["postgres=sA/postgres"]
        }));
        assert_eq!(
            acl_undo("PARAMETER p", &None, &granted, PARAMETER_PRIVILEGES),
            ["REVOKE SET ON PARAMETER p FROM \"r\" CASCADE"]
        );
    }

    #[test]
    fn list_settings_are_written_back_as_lists() {
        assert_eq!(setting_value("search_path", "\"$user\", public"), "\"$user\", public");
        assert_eq!(setting_value("work_mem", "64MB"), "'64MB'");
        assert_eq!(identifier("\"My\"\"Db\""), "My\"Db");
        assert_eq!(identifier("Scratch"), "scratch");
    }
}
