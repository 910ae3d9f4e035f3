//! The catalog as `docs/database.md` reads it: one query, one JSON array per object kind, each
//! ordered in SQL, and the structs it deserializes into.

use serde::Deserialize;

use crate::pg::literal;

// ---------------------------------------------------------------------------------------------
// The catalog, as read.

#[derive(Debug, Deserialize)]
pub(super) struct Catalog {
    pub(super) schemas: Vec<Schema>,
    pub(super) extensions: Vec<Extension>,
    pub(super) tables: Vec<Table>,
    pub(super) enums: Vec<Enum>,
    pub(super) domains: Vec<Domain>,
    pub(super) views: Vec<View>,
    pub(super) functions: Vec<Function>,
    pub(super) sequences: Vec<Sequence>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Schema {
    pub(super) name: String,
    pub(super) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Extension {
    pub(super) name: String,
    pub(super) version: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Table {
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) comment: Option<String>,
    pub(super) unlogged: bool,
    /// `pg_get_partkeydef`, for a partitioned table.
    pub(super) partition_key: Option<String>,
    pub(super) rls: bool,
    pub(super) rls_forced: bool,
    pub(super) columns: Vec<Column>,
    pub(super) constraints: Vec<Constraint>,
    pub(super) indexes: Vec<Index>,
    pub(super) triggers: Vec<Trigger>,
    pub(super) policies: Vec<Policy>,
    /// Every partition below this table, at any depth.
    pub(super) partitions: Vec<Partition>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Column {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) type_: String,
    pub(super) nullable: bool,
    /// The default, or the generation expression of a generated column.
    pub(super) expr: Option<String>,
    /// `pg_attribute.attidentity`: `a` (always), `d` (by default) or empty.
    pub(super) identity: String,
    /// `pg_attribute.attgenerated`: `s` (stored), `v` (virtual) or empty.
    pub(super) generated: String,
    /// Set when it differs from the type's.
    pub(super) collation: Option<String>,
    pub(super) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Constraint {
    pub(super) name: String,
    /// `pg_constraint.contype`: p, f, u, c, x.
    pub(super) kind: String,
    pub(super) def: String,
    pub(super) columns: Vec<String>,
    pub(super) ref_table: Option<String>,
    pub(super) ref_columns: Vec<String>,
    pub(super) on_delete: String,
    pub(super) on_update: String,
    pub(super) match_full: bool,
    pub(super) deferrable: bool,
    pub(super) deferred: bool,
    pub(super) validated: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct Index {
    pub(super) name: String,
    pub(super) def: String,
    /// The quoted names `pg_get_indexdef` prints.
    pub(super) name_q: String,
    pub(super) table_q: String,
    pub(super) primary: bool,
    pub(super) unique: bool,
    pub(super) partial: bool,
    pub(super) valid: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct Trigger {
    pub(super) name: String,
    /// `pg_trigger.tgtype`.
    pub(super) tgtype: i32,
    pub(super) update_columns: Vec<String>,
    /// `pg_trigger.tgenabled`: O, D, R, A.
    pub(super) enabled: String,
    pub(super) constraint_trigger: bool,
    /// The function call, as `pg_get_triggerdef` prints it.
    pub(super) function: String,
    pub(super) condition: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Policy {
    pub(super) name: String,
    /// `pg_policy.polcmd`: r, a, w, d, *.
    pub(super) command: String,
    pub(super) permissive: bool,
    pub(super) roles: Vec<String>,
    pub(super) using_expr: Option<String>,
    pub(super) check_expr: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Partition {
    pub(super) name: String,
    pub(super) parent: String,
    pub(super) bound: Option<String>,
    pub(super) partition_key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Enum {
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) values: Vec<String>,
    pub(super) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Domain {
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) base_type: String,
    pub(super) not_null: bool,
    pub(super) default: Option<String>,
    pub(super) checks: Vec<NamedDef>,
    pub(super) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct NamedDef {
    pub(super) name: String,
    pub(super) def: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct View {
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) materialized: bool,
    pub(super) comment: Option<String>,
    pub(super) columns: Vec<ViewColumn>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ViewColumn {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) type_: String,
    pub(super) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Function {
    pub(super) schema: String,
    pub(super) name: String,
    /// `pg_proc.prokind`: f, p, a, w.
    pub(super) kind: String,
    pub(super) args: String,
    pub(super) result: Option<String>,
    pub(super) language: String,
    /// `pg_proc.provolatile`: i, s, v.
    pub(super) volatility: String,
    pub(super) security_definer: bool,
    pub(super) comment: Option<String>,
    /// `schema.table`: `trigger` for each trigger that calls it.
    pub(super) triggers: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Sequence {
    pub(super) schema: String,
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) type_: String,
    pub(super) start: i64,
    pub(super) increment: i64,
    pub(super) cycle: bool,
    pub(super) comment: Option<String>,
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
pub(super) fn catalog_sql(ledger: (&str, &str)) -> String {
    let user_schema = USER_SCHEMA;
    let (ledger_schema, ledger_table) = (literal(ledger.0), literal(ledger.1));
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
         AND NOT (n.nspname = {ledger_schema} AND c.relname = {ledger_table})"
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_ledger_left_out_is_the_configured_one() {
        let sql = super::catalog_sql(("audit", "schema_migrations"));
        assert!(sql.contains("AND NOT (n.nspname = 'audit' AND c.relname = 'schema_migrations')"), "{sql}");
        assert!(!sql.contains("_sqlx_migrations"));
        // Quoted as SQL literals, whatever the configuration holds.
        assert!(super::catalog_sql(("it's", "x")).contains("n.nspname = 'it''s'"));
    }
}
