//! SQL text split into its statements, as PostgreSQL's and psql's lexers would: semicolons inside
//! strings (`'…'`, `E'…'`), quoted identifiers, dollar-quoted bodies (`$$…$$`, `$tag$…$tag$`),
//! comments (`--`, nested `/* */`) and SQL-standard function bodies (`BEGIN ATOMIC … END`) do not
//! end a statement; a psql meta-command (a line starting with `\` between statements) is one of
//! its own. The one lexer of the tool: migrations ([`split`]) and dumps
//! ([`crate::schema::split`]) alike. Pure: no I/O.

/// One statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement from its first token to its last, without the terminating semicolon
    /// (comments inside it kept).
    pub sql: String,
    /// The 1-based line of its first token.
    pub line: usize,
    /// A psql meta-command (`\restrict …`): the line, not SQL.
    pub meta: bool,
}

impl Statement {
    /// The statement on one line, comments out and whitespace collapsed, at most `max` characters
    /// (for reports).
    pub fn summary(&self, max: usize) -> String {
        let text = strip_comments(&self.sql).split_whitespace().collect::<Vec<_>>().join(" ");
        if text.chars().count() <= max {
            return text;
        }
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    }

    /// The first keywords, upper-cased: `CREATE INDEX CONCURRENTLY`, `ALTER TABLE`, …
    pub fn keywords(&self, n: usize) -> String {
        strip_comments(&self.sql)
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
            .take(n)
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The statements of `text`, in order; empty ones (only whitespace or comments) are left out.
pub fn split(text: &str) -> Vec<Statement> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    // The first words of the current statement and its last one (upper-cased), for
    // BEGIN ATOMIC … END.
    let mut words: Vec<String> = Vec::new();
    let mut last_word = String::new();
    let mut atomic_depth = 0usize;
    // psql splits only outside parentheses: `CREATE RULE … DO ALSO (INSERT …; INSERT …)`.
    let mut parens = 0usize;
    let mut at_line_start = true;
    // Lines are counted as the scan goes (positions only grow): linear, not a count from the start
    // for every statement.
    let mut lines = (0usize, 1usize);
    let mut line_of = |at: usize| {
        lines.1 += text.as_bytes()[lines.0..at].iter().filter(|&&c| c == b'\n').count();
        lines.0 = at;
        lines.1
    };
    let push = |out: &mut Vec<Statement>, start: Option<usize>, end: usize, line: usize| {
        if let Some(s) = start {
            let sql = text[s..end].trim_end().to_string();
            if !sql.is_empty() {
                out.push(Statement { sql, line, meta: false });
            }
        }
    };
    let mut start_line = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && at_line_start && start.is_none() {
            let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
            let line = line_of(i);
            out.push(Statement { sql: text[i..end].trim_end().to_string(), line, meta: true });
            i = end;
            continue;
        }
        if c == b'\n' {
            at_line_start = true;
            i += 1;
            continue;
        }
        if matches!(c, b' ' | b'\t' | b'\r') {
            i += 1;
            continue;
        }
        at_line_start = false;
        // Comments are skipped without starting a statement.
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = text[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(b, i);
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b';' && atomic_depth == 0 && parens == 0 {
            push(&mut out, start.take(), i, start_line);
            words.clear();
            last_word.clear();
            i += 1;
            continue;
        }
        if start.is_none() {
            start = Some(i);
            start_line = line_of(i);
        }
        i = match c {
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && !is_word(b.get(i.wrapping_sub(2)).copied());
                skip_quoted(b, i, b'\'', escapes)
            }
            b'"' => skip_quoted(b, i, b'"', false),
            b'$' => match dollar_tag(b, i) {
                Some(tag) => {
                    let body = i + tag.len();
                    text[body..].find(tag).map_or(b.len(), |n| body + n + tag.len())
                }
                None => i + 1,
            },
            c if is_word(Some(c)) => {
                let end = (i..b.len()).find(|&j| !is_word(Some(b[j]))).unwrap_or(b.len());
                let word = text[i..end].to_ascii_uppercase();
                match word.as_str() {
                    "ATOMIC" if last_word == "BEGIN" && is_routine(&words) => atomic_depth += 1,
                    "CASE" if atomic_depth > 0 => atomic_depth += 1,
                    "END" if atomic_depth > 0 => atomic_depth -= 1,
                    _ => {}
                }
                if words.len() < 4 {
                    words.push(word.clone());
                }
                last_word = word;
                end
            }
            b'(' => {
                parens += 1;
                i + 1
            }
            b')' => {
                parens = parens.saturating_sub(1);
                i + 1
            }
            _ => i + 1,
        };
    }
    push(&mut out, start, b.len(), start_line);
    out
}

/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE …`: the only statements with a `BEGIN ATOMIC` body.
fn is_routine(words: &[String]) -> bool {
    let mut w = words.iter().map(String::as_str);
    w.next() == Some("CREATE") && words.iter().take(4).any(|x| x == "FUNCTION" || x == "PROCEDURE")
}

fn is_word(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
}

/// Past the end of a `/* … */` comment (they nest), or the end of the input.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Past the closing quote of a string or quoted identifier starting at `i` (a doubled quote is
/// one quote; with `escapes`, a backslash escapes the next character).
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, escapes: bool) -> usize {
    i += 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// `$tag$` starting at `i`, if it is one (not `$1`, not part of an identifier like `a$b`).
fn dollar_tag(b: &[u8], i: usize) -> Option<&str> {
    if i > 0 && is_word(Some(b[i - 1])) {
        return None;
    }
    let rest = &b[i + 1..];
    let len = rest.iter().position(|&c| c == b'$')?;
    let tag = &rest[..len];
    if tag.first().is_some_and(u8::is_ascii_digit) || !tag.iter().all(|&c| is_word(Some(c))) {
        return None;
    }
    std::str::from_utf8(&b[i..i + len + 2]).ok()
}

/// What would make the server (or psql, which the traced migrator sends statements through)
/// read `sql` differently from one whole statement: a string, quoted identifier, dollar-quoted
/// body or comment left open, or a backslash outside them (psql would take it for a
/// meta-command; the server rejects it).
pub fn lexical_problem(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let (next, open) = match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => (sql[i..].find('\n').map_or(b.len(), |n| i + n), None),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = skip_block_comment(b, i);
                (end, (end == b.len() && !sql.ends_with("*/")).then_some("a /* comment"))
            }
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && !is_word(b.get(i.wrapping_sub(2)).copied());
                let end = skip_quoted(b, i, b'\'', escapes);
                (end, (end == b.len() && (end - i < 2 || b[end - 1] != b'\'')).then_some("a quoted string"))
            }
            b'"' => {
                let end = skip_quoted(b, i, b'"', false);
                (end, (end == b.len() && (end - i < 2 || b[end - 1] != b'"')).then_some("a quoted identifier"))
            }
            b'$' => match dollar_tag(b, i) {
                Some(tag) => {
                    let body = i + tag.len();
                    match sql[body..].find(tag) {
                        Some(n) => (body + n + tag.len(), None),
                        None => (b.len(), Some("a dollar-quoted body")),
                    }
                }
                None => (i + 1, None),
            },
            b'\\' => {
                let word: String = sql[i..].chars().take_while(|c| !c.is_whitespace()).take(20).collect();
                return Some(format!(
                    "`{word}` outside quotes: a psql meta-command, not SQL (the server rejects a backslash here)"
                ));
            }
            _ => (i + 1, None),
        };
        if let Some(what) = open {
            return Some(format!("{what} is never closed"));
        }
        i = next;
    }
    None
}

/// `text` with its comments taken out, strings and quoted bodies kept as they are. A `--`
/// comment on a line of its own goes with its line break; a block comment leaves nothing. (The
/// canonical form of a schema is built with this: changing it changes every snapshot.)
pub fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut from = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                out.push_str(&text[from..i]);
                let mut end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                let trimmed = out.trim_end_matches([' ', '\t']).len();
                if out[..trimmed].ends_with('\n') || trimmed == 0 {
                    out.truncate(trimmed);
                    end = (end + 1).min(b.len());
                }
                i = end;
                from = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                out.push_str(&text[from..i]);
                i = skip_block_comment(b, i);
                from = i;
            }
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && !is_word(b.get(i.wrapping_sub(2)).copied());
                i = skip_quoted(b, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'$' => {
                i = match dollar_tag(b, i) {
                    Some(tag) => {
                        let body = i + tag.len();
                        text[body..].find(tag).map_or(b.len(), |n| body + n + tag.len())
                    }
                    None => i + 1,
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[from.min(b.len())..]);
    out
}

/// Random SQL for the property tests of the lexer and of what reads its output (the rehearsal's
/// hints and report): fragments that open and close every lexical context, keywords of the
/// statements the tools look for, names, multibyte text, line breaks. Deterministic: a fixed seed.
#[cfg(test)]
pub(crate) mod fuzz {
    /// xorshift64*: enough randomness for a property test, no dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    const FRAGMENTS: &[&str] = &[
        "'",
        "''",
        "E'",
        "e'\\'",
        "\\",
        "\"",
        "\"\"",
        "$$",
        "$a$",
        "$1",
        "a$b",
        "$",
        "$é$",
        "--",
        "/*",
        "*/",
        "/**/",
        ";",
        ";;",
        "(",
        ")",
        ",",
        ".",
        "\n",
        "\r\n",
        "\t",
        " ",
        "BEGIN",
        "ATOMIC",
        "BEGIN ATOMIC",
        "CASE",
        "END",
        "CREATE",
        "OR REPLACE",
        "FUNCTION",
        "PROCEDURE",
        "INDEX",
        "UNIQUE",
        "CONCURRENTLY",
        "ON",
        "ONLY",
        "ALTER",
        "TABLE",
        "DOMAIN",
        "ADD",
        "COLUMN",
        "CONSTRAINT",
        "CHECK",
        "FOREIGN KEY",
        "REFERENCES",
        "PRIMARY KEY",
        "USING INDEX",
        "NOT VALID",
        "VALIDATE",
        "SET NOT NULL",
        "TYPE",
        "DEFAULT",
        "GENERATED ALWAYS AS",
        "AS IDENTITY",
        "STORED",
        "serial",
        "DROP",
        "REINDEX",
        "VACUUM",
        "FULL",
        "CLUSTER",
        "REFRESH",
        "MATERIALIZED VIEW",
        "ATTACH PARTITION",
        "DETACH PARTITION",
        "FINALIZE",
        "UPDATE",
        "DELETE",
        "COMMIT",
        "IF EXISTS",
        "big.t",
        "t",
        "\"My T\".x",
        "\"a\"\"b\"",
        "x.y.z",
        "日本",
        "é",
        "\u{0}",
        "\u{feff}",
        "🦀",
        "\\gexec",
        "\\restrict k",
        "COPY t FROM STDIN",
        "-- no-transaction\n",
        "0",
        "100000",
        "x>0",
    ];

    /// A piece of SQL of up to `max` fragments, spaced or not.
    pub fn sql(rng: &mut Rng, max: usize) -> String {
        let n = 1 + rng.below(max);
        let mut out = String::new();
        for _ in 0..n {
            out.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            if rng.below(3) > 0 {
                out.push(rng.pick(&[' ', ' ', '\n', '\t']));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(text: &str) -> Vec<String> {
        split(text).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn semicolons_inside_quotes_bodies_and_comments_do_not_split() {
        let text = "-- a; comment\nCREATE TABLE \"a;b\" (x text DEFAULT 'it''s; fine');\n\
                    /* outer /* nested; */ still; */ SELECT E'\\'; still' AS x;\n\
                    DO $$ BEGIN PERFORM 1; END $$;\n\
                    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\n\
                    SELECT $1, a$b FROM t";
        assert_eq!(
            sqls(text),
            [
                "CREATE TABLE \"a;b\" (x text DEFAULT 'it''s; fine')",
                "SELECT E'\\'; still' AS x",
                "DO $$ BEGIN PERFORM 1; END $$",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$",
                "SELECT $1, a$b FROM t",
            ]
        );
    }

    #[test]
    fn semicolons_inside_parentheses_do_not_split() {
        let s = sqls(
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2));\nSELECT 1;",
        );
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].ends_with("VALUES (2))"));
    }

    #[test]
    fn lines_are_counted_across_many_statements() {
        // (Its speed is `bench schema-diff`'s to watch: a 5 MB dump is canonicalized there.)
        let text = "CREATE TABLE t (a int);\n-- x\n".repeat(50_000);
        let s = split(&text);
        assert_eq!((s.len(), s[0].line, s[49_999].line), (50_000, 1, 99_999));
    }

    #[test]
    fn a_begin_atomic_body_is_one_statement() {
        let text = "CREATE OR REPLACE FUNCTION g(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n  SELECT 2;\nEND;\nBEGIN;\nSELECT 3;\nEND;";
        let s = sqls(text);
        assert_eq!(s.len(), 4, "{s:?}");
        assert!(s[0].ends_with("SELECT 2;\nEND"), "{s:?}");
        assert_eq!(&s[1..], ["BEGIN", "SELECT 3", "END"]);
    }

    #[test]
    fn lines_summaries_and_keywords() {
        let text = "-- header\n\nALTER TABLE t\n  ADD COLUMN c int; -- trailing\n\n  ;\n/* only a comment */\nCREATE INDEX CONCURRENTLY i ON t (c)";
        let s = split(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].line, s[1].line), (3, 8));
        assert_eq!(s[0].summary(80), "ALTER TABLE t ADD COLUMN c int");
        assert_eq!(s[0].summary(12), "ALTER TABLE…");
        assert_eq!(s[1].keywords(3), "CREATE INDEX CONCURRENTLY");
        let commented = Statement { sql: "ALTER /* x */ TABLE t -- y\n RENAME TO u".into(), line: 1, meta: false };
        assert_eq!(commented.keywords(2), "ALTER TABLE");
        assert_eq!(commented.summary(80), "ALTER TABLE t RENAME TO u");
    }

    #[test]
    fn a_meta_command_between_statements_is_one_of_its_own() {
        let s = split("\\restrict abc\nSET x = 1;\n  \\connect db\nSELECT 'a\n\\b';\n");
        let got: Vec<(&str, bool)> = s.iter().map(|s| (s.sql.as_str(), s.meta)).collect();
        assert_eq!(
            got,
            [("\\restrict abc", true), ("SET x = 1", false), ("\\connect db", true), ("SELECT 'a\n\\b'", false)]
        );
    }

    #[test]
    fn what_psql_or_the_server_would_read_otherwise_is_named() {
        assert_eq!(lexical_problem("SELECT 'a;b', \"x\", $$ \\ $$ -- \\ \n /* \\ */"), None);
        assert!(lexical_problem("SELECT 'open").unwrap().contains("a quoted string is never closed"));
        assert!(lexical_problem("SELECT $f$ open").unwrap().contains("dollar-quoted body"));
        assert!(lexical_problem("SELECT 1 /* open").unwrap().contains("comment"));
        assert!(lexical_problem("SELECT 'DROP TABLE t'\n\\gexec").unwrap().contains("`\\gexec`"));
        assert_eq!(lexical_problem("SELECT E'it\\'s'"), None);
        assert_eq!(lexical_problem("SELECT ''"), None);
    }

    #[test]
    fn unterminated_input_is_one_statement_not_a_panic() {
        for text in ["SELECT 'open", "SELECT $$ open", "/* open", "SELECT \"open", "$", "E'\\", "--", "$a"] {
            let s = split(text);
            assert!(s.len() <= 1, "{text}: {s:?}");
        }
    }

    #[test]
    fn the_apps_migrations_split_as_expected() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let text = std::fs::read_to_string(dir.join("0009_rename_contacts_to_customers.sql")).unwrap();
        let s = split(&text);
        // The DO block and both function bodies stay whole.
        assert!(s.iter().any(|s| s.sql.starts_with("DO $$") && s.sql.ends_with("$$")));
        assert!(s.iter().any(|s| s.sql.starts_with("CREATE OR REPLACE FUNCTION audit.record_customer_change()")));
        assert_eq!(s.first().unwrap().sql, "DROP VIEW crm.contact_overview");
        assert!(s.iter().all(|s| !s.sql.trim_start().starts_with("--")));
    }

    #[test]
    fn random_and_adversarial_sql_never_panics_and_splits_into_pieces_of_the_input() {
        let mut rng = fuzz::Rng::new(0x5eed_2026);
        for _ in 0..20_000 {
            let text = fuzz::sql(&mut rng, 24);
            let statements = split(&text);
            let total_lines = text.matches('\n').count() + 1;
            let mut last_line = 0;
            for s in &statements {
                assert!(!s.sql.is_empty() && text.contains(&s.sql), "{text:?}: {s:?}");
                assert!(s.line >= last_line.max(1) && s.line <= total_lines, "{text:?}: {s:?}");
                last_line = s.line;
                let max = rng.below(40);
                assert!(s.summary(max).chars().count() <= max.max(1), "{text:?}");
                let _ = s.keywords(rng.below(6));
                let _ = lexical_problem(&s.sql);
            }
            let stripped = strip_comments(&text);
            assert!(stripped.len() <= text.len(), "{text:?}");
            let _ = lexical_problem(&text);
            let _ = crate::schema::split(&text);
        }
    }
}
