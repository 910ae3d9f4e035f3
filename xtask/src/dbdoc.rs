//! `docs/database.md`: a Markdown reference of the database schema, generated from a database
//! built fresh from every migration (`cargo xtask db generate`) and checked in CI, so that it
//! cannot go stale.
//!
//! The whole catalog is read in one query: one JSON array per object kind, each ordered in SQL
//! (byte order, `COLLATE "C"`), so the output depends on nothing but the schema — no dates, no
//! OIDs. (Type and function names are printed by PostgreSQL as the default `search_path` sees
//! them: `citext`, but `crm.email_address`.)
//!
//! Covered: every schema but PostgreSQL's own, without objects that belong to an extension and
//! without the migration ledger. Tables (columns, keys, constraints, indexes, triggers, row-level
//! security, partitions), enums, domains, views, functions and procedures, and sequences that are
//! not owned by a column.

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::pg::Server;

/// The migration ledger (sqlx): not part of the documented schema.
const LEDGER: (&str, &str) = ("public", "_sqlx_migrations");

/// Renders the Markdown reference of database `db` (built fresh from every migration).
/// `migrations` is the number of migration files applied. Output is deterministic: same schema → same bytes.
pub fn render(server: &Server, db: &str, migrations: usize) -> Result<String> {
    let catalog: Catalog =
        server.query_one(db, &catalog_sql()).with_context(|| format!("reading the schema of `{db}`"))?;
    Ok(markdown(&catalog, migrations))
}

// ---------------------------------------------------------------------------------------------
// The catalog, as read.

#[derive(Debug, Deserialize)]
struct Catalog {
    schemas: Vec<Schema>,
    extensions: Vec<Extension>,
    tables: Vec<Table>,
    enums: Vec<Enum>,
    domains: Vec<Domain>,
    views: Vec<View>,
    functions: Vec<Function>,
    sequences: Vec<Sequence>,
}

#[derive(Debug, Deserialize)]
struct Schema {
    name: String,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Extension {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct Table {
    schema: String,
    name: String,
    comment: Option<String>,
    unlogged: bool,
    /// `pg_get_partkeydef`, for a partitioned table.
    partition_key: Option<String>,
    rls: bool,
    rls_forced: bool,
    columns: Vec<Column>,
    constraints: Vec<Constraint>,
    indexes: Vec<Index>,
    triggers: Vec<Trigger>,
    policies: Vec<Policy>,
    /// Every partition below this table, at any depth.
    partitions: Vec<Partition>,
}

#[derive(Debug, Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    nullable: bool,
    /// The default, or the generation expression of a generated column.
    expr: Option<String>,
    /// `pg_attribute.attidentity`: `a` (always), `d` (by default) or empty.
    identity: String,
    /// `pg_attribute.attgenerated`: `s` (stored), `v` (virtual) or empty.
    generated: String,
    /// Set when it differs from the type's.
    collation: Option<String>,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Constraint {
    name: String,
    /// `pg_constraint.contype`: p, f, u, c, x.
    kind: String,
    def: String,
    columns: Vec<String>,
    ref_table: Option<String>,
    ref_columns: Vec<String>,
    on_delete: String,
    on_update: String,
    match_full: bool,
    deferrable: bool,
    deferred: bool,
    validated: bool,
}

#[derive(Debug, Deserialize)]
struct Index {
    name: String,
    def: String,
    /// The quoted names `pg_get_indexdef` prints.
    name_q: String,
    table_q: String,
    primary: bool,
    unique: bool,
    partial: bool,
    valid: bool,
}

#[derive(Debug, Deserialize)]
struct Trigger {
    name: String,
    /// `pg_trigger.tgtype`.
    tgtype: i32,
    update_columns: Vec<String>,
    /// `pg_trigger.tgenabled`: O, D, R, A.
    enabled: String,
    constraint_trigger: bool,
    /// The function call, as `pg_get_triggerdef` prints it.
    function: String,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Policy {
    name: String,
    /// `pg_policy.polcmd`: r, a, w, d, *.
    command: String,
    permissive: bool,
    roles: Vec<String>,
    using_expr: Option<String>,
    check_expr: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Partition {
    name: String,
    parent: String,
    bound: Option<String>,
    partition_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Enum {
    schema: String,
    name: String,
    values: Vec<String>,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Domain {
    schema: String,
    name: String,
    base_type: String,
    not_null: bool,
    default: Option<String>,
    checks: Vec<NamedDef>,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedDef {
    name: String,
    def: String,
}

#[derive(Debug, Deserialize)]
struct View {
    schema: String,
    name: String,
    materialized: bool,
    comment: Option<String>,
    columns: Vec<ViewColumn>,
}

#[derive(Debug, Deserialize)]
struct ViewColumn {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Function {
    schema: String,
    name: String,
    /// `pg_proc.prokind`: f, p, a, w.
    kind: String,
    args: String,
    result: Option<String>,
    language: String,
    /// `pg_proc.provolatile`: i, s, v.
    volatility: String,
    security_definer: bool,
    comment: Option<String>,
    /// `schema.table`: `trigger` for each trigger that calls it.
    triggers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Sequence {
    schema: String,
    name: String,
    #[serde(rename = "type")]
    type_: String,
    start: i64,
    increment: i64,
    cycle: bool,
    comment: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The query.

/// User schemas, for a `pg_namespace n`.
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'";

/// Not a member of an extension: `catalog` is the object's catalog, `oid` its OID expression.
fn not_in_extension(catalog: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass AND e.objid = {oid} \
         AND e.deptype = 'e')"
    )
}

/// A JSON array of the column names of `attnums` (an int2[] expression) of relation `rel`, in order.
fn column_names(rel: &str, attnums: &str) -> String {
    format!(
        "coalesce((SELECT json_agg(a.attname ORDER BY u.ord) FROM unnest({attnums}) WITH ORDINALITY u(num, ord) \
         JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = u.num), '[]'::json)"
    )
}

/// One query: a row of JSON arrays, one per object kind, each in a deterministic order.
fn catalog_sql() -> String {
    let user_schema = USER_SCHEMA;
    let (ledger_schema, ledger_table) = LEDGER;
    let rel_not_ext = not_in_extension("pg_class", "c.oid");
    let type_not_ext = not_in_extension("pg_type", "t.oid");

    let schemas = format!(
        "SELECT n.nspname AS name, obj_description(n.oid, 'pg_namespace') AS comment FROM pg_namespace n \
         WHERE {user_schema} AND {}",
        not_in_extension("pg_namespace", "n.oid")
    );
    let extensions =
        "SELECT x.extname AS name, x.extversion AS version FROM pg_extension x WHERE x.extname <> 'plpgsql'"
            .to_string();

    let columns = "coalesce((SELECT json_agg(x ORDER BY x.num) FROM (\
         SELECT a.attnum AS num, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, \
         NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS expr, a.attidentity AS identity, \
         a.attgenerated AS generated, \
         CASE WHEN a.attcollation <> ty.typcollation THEN co.collname END AS collation, \
         col_description(a.attrelid, a.attnum) AS comment \
         FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         LEFT JOIN pg_collation co ON co.oid = a.attcollation \
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) x), '[]'::json)";
    let constraints = format!(
        "coalesce((SELECT json_agg(x ORDER BY x.name COLLATE \"C\") FROM (\
         SELECT k.conname AS name, k.contype AS kind, pg_get_constraintdef(k.oid) AS def, \
         {} AS columns, rn.nspname || '.' || r.relname AS ref_table, {} AS ref_columns, \
         k.confdeltype AS on_delete, k.confupdtype AS on_update, k.confmatchtype = 'f' AS match_full, \
         k.condeferrable AS deferrable, k.condeferred AS deferred, k.convalidated AS validated \
         FROM pg_constraint k LEFT JOIN pg_class r ON r.oid = k.confrelid \
         LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         WHERE k.conrelid = c.oid AND k.contype IN ('p', 'f', 'u', 'c', 'x')) x), '[]'::json)",
        column_names("k.conrelid", "k.conkey"),
        column_names("k.confrelid", "k.confkey"),
    );
    let indexes = "coalesce((SELECT json_agg(x ORDER BY x.name COLLATE \"C\") FROM (\
         SELECT i.relname AS name, pg_get_indexdef(ix.indexrelid) AS def, quote_ident(i.relname) AS name_q, \
         quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table_q, ix.indisprimary AS primary, \
         ix.indisunique AS unique, ix.indpred IS NOT NULL AS partial, ix.indisvalid AS valid \
         FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid WHERE ix.indrelid = c.oid) x), '[]'::json)";
    let triggers = format!(
        "coalesce((SELECT json_agg(x ORDER BY x.name COLLATE \"C\") FROM (\
         SELECT tg.tgname AS name, tg.tgtype::int AS tgtype, {} AS update_columns, tg.tgenabled AS enabled, \
         tg.tgconstraint <> 0 AS constraint_trigger, \
         (regexp_match(pg_get_triggerdef(tg.oid), '^.* EXECUTE (?:FUNCTION|PROCEDURE) (.*)$'))[1] AS function, \
         CASE WHEN tg.tgqual IS NOT NULL THEN (regexp_match(pg_get_triggerdef(tg.oid), \
         ' WHEN [(](.*)[)] EXECUTE (?:FUNCTION|PROCEDURE) '))[1] END AS condition \
         FROM pg_trigger tg WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal) x), '[]'::json)",
        column_names("tg.tgrelid", "tg.tgattr::int2[]"),
    );
    let policies = "coalesce((SELECT json_agg(x ORDER BY x.name COLLATE \"C\") FROM (\
         SELECT p.polname AS name, p.polcmd AS command, p.polpermissive AS permissive, \
         (SELECT json_agg(coalesce(ro.rolname, 'PUBLIC') ORDER BY coalesce(ro.rolname, 'PUBLIC') COLLATE \"C\") \
          FROM unnest(p.polroles) u(oid) LEFT JOIN pg_roles ro ON ro.oid = u.oid) AS roles, \
         pg_get_expr(p.polqual, p.polrelid) AS using_expr, pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr \
         FROM pg_policy p WHERE p.polrelid = c.oid) x), '[]'::json)";
    let partitions = "coalesce((SELECT json_agg(x ORDER BY x.name COLLATE \"C\") FROM (\
         SELECT pn.nspname || '.' || pc.relname AS name, qn.nspname || '.' || qc.relname AS parent, \
         pg_get_expr(pc.relpartbound, pc.oid) AS bound, \
         CASE WHEN pc.relkind = 'p' THEN pg_get_partkeydef(pc.oid) END AS partition_key \
         FROM pg_partition_tree(c.oid) pt JOIN pg_class pc ON pc.oid = pt.relid \
         JOIN pg_namespace pn ON pn.oid = pc.relnamespace JOIN pg_class qc ON qc.oid = pt.parentrelid \
         JOIN pg_namespace qn ON qn.oid = qc.relnamespace \
         WHERE c.relkind = 'p' AND pt.level > 0) x), '[]'::json)";
    let tables = format!(
        "SELECT n.nspname AS schema, c.relname AS name, obj_description(c.oid, 'pg_class') AS comment, \
         c.relpersistence = 'u' AS unlogged, \
         CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key, \
         c.relrowsecurity AS rls, c.relforcerowsecurity AS rls_forced, \
         {columns} AS columns, {constraints} AS constraints, {indexes} AS indexes, {triggers} AS triggers, \
         {policies} AS policies, {partitions} AS partitions \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {user_schema} AND {rel_not_ext} \
         AND NOT (n.nspname = '{ledger_schema}' AND c.relname = '{ledger_table}')"
    );

    let enums = format!(
        "SELECT n.nspname AS schema, t.typname AS name, obj_description(t.oid, 'pg_type') AS comment, \
         coalesce((SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), \
         '[]'::json) AS values \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE t.typtype = 'e' AND {user_schema} AND {type_not_ext}"
    );
    let domains = format!(
        "SELECT n.nspname AS schema, t.typname AS name, format_type(t.typbasetype, t.typtypmod) AS base_type, \
         t.typnotnull AS not_null, t.typdefault AS default, obj_description(t.oid, 'pg_type') AS comment, \
         coalesce((SELECT json_agg(json_build_object('name', k.conname, 'def', pg_get_constraintdef(k.oid)) \
         ORDER BY k.conname COLLATE \"C\") FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c'), \
         '[]'::json) AS checks \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE t.typtype = 'd' AND {user_schema} AND {type_not_ext}"
    );
    let views = format!(
        "SELECT n.nspname AS schema, c.relname AS name, c.relkind = 'm' AS materialized, \
         obj_description(c.oid, 'pg_class') AS comment, \
         coalesce((SELECT json_agg(json_build_object('name', a.attname, \
         'type', format_type(a.atttypid, a.atttypmod), 'comment', col_description(c.oid, a.attnum)) \
         ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), \
         '[]'::json) AS columns \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('v', 'm') AND {user_schema} AND {rel_not_ext}"
    );
    let functions = format!(
        "SELECT n.nspname AS schema, p.proname AS name, p.prokind AS kind, \
         pg_get_function_identity_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS result, \
         l.lanname AS language, p.provolatile AS volatility, p.prosecdef AS security_definer, \
         obj_description(p.oid, 'pg_proc') AS comment, \
         coalesce((SELECT json_agg(tn.nspname || '.' || tc.relname || ': ' || tg.tgname \
         ORDER BY tn.nspname || '.' || tc.relname || ': ' || tg.tgname COLLATE \"C\") \
         FROM pg_trigger tg JOIN pg_class tc ON tc.oid = tg.tgrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace \
         WHERE tg.tgfoid = p.oid AND NOT tg.tgisinternal), '[]'::json) AS triggers \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang \
         WHERE {user_schema} AND {}",
        not_in_extension("pg_proc", "p.oid")
    );
    let sequences = format!(
        "SELECT n.nspname AS schema, c.relname AS name, format_type(s.seqtypid, NULL) AS type, \
         s.seqstart AS start, s.seqincrement AS increment, s.seqcycle AS cycle, \
         obj_description(c.oid, 'pg_class') AS comment \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid \
         WHERE c.relkind = 'S' AND {user_schema} AND {rel_not_ext} \
         AND NOT EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = c.oid \
         AND o.refclassid = 'pg_class'::regclass AND o.refobjsubid > 0 AND o.deptype IN ('a', 'i'))"
    );

    let by_name = "q.name COLLATE \"C\"";
    let by_schema_name = "q.schema COLLATE \"C\", q.name COLLATE \"C\"";
    let kinds: [(&str, String, &str); 8] = [
        ("schemas", schemas, by_name),
        ("extensions", extensions, by_name),
        ("tables", tables, by_schema_name),
        ("enums", enums, by_schema_name),
        ("domains", domains, by_schema_name),
        ("views", views, by_schema_name),
        ("functions", functions, "q.schema COLLATE \"C\", q.name COLLATE \"C\", q.args COLLATE \"C\""),
        ("sequences", sequences, by_schema_name),
    ];
    let fields: Vec<String> = kinds
        .iter()
        .map(|(kind, sql, order)| {
            format!("(SELECT coalesce(json_agg(q ORDER BY {order}), '[]'::json) FROM ({sql}) q) AS {kind}")
        })
        .collect();
    format!("SELECT {}", fields.join(", "))
}

// ---------------------------------------------------------------------------------------------
// The Markdown.

/// Markdown being written, line by line.
#[derive(Default)]
struct Doc {
    out: String,
}

impl Doc {
    fn line(&mut self, text: &str) {
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// A block (paragraph, heading, list) followed by a blank line.
    fn block(&mut self, text: &str) {
        self.line(text);
        self.out.push('\n');
    }

    fn list(&mut self, items: &[String]) {
        for item in items {
            self.line(&format!("- {item}"));
        }
        self.out.push('\n');
    }

    /// A labelled list ("Foreign keys:" and its items); nothing when there are no items.
    fn section(&mut self, label: &str, items: &[String]) {
        if !items.is_empty() {
            self.block(&format!("{label}:"));
            self.list(items);
        }
    }

    fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        self.line(&format!("| {} |", headers.join(" | ")));
        self.line(&format!("|{}", "---|".repeat(headers.len())));
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            self.line(&format!("| {} |", cells.join(" | ")));
        }
        self.out.push('\n');
    }
}

fn markdown(cat: &Catalog, migrations: usize) -> String {
    let mut doc = Doc::default();
    doc.block("# Database reference");
    let plural = if migrations == 1 { "" } else { "s" };
    doc.block(&format!(
        "Generated by `cargo xtask db generate` from a fresh database built from the {migrations} migration{plural}. \
         Do not edit by hand."
    ));
    let schemas: Vec<String> = cat
        .schemas
        .iter()
        .map(|s| match &s.comment {
            Some(c) => format!("`{}`: {}", s.name, one_line(c)),
            None => format!("`{}`", s.name),
        })
        .collect();
    doc.section("Schemas", &schemas);
    let extensions: Vec<String> = cat.extensions.iter().map(|e| format!("`{}` {}", e.name, e.version)).collect();
    doc.section("Extensions", &extensions);

    for t in &cat.tables {
        table_section(&mut doc, t);
    }
    if !cat.enums.is_empty() {
        doc.block("## Enums");
        let rows: Vec<Vec<String>> = cat
            .enums
            .iter()
            .map(|e| {
                let values: Vec<String> = e.values.iter().map(|v| code(v)).collect();
                vec![code(&qualified(&e.schema, &e.name)), values.join(", "), text(&e.comment)]
            })
            .collect();
        doc.table(&["Enum", "Values", "Comment"], &rows);
    }
    if !cat.domains.is_empty() {
        doc.block("## Domains");
        let rows: Vec<Vec<String>> = cat
            .domains
            .iter()
            .map(|d| {
                let mut constraints = Vec::new();
                if d.not_null {
                    constraints.push(code("NOT NULL"));
                }
                if let Some(default) = &d.default {
                    constraints.push(format!("default {}", code(default)));
                }
                constraints.extend(d.checks.iter().map(|k| format!("{}: {}", code(&k.name), code(&k.def))));
                vec![code(&qualified(&d.schema, &d.name)), code(&d.base_type), constraints.join("\n"), text(&d.comment)]
            })
            .collect();
        doc.table(&["Domain", "Base type", "Constraints", "Comment"], &rows);
    }
    if !cat.views.is_empty() {
        doc.block("## Views");
        for v in &cat.views {
            let kind = if v.materialized { " (materialized)" } else { "" };
            doc.block(&format!("### {}{kind}", qualified(&v.schema, &v.name)));
            if let Some(c) = &v.comment {
                doc.block(c);
            }
            let rows: Vec<Vec<String>> =
                v.columns.iter().map(|c| vec![code(&c.name), code(&c.type_), text(&c.comment)]).collect();
            doc.table(&["Column", "Type", "Comment"], &rows);
        }
    }
    if !cat.functions.is_empty() {
        doc.block("## Functions and procedures");
        for f in &cat.functions {
            function_section(&mut doc, f);
        }
    }
    if !cat.sequences.is_empty() {
        doc.block("## Sequences");
        let rows: Vec<Vec<String>> = cat
            .sequences
            .iter()
            .map(|s| {
                let mut notes = text(&s.comment);
                if s.cycle {
                    notes = if notes.is_empty() { "cycles".to_string() } else { format!("cycles; {notes}") };
                }
                vec![
                    code(&qualified(&s.schema, &s.name)),
                    code(&s.type_),
                    s.start.to_string(),
                    s.increment.to_string(),
                    notes,
                ]
            })
            .collect();
        doc.table(&["Sequence", "Type", "Start", "Increment", "Notes"], &rows);
    }
    normalize(&doc.out)
}

fn table_section(doc: &mut Doc, t: &Table) {
    doc.block(&format!("## {}", qualified(&t.schema, &t.name)));
    if t.unlogged {
        doc.block("Unlogged table.");
    }
    if let Some(c) = &t.comment {
        doc.block(c);
    }

    let rows: Vec<Vec<String>> = t.columns.iter().map(column_row).collect();
    doc.table(&["Column", "Type", "Nullable", "Default", "Notes"], &rows);

    if let Some(pk) = t.constraints.iter().find(|k| k.kind == "p") {
        doc.block(&format!("Primary key: {} ({}).", code(&pk.columns.join(", ")), code(&pk.name)));
    }
    let fks: Vec<String> = t.constraints.iter().filter(|k| k.kind == "f").map(foreign_key).collect();
    doc.section("Foreign keys", &fks);
    let others: Vec<String> = t
        .constraints
        .iter()
        .filter(|k| matches!(k.kind.as_str(), "u" | "c" | "x"))
        .map(|k| format!("{}: {}", code(&k.name), code(&k.def)))
        .collect();
    doc.section("Unique and check constraints", &others);
    let indexes: Vec<String> = t.indexes.iter().map(index).collect();
    doc.section("Indexes", &indexes);
    let triggers: Vec<String> = t.triggers.iter().map(trigger).collect();
    doc.section("Triggers", &triggers);

    if t.rls || !t.policies.is_empty() {
        let state = match (t.rls, t.rls_forced) {
            (true, true) => "enabled and forced (applies to the table owner too)",
            (true, false) => "enabled",
            (false, _) => "disabled (the policies below are not enforced)",
        };
        doc.block(&format!("Row-level security: {state}."));
        let policies: Vec<String> = t.policies.iter().map(policy).collect();
        doc.section("Policies", &policies);
    }

    if let Some(key) = &t.partition_key {
        doc.block(&format!("Partitioned by {}.", code(key)));
        let mut items = Vec::new();
        partition_items(&t.partitions, &qualified(&t.schema, &t.name), 0, &mut items);
        if items.is_empty() {
            doc.block("No partitions.");
        } else {
            doc.block("Partitions:");
            for item in &items {
                doc.line(item);
            }
            doc.line("");
        }
    }
}

fn column_row(c: &Column) -> Vec<String> {
    let mut notes = Vec::new();
    match c.identity.as_str() {
        "a" => notes.push("identity always".to_string()),
        "d" => notes.push("identity by default".to_string()),
        _ => {}
    }
    let generated = match c.generated.as_str() {
        "s" => Some("stored"),
        "v" => Some("virtual"),
        _ => None,
    };
    let default = match (generated, &c.expr) {
        (Some(how), Some(expr)) => {
            notes.push(format!("generated always as {} {how}", code(expr)));
            String::new()
        }
        (None, Some(expr)) => code(expr),
        (_, None) => String::new(),
    };
    if let Some(coll) = &c.collation {
        notes.push(format!("collation {}", code(coll)));
    }
    if let Some(comment) = &c.comment {
        notes.push(comment.clone());
    }
    let nullable = if c.nullable { "yes" } else { "no" };
    vec![code(&c.name), code(&c.type_), nullable.to_string(), default, notes.join("; ")]
}

fn foreign_key(k: &Constraint) -> String {
    let target = format!("{}({})", k.ref_table.as_deref().unwrap_or("?"), k.ref_columns.join(", "));
    let mut s = format!("{} → {}, ON DELETE {}", code(&k.columns.join(", ")), code(&target), fk_action(&k.on_delete));
    if k.on_update != "a" {
        s.push_str(&format!(", ON UPDATE {}", fk_action(&k.on_update)));
    }
    if k.match_full {
        s.push_str(", MATCH FULL");
    }
    if k.deferrable {
        s.push_str(if k.deferred { ", deferrable, initially deferred" } else { ", deferrable" });
    }
    if !k.validated {
        s.push_str(", NOT VALID");
    }
    format!("{s} ({})", code(&k.name))
}

fn index(i: &Index) -> String {
    let mut notes = Vec::new();
    if i.primary {
        notes.push("primary key");
    } else if i.unique {
        notes.push("unique");
    }
    if i.partial {
        notes.push("partial");
    }
    if !i.valid {
        notes.push("invalid");
    }
    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
    format!("{}{notes}: {}", code(&i.name), code(index_body(&i.def, &i.name_q, &i.table_q)))
}

fn trigger(t: &Trigger) -> String {
    let kind = if t.constraint_trigger { "constraint trigger, " } else { "" };
    let mut s =
        format!("{}: {kind}{} → {}", code(&t.name), trigger_events(t.tgtype, &t.update_columns), code(&t.function));
    if let Some(cond) = &t.condition {
        s.push_str(&format!(", when {}", code(cond)));
    }
    match t.enabled.as_str() {
        "D" => s.push_str(" (disabled)"),
        "R" => s.push_str(" (fires only in replica sessions)"),
        "A" => s.push_str(" (fires always, also in replica sessions)"),
        _ => {}
    }
    s
}

fn policy(p: &Policy) -> String {
    let command = match p.command.as_str() {
        "r" => "SELECT",
        "a" => "INSERT",
        "w" => "UPDATE",
        "d" => "DELETE",
        _ => "ALL",
    };
    let kind = if p.permissive { "permissive" } else { "restrictive" };
    let mut s = format!("{} ({kind}, FOR {command}, TO {})", code(&p.name), p.roles.join(", "));
    if let Some(e) = &p.using_expr {
        s.push_str(&format!(": USING {}", code(e)));
    }
    if let Some(e) = &p.check_expr {
        s.push_str(&format!("{} WITH CHECK {}", if p.using_expr.is_some() { "," } else { ":" }, code(e)));
    }
    s
}

/// Nested list items for the partitions under `parent`.
fn partition_items(all: &[Partition], parent: &str, depth: usize, out: &mut Vec<String>) {
    for p in all.iter().filter(|p| p.parent == parent) {
        let mut s = format!("{}- {}", "  ".repeat(depth), code(&p.name));
        if let Some(bound) = &p.bound {
            s.push_str(&format!(": {}", code(bound)));
        }
        if let Some(key) = &p.partition_key {
            s.push_str(&format!(", partitioned by {}", code(key)));
        }
        out.push(s);
        partition_items(all, &p.name, depth + 1, out);
    }
}

fn function_section(doc: &mut Doc, f: &Function) {
    doc.block(&format!("### {}({})", qualified(&f.schema, &f.name), f.args));
    let kind = match f.kind.as_str() {
        "p" => "Procedure",
        "a" => "Aggregate",
        "w" => "Window function",
        _ => "Function",
    };
    let mut summary = match &f.result {
        Some(result) => format!("{kind} returning {}, in {}", code(result), code(&f.language)),
        None => format!("{kind}, in {}", code(&f.language)),
    };
    if f.kind != "p" {
        summary.push_str(match f.volatility.as_str() {
            "i" => ", immutable",
            "s" => ", stable",
            _ => ", volatile",
        });
    }
    if f.security_definer {
        summary.push_str(", security definer");
    }
    doc.block(&format!("{summary}."));
    if let Some(c) = &f.comment {
        doc.block(c);
    }
    let triggers: Vec<String> = f
        .triggers
        .iter()
        .map(|t| match t.split_once(": ") {
            Some((table, name)) => format!("{} on {}", code(name), code(table)),
            None => code(t),
        })
        .collect();
    doc.section("Used by triggers", &triggers);
}

// ---------------------------------------------------------------------------------------------
// Pure helpers.

fn qualified(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

/// An optional comment as table-cell text.
fn text(comment: &Option<String>) -> String {
    comment.clone().unwrap_or_default()
}

/// Text on one line (for list items): line breaks become spaces.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// A Markdown code span around `s`, on one line, fenced with enough backticks.
fn code(s: &str) -> String {
    let s = one_line(s);
    let mut longest = 0;
    let mut run = 0;
    for ch in s.chars() {
        run = if ch == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    if longest > 0 {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

/// Text for a Markdown table cell: `|` escaped (also inside code spans, as GFM requires),
/// line breaks as `<br>`.
fn cell(s: &str) -> String {
    s.trim().replace("\r\n", "\n").replace('\r', "\n").replace('|', "\\|").replace('\n', "<br>")
}

/// `pg_constraint.confdeltype`/`confupdtype`, spelled out.
fn fk_action(code: &str) -> &'static str {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "(unknown action)",
    }
}

/// `BEFORE UPDATE OF a, b FOR EACH ROW` from `pg_trigger.tgtype`.
fn trigger_events(tgtype: i32, update_columns: &[String]) -> String {
    let timing = if tgtype & 64 != 0 {
        "INSTEAD OF"
    } else if tgtype & 2 != 0 {
        "BEFORE"
    } else {
        "AFTER"
    };
    let mut events = Vec::new();
    if tgtype & 4 != 0 {
        events.push("INSERT".to_string());
    }
    if tgtype & 16 != 0 {
        if update_columns.is_empty() {
            events.push("UPDATE".to_string());
        } else {
            events.push(format!("UPDATE OF {}", update_columns.join(", ")));
        }
    }
    if tgtype & 8 != 0 {
        events.push("DELETE".to_string());
    }
    if tgtype & 32 != 0 {
        events.push("TRUNCATE".to_string());
    }
    let level = if tgtype & 1 != 0 { "FOR EACH ROW" } else { "FOR EACH STATEMENT" };
    format!("{timing} {} {level}", events.join(" OR "))
}

/// The part of `pg_get_indexdef` after `CREATE [UNIQUE] INDEX name ON [ONLY] table`, without the
/// default `USING btree`: `(a, b) WHERE (c IS NULL)`. The whole definition when it does not
/// have that shape.
fn index_body<'a>(def: &'a str, name_q: &str, table_q: &str) -> &'a str {
    let body = def
        .strip_prefix("CREATE ")
        .map(|s| s.strip_prefix("UNIQUE ").unwrap_or(s))
        .and_then(|s| s.strip_prefix("INDEX "))
        .and_then(|s| s.strip_prefix(name_q))
        .and_then(|s| s.strip_prefix(" ON "))
        .map(|s| s.strip_prefix("ONLY ").unwrap_or(s))
        .and_then(|s| s.strip_prefix(table_q))
        .and_then(|s| s.strip_prefix(' '));
    match body {
        Some(b) => b.strip_prefix("USING btree ").unwrap_or(b),
        None => def,
    }
}

/// No trailing whitespace, no runs of blank lines, exactly one final newline.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = true;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
        } else {
            out.push_str(line);
            out.push('\n');
            blank = false;
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_escape_pipes_and_line_breaks() {
        assert_eq!(cell("a | b"), "a \\| b");
        assert_eq!(cell("one\ntwo\r\nthree"), "one<br>two<br>three");
        assert_eq!(cell(&code("x || y")), "`x \\|\\| y`");
        assert_eq!(cell("  padded  "), "padded");
    }

    #[test]
    fn code_spans() {
        assert_eq!(code("now()"), "`now()`");
        assert_eq!(code("a\n  b"), "`a b`");
        assert_eq!(code("say `hi`"), "`` say `hi` ``");
        assert_eq!(one_line("first\r\nsecond\n"), "first second");
    }

    #[test]
    fn foreign_key_actions() {
        let names: Vec<&str> = ["a", "r", "c", "n", "d"].iter().map(|c| fk_action(c)).collect();
        assert_eq!(names, ["NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"]);
        let k = Constraint {
            name: "calls_customer_id_fkey".into(),
            kind: "f".into(),
            def: String::new(),
            columns: vec!["customer_id".into()],
            ref_table: Some("crm.customers".into()),
            ref_columns: vec!["id".into()],
            on_delete: "n".into(),
            on_update: "c".into(),
            match_full: false,
            deferrable: false,
            deferred: false,
            validated: true,
        };
        assert_eq!(
            foreign_key(&k),
            "`customer_id` → `crm.customers(id)`, ON DELETE SET NULL, ON UPDATE CASCADE (`calls_customer_id_fkey`)"
        );
    }

    #[test]
    fn trigger_timing_and_events() {
        // BEFORE UPDATE FOR EACH ROW: 1 | 2 | 16.
        assert_eq!(trigger_events(19, &[]), "BEFORE UPDATE FOR EACH ROW");
        // AFTER INSERT OR DELETE OR UPDATE FOR EACH ROW: 1 | 4 | 8 | 16.
        assert_eq!(trigger_events(29, &[]), "AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW");
        assert_eq!(trigger_events(16 | 2, &["a".into(), "b".into()]), "BEFORE UPDATE OF a, b FOR EACH STATEMENT");
        assert_eq!(trigger_events(64 | 4 | 1, &[]), "INSTEAD OF INSERT FOR EACH ROW");
        assert_eq!(trigger_events(32, &[]), "AFTER TRUNCATE FOR EACH STATEMENT");
    }

    #[test]
    fn index_bodies() {
        let def = "CREATE UNIQUE INDEX staff_one ON crm.staff USING btree (organization_id) WHERE (role = 'owner')";
        assert_eq!(index_body(def, "staff_one", "crm.staff"), "(organization_id) WHERE (role = 'owner')");
        let def = "CREATE INDEX \"Odd\" ON crm.notes USING gin (metadata jsonb_path_ops)";
        assert_eq!(index_body(def, "\"Odd\"", "crm.notes"), "USING gin (metadata jsonb_path_ops)");
        // An index of a partitioned table (it cascades to the partitions all the same).
        let def = "CREATE INDEX i ON ONLY crm.p USING btree (a)";
        assert_eq!(index_body(def, "i", "crm.p"), "(a)");
        let def = "CREATE INDEX i ON other.t USING btree (a)";
        assert_eq!(index_body(def, "i", "crm.t"), def);
    }

    #[test]
    fn normalized_output() {
        assert_eq!(normalize("# T  \n\n\n\nx\t\n\n"), "# T\n\nx\n");
        assert_eq!(normalize("\n\na\n"), "a\n");
    }

    #[test]
    fn renders_an_empty_catalog() {
        let cat = Catalog {
            schemas: vec![Schema { name: "public".into(), comment: Some("standard public schema".into()) }],
            extensions: vec![],
            tables: vec![],
            enums: vec![],
            domains: vec![],
            views: vec![],
            functions: vec![],
            sequences: vec![],
        };
        assert_eq!(
            markdown(&cat, 1),
            "# Database reference\n\nGenerated by `cargo xtask db generate` from a fresh database built from the \
             1 migration. Do not edit by hand.\n\nSchemas:\n\n- `public`: standard public schema\n"
        );
    }

    /// Renders a real database: `XTASK_DBDOC_URL=postgres://… cargo test -p xtask --lib dbdoc -- --ignored`
    /// (the database named in the URL; the output goes to `XTASK_DBDOC_OUT`, default stdout).
    #[test]
    #[ignore = "needs a PostgreSQL server: set XTASK_DBDOC_URL"]
    fn renders_a_real_database() {
        let url = std::env::var("XTASK_DBDOC_URL").expect("XTASK_DBDOC_URL");
        let url = crate::pg::PgUrl::parse(&url).unwrap();
        let db = url.dbname().expect("a database name in XTASK_DBDOC_URL").to_string();
        let server = Server::connect(url, "postgres").unwrap();
        let first = render(&server, &db, 10).unwrap();
        assert_eq!(first, render(&server, &db, 10).unwrap(), "same schema, same bytes");
        assert!(first.ends_with('\n') && !first.ends_with("\n\n"));
        assert!(first.lines().all(|l| l == l.trim_end()), "trailing whitespace");
        match std::env::var("XTASK_DBDOC_OUT") {
            Ok(path) => std::fs::write(path, &first).unwrap(),
            Err(_) => print!("{first}"),
        }
    }
}
