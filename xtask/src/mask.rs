//! Masking personal data: the rules (`[workspace.metadata.db.mask.rules]`), the strict
//! classification of every column against them, and the SQL that applies them. Pure: the caller
//! reads the columns from a database and runs the script.
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

use anyhow::{bail, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::pg::literal;

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
    "email, phone, first_name, last_name, name, redact, ip, null, hash, keep, { date_shift = DAYS }, { fixed = \"VALUE\" }";

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
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
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
}

impl Column {
    pub fn key(&self) -> String {
        format!("{}.{}.{}", self.schema, self.table, self.column)
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

/// The query listing every column of the tables an application writes, as one JSON array of
/// [`Column`]: not the system's, not an extension's, not the migrator's `ledger`; partitions
/// through their parent.
pub fn columns_query(ledger: &str) -> String {
    format!(
        "SELECT coalesce(json_agg(q), '[]') FROM (SELECT n.nspname AS schema, c.relname AS \"table\", a.attname AS \"column\", \
           format_type(a.atttypid, a.atttypmod) AS \"type\", \
           format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL) AS base, \
           (a.attnotnull OR t.typnotnull) AS not_null, (a.attgenerated <> '' OR a.attidentity <> '') AS generated \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
           AND c.oid <> coalesce(to_regclass({}), 0) \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1, 2, a.attnum) q",
        literal(ledger)
    )
}

/// The secret key from the environment variable `var` (at least 16 bytes).
pub fn key_from_env(var: &str) -> Result<Vec<u8>> {
    let key = std::env::var(var).unwrap_or_default();
    if key.len() < 16 {
        return Err(crate::error::fail(
            format!("no masking key: `{var}` is {}", if key.is_empty() { "not set" } else { "shorter than 16 bytes" }),
            format!("export {var}=<a secret of at least 16 bytes, the same for every run whose output must match> (e.g. from your password manager), or pass --unmasked to clone-prod to take production as it is"),
        ));
    }
    Ok(key.into_bytes())
}

/// What stops a masking run, one line each with its fix; empty when every column is classified.
pub fn problems(c: &Classified) -> Vec<String> {
    let mut out = Vec::new();
    for (col, line) in &c.unreviewed {
        out.push(format!("unreviewed column {} ({}): add  {line}", col.key(), col.type_name));
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
        out.insert(k.clone(), rule);
    }
    Ok(out)
}

/// Every column with its rule, or the columns that stop the run.
pub struct Classified {
    pub masked: Vec<(Column, Rule)>,
    /// Kept: reviewed as not personal.
    pub kept: usize,
    /// Columns without a rule (new since the rules were written), or personal-looking ones
    /// covered only by a `schema.table.*` keep: each with the line to add.
    pub unreviewed: Vec<(Column, String)>,
    /// Rules naming a column that does not exist (a typo, or the column was dropped).
    pub stale: Vec<String>,
    /// Rules that cannot apply to their column (`null` on NOT NULL, `redact` on a number, …).
    pub invalid: Vec<String>,
}

pub fn classify(columns: &[Column], rules: &BTreeMap<String, Rule>) -> Classified {
    let mut c =
        Classified { masked: Vec::new(), kept: 0, unreviewed: Vec::new(), stale: Vec::new(), invalid: Vec::new() };
    let mut used = std::collections::BTreeSet::new();
    for col in columns {
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
        match rule {
            None => {
                let suggestion = looks_personal(col).unwrap_or("keep");
                c.unreviewed.push((col.clone(), format!("\"{exact}\" = {}", quote_rule(suggestion))));
            }
            Some((Rule::Keep, exact_rule)) => {
                if let (false, Some(s)) = (exact_rule, looks_personal(col)) {
                    c.unreviewed.push((col.clone(), format!("\"{exact}\" = {}", quote_rule(s))));
                } else {
                    c.kept += 1;
                }
            }
            Some((rule, _)) => match fits(col, &rule) {
                Ok(()) => c.masked.push((col.clone(), rule)),
                Err(why) => c.invalid.push(format!("`{exact}`: {why}")),
            },
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
    let textual = matches!(base, "text" | "citext" | "public.citext") || base.starts_with("character");
    if col.generated {
        return Err("a generated or identity column cannot be written; mask what it is computed from".into());
    }
    match rule {
        Rule::Null if col.not_null => Err("`null` on a NOT NULL column: use another rule".into()),
        Rule::Email | Rule::Phone | Rule::FirstName | Rule::LastName | Rule::Name | Rule::Redact | Rule::Hash
            if !textual =>
        {
            Err(format!("this rule writes text; the column is {}", col.type_name))
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
        Rule::Keep => return None,
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
pub fn script(masked: &[(Column, Rule)], key: &[u8]) -> String {
    let mut by_table: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (col, rule) in masked {
        if let Some(e) = expression(col, rule) {
            by_table
                .entry((col.schema.clone(), col.table.clone()))
                .or_default()
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
    s.push_str(&format!(
        "CREATE TEMP TABLE xtask_mask_triggers (tbl regclass, name name) ON COMMIT DROP;\n\
         DO $xtask$ BEGIN\n\
           SET LOCAL session_replication_role = replica;\n\
         EXCEPTION WHEN insufficient_privilege THEN\n\
           INSERT INTO xtask_mask_triggers SELECT t.tgrelid::regclass, t.tgname FROM pg_trigger t\n\
             WHERE t.tgrelid = ANY (ARRAY[{}]::regclass[]) AND NOT t.tgisinternal AND t.tgenabled = 'O';\n\
         END $xtask$;\n\
         DO $xtask$ DECLARE r record; BEGIN\n\
           FOR r IN SELECT * FROM xtask_mask_triggers LOOP\n\
             EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', r.tbl, r.name);\n\
           END LOOP;\n\
         END $xtask$;\n",
        if tables.is_empty() { "NULL".to_string() } else { tables.join(", ") }
    ));
    s.push_str(&helpers());
    for ((schema, table), sets) in by_table {
        s.push_str(&format!(
            "\\echo masking {schema}.{table}\nUPDATE {}.{} SET {} FROM xtask_mask_key k;\n",
            crate::pg::ident(&schema),
            crate::pg::ident(&table),
            sets.join(", ")
        ));
    }
    s.push_str(
        "DO $xtask$ DECLARE r record; BEGIN\n\
           FOR r IN SELECT * FROM xtask_mask_triggers LOOP\n\
             EXECUTE format('ALTER TABLE %s ENABLE TRIGGER %I', r.tbl, r.name);\n\
           END LOOP;\n\
         END $xtask$;\n\
         COMMIT;\n",
    );
    s
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
        }
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
        let c = classify(&cols, &r);
        assert_eq!(c.masked.len(), 1);
        let unreviewed: Vec<&str> = c.unreviewed.iter().map(|(_, s)| s.as_str()).collect();
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
            &[nn, col("n", "integer", "integer")],
            &rules(&[("crm.customers.first_name", "null"), ("crm.customers.n", "email")]),
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
        let s = script(&[(col("email", "crm.email_address", "citext"), Rule::Email)], key);
        assert!(!s.contains("s3cret"));
        let data_line = s.lines().find(|l| l.contains(&hex(&derived(key)))).unwrap();
        assert!(data_line.starts_with("\\\\x"), "the key is COPY data, not SQL: {data_line}");
        assert!(s.contains("SET LOCAL session_replication_role = replica"));
        assert!(
            s.contains("DISABLE TRIGGER") && s.contains("ENABLE TRIGGER"),
            "the owner's way, when the role may not set it"
        );
    }
}
