//! Schemas as text a reviewer and a machine can compare: `pg_dump --schema-only` output turned
//! into a canonical form, and the difference between two canonical forms.
//!
//! Canonical form: the dump split into top-level statements (quote-, dollar-quote- and
//! comment-aware), minus what is not schema — psql meta-commands (`\restrict` carries a random
//! key), `SET` and `set_config`, comments, sequence positions, owners, and privileges (kept with
//! `--with-privileges`) — then sorted, so creation order does not matter. Column lines inside
//! `CREATE TABLE` are sorted too unless column order is compared (`strict_column_order`).
//! Statement text is otherwise kept verbatim: function bodies are compared byte for byte.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub with_privileges: bool,
    pub strict_column_order: bool,
}

/// Top-level statements of a SQL script ([`crate::sql::split`]), each without its terminating
/// `;`, comments removed (outside quoted text), surrounding whitespace trimmed. A psql
/// meta-command (a line starting with `\`) is a statement of its own.
pub fn split(sql: &str) -> Vec<String> {
    crate::sql::split(sql)
        .into_iter()
        .map(|s| if s.meta { s.sql } else { crate::sql::strip_comments(&s.sql).trim().to_string() })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The canonical statements of a dump, sorted.
pub fn canonical(sql: &str, opts: Options) -> Vec<String> {
    let mut out: Vec<String> = split(sql)
        .into_iter()
        .filter(|s| keep(s, opts))
        .map(|s| {
            if !opts.strict_column_order && s.starts_with("CREATE ") && s.contains(" TABLE ") {
                sort_table_elements(&s)
            } else {
                s
            }
        })
        .collect();
    out.sort();
    out
}

/// The canonical form as a file: statements separated by blank lines.
pub fn render(statements: &[String]) -> String {
    let mut s = statements.join(";\n\n");
    if !s.is_empty() {
        s.push_str(";\n");
    }
    s
}

fn keep(stmt: &str, opts: Options) -> bool {
    let head = stmt.trim_start();
    let upper = |n: usize| head.get(..n).map(str::to_ascii_uppercase).unwrap_or_default();
    if head.starts_with('\\') {
        return false;
    }
    if upper(4) == "SET "
        || head.starts_with("SELECT pg_catalog.set_config(")
        || head.starts_with("SELECT pg_catalog.setval(")
    {
        return false;
    }
    if head.starts_with("ALTER ") && head.contains(" OWNER TO ") {
        return false;
    }
    if !opts.with_privileges
        && (upper(6) == "GRANT " || upper(7) == "REVOKE " || head.starts_with("ALTER DEFAULT PRIVILEGES"))
    {
        return false;
    }
    true
}

/// `CREATE TABLE t (\n    a int,\n    b text\n)…` with the element lines in sorted order.
fn sort_table_elements(stmt: &str) -> String {
    let Some(open) = stmt.find("(\n") else { return stmt.to_string() };
    // The matching close paren: the first line that starts with `)` after `open`. Searched from
    // the `\n` after `(`, so a table without columns (`(\n)`) finds its own, empty body.
    let Some(close_rel) = stmt[open + 1..].find("\n)") else { return stmt.to_string() };
    let close = open + 1 + close_rel;
    if close < open + 2 {
        return stmt.to_string();
    }
    let body = &stmt[open + 2..close];
    let mut elems: Vec<String> =
        split_top_level_commas(body).into_iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    elems.sort();
    let inner = elems.iter().map(|e| format!("    {e}")).collect::<Vec<_>>().join(",\n");
    format!("{}(\n{inner}{}", &stmt[..open], &stmt[close..])
}

fn split_top_level_commas(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut depth, mut start, mut i) = (0i32, 0, 0);
    let mut parts = Vec::new();
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// What a statement defines, for reports: `table crm.customers`, `index crm.x_idx`, ….
pub fn object_key(stmt: &str) -> String {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let w = |i: usize| words.get(i).copied().unwrap_or("");
    let name = |s: &str| s.split('(').next().unwrap_or(s).to_string();
    let after = |kw: &str| words.iter().position(|x| *x == kw).map(|p| w(p + 1)).unwrap_or("");
    let on_table = || match after("ON") {
        "ONLY" => words.iter().position(|x| *x == "ON").map(|p| w(p + 2)).unwrap_or(""),
        t => t,
    };
    match (w(0), w(1), w(2)) {
        ("CREATE", "TABLE", _) => format!("table {}", name(w(2))),
        ("CREATE", "UNLOGGED", "TABLE") => format!("table {}", name(w(3))),
        // `ON ONLY t`: an index on a partitioned table.
        ("CREATE", "INDEX", _) => format!("index {} on {}", w(2), on_table()),
        ("CREATE", "UNIQUE", "INDEX") => format!("index {} on {}", w(3), on_table()),
        ("CREATE", "VIEW", _) => format!("view {}", w(2)),
        ("CREATE", "MATERIALIZED", "VIEW") => format!("materialized view {}", w(3)),
        ("CREATE", "FUNCTION", _) | ("CREATE", "PROCEDURE", _) => {
            format!(
                "{} {}",
                w(1).to_lowercase(),
                stmt.split_once(w(1))
                    .map(|(_, r)| r.split(" RETURNS").next().unwrap_or(r))
                    .unwrap_or("")
                    .split('\n')
                    .next()
                    .unwrap_or("")
                    .trim()
            )
        }
        ("CREATE", "TRIGGER", _) | ("CREATE", "CONSTRAINT", "TRIGGER") => {
            format!("trigger {} on {}", if w(1) == "CONSTRAINT" { w(3) } else { w(2) }, after("ON"))
        }
        ("CREATE", "TYPE", _) => format!("type {}", w(2)),
        ("CREATE", "DOMAIN", _) => format!("domain {}", w(2)),
        ("CREATE", "SEQUENCE", _) => format!("sequence {}", w(2)),
        ("CREATE", "SCHEMA", _) => format!("schema {}", w(2)),
        ("CREATE", "EXTENSION", _) => format!("extension {}", if w(2) == "IF" { w(5) } else { w(2) }),
        ("CREATE", "POLICY", _) => format!("policy {} on {}", w(2), after("ON")),
        ("CREATE", "AGGREGATE", _) => format!("aggregate {}", name(w(2))),
        ("ALTER", "TABLE", _) | ("ALTER", "FOREIGN", _) => {
            let table = if w(2) == "ONLY" { w(3) } else { w(2) };
            if let Some(c) = words.iter().position(|x| *x == "CONSTRAINT") {
                format!("constraint {} on {table}", w(c + 1))
            } else if stmt.contains("ROW LEVEL SECURITY") {
                format!("row level security on {table}")
            } else if stmt.contains("ATTACH PARTITION") {
                format!("partition {} of {table}", after("PARTITION"))
            } else if let Some(c) = words.iter().position(|x| *x == "COLUMN") {
                format!(
                    "column {table}.{} ({})",
                    w(c + 1),
                    words.get(c + 2..).unwrap_or_default().iter().take(2).copied().collect::<Vec<_>>().join(" ")
                )
            } else {
                format!("table {table} ({})", words.iter().skip(3).take(3).copied().collect::<Vec<_>>().join(" "))
            }
        }
        ("ALTER", "SEQUENCE", _) => format!("sequence {} ({})", w(2), w(3).to_lowercase()),
        ("COMMENT", "ON", _) => {
            // COMMENT ON <KIND> <target> IS '…' (two-word kinds: MATERIALIZED VIEW, FOREIGN TABLE, …).
            let target: Vec<&str> = words[2..].iter().take_while(|x| **x != "IS").copied().collect();
            let n =
                if matches!(target.first(), Some(&("MATERIALIZED" | "FOREIGN" | "EVENT" | "ACCESS"))) { 2 } else { 1 };
            let (kind, name) = target.split_at(n.min(target.len()));
            format!("comment on {} {}", kind.join(" ").to_lowercase(), name.join(" "))
        }
        ("ALTER", "PUBLICATION", _) => {
            format!("publication {} ({})", w(2), words.get(3..).unwrap_or_default().join(" "))
        }
        ("CREATE", ..) => generic_key(&words),
        _ => stmt.lines().next().unwrap_or("").chars().take(80).collect(),
    }
}

/// `CREATE <KIND WORDS> <name> …` for the kinds without a rule of their own (event triggers,
/// statistics, collations, casts, operators, text search objects, rules, foreign servers, tables
/// and wrappers, publications, …): "<kind> <name>", the kind in lower case. A rule's name is
/// followed by its table (`rule r on public.t`); a cast is named by its `(source AS target)`.
fn generic_key(words: &[&str]) -> String {
    let mut i = 1;
    while matches!(words.get(i), Some(&("OR" | "REPLACE" | "DEFAULT"))) {
        i += 1;
    }
    let start = i;
    while words.get(i).is_some_and(|w| w.len() > 1 && w.bytes().all(|b| b.is_ascii_uppercase())) {
        i += 1;
    }
    let kind = words[start..i].join(" ").to_lowercase();
    let Some(first) = words.get(i) else { return kind };
    if first.starts_with('(') {
        // CAST (integer AS text)
        let mut parts = Vec::new();
        for w in &words[i..] {
            parts.push(*w);
            if w.ends_with(')') {
                break;
            }
        }
        return format!("{kind} {}", parts.join(" "));
    }
    let name = first.split('(').next().unwrap_or(first);
    if kind == "rule" {
        if let Some(to) = words.iter().position(|w| *w == "TO") {
            return format!("rule {name} on {}", words.get(to + 1).unwrap_or(&""));
        }
    }
    format!("{kind} {name}")
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (and nothing else
/// is special).
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// `stmts` without the objects whose key matches one of `patterns`; and how many were left out.
pub fn without_ignored(stmts: Vec<String>, patterns: &[String]) -> (Vec<String>, usize) {
    if patterns.is_empty() {
        return (stmts, 0);
    }
    let before = stmts.len();
    let kept: Vec<String> =
        stmts.into_iter().filter(|s| !patterns.iter().any(|p| matches(p, &object_key(s)))).collect();
    let n = before - kept.len();
    (kept, n)
}

/// How two canonical schemas differ, by object. The JSON keys are the report's words:
/// `changed`, `only_in_b`, `only_in_a`; inside a changed object, each element's `a` and `b`.
#[derive(Debug, Default, Serialize)]
pub struct Difference {
    pub changed: Vec<Changed>,
    pub only_in_b: Vec<String>,
    pub only_in_a: Vec<String>,
}

/// A changed object and, where the tool can say, what changed inside it: for a table each column,
/// constraint, index, trigger, policy, default, comment on a column and row-level security
/// switch; for a short single-statement object its definition.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Changed {
    pub object: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inside: Vec<Element>,
}

/// One element of a changed object, as each side defines it (`None`: not on that side).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

impl std::fmt::Display for Element {
    /// `column amount: integer → bigint`, `index t_a_idx: only in b (USING btree (a))`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.a, &self.b) {
            (Some(a), Some(b)) => write!(f, "{}: {a} → {b}", self.name),
            (None, Some(b)) => write!(f, "{}: only in b ({b})", self.name),
            (Some(a), None) => write!(f, "{}: only in a ({a})", self.name),
            (None, None) => write!(f, "{}", self.name),
        }
    }
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.only_in_b.is_empty() && self.only_in_a.is_empty() && self.changed.is_empty()
    }
}

/// The columns and constraints of a `CREATE TABLE` statement, by name, in order.
fn table_elements(stmt: &str) -> Option<Vec<(String, String)>> {
    let head = stmt.trim_start();
    if !(head.starts_with("CREATE ") && head.split_whitespace().take(4).any(|w| w == "TABLE")) {
        return None;
    }
    let open = stmt.find("(\n")?;
    let close = open + 1 + stmt[open + 1..].find("\n)")?;
    // `(\n)`: no columns (the body is empty, and `close` is right after `open`).
    let body = stmt.get(open + 2..close).unwrap_or_default();
    let mut out = Vec::new();
    for line in body.lines() {
        let line = line.trim().trim_end_matches(',');
        if line.is_empty() {
            continue;
        }
        let (name, rest) = if let Some(quoted) = line.strip_prefix('"') {
            let end = quoted.find('"')?;
            (format!("\"{}\"", &quoted[..end]), quoted[end + 1..].trim())
        } else {
            let (n, r) = line.split_once(' ').unwrap_or((line, ""));
            (n.to_string(), r.trim())
        };
        if name == "CONSTRAINT" {
            let (cname, def) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push((format!("constraint {cname}"), def.to_string()));
        } else {
            out.push((format!("column {name}"), rest.to_string()));
        }
    }
    Some(out)
}

/// What differs inside a table between two `CREATE TABLE` statements, one element each.
fn table_changes(a: &str, b: &str) -> Vec<Element> {
    let (Some(ea), Some(eb)) = (table_elements(a), table_elements(b)) else { return Vec::new() };
    let mut out = Vec::new();
    for (name, def) in &ea {
        match eb.iter().find(|(n, _)| n == name) {
            None => out.push(Element { name: name.clone(), a: Some(def.clone()), b: None }),
            Some((_, new)) if new != def => {
                out.push(Element { name: name.clone(), a: Some(def.clone()), b: Some(new.clone()) })
            }
            Some(_) => {}
        }
    }
    for (name, def) in &eb {
        if !ea.iter().any(|(n, _)| n == name) {
            out.push(Element { name: name.clone(), a: None, b: Some(def.clone()) });
        }
    }
    if out.is_empty() && ea.iter().map(|(n, _)| n).ne(eb.iter().map(|(n, _)| n)) {
        // Only the order differs (compared with --strict-column-order).
        let order = |e: &[(String, String)]| {
            e.iter().map(|(n, _)| n.trim_start_matches("column ")).collect::<Vec<_>>().join(", ")
        };
        out.push(Element { name: "column order".into(), a: Some(order(&ea)), b: Some(order(&eb)) });
    }
    let (oa, ob) = (a.lines().next().unwrap_or(""), b.lines().next().unwrap_or(""));
    let tail = |s: &str| s.rsplit_once("\n)").map(|(_, t)| t.trim().to_string()).unwrap_or_default();
    if oa != ob {
        let head = |s: &str| s.trim_end_matches(" (").to_string();
        out.push(Element { name: "definition".into(), a: Some(head(oa)), b: Some(head(ob)) });
    } else if tail(a) != tail(b) {
        // After the columns: PARTITION BY, INHERITS, WITH (…), a partition's bounds.
        out.push(Element { name: "definition".into(), a: Some(tail(a)), b: Some(tail(b)) });
    }
    out
}

/// For an object that belongs to a table (`index i on T`, `constraint c on T`, `trigger t on T`,
/// `policy p on T`, `row level security on T`, `column T.c (SET DEFAULT)`, `comment on column
/// T.c`): the table's key and the element's name within it.
fn member_of(key: &str) -> Option<(String, String)> {
    for kind in ["index ", "constraint ", "trigger ", "policy "] {
        if let Some((name, table)) = key.strip_prefix(kind).and_then(|r| r.split_once(" on ")) {
            return Some((format!("table {table}"), format!("{kind}{name}")));
        }
    }
    if let Some(table) = key.strip_prefix("row level security on ") {
        return Some((format!("table {table}"), "row level security".into()));
    }
    if let Some(rest) = key.strip_prefix("column ") {
        let (target, what) = rest.split_once(" (")?;
        let (table, column) = target.rsplit_once('.')?;
        return Some((format!("table {table}"), format!("column {column} ({}", what)));
    }
    if let Some(target) = key.strip_prefix("comment on column ") {
        let (table, column) = target.rsplit_once('.')?;
        return Some((format!("table {table}"), format!("comment on column {column}")));
    }
    None
}

/// A statement as the element's line shows it: without what its name already says (`CREATE
/// INDEX i ON public.t`, `ALTER TABLE ONLY public.t ADD CONSTRAINT c`), on one line.
fn element_definition(stmts: &[&String]) -> String {
    let one = |s: &str| -> String {
        let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let words: Vec<&str> = flat.split(' ').collect();
        let cut = match (words.first().copied(), words.get(1).copied()) {
            (Some("CREATE"), Some("INDEX" | "UNIQUE" | "POLICY")) => {
                words.iter().position(|w| *w == "ON").map(|p| p + 2 + usize::from(words.get(p + 1) == Some(&"ONLY")))
            }
            (Some("CREATE"), Some("TRIGGER" | "CONSTRAINT")) => {
                words.iter().position(|w| *w == "TRIGGER").map(|p| p + 2)
            }
            (Some("ALTER"), Some("TABLE")) => words
                .iter()
                .position(|w| *w == "CONSTRAINT" || *w == "COLUMN")
                .map(|p| p + 2)
                .or(Some(3 + usize::from(words.get(2) == Some(&"ONLY")))),
            (Some("COMMENT"), _) => words.iter().position(|w| *w == "IS").map(|p| p + 1),
            _ => None,
        };
        let unique = if words.get(1) == Some(&"UNIQUE") { "UNIQUE " } else { "" };
        match cut {
            Some(i) if i < words.len() => format!("{unique}{}", words[i..].join(" ")),
            _ => flat,
        }
    };
    stmts.iter().map(|s| one(s)).collect::<Vec<_>>().join("; ")
}

/// Objects only in `b`, only in `a`, or defined differently (changed). What belongs to a table
/// that both sides have is reported inside that table; what belongs to a table only one side
/// has goes with it.
pub fn compare(a: &[String], b: &[String]) -> Difference {
    fn group(stmts: &[String]) -> BTreeMap<String, Vec<&String>> {
        let mut m: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for s in stmts {
            m.entry(object_key(s)).or_default().push(s);
        }
        m
    }
    let (ga, gb) = (group(a), group(b));
    // A table's own elements (columns, inline constraints) first, then what belongs to it.
    let (mut own, mut members): (BTreeMap<String, Vec<Element>>, BTreeMap<String, Vec<Element>>) = Default::default();
    let mut d = Difference::default();
    let keys: std::collections::BTreeSet<&String> = ga.keys().chain(gb.keys()).collect();
    for k in keys {
        let (va, vb) = (ga.get(k), gb.get(k));
        if va == vb {
            continue;
        }
        if let Some((table, name)) = member_of(k) {
            match (ga.contains_key(&table), gb.contains_key(&table)) {
                (true, true) => {
                    members.entry(table).or_default().push(Element {
                        name,
                        a: va.map(|v| element_definition(v)),
                        b: vb.map(|v| element_definition(v)),
                    });
                    continue;
                }
                // Goes with its table, which only that side has.
                (true, false) if vb.is_none() => continue,
                (false, true) if va.is_none() => continue,
                _ => {}
            }
        }
        match (va, vb) {
            (None, _) => d.only_in_b.push(k.clone()),
            (_, None) => d.only_in_a.push(k.clone()),
            (Some(x), Some(y)) => {
                let mut elements = match (x.as_slice(), y.as_slice()) {
                    ([x], [y]) => table_changes(x, y),
                    _ => Vec::new(),
                };
                let short = |v: &[&String]| v.iter().all(|s| !s.contains('\n') && s.len() <= 300);
                if elements.is_empty() && !k.starts_with("table ") && short(x) && short(y) {
                    elements.push(Element {
                        name: "definition".into(),
                        a: Some(element_definition(x)),
                        b: Some(element_definition(y)),
                    });
                }
                own.insert(k.clone(), elements);
            }
        }
    }
    for (object, theirs) in members {
        own.entry(object).or_default().extend(theirs);
    }
    d.changed = own.into_iter().map(|(object, inside)| Changed { object, inside }).collect();
    d
}

/// A unified diff of two canonical files, at most `max_lines` lines, then a count of the rest.
pub fn unified_diff(a: &str, b: &str, a_name: &str, b_name: &str, max_lines: usize, color: bool) -> String {
    let diff = similar::TextDiff::from_lines(a, b);
    let text = diff.unified_diff().context_radius(3).header(a_name, b_name).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for l in lines.iter().take(max_lines) {
        let (pre, post) = match (color, l.as_bytes().first()) {
            (true, Some(b'-')) if !l.starts_with("---") => ("\x1b[31m", "\x1b[0m"),
            (true, Some(b'+')) if !l.starts_with("+++") => ("\x1b[32m", "\x1b[0m"),
            (true, Some(b'@')) => ("\x1b[36m", "\x1b[0m"),
            _ => ("", ""),
        };
        out.push_str(pre);
        out.push_str(l);
        out.push_str(post);
        out.push('\n');
    }
    if lines.len() > max_lines {
        out.push_str(&format!("… {} more diff lines cut (see the canonical files)\n", lines.len() - max_lines));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_pg_dump_creates_gets_a_name() {
        for (stmt, key) in [
            (
                "CREATE EVENT TRIGGER audit_ddl ON ddl_command_end\n   EXECUTE FUNCTION public.f()",
                "event trigger audit_ddl",
            ),
            ("CREATE STATISTICS public.s1 (ndistinct) ON a, b FROM public.t", "statistics public.s1"),
            (
                "CREATE COLLATION public.\"numeric\" (provider = icu, locale = 'en-u-kn-true')",
                "collation public.\"numeric\"",
            ),
            ("CREATE CAST (integer AS public.mood) WITH FUNCTION public.f(integer)", "cast (integer AS public.mood)"),
            ("CREATE OPERATOR public.=== (\n    FUNCTION = public.eq\n)", "operator public.==="),
            (
                "CREATE TEXT SEARCH CONFIGURATION public.cfg (\n    PARSER = pg_catalog.\"default\" )",
                "text search configuration public.cfg",
            ),
            ("CREATE RULE r_ins AS\n    ON INSERT TO public.t DO INSTEAD NOTHING", "rule r_ins on public.t"),
            ("CREATE SERVER films FOREIGN DATA WRAPPER postgres_fdw", "server films"),
            ("CREATE FOREIGN DATA WRAPPER w", "foreign data wrapper w"),
            ("CREATE FOREIGN TABLE public.ft (\n    a integer\n)\nSERVER films", "foreign table public.ft"),
            ("CREATE PUBLICATION pub WITH (publish = 'insert')", "publication pub"),
            ("CREATE DEFAULT CONVERSION public.c FOR 'LATIN1' TO 'UTF8' FROM f", "conversion public.c"),
            ("CREATE OPERATOR FAMILY public.fam USING btree", "operator family public.fam"),
            ("CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER h", "access method heap2"),
            ("ALTER PUBLICATION pub ADD TABLE ONLY public.t", "publication pub (ADD TABLE ONLY public.t)"),
        ] {
            assert_eq!(object_key(stmt), key, "{stmt}");
        }
    }

    #[test]
    fn ignore_patterns_match_report_names() {
        assert!(matches("table public.spatial_ref_sys", "table public.spatial_ref_sys"));
        assert!(!matches("table public.spatial_ref_sys", "table public.spatial_ref_sys2"));
        assert!(matches("* tiger.*", "table tiger.addr"));
        assert!(matches("* tiger.*", "function tiger.f(integer)"));
        assert!(!matches("* tiger.*", "table public.tiger"));
        assert!(matches("extension *", "extension postgis"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "axxbyyc") && !matches("a*b*c", "axxcyyb") && !matches("ab*ba", "aba"));
        let stmts = vec![
            "CREATE TABLE tiger.addr (\n    x integer\n)".to_string(),
            "CREATE TABLE public.t (\n    x integer\n)".to_string(),
        ];
        let (kept, n) = without_ignored(stmts, &["* tiger.*".to_string()]);
        assert_eq!((kept.len(), n), (1, 1));
    }

    fn lines(d: &Difference, object: &str) -> Vec<String> {
        let c = d.changed.iter().find(|c| c.object == object).unwrap_or_else(|| panic!("{object} not changed: {d:?}"));
        c.inside.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_changed_table_names_its_changed_columns_and_constraints() {
        let a = "CREATE TABLE public.t (\n    amount integer NOT NULL,\n    \"Odd Name\" text,\n    gone integer,\n    CONSTRAINT t_check CHECK ((amount > 0))\n)";
        let b = "CREATE TABLE public.t (\n    amount bigint DEFAULT 0 NOT NULL,\n    \"Odd Name\" text,\n    note text,\n    CONSTRAINT t_check CHECK ((amount > 1))\n)";
        let d = compare(&[a.to_string()], &[b.to_string()]);
        assert_eq!(
            lines(&d, "table public.t"),
            vec![
                "column amount: integer NOT NULL → bigint DEFAULT 0 NOT NULL",
                "column gone: only in a (integer)",
                "constraint t_check: CHECK ((amount > 0)) → CHECK ((amount > 1))",
                "column note: only in b (text)",
            ]
        );
        assert_eq!(d.changed.len(), 1);
        // Nothing inside differs: no element (the unified diff shows the rest).
        assert!(table_changes("CREATE TABLE t (\n)", "CREATE TABLE t (\n)").is_empty());
        // After the columns: the partitioning clause.
        let p = |by: &str| format!("CREATE TABLE t (\n    a integer\n)\nPARTITION BY {by}");
        let e = table_changes(&p("RANGE (a)"), &p("LIST (a)"));
        assert_eq!(e[0].to_string(), "definition: PARTITION BY RANGE (a) → PARTITION BY LIST (a)");
    }

    #[test]
    fn what_belongs_to_a_table_is_named_inside_it() {
        let t = "CREATE TABLE public.t (\n    a integer,\n    b text\n)".to_string();
        let a = vec![
            t.clone(),
            "CREATE INDEX t_a_idx ON public.t USING btree (a)".to_string(),
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a)".to_string(),
            "CREATE TRIGGER tr BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f()".to_string(),
            "CREATE POLICY p ON public.t USING ((a > 0))".to_string(),
            "CREATE TABLE public.gone (\n    x integer\n)".to_string(),
            "CREATE INDEX gone_x ON public.gone USING btree (x)".to_string(),
            "CREATE INDEX mv_i ON public.mv USING btree (c)".to_string(),
        ];
        let b = vec![
            t,
            "CREATE INDEX t_a_idx ON public.t USING btree (a, b)".to_string(),
            "CREATE UNIQUE INDEX t_b_key ON public.t USING btree (b)".to_string(),
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a, b)".to_string(),
            "CREATE TRIGGER tr AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f()".to_string(),
            "ALTER TABLE public.t ENABLE ROW LEVEL SECURITY".to_string(),
            "ALTER TABLE ONLY public.t ALTER COLUMN a SET DEFAULT 1".to_string(),
            "CREATE INDEX mv_i ON public.mv USING hash (c)".to_string(),
        ];
        let d = compare(&a, &b);
        assert_eq!(
            lines(&d, "table public.t"),
            vec![
                "column a (SET DEFAULT): only in b (SET DEFAULT 1)",
                "constraint t_pkey: PRIMARY KEY (a) → PRIMARY KEY (a, b)",
                "index t_a_idx: USING btree (a) → USING btree (a, b)",
                "index t_b_key: only in b (UNIQUE USING btree (b))",
                "policy p: only in a (USING ((a > 0)))",
                "row level security: only in b (ENABLE ROW LEVEL SECURITY)",
                "trigger tr: BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f() → AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f()",
            ]
        );
        // A table only one side has takes its index along; an index on what is not a table is an
        // object of its own, with its definition.
        assert_eq!(d.only_in_a, vec!["table public.gone"]);
        assert_eq!(lines(&d, "index mv_i on public.mv"), vec!["definition: USING btree (c) → USING hash (c)"]);
        assert_eq!(d.changed.len(), 2);
        // An index on a partitioned table (`ON ONLY`) belongs to it too.
        let p = |cols: &str| {
            vec![
                "CREATE TABLE public.p (\n    a integer\n)\nPARTITION BY RANGE (a)".to_string(),
                format!("CREATE UNIQUE INDEX p_a_idx ON ONLY public.p USING btree ({cols})"),
            ]
        };
        assert_eq!(object_key(&p("a")[1]), "index p_a_idx on public.p");
        assert_eq!(
            lines(&compare(&p("a"), &p("a, a")), "table public.p"),
            vec!["index p_a_idx: UNIQUE USING btree (a) → UNIQUE USING btree (a, a)"]
        );
        // A table on one side and a view of that name on the other: what belongs to the view is
        // still reported.
        let v = compare(
            &["CREATE TABLE public.t (\n    a integer\n)".to_string()],
            &[
                "CREATE VIEW public.t AS\n SELECT 1 AS a".to_string(),
                "CREATE TRIGGER tr INSTEAD OF INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f()".to_string(),
            ],
        );
        assert_eq!(v.only_in_b, vec!["trigger tr on public.t", "view public.t"]);
        assert_eq!(v.only_in_a, vec!["table public.t"]);
        // Only the column order differs (--strict-column-order): said.
        let e = table_changes(
            "CREATE TABLE t (\n    a integer,\n    b text\n)",
            "CREATE TABLE t (\n    b text,\n    a integer\n)",
        );
        assert_eq!(e[0].to_string(), "column order: a, b → b, a");
        // JSON keys are the report's words.
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["only_in_a"], serde_json::json!(["table public.gone"]));
        assert_eq!(json["changed"][1]["inside"][1]["name"], "constraint t_pkey");
        assert_eq!(json["changed"][1]["inside"][1]["a"], "PRIMARY KEY (a)");
        assert_eq!(json["changed"][1]["inside"][1]["b"], "PRIMARY KEY (a, b)");
    }

    #[test]
    fn a_table_without_columns_is_kept_not_a_panic() {
        // pg_dump writes `CREATE TABLE t (\n)` for a table whose columns were all dropped.
        assert_eq!(sort_table_elements("CREATE TABLE public.foobar (\n)"), "CREATE TABLE public.foobar (\n)");
        let c = canonical(
            "CREATE TABLE public.foobar (\n);\nCREATE TABLE public.x (\n    b int,\n    a int\n);\n",
            Options::default(),
        );
        assert!(c.iter().any(|s| s.contains("foobar")), "{c:?}");
        assert!(c.iter().any(|s| s.contains("    a int,\n    b int")), "{c:?}");
    }

    #[test]
    fn split_respects_quotes_dollar_quotes_and_comments() {
        let sql = "\\restrict abc123\n-- a comment; with semicolon\nSET x = 1;\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  -- inside; kept\n\n  RETURN 1;\nEND;\n$$;\n/* block; /* nested; */ */ SELECT 'it''s; fine', \"we;ird\", E'a\\';b';\nCREATE TABLE t (a text DEFAULT $tag$x;y$tag$);\n\\unrestrict abc123\n";
        let s = split(sql);
        assert_eq!(s.len(), 6, "{s:#?}");
        assert_eq!(s[0], "\\restrict abc123");
        assert_eq!(s[1], "SET x = 1");
        assert!(s[2].contains("-- inside; kept\n\n  RETURN 1;\nEND;\n$$"), "{}", s[2]);
        assert_eq!(s[3], "SELECT 'it''s; fine', \"we;ird\", E'a\\';b'");
        assert_eq!(s[4], "CREATE TABLE t (a text DEFAULT $tag$x;y$tag$)");
        assert_eq!(s[5], "\\unrestrict abc123");
    }

    #[test]
    fn canonical_drops_noise_and_sorts() {
        let a = "\\restrict k1\nSET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n-- Name: t\nCREATE TABLE public.t (\n    b text,\n    a integer\n);\nALTER TABLE public.t OWNER TO alice;\nGRANT SELECT ON TABLE public.t TO bob;\nSELECT pg_catalog.setval('public.s', 42, true);\nCREATE INDEX i ON public.t USING btree (a);\n";
        let b = "\\restrict k2\nCREATE INDEX i ON public.t USING btree (a);\n\nCREATE TABLE public.t (\n    a integer,\n    b text\n);\nALTER TABLE public.t OWNER TO carol;\nSELECT pg_catalog.setval('public.s', 1, false);\n";
        let o = Options::default();
        assert_eq!(canonical(a, o), canonical(b, o));
        let strict = Options { strict_column_order: true, ..o };
        assert_ne!(canonical(a, strict), canonical(b, strict));
        let privs = Options { with_privileges: true, ..o };
        assert_ne!(canonical(a, privs), canonical(b, privs));
    }

    #[test]
    fn canonical_is_idempotent_and_keeps_bodies_verbatim() {
        let sql = "-- Name: f\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n\n  -- keep me\n  RETURN 1;\nEND\n$$;\n\n-- Name: t\n--\n\nCREATE TABLE t (\n    b text,\n    a int\n);\n";
        let once = canonical(sql, Options::default());
        assert!(once.iter().any(|s| s.contains("BEGIN\n\n  -- keep me\n")), "{once:#?}");
        assert_eq!(canonical(&render(&once), Options::default()), once);
        assert!(once.iter().all(|s| !s.starts_with("--") && !s.starts_with('\n')), "{once:#?}");
    }

    #[test]
    fn table_elements_with_commas_inside_types_and_partitions() {
        let s = "CREATE TABLE public.t (\n    z numeric(10,2) DEFAULT 1.5,\n    a text,\n    CONSTRAINT c CHECK ((a <> ',(x'::text))\n)\nPARTITION BY RANGE (a)";
        let c = sort_table_elements(s);
        assert_eq!(c, "CREATE TABLE public.t (\n    CONSTRAINT c CHECK ((a <> ',(x'::text)),\n    a text,\n    z numeric(10,2) DEFAULT 1.5\n)\nPARTITION BY RANGE (a)");
    }

    #[test]
    fn keys_name_objects() {
        let k = |s: &str| object_key(s);
        assert_eq!(k("CREATE TABLE crm.customers (\n    id bigint\n)"), "table crm.customers");
        assert_eq!(k("CREATE UNIQUE INDEX x ON crm.t USING btree (a)"), "index x on crm.t");
        assert_eq!(
            k("ALTER TABLE ONLY crm.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id)"),
            "constraint t_pkey on crm.t"
        );
        assert_eq!(
            k("CREATE FUNCTION audit.f(x integer) RETURNS trigger\n    LANGUAGE plpgsql"),
            "function audit.f(x integer)"
        );
        assert_eq!(
            k("CREATE TRIGGER tr AFTER INSERT ON crm.t FOR EACH ROW EXECUTE FUNCTION f()"),
            "trigger tr on crm.t"
        );
        assert_eq!(k("CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public"), "extension citext");
        assert_eq!(k("ALTER TABLE crm.t ENABLE ROW LEVEL SECURITY"), "row level security on crm.t");
        assert_eq!(k("COMMENT ON TABLE crm.t IS 'x'"), "comment on table crm.t");
        assert_eq!(k("COMMENT ON FUNCTION f(a integer, b text) IS 'x'"), "comment on function f(a integer, b text)");
        assert_eq!(k("COMMENT ON MATERIALIZED VIEW m IS 'x'"), "comment on materialized view m");
        // Truncated or odd statements get a name, never a panic.
        for odd in ["ALTER PUBLICATION", "ALTER TABLE t ALTER COLUMN", "CREATE", "COMMENT ON", "CREATE INDEX", ""] {
            let _ = k(odd);
        }
    }

    #[test]
    fn compare_by_object() {
        let a = vec!["CREATE TABLE a (\n    x int\n)".to_string(), "CREATE VIEW v AS SELECT 1".to_string()];
        let b =
            vec!["CREATE TABLE a (\n    x bigint\n)".to_string(), "CREATE INDEX i ON a USING btree (x)".to_string()];
        let d = compare(&a, &b);
        assert_eq!(d.changed.iter().map(|c| c.object.as_str()).collect::<Vec<_>>(), vec!["table a"]);
        assert_eq!(lines(&d, "table a"), vec!["column x: int → bigint", "index i: only in b (USING btree (x))"]);
        assert_eq!(d.only_in_a, vec!["view v"]);
        assert!(d.only_in_b.is_empty());
    }

    #[test]
    fn diff_is_capped() {
        let a: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let d = unified_diff(&a, "", "a", "b", 10, false);
        assert!(d.ends_with("… 93 more diff lines cut (see the canonical files)\n"), "{d}");
    }
}
