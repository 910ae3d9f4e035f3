//! Masking personal data: the rules (`[workspace.metadata.db.mask.rules]`), the strict
//! classification of every column against them, and the SQL that applies them. It reaches a
//! database only through the `Psql` it is handed (`apply`, `survey`), reads the secret key from
//! the environment variable it is told (`key_from_env`), and writes its progress and problems to
//! stderr.
//!
//! Every transformer that replaces a value derives the replacement from a keyed hash of the
//! value, `SHA-256(K ‖ value)` with `K = SHA-256("xtask-db mask\0" ‖ secret key)`, computed by the
//! server (`sha256()`, built in since PostgreSQL 11; no extension): the same input and key give
//! the same output in every table and every run, so joins over masked columns still match;
//! another key gives other output; without the key the map cannot be rebuilt, even over a small
//! set of values. (A secret-prefix hash, not HMAC: SHA-256's length extension forges longer
//! messages' hashes, which masking never checks; it cannot reveal an input. HMAC's second pass
//! measured 2.6x a plain `md5()` update on three columns, this 2x.) The derived key reaches the
//! server as COPY data on psql's standard input, never in argv, a statement's text or a file.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::pg::{ident, literal};

pub mod content;
use content::Kind;

/// What a column becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `user_<16 hex>@example.com`: an e-mail address, unique for unique inputs (case-insensitive).
    Email,
    /// `+1` and 13 digits: an E.164 phone number.
    Phone,
    FirstName,
    LastName,
    /// First and last name.
    Name,
    /// `[redacted]` (free text).
    Redact,
    /// An address in 10.0.0.0/8.
    Ip,
    /// Moved by up to this many days either way (the same date moves the same way).
    DateShift(u32),
    Null,
    /// This value (in the column's type).
    Fixed(String),
    /// The keyed hash, hex.
    Hash,
    /// Reviewed: not personal.
    Keep,
    /// `keep!`: reviewed, kept although its content looks personal (an organisation's own phone
    /// lines, say). Only on a named column, never on a table's `*`.
    KeepReviewed,
}

impl Rule {
    /// The rule as it is written in the configuration.
    pub fn describe(&self) -> String {
        match self {
            Rule::Email => "email".into(),
            Rule::Phone => "phone".into(),
            Rule::FirstName => "first_name".into(),
            Rule::LastName => "last_name".into(),
            Rule::Name => "name".into(),
            Rule::Redact => "redact".into(),
            Rule::Ip => "ip".into(),
            Rule::DateShift(d) => format!("{{ date_shift = {d} }}"),
            Rule::Null => "null".into(),
            Rule::Fixed(v) => format!("{{ fixed = {v:?} }}"),
            Rule::Hash => "hash".into(),
            Rule::Keep => "keep".into(),
            Rule::KeepReviewed => "keep!".into(),
        }
    }
}

/// A rule as written: `"email"` or `{ date_shift = 30 }` / `{ fixed = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RuleSpec {
    Name(String),
    Table(BTreeMap<String, toml::Value>),
}

pub const RULE_NAMES: &str =
    "email, phone, first_name, last_name, name, redact, ip, null, hash, keep, keep!, { date_shift = DAYS }, { fixed = \"VALUE\" }";

impl RuleSpec {
    pub fn rule(&self) -> Result<Rule> {
        Ok(match self {
            RuleSpec::Name(n) => match n.as_str() {
                "email" => Rule::Email,
                "phone" => Rule::Phone,
                "first_name" => Rule::FirstName,
                "last_name" => Rule::LastName,
                "name" => Rule::Name,
                "redact" => Rule::Redact,
                "ip" => Rule::Ip,
                "null" => Rule::Null,
                "hash" => Rule::Hash,
                "keep" => Rule::Keep,
                "keep!" => Rule::KeepReviewed,
                "date_shift" => Rule::DateShift(30),
                other => bail!("`{other}` is not a rule (one of {RULE_NAMES})"),
            },
            RuleSpec::Table(t) => match (t.get("date_shift"), t.get("fixed"), t.len()) {
                (Some(toml::Value::Integer(d)), None, 1) if (1..=36_500).contains(d) => Rule::DateShift(*d as u32),
                (None, Some(toml::Value::String(v)), 1) => Rule::Fixed(v.clone()),
                _ => bail!("a table rule is {{ date_shift = DAYS }} (1 to 36500) or {{ fixed = \"VALUE\" }}"),
            },
        })
    }
}

/// A column as the server describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// `format_type`: `text`, `crm.email_address`, `timestamp with time zone`, …
    #[serde(rename = "type")]
    pub type_name: String,
    /// The base type when `type_name` is a domain.
    pub base: String,
    pub not_null: bool,
    /// A generated or identity column is never written.
    pub generated: bool,
    /// The relation's `relkind`: `r` a table (inheritance children are tables of their own, so
    /// each UPDATE is `ONLY`), `p` a partitioned table (its UPDATE reaches every partition).
    #[serde(default)]
    pub kind: String,
    /// The base type's `typcategory`: `S` string, `U` user-defined (json, jsonb, xml, bytea,
    /// tsvector, hstore, …), `A` array, `C` composite — the ones whose content is sampled.
    #[serde(default)]
    pub category: String,
    /// The type's empty value (`{}`, `()`, `''`), for the `fixed` rule suggested for a
    /// non-text column that must not be NULL.
    #[serde(default)]
    pub empty: Option<String>,
    /// The relation's size in pages, from its files (a partitioned table's: its partitions'), not
    /// `relpages`, which is 0 until the table is first analyzed (a `pg_restore` just made it).
    #[serde(default)]
    pub pages: f64,
}

impl Column {
    pub fn key(&self) -> String {
        format!("{}.{}.{}", self.schema, self.table, self.column)
    }

    /// `schema.table`, quoted.
    pub fn relation(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.table))
    }

    /// Text of any kind: the text rules (email, name, redact, hash, …) can write it.
    fn textual(&self) -> bool {
        let base = self.base.as_str();
        matches!(base, "text" | "citext" | "public.citext" | "name") || base.starts_with("character")
    }

    /// Whether its values can hold personal text, and so are sampled.
    pub fn holds_text(&self) -> bool {
        matches!(self.category.as_str(), "S" | "U" | "A" | "C") && !self.generated
    }
}

/// Names that look personal, and the rule to suggest for each.
const PERSONAL: &[(&str, &str)] = &[
    ("email", "email"),
    ("e_mail", "email"),
    ("mail", "email"),
    ("phone", "phone"),
    ("mobile", "phone"),
    ("fax", "phone"),
    ("first_name", "first_name"),
    ("firstname", "first_name"),
    ("given_name", "first_name"),
    ("last_name", "last_name"),
    ("lastname", "last_name"),
    ("surname", "last_name"),
    ("family_name", "last_name"),
    ("full_name", "name"),
    ("name", "name"),
    ("address", "redact"),
    ("street", "redact"),
    ("city", "redact"),
    ("zip", "redact"),
    ("postal", "redact"),
    ("birth", "{ date_shift = 365 }"),
    ("dob", "{ date_shift = 365 }"),
    ("ssn", "hash"),
    ("passport", "hash"),
    ("iban", "hash"),
    ("card", "hash"),
    ("ip", "ip"),
    ("token", "null"),
    ("secret", "null"),
    ("password", "null"),
    ("body", "redact"),
    ("note", "redact"),
    ("comment", "redact"),
    ("message", "redact"),
];

/// The rule to suggest when `c` looks personal by its name or type. Names count only for
/// columns that can hold personal data (text, dates, JSON, bytes): `phone_number_id bigint` is a
/// key, not a number.
pub fn looks_personal(c: &Column) -> Option<&'static str> {
    let t = format!("{} {}", c.type_name, c.base).to_ascii_lowercase();
    if t.contains("inet") || t.contains("cidr") {
        return Some("ip");
    }
    if t.contains("email") {
        return Some("email");
    }
    if t.contains("phone") {
        return Some("phone");
    }
    let holds_text = ["text", "char", "citext", "json", "bytea", "date", "time"].iter().any(|k| c.base.contains(k));
    if !holds_text {
        return None;
    }
    let words: Vec<&str> = c.column.split(|ch: char| !ch.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let name = c.column.to_ascii_lowercase();
    for (pattern, rule) in PERSONAL {
        let hit = if pattern.contains('_') || pattern.len() > 4 {
            name.contains(pattern)
        } else {
            words.iter().any(|w| w.eq_ignore_ascii_case(pattern))
        };
        if hit {
            return Some(rule);
        }
    }
    None
}

/// Where data lives in a database, as the catalogs tell: every column of every relation that
/// stores rows an application wrote (tables, partitioned tables — their partitions through them
/// —, inheritance children as tables of their own; not the system's, not an extension's, not the
/// migrator's `ledger`), the populated materialized views (refreshed after masking, so they hold
/// only masked rows), every comment on a user object, and how many large objects there are.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Catalog {
    pub columns: Vec<Column>,
    /// Populated materialized views, quoted, in creation order (dependencies first).
    #[serde(default)]
    pub matviews: Vec<String>,
    #[serde(default)]
    pub comments: Vec<Comment>,
    #[serde(default)]
    pub large_objects: i64,
}

/// A comment on an object (`pg_identify_object`'s type and identity).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Comment {
    #[serde(rename = "type")]
    pub object_type: String,
    pub identity: String,
    pub text: String,
}

impl Comment {
    /// `COMMENT ON … IS '[redacted]'`.
    fn redact(&self) -> String {
        let (what, identity) = match self.object_type.as_str() {
            t if t.ends_with(" column") => ("COLUMN".to_string(), self.identity.clone()),
            "table constraint" => ("CONSTRAINT".into(), self.identity.clone()),
            "domain constraint" => ("CONSTRAINT".into(), self.identity.replacen(" on ", " on domain ", 1)),
            "composite type" => ("TYPE".into(), self.identity.clone()),
            t => (t.to_ascii_uppercase(), self.identity.clone()),
        };
        format!("COMMENT ON {what} {identity} IS '[redacted]';\n")
    }
}

/// The rule key that answers for the large objects (`pg_dump` dumps them; masking cannot look
/// inside): `null` unlinks them all, `keep!` keeps them, reviewed.
pub const LARGE_OBJECTS: &str = "pg_catalog.pg_largeobject.*";

/// The query for the [`Catalog`], one JSON object.
pub fn catalog_query(ledger: &str) -> String {
    format!(
        "SELECT json_build_object('columns', (SELECT coalesce(json_agg(q), '[]') FROM (SELECT n.nspname AS schema, c.relname AS \"table\", a.attname AS \"column\", \
           format_type(a.atttypid, a.atttypmod) AS \"type\", format_type(b.oid, NULL) AS base, \
           (a.attnotnull OR t.typnotnull) AS not_null, (a.attgenerated <> '' OR a.attidentity <> '') AS generated, \
           c.relkind::text AS kind, b.typcategory::text AS category, \
           CASE WHEN b.typcategory = 'A' OR b.typname IN ('json', 'jsonb') THEN '{{}}' \
                WHEN b.typtype = 'c' THEN '(' || repeat(',', (SELECT count(*)::int - 1 FROM pg_attribute f WHERE f.attrelid = b.typrelid AND f.attnum > 0 AND NOT f.attisdropped)) || ')' \
                WHEN b.typcategory IN ('S', 'U') THEN '' END AS empty, \
           (CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_relation_size(pt.relid)), 0) FROM pg_partition_tree(c.oid) pt WHERE pt.isleaf) \
                 ELSE pg_relation_size(c.oid) END / current_setting('block_size')::float8) AS pages \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_type t ON t.oid = a.atttypid \
         JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
           AND c.oid <> coalesce(to_regclass({ledger}), 0) \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1, 2, a.attnum) q), \
         'matviews', (SELECT coalesce(json_agg(format('%I.%I', n.nspname, c.relname) ORDER BY c.oid), '[]') \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'), \
         'comments', (SELECT coalesce(json_agg(json_build_object('type', i.type, 'identity', i.identity, 'text', d.description) \
             ORDER BY i.type, i.identity), '[]') \
           FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) i \
           WHERE d.objoid >= 16384 AND coalesce(i.schema, '') NOT LIKE 'pg\\_%' \
             AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e')), \
         'large_objects', (SELECT count(*) FROM pg_largeobject_metadata))",
        ledger = literal(ledger)
    )
}

/// Rows read from a table whose content is judged, at most.
pub const SAMPLE_ROWS: usize = 10_000;

/// Pages a large table's sample reads at most, at random: what the sample costs is pages read
/// (a narrow table gives a few hundred rows from them, a wide one fewer).
pub const SAMPLE_PAGES: f64 = 8.0;

/// The sampled columns in groups of at most 100 (a row is built with `jsonb_build_array`, which
/// takes 100 arguments), a group's columns all of one table.
fn sample_groups<'a>(columns: &[&'a Column]) -> Vec<Vec<&'a Column>> {
    let mut by_table: BTreeMap<(String, String), Vec<&Column>> = BTreeMap::new();
    for c in columns {
        by_table.entry((c.schema.clone(), c.table.clone())).or_default().push(c);
    }
    by_table.into_values().flat_map(|cols| cols.chunks(100).map(<[&Column]>::to_vec).collect::<Vec<_>>()).collect()
}

/// One statement for every table, printing one line of JSON: for each group of
/// [`sample_groups`], the rows of about [`SAMPLE_PAGES`] pages drawn at random from a larger table
/// (`TABLESAMPLE SYSTEM`, the size read from its files), or of the whole of a smaller one, at most
/// [`SAMPLE_ROWS`], its columns as text, each row an array.
pub fn sample_sql(columns: &[&Column]) -> String {
    let mut parts = Vec::new();
    for (n, cols) in sample_groups(columns).iter().enumerate() {
        let first = cols[0];
        let exprs: Vec<String> = cols
            .iter()
            .map(|c| {
                if c.base == "bytea" {
                    format!("encode({}, 'escape')", ident(&c.column))
                } else {
                    format!("{}::text", ident(&c.column))
                }
            })
            .collect();
        let only = if first.kind == "p" { "" } else { "ONLY " };
        let from = if first.pages > SAMPLE_PAGES {
            let percent = 100.0 * SAMPLE_PAGES / first.pages;
            // No LIMIT cut short of the pages drawn: it would keep the lowest-numbered ones, and
            // rows updated since (at the table's end) would never be seen.
            format!("{only}{} TABLESAMPLE SYSTEM ({percent:.6}) LIMIT {SAMPLE_ROWS}", first.relation())
        } else {
            format!("{only}{} LIMIT {SAMPLE_ROWS}", first.relation())
        };
        let names: Vec<String> = cols.iter().map(|c| ident(&c.column)).collect();
        parts.push(format!(
            "({n}, (SELECT coalesce(jsonb_agg(jsonb_build_array({})), '[]') FROM (SELECT {} FROM {from}) t))",
            exprs.join(", "),
            names.join(", ")
        ));
    }
    format!("SELECT jsonb_agg(x ORDER BY n) FROM (VALUES {}) v (n, x);\n", parts.join(", "))
}

/// What the sample of a column held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finding {
    pub sampled: usize,
    /// Each kind found, with the number of sampled values that hold it.
    pub kinds: Vec<(Kind, usize)>,
}

impl Finding {
    fn describe(&self) -> String {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{} in {n}", k.describe())).collect();
        format!("{} of {} sampled value(s)", kinds.join(", "), self.sampled)
    }
}

/// Reads [`sample_sql`]'s output: the findings by column key, only the columns where something
/// was found.
pub fn findings(columns: &[&Column], output: &str) -> Result<BTreeMap<String, Finding>> {
    let groups = sample_groups(columns);
    let samples: Vec<Vec<Vec<Option<String>>>> = serde_json::from_str(output.trim())?;
    anyhow::ensure!(samples.len() == groups.len(), "the sample returned {} of {} tables", samples.len(), groups.len());
    let mut out = BTreeMap::new();
    for (cols, rows) in groups.iter().zip(samples) {
        for (i, c) in cols.iter().enumerate() {
            let mut f = Finding::default();
            let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
            for v in rows.iter().filter_map(|row| row.get(i).and_then(Option::as_deref)) {
                f.sampled += 1;
                for k in content::kinds(v) {
                    *counts.entry(k).or_default() += 1;
                }
            }
            if !counts.is_empty() {
                f.kinds = counts.into_iter().collect();
                out.insert(c.key(), f);
            }
        }
    }
    Ok(out)
}

/// The secret key from the environment variable `var`: any bytes, at least 16 of them (not
/// necessarily UTF-8). `without` is how to go on without masking, for the fix.
pub fn key_from_env(var: &str, without: &str) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let key = std::env::var_os(var).map(OsStringExt::into_vec).unwrap_or_default();
    if key.len() < 16 {
        let why = if key.is_empty() { "not set".to_string() } else { format!("{} bytes, shorter than 16", key.len()) };
        return Err(crate::error::fail(
            format!("no masking key: `{var}` is {why}"),
            format!("export {var}=<a secret of at least 16 bytes, the same for every run whose output must match> (e.g. from your password manager), or {without}"),
        ));
    }
    Ok(key)
}

/// What stops a masking run, one line each with its fix; empty when everything is classified.
pub fn problems(c: &Classified) -> Vec<String> {
    let mut out = Vec::new();
    for u in &c.unreviewed {
        let why = match &u.why {
            Some(why) => format!(" holds {why}"),
            None => String::new(),
        };
        out.push(format!("unreviewed column {} ({}){why}: add  {}", u.column.key(), u.column.type_name, u.line));
    }
    if let Some(line) = &c.large_objects {
        out.push(line.clone());
    }
    for k in &c.stale {
        out.push(format!("rule `{k}` names no column: remove it (or fix the name)"));
    }
    for why in &c.invalid {
        out.push(format!("invalid rule {why}"));
    }
    out
}

/// Before masking: every problem printed (stderr), and an error when there is any — `nothing`
/// says what was left undone, `escape` how else to go on.
pub fn refuse_unreviewed(c: &Classified, nothing: &str, escape: &str) -> Result<()> {
    let problems = problems(c);
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("  {p}");
    }
    Err(crate::error::fail(
        format!("{} column(s) or rule(s) not reviewed: {nothing}", problems.len()),
        format!("add the rules listed above to [workspace.metadata.db.mask.rules]{escape}"),
    ))
}

/// The rules of `config`, parsed: `schema.table.column` or `schema.table.*` → rule.
pub fn parse_rules(config: &BTreeMap<String, RuleSpec>) -> Result<BTreeMap<String, Rule>> {
    let mut out = BTreeMap::new();
    for (k, spec) in config {
        if k.split('.').count() != 3 || k.split('.').any(str::is_empty) {
            bail!("mask rule `{k}`: name a column as schema.table.column (or schema.table.* for the rest of a table)");
        }
        let rule = spec.rule().map_err(|e| anyhow::anyhow!("mask rule `{k}`: {e}"))?;
        if rule == Rule::KeepReviewed && k.ends_with(".*") && k != LARGE_OBJECTS {
            bail!("mask rule `{k}`: `keep!` vouches for one column's content; on a table's `*` it would let every column a migration adds through unseen (use `keep`, and `keep!` on the columns you reviewed)");
        }
        if k == LARGE_OBJECTS && !matches!(rule, Rule::Null | Rule::KeepReviewed) {
            bail!("mask rule `{k}`: the large objects are either unlinked (`null`) or kept as reviewed (`keep!`)");
        }
        out.insert(k.clone(), rule);
    }
    Ok(out)
}

/// A column that stops the run, with the line that resolves it.
#[derive(Debug, Clone)]
pub struct Unreviewed {
    pub column: Column,
    /// What its sampled content holds (None: flagged by its name or type, or unruled).
    pub why: Option<String>,
    /// The rule line to add: `"schema.table.column" = RULE`.
    pub line: String,
}

/// Every column with its rule, or the columns that stop the run.
pub struct Classified {
    pub masked: Vec<(Column, Rule)>,
    /// Kept: reviewed as not personal.
    pub kept: usize,
    /// Columns without a rule (new since the rules were written), personal-looking ones (by name,
    /// type or sampled content) covered only by a `schema.table.*` keep, and explicitly kept
    /// ones whose content looks personal (unless `keep!`): each with the line to add.
    pub unreviewed: Vec<Unreviewed>,
    /// Rules naming a column that does not exist (a typo, or the column was dropped).
    pub stale: Vec<String>,
    /// Rules that cannot apply to their column (`null` on NOT NULL, `redact` on a number, …).
    pub invalid: Vec<String>,
    /// Large objects with no rule: the line that says so, with its fix.
    pub large_objects: Option<String>,
    /// Unlink every large object.
    pub unlink_large_objects: bool,
    /// Comments whose text looks personal: replaced by `[redacted]` when masking.
    pub comments: Vec<(Comment, Vec<Kind>)>,
    /// Materialized views refreshed after masking.
    pub matviews: Vec<String>,
}

impl Classified {
    /// Just these columns masked, nothing else to do (the benchmark's script).
    pub fn masking(masked: Vec<(Column, Rule)>) -> Classified {
        Classified {
            masked,
            kept: 0,
            unreviewed: Vec::new(),
            stale: Vec::new(),
            invalid: Vec::new(),
            large_objects: None,
            unlink_large_objects: false,
            comments: Vec::new(),
            matviews: Vec::new(),
        }
    }
}

/// The columns whose content is sampled: those kept by a `keep` (a table's `*` or their own) or
/// without any rule, when their type can hold text.
pub fn to_sample<'a>(columns: &'a [Column], rules: &BTreeMap<String, Rule>) -> Vec<&'a Column> {
    columns
        .iter()
        .filter(|c| c.holds_text())
        .filter(|c| match rules.get(&c.key()) {
            Some(r) => *r == Rule::Keep,
            None => matches!(rules.get(&format!("{}.{}.*", c.schema, c.table)), Some(Rule::Keep) | None),
        })
        .collect()
}

/// The rule to suggest for `col`, flagged by `kinds` of content or by its name (`by_name`): a
/// rule that removes the values and that the column can take.
fn suggest(col: &Column, kinds: &[Kind], by_name: Option<&'static str>) -> String {
    // A generated column cannot be written: it is computed again from what is masked.
    if col.generated {
        return "\"keep\"".into();
    }
    let candidate = match (kinds, by_name) {
        ([k], _) => Some(k.rule()),
        ([], r) => r,
        _ => Some("redact"),
    };
    let parsed = candidate.and_then(|r| match r.strip_prefix("{ date_shift = ") {
        Some(days) => days.trim_end_matches(" }").parse().ok().map(Rule::DateShift),
        None => RuleSpec::Name(r.into()).rule().ok(),
    });
    match (candidate, parsed) {
        (Some(r), Some(rule)) if fits(col, &rule).is_ok() => quote_rule(r),
        _ if !col.not_null => "\"null\"".into(),
        _ => format!("{{ fixed = {:?} }}", col.empty.clone().unwrap_or_default()),
    }
}

/// Every column against the rules and the sampled content (`found`, by column key).
///
/// `known` is the text of the repository's migrations: a comment written there is the schema's
/// own documentation (`e.g. +15551234567`), not production data, and is left as it is (so a
/// masked copy's schema still equals a fresh build's); any other comment whose text looks
/// personal is redacted.
pub fn classify(
    catalog: &Catalog,
    rules: &BTreeMap<String, Rule>,
    found: &BTreeMap<String, Finding>,
    known: &str,
) -> Classified {
    let mut c = Classified { matviews: catalog.matviews.clone(), ..Classified::masking(Vec::new()) };
    let mut used = std::collections::BTreeSet::new();
    used.insert(LARGE_OBJECTS.to_string());
    for col in &catalog.columns {
        let exact = col.key();
        let wildcard = format!("{}.{}.*", col.schema, col.table);
        let rule = match (rules.get(&exact), rules.get(&wildcard)) {
            (Some(r), _) => {
                used.insert(exact.clone());
                Some((r.clone(), true))
            }
            (None, Some(r)) => {
                used.insert(wildcard.clone());
                Some((r.clone(), false))
            }
            (None, None) => None,
        };
        let finding = found.get(&exact);
        let kinds: Vec<Kind> = finding.map(|f| f.kinds.iter().map(|(k, _)| *k).collect()).unwrap_or_default();
        let by_name = looks_personal(col);
        let flag = |c: &mut Classified, hint: &str| {
            let line = format!("\"{exact}\" = {}{hint}", suggest(col, &kinds, by_name));
            c.unreviewed.push(Unreviewed { column: col.clone(), why: finding.map(Finding::describe), line });
        };
        match rule {
            None if kinds.is_empty() && by_name.is_none() => {
                let line = format!("\"{exact}\" = \"keep\"");
                c.unreviewed.push(Unreviewed { column: col.clone(), why: None, line });
            }
            None => flag(&mut c, ""),
            Some((Rule::Keep, false)) if !kinds.is_empty() || by_name.is_some() => flag(&mut c, ""),
            Some((Rule::Keep, true)) if !kinds.is_empty() => {
                flag(&mut c, "   (or \"keep!\" once you have checked that these values are not personal)")
            }
            Some((Rule::Keep | Rule::KeepReviewed, _)) => c.kept += 1,
            Some((rule, _)) => match fits(col, &rule) {
                Ok(()) => c.masked.push((col.clone(), rule)),
                Err(why) => c.invalid.push(format!("`{exact}`: {why}")),
            },
        }
    }
    if catalog.large_objects > 0 {
        match rules.get(LARGE_OBJECTS) {
            Some(Rule::Null) => c.unlink_large_objects = true,
            Some(_) => {}
            None => {
                c.large_objects = Some(format!(
                    "{} large object(s) (pg_dump dumps them; masking cannot look inside): add  \"{LARGE_OBJECTS}\" = \"null\"   (unlinks them; or \"keep!\" once reviewed)",
                    catalog.large_objects
                ))
            }
        }
    }
    for comment in &catalog.comments {
        let kinds = content::kinds(&comment.text);
        if !kinds.is_empty() && !known.contains(&comment.text.replace('\'', "''")) {
            c.comments.push((comment.clone(), kinds));
        }
    }
    c.stale = rules.keys().filter(|k| !used.contains(*k)).cloned().collect();
    c
}

fn quote_rule(s: &str) -> String {
    if s.starts_with('{') {
        s.to_string()
    } else {
        format!("\"{s}\"")
    }
}

/// Whether `rule` can be written into `col`.
fn fits(col: &Column, rule: &Rule) -> std::result::Result<(), String> {
    let base = col.base.as_str();
    let textual = col.textual();
    if col.generated {
        return Err("a generated or identity column cannot be written; mask what it is computed from".into());
    }
    match rule {
        Rule::Null if col.not_null => Err("`null` on a NOT NULL column: use another rule".into()),
        Rule::Email | Rule::Phone | Rule::FirstName | Rule::LastName | Rule::Name | Rule::Redact | Rule::Hash
            if !textual =>
        {
            Err(format!("this rule writes text; the column is {}: use `null`, or `{{ fixed = \"…\" }}` with a value of its type", col.type_name))
        }
        Rule::Ip if !matches!(base, "inet" | "cidr") && !textual => {
            Err(format!("`ip` needs an inet or text column, not {}", col.type_name))
        }
        Rule::DateShift(_) if !(base == "date" || base.starts_with("timestamp")) => {
            Err(format!("`date_shift` needs a date or timestamp column, not {}", col.type_name))
        }
        _ => Ok(()),
    }
}

/// Syllables of made-up names: three of them make a name no one has (8 000 of them), so a
/// masked name never reads as a real person's.
const SYLLABLES: &[&str] = &[
    "ba", "ce", "di", "fo", "gu", "ka", "le", "mi", "no", "pu", "ra", "se", "ti", "vo", "zu", "xa", "qe", "wy", "jo",
    "hu",
];

/// The keyed hash of `v` (text) as SQL, the derived key in the row `k`.
fn h(v: &str) -> String {
    format!("sha256(k.prefix || convert_to({v}, 'UTF8'))")
}

/// 256 made-up names of two or three syllables: one byte of the keyed hash picks one, so a
/// masked name never reads as a real person's, and a value is hashed once for it.
fn made_up_names() -> Vec<String> {
    (0..256usize)
        .map(|i| {
            let n = SYLLABLES.len();
            let mut name = format!("{}{}", SYLLABLES[i % n], SYLLABLES[(i / n + 7 * i) % n]);
            if i % 3 != 0 {
                name.push_str(SYLLABLES[(i * 11 + 3) % n]);
            }
            let mut c = name.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Helpers of the script, in `pg_temp` (gone with the session). Each is one expression, so the
/// planner inlines it into the UPDATE.
fn helpers() -> String {
    let names: Vec<String> = made_up_names().iter().map(|s| literal(s)).collect();
    format!(
        "CREATE FUNCTION pg_temp.xtask_n(h bytea, at int, n int) RETURNS int LANGUAGE sql IMMUTABLE \
           AS $$ SELECT (get_byte(h, at) * 256 + get_byte(h, at + 1)) % n $$;\n\
         CREATE FUNCTION pg_temp.xtask_name(h bytea, at int) RETURNS text LANGUAGE sql IMMUTABLE \
           AS $$ SELECT (ARRAY[{}]::text[])[1 + get_byte(h, at)] $$;\n\
         CREATE FUNCTION pg_temp.xtask_ip(h bytea) RETURNS text LANGUAGE sql IMMUTABLE \
           AS $$ SELECT '10.' || get_byte(h, 0) || '.' || get_byte(h, 1) || '.' || get_byte(h, 2) $$;\n",
        names.join(", ")
    )
}

/// The SQL expression `col` becomes under `rule` (`None`: not written), for `UPDATE … FROM
/// <key> k` after [`helpers`]. NULL stays NULL.
pub fn expression(col: &Column, rule: &Rule) -> Option<String> {
    let c = crate::pg::ident(&col.column);
    let text = format!("{c}::text");
    let value = match rule {
        Rule::Keep | Rule::KeepReviewed => return None,
        Rule::Null => return Some("NULL".into()),
        Rule::Fixed(v) => format!("{}::{}", literal(v), col.type_name),
        Rule::Email => format!("'user_' || substr(encode({}, 'hex'), 1, 16) || '@example.com'", h(&format!("lower({text})"))),
        Rule::Phone => format!(
            "'+1' || lpad(((('x' || substr(encode({}, 'hex'), 1, 15))::bit(60)::bigint) % 10000000000000)::text, 13, '0')",
            h(&text)
        ),
        Rule::FirstName => format!("pg_temp.xtask_name({}, 0)", h(&text)),
        Rule::LastName => format!("pg_temp.xtask_name({}, 1)", h(&text)),
        Rule::Name => format!("pg_temp.xtask_name({0}, 0) || ' ' || pg_temp.xtask_name({0}, 1)", h(&text)),
        Rule::Redact => "'[redacted]'".into(),
        Rule::Hash => format!("encode({}, 'hex')", h(&text)),
        Rule::Ip => format!("pg_temp.xtask_ip({})", h(&text)),
        Rule::DateShift(days) => {
            format!("({c} + make_interval(days => pg_temp.xtask_n({}, 0, {}) - {days}))", h(&text), 2 * *days + 1)
        }
    };
    Some(format!("CASE WHEN {c} IS NULL THEN NULL ELSE ({value})::{} END", col.type_name))
}

/// The masking script: the derived key as COPY data, then one UPDATE a table, in one
/// transaction, with the application's triggers (and audit writes) off: for this session only
/// (`session_replication_role = replica`) where the role may set it (a superuser, RDS's master
/// user); else, as the tables' owner, the enabled user triggers of the masked tables are disabled
/// and enabled again before the commit — the same transaction, so no one ever sees them off and
/// the dump has them as they were.
///
/// Then, in the same transaction: every comment whose text looks personal becomes `[redacted]`,
/// the large objects are unlinked when the rules say so, and every populated materialized view
/// is refreshed (in creation order, so one over another sees it refreshed), so it holds the
/// masked rows and not the originals. Each UPDATE of a table is `ONLY` that table: an
/// inheritance child is masked by its own rules, once; a partitioned table's reaches its
/// partitions.
pub fn script(c: &Classified, key: &[u8]) -> String {
    let masked = &c.masked;
    let mut by_table: BTreeMap<(String, String), (String, Vec<String>)> = BTreeMap::new();
    for (col, rule) in masked {
        if let Some(e) = expression(col, rule) {
            let only = if col.kind == "p" { "" } else { "ONLY " };
            by_table
                .entry((col.schema.clone(), col.table.clone()))
                .or_insert_with(|| (format!("{only}{}", col.relation()), Vec::new()))
                .1
                .push(format!("{} = {e}", crate::pg::ident(&col.column)));
        }
    }
    let tables: Vec<String> = by_table
        .keys()
        .map(|(schema, table)| literal(&format!("{}.{}", crate::pg::ident(schema), crate::pg::ident(table))))
        .collect();
    let mut s = String::from(
        "\\set ON_ERROR_STOP 1\nBEGIN;\n\
         CREATE TEMP TABLE xtask_mask_key (prefix bytea) ON COMMIT DROP;\n\
         COPY xtask_mask_key FROM STDIN;\n",
    );
    s.push_str(&format!("\\\\x{}\n\\.\n", hex(&derived(key))));
    // Under `session_replication_role = replica` the triggers and rules enabled ALWAYS or
    // REPLICA still fire (a BEFORE UPDATE trigger that puts the original back, a rule that
    // turns the UPDATE into nothing); where the role may not set it, ordinary and ALWAYS ones
    // do. Those that would fire are disabled for the transaction, on every partition too, and
    // enabled again as they were.
    let tables = if tables.is_empty() { "NULL".to_string() } else { format!("ARRAY[{}]", tables.join(", ")) };
    s.push_str(&format!(
        "CREATE TEMP TABLE xtask_mask_triggers (n serial, tbl regclass, what text, name name, state text) ON COMMIT DROP;\n\
         DO $xtask$ BEGIN\n\
           SET LOCAL session_replication_role = replica;\n\
         EXCEPTION WHEN insufficient_privilege THEN NULL;\n\
         END $xtask$;\n\
         INSERT INTO xtask_mask_triggers (tbl, what, name, state) \
           WITH rel AS (SELECT r AS relid FROM unnest({tables}::regclass[]) r UNION \
             SELECT p.relid FROM unnest({tables}::regclass[]) u (r), LATERAL pg_partition_tree(u.r) p), \
           firing AS (SELECT unnest(ARRAY['A', CASE current_setting('session_replication_role') WHEN 'replica' THEN 'R' ELSE 'O' END]) AS state) \
           SELECT t.tgrelid::regclass, 'TRIGGER', t.tgname, t.tgenabled::text FROM pg_trigger t \
             WHERE t.tgrelid IN (SELECT relid FROM rel) AND NOT t.tgisinternal AND t.tgenabled::text IN (SELECT state FROM firing) \
           UNION ALL SELECT r.ev_class::regclass, 'RULE', r.rulename, r.ev_enabled::text FROM pg_rewrite r \
             WHERE r.ev_class IN (SELECT relid FROM rel) AND r.rulename <> '_RETURN' AND r.ev_enabled::text IN (SELECT state FROM firing) \
           ORDER BY 1;\n\
         DO $xtask$ DECLARE r record; BEGIN\n\
           FOR r IN SELECT * FROM xtask_mask_triggers ORDER BY n LOOP\n\
             EXECUTE format('ALTER TABLE %s DISABLE %s %I', r.tbl, r.what, r.name);\n\
           END LOOP;\n\
         END $xtask$;\n"
    ));
    s.push_str(&helpers());
    for ((schema, table), (target, sets)) in by_table {
        s.push_str(&format!(
            "\\echo masking {schema}.{table}\nUPDATE {target} SET {} FROM xtask_mask_key k;\n",
            sets.join(", ")
        ));
    }
    for (comment, _) in &c.comments {
        s.push_str(&comment.redact());
    }
    if c.unlink_large_objects {
        s.push_str("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata;\n");
    }
    for mv in &c.matviews {
        s.push_str(&format!("REFRESH MATERIALIZED VIEW {mv};\n"));
    }
    s.push_str(
        "DO $xtask$ DECLARE r record; BEGIN\n\
           FOR r IN SELECT * FROM xtask_mask_triggers ORDER BY n LOOP\n\
             EXECUTE format('ALTER TABLE %s ENABLE %s %s %I', r.tbl, CASE r.state WHEN 'A' THEN 'ALWAYS' WHEN 'R' THEN 'REPLICA' ELSE '' END, r.what, r.name);\n\
           END LOOP;\n\
         END $xtask$;\n\
         COMMIT;\n",
    );
    s
}

/// The text of every `.sql` file in `dir` (the repository's migrations), for [`classify`]'s
/// `known`.
pub fn repository_sql(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

/// How the masking pipeline reaches a database: `psql -X -q -A -t -v ON_ERROR_STOP=1` with
/// `input` on its standard input, returning its standard output. Locally a [`crate::pg::Server`]'s
/// psql; on the throwaway instance, psql through the tunnel. One pipeline for both.
pub trait Psql {
    fn run(&self, input: &str) -> Result<String>;
}

impl<F: Fn(&str) -> Result<String>> Psql for F {
    fn run(&self, input: &str) -> Result<String> {
        self(input)
    }
}

/// A [`Psql`] over one psql session (`pg::session`): the survey's catalog query and its sample
/// share one process and one connection, so the sample costs its queries and nothing more.
pub struct SessionPsql(std::cell::RefCell<crate::pg::session::Session>);

impl SessionPsql {
    pub fn open(server: &crate::pg::Server, db: &str) -> Result<SessionPsql> {
        Ok(SessionPsql(std::cell::RefCell::new(crate::pg::session::Session::open(server.psql_session(db)?)?)))
    }
}

impl Psql for SessionPsql {
    fn run(&self, input: &str) -> Result<String> {
        use crate::pg::session::Failure;
        match self.0.borrow_mut().run(input) {
            Ok(out) => Ok(out),
            Err(Failure::Sql(msg)) => {
                crate::proc::check_interrupt()?;
                bail!("ERROR: {msg}")
            }
            Err(Failure::Dead(e)) => Err(e),
            Err(Failure::NotSent) => bail!("psql exited right after starting"),
        }
    }
}

/// Reads the catalog, samples the content of every kept or unruled column that can hold text,
/// and classifies everything against `rules` — what `db mask --check` shows and what masking
/// refuses on.
pub fn survey(db: &dyn Psql, rules: &BTreeMap<String, Rule>, ledger: &str, known: &str) -> Result<Classified> {
    survey_with(db, rules, ledger, known, true)
}

/// [`survey`], with the content sample or (`sample` false: for the benchmark's baseline only)
/// without it.
pub fn survey_with(
    db: &dyn Psql,
    rules: &BTreeMap<String, Rule>,
    ledger: &str,
    known: &str,
    sample: bool,
) -> Result<Classified> {
    let out = db.run(&format!("{};\n", catalog_query(ledger)))?;
    let catalog: Catalog = serde_json::from_str(out.trim()).context("reading the catalog")?;
    let sampled = to_sample(&catalog.columns, rules);
    let found = if sampled.is_empty() || !sample {
        BTreeMap::new()
    } else {
        let out = db.run(&sample_sql(&sampled))?;
        findings(&sampled, &out).context("reading the sampled values")?
    };
    Ok(classify(&catalog, rules, &found, known))
}

/// How and where [`apply`] masks.
pub struct Apply<'a> {
    /// Where, for the progress line: "in `app_tmp_…`", "on the throwaway instance, …".
    pub place: &'a str,
    /// The repository's migrations, whose comments are not production data ([`classify`]).
    pub known: &'a str,
    /// What was left undone when it stops: "nothing was masked".
    pub nothing: &'a str,
    /// How else to go on, appended to the fix of unreviewed columns.
    pub escape: &'a str,
    /// Rewrite the masked tables afterwards (`VACUUM FULL`), so the copy is the size a restore
    /// of masked data gives rather than bloated by the UPDATEs (the local copy; a dump carries
    /// no bloat).
    pub compact: bool,
}

/// Masks a database in place: [`survey`] (strict: anything unreviewed stops it before a row is
/// touched), then [`script`] through psql — one transaction, the application's triggers off —
/// then, if asked, the masked tables rewritten. The same for `load-clone --mask` and the
/// throwaway instance of `clone-prod`.
pub fn apply(db: &dyn Psql, rules: &BTreeMap<String, Rule>, ledger: &str, key: &[u8], how: &Apply) -> Result<()> {
    let c = survey(db, rules, ledger, how.known)?;
    crate::proc::check_interrupt()?;
    refuse_unreviewed(&c, how.nothing, how.escape)?;
    let tables: std::collections::BTreeSet<String> = c.masked.iter().map(|(col, _)| col.relation()).collect();
    crate::term::announce(format_args!(
        "masking {} column(s) {} ({} kept; {} table(s), {} comment(s), {} materialized view(s) refreshed), triggers off",
        c.masked.len(),
        how.place,
        c.kept,
        tables.len(),
        c.comments.len(),
        c.matviews.len()
    ));
    let start = std::time::Instant::now();
    db.run(&script(&c, key)).map_err(|e| explain(e, how.nothing))?;
    crate::proc::check_interrupt()?;
    eprintln!("  masked in {}", crate::time::elapsed(start.elapsed()));
    if how.compact && !tables.is_empty() {
        let start = std::time::Instant::now();
        let vacuum: String = tables.iter().map(|t| format!("VACUUM FULL {t};\n")).collect();
        db.run(&vacuum).context("rewriting the masked tables (VACUUM FULL)")?;
        crate::proc::check_interrupt()?;
        eprintln!(
            "  {} masked table(s) rewritten (VACUUM FULL: the sizes a restore gives) in {}",
            tables.len(),
            crate::time::elapsed(start.elapsed())
        );
    }
    Ok(())
}

/// What a failed masking script means, in the words of the fix.
fn explain(e: anyhow::Error, nothing: &str) -> anyhow::Error {
    // Stopped by a signal: that is the whole story.
    if crate::proc::interrupted().is_some() {
        return e;
    }
    let text = format!("{e:#}");
    let line = crate::error::telling_line(&text).to_string();
    if text.contains("duplicate key value violates unique constraint") {
        return crate::error::fail(
            format!("masked values collide under a UNIQUE constraint ({line}): {nothing}"),
            "give that column a rule with more distinct outputs (email, hash), or keep it",
        );
    }
    if text.contains("violates check constraint") {
        return crate::error::fail(
            format!("masked values break a CHECK constraint ({line}): {nothing}"),
            "give that column a rule whose values pass it (a `fixed` value keeps NULL as NULL)",
        );
    }
    crate::error::fail(format!("masking failed ({line}): {nothing}"), "fix the rule the error names")
}

/// The key the server hashes with: `SHA-256("xtask-db mask\0" ‖ secret)`.
fn derived(secret: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(b"xtask-db mask\0").chain_update(secret).finalize().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The keyed hash as the server computes it, for tests: `SHA-256(K ‖ message)`.
pub fn keyed_hash(secret: &[u8], message: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(derived(secret)).chain_update(message).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(column: &str, type_name: &str, base: &str) -> Column {
        Column {
            schema: "crm".into(),
            table: "customers".into(),
            column: column.into(),
            type_name: type_name.into(),
            base: base.into(),
            not_null: false,
            generated: false,
            kind: "r".into(),
            category: if matches!(base, "text" | "citext") { "S" } else { "N" }.into(),
            empty: None,
            pages: 0.0,
        }
    }

    fn catalog(columns: &[Column]) -> Catalog {
        Catalog { columns: columns.to_vec(), ..Catalog::default() }
    }

    fn rules(pairs: &[(&str, &str)]) -> BTreeMap<String, Rule> {
        let specs: BTreeMap<String, RuleSpec> =
            pairs.iter().map(|(k, v)| (k.to_string(), RuleSpec::Name(v.to_string()))).collect();
        parse_rules(&specs).unwrap()
    }

    #[test]
    fn the_keyed_hash_depends_on_the_key_and_the_value() {
        let (a, b) = (keyed_hash(b"key one", b"x@example.com"), keyed_hash(b"key two", b"x@example.com"));
        assert_ne!(a, b);
        assert_eq!(a, keyed_hash(b"key one", b"x@example.com"));
        assert_ne!(a, keyed_hash(b"key one", b"y@example.com"));
        let names = made_up_names();
        assert_eq!(names.len(), 256);
        assert!(names.iter().all(|n| n.len() >= 4 && n.chars().next().unwrap().is_ascii_uppercase()), "{names:?}");
    }

    #[test]
    fn every_column_is_classified_and_the_unreviewed_are_named_with_their_rule() {
        let cols = [
            col("id", "bigint", "bigint"),
            col("email", "crm.email_address", "citext"),
            col("phone", "crm.phone_e164", "text"),
            col("lifecycle_stage", "text", "text"),
            col("last_seen_ip", "inet", "inet"),
            Column { table: "tags".into(), ..col("label", "text", "text") },
        ];
        let r = rules(&[("crm.customers.email", "email"), ("crm.customers.*", "keep"), ("crm.gone.x", "null")]);
        let c = classify(&catalog(&cols), &r, &BTreeMap::new(), "");
        assert_eq!(c.masked.len(), 1);
        let unreviewed: Vec<&str> = c.unreviewed.iter().map(|u| u.line.as_str()).collect();
        assert_eq!(
            unreviewed,
            [
                "\"crm.customers.phone\" = \"phone\"",
                "\"crm.customers.last_seen_ip\" = \"ip\"",
                "\"crm.tags.label\" = \"keep\""
            ],
            "a personal-looking column needs its own rule; a new column any rule"
        );
        assert_eq!(c.kept, 2);
        assert_eq!(c.stale, ["crm.gone.x"]);
    }

    #[test]
    fn rules_that_cannot_apply_are_refused() {
        let mut nn = col("first_name", "text", "text");
        nn.not_null = true;
        let c = classify(
            &catalog(&[nn, col("n", "integer", "integer")]),
            &rules(&[("crm.customers.first_name", "null"), ("crm.customers.n", "email")]),
            &BTreeMap::new(),
            "",
        );
        assert_eq!(c.invalid.len(), 2, "{:?}", c.invalid);
        assert!(parse_rules(&BTreeMap::from([("a.b".to_string(), RuleSpec::Name("keep".into()))])).is_err());
        assert!(parse_rules(&BTreeMap::from([("a.b.c".to_string(), RuleSpec::Name("scramble".into()))])).is_err());
        let t = |v: toml::Value| RuleSpec::Table(BTreeMap::from([("date_shift".to_string(), v)])).rule();
        assert_eq!(t(toml::Value::Integer(30)).unwrap(), Rule::DateShift(30));
        assert!(t(toml::Value::Integer(0)).is_err());
    }

    #[test]
    fn the_key_is_never_in_a_statement() {
        let key = b"s3cret-key-material";
        let s = script(&Classified::masking(vec![(col("email", "crm.email_address", "citext"), Rule::Email)]), key);
        assert!(!s.contains("s3cret"));
        let data_line = s.lines().find(|l| l.contains(&hex(&derived(key)))).unwrap();
        assert!(data_line.starts_with("\\\\x"), "the key is COPY data, not SQL: {data_line}");
        assert!(s.contains("SET LOCAL session_replication_role = replica"));
        assert!(
            s.contains("DISABLE %s %I") && s.contains("'TRIGGER'") && s.contains("'RULE'"),
            "the owner's way, for what fires anyway or when the role may not set it"
        );
    }

    #[test]
    fn personal_content_is_flagged_with_a_rule_the_column_can_take() {
        let mut tags = col("tags", "text[]", "text[]");
        tags.category = "A".into();
        tags.empty = Some("{}".into());
        let mut contact = col("contact", "crm.contact", "crm.contact");
        (contact.category, contact.not_null, contact.empty) = ("C".into(), true, Some("(,)".into()));
        let mut doc = col("doc", "jsonb", "jsonb");
        (doc.category, doc.not_null, doc.empty) = ("U".into(), true, Some("{}".into()));
        let fullname = col("fullname", "text", "text");
        let line = col("line", "text", "text");
        let cols = [tags.clone(), contact.clone(), doc.clone(), fullname.clone(), line.clone()];
        let found = |kinds: &[Kind]| Finding { sampled: 10, kinds: kinds.iter().map(|k| (*k, 3)).collect() };
        let found = BTreeMap::from([
            (tags.key(), found(&[Kind::Email])),
            (contact.key(), found(&[Kind::Email, Kind::Name])),
            (doc.key(), found(&[Kind::Email])),
            (fullname.key(), found(&[Kind::Name])),
            (line.key(), found(&[Kind::Phone])),
        ]);
        let r = rules(&[("crm.customers.*", "keep"), ("crm.customers.line", "keep")]);
        let to = to_sample(&cols, &r);
        assert_eq!(to.len(), 5, "every kept column that holds text is sampled");
        let c = classify(&catalog(&cols), &r, &found, "");
        let lines: Vec<&str> = c.unreviewed.iter().map(|u| u.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "\"crm.customers.tags\" = \"null\"",
                "\"crm.customers.contact\" = { fixed = \"(,)\" }",
                "\"crm.customers.doc\" = { fixed = \"{}\" }",
                "\"crm.customers.fullname\" = \"name\"",
                "\"crm.customers.line\" = \"phone\"   (or \"keep!\" once you have checked that these values are not personal)",
            ]
        );
        // `keep!` is the reviewed answer for a named column, and is not sampled again.
        let r = rules(&[("crm.customers.*", "keep"), ("crm.customers.line", "keep!")]);
        assert!(!to_sample(&cols, &r).iter().any(|c| c.column == "line"));
        let c = classify(&catalog(&cols), &r, &found, "");
        assert!(!c.unreviewed.iter().any(|u| u.column.column == "line"));
        let star = BTreeMap::from([("a.b.*".to_string(), RuleSpec::Name("keep!".into()))]);
        assert!(parse_rules(&star).unwrap_err().to_string().contains("`keep!` vouches for one column"));
    }

    #[test]
    fn the_script_masks_each_inheritance_child_once_and_refreshes_materialized_views() {
        let mut parent = col("email", "text", "text");
        parent.table = "people".into();
        let mut child = parent.clone();
        child.table = "employees".into();
        let mut part = parent.clone();
        (part.table, part.kind) = ("events".into(), "p".into());
        let mut c = Classified::masking(vec![(parent, Rule::Email), (child, Rule::Email), (part, Rule::Email)]);
        c.matviews = vec!["crm.people_mv".into()];
        c.comments = vec![(
            Comment { object_type: "table column".into(), identity: "crm.people.email".into(), text: "x".into() },
            vec![Kind::Email],
        )];
        let s = script(&c, b"0123456789abcdef");
        assert!(
            s.contains("UPDATE ONLY \"crm\".\"people\" SET") && s.contains("UPDATE ONLY \"crm\".\"employees\" SET"),
            "{s}"
        );
        assert!(
            s.contains("UPDATE \"crm\".\"events\" SET"),
            "a partitioned table's UPDATE reaches its partitions: {s}"
        );
        assert!(s.contains("COMMENT ON COLUMN crm.people.email IS '[redacted]';"), "{s}");
        let (refresh, commit) =
            (s.find("REFRESH MATERIALIZED VIEW crm.people_mv;").unwrap(), s.rfind("COMMIT").unwrap());
        assert!(s.find("UPDATE").unwrap() < refresh && refresh < commit, "refreshed after masking, before the commit");
    }
}
