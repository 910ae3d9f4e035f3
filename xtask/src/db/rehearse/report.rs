//! The rehearsal's report: findings first (the verdict, what is dangerous, the gate, both smoke
//! tests), then each migration, statement by statement. Markdown for the pull request, JSON for
//! machines (the same data).

use std::fmt::Write as _;

use serde::Serialize;

use super::model::MigrationTrace;
use super::smoke::Smoke;
use crate::pg::human_size;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    pub max_lock_ms: u64,
    pub max_statement_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Gate {
    pub equal: bool,
    pub summary: String,
    /// The objects that differ.
    pub differences: Vec<String>,
    pub warnings: Vec<String>,
}

impl From<&crate::db::ops::compare::Outcome> for Gate {
    fn from(o: &crate::db::ops::compare::Outcome) -> Gate {
        // a is the migrated copy, b the fresh build: say so.
        let sides = |s: String| {
            s.replace("only in a", "only in the migrated copy").replace("only in b", "only in the fresh build")
        };
        Gate {
            equal: o.equal,
            summary: if o.equal {
                "the migrated copy equals a fresh build of this branch".into()
            } else {
                sides(o.summary())
            },
            differences: o.lines().into_iter().map(sides).collect(),
            warnings: o.warnings.clone(),
        }
    }
}

impl Gate {
    /// The fresh build itself failed: this branch's migrations do not apply to an empty database.
    pub fn fresh_failed(error: &anyhow::Error) -> Gate {
        let line = crate::error::report(error).line;
        Gate {
            equal: false,
            summary: format!(
                "this branch's migrations fail on an empty database ({})",
                line.trim_start_matches("error: ")
            ),
            differences: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Finding {
    /// `danger`: over a threshold or failed (exit 1); `warning`: worth a look; `suggestion`: a
    /// hint, the safer form of a statement.
    pub severity: &'static str,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub verdict: &'static str,
    pub from: String,
    pub database: String,
    pub server_version: String,
    pub thresholds: Thresholds,
    pub pending: Vec<String>,
    /// Why the migrator would not start at all.
    pub refused: Option<String>,
    pub findings: Vec<Finding>,
    /// How many of the findings are suggestions (every hint of every statement).
    pub suggestions: usize,
    pub smoke_before: Option<Smoke>,
    pub gate: Option<Gate>,
    pub smoke_after: Option<Smoke>,
    pub migrations: Vec<MigrationTrace>,
    /// The file copy of the pristine database: what a new iteration costs.
    pub copy_ms: u64,
    /// The traced migration, from opening its session to the last commit.
    pub migrate_ms: u64,
    pub duration_ms: u64,
}

pub enum Verdict {
    Clear,
    Findings(usize),
}

impl Report {
    pub fn new(from: &str, database: &str, thresholds: Thresholds, server_version: &str) -> Report {
        Report {
            verdict: "clear",
            from: from.to_string(),
            database: database.to_string(),
            server_version: server_version.to_string(),
            thresholds,
            pending: Vec::new(),
            refused: None,
            findings: Vec::new(),
            suggestions: 0,
            smoke_before: None,
            gate: None,
            smoke_after: None,
            migrations: Vec::new(),
            copy_ms: 0,
            migrate_ms: 0,
            duration_ms: 0,
        }
    }

    /// Fills in the findings and the verdict; how many are dangers.
    fn judge(&mut self) -> usize {
        let mut f = Vec::new();
        let danger = |text: String| Finding { severity: "danger", text };
        if let Some(why) = &self.refused {
            f.push(danger(why.clone()));
        }
        for m in &self.migrations {
            if let Some(e) = &m.failure {
                let rows =
                    e.violating_rows.map(|n| format!(" — {} existing row(s) violate it", count(n))).unwrap_or_default();
                f.push(danger(format!(
                    "{} failed at statement {} (line {}): {} [{}]{rows}; {}",
                    m.file, e.statement, e.line, e.error, e.sqlstate, e.applied
                )));
            }
            for c in &m.cluster {
                f.push(danger(format!(
                    "{} changes the cluster, not just its database: {} — {}",
                    m.file,
                    c.describe(),
                    c.undo
                )));
            }
            for l in &m.locks {
                // An index's lock blocks nothing its table's lock does not already block.
                let covered = l.table.as_ref().is_some_and(|t| {
                    m.locks.iter().any(|o| {
                        o.relation == *t
                            && (l.blocks_reads_ms.is_none() || o.blocks_reads_ms >= l.blocks_reads_ms)
                            && (l.blocks_writes_ms.is_none() || o.blocks_writes_ms >= l.blocks_writes_ms)
                    })
                });
                if covered {
                    continue;
                }
                let (blocked, what) = match (l.blocks_reads_ms, l.blocks_writes_ms) {
                    (Some(r), _) => (r, "blocks reads and writes"),
                    (None, Some(w)) => (w, "blocks writes"),
                    _ => continue,
                };
                let about = match l.rows {
                    Some(n) => format!("{}, {}", rows(n), human_size(l.size_bytes)),
                    None => l.kind.to_string(),
                };
                let text = format!(
                    "{} on {} ({about}) held {} — {what} ({}, statement {})",
                    l.mode,
                    l.relation,
                    duration(blocked),
                    m.file,
                    l.statement
                );
                if blocked > self.thresholds.max_lock_ms as f64 {
                    f.push(danger(text));
                }
            }
            for s in &m.statements {
                if s.duration_ms > self.thresholds.max_statement_ms as f64 {
                    f.push(danger(format!(
                        "{} statement {} ran {} (over {}): {}",
                        m.file,
                        s.index,
                        duration(s.duration_ms),
                        duration(self.thresholds.max_statement_ms as f64),
                        s.sql
                    )));
                }
                for r in &s.rewrites {
                    f.push(Finding {
                        severity: "warning",
                        text: format!(
                            "{} statement {} rewrote {} ({}{})",
                            m.file,
                            s.index,
                            r.relation,
                            r.rows.map(|n| format!("{}, ", rows(n))).unwrap_or_default(),
                            human_size(r.size_before)
                        ),
                    });
                }
            }
        }
        if let Some(g) = self.gate.as_ref().filter(|g| !g.equal) {
            f.push(danger(format!("the gate: {} (the migrated copy against a fresh build)", g.summary)));
        }
        // Every hint, where the reviewer reads first.
        for m in &self.migrations {
            let hints = m.statements.iter().flat_map(|s| s.hints.iter().map(move |h| (s.index, h)));
            let failed = m.failure.iter().flat_map(|e| e.hints.iter().map(move |h| (e.statement, h)));
            for (index, hint) in hints.chain(failed) {
                f.push(Finding { severity: "suggestion", text: format!("{} statement {index}: {hint}", m.file) });
            }
        }
        for s in [&self.smoke_before, &self.smoke_after].into_iter().flatten() {
            if !s.passed {
                f.push(danger(format!("the smoke test {} failed: {}", s.when, s.detail)));
            }
        }
        let dangers = f.iter().filter(|x| x.severity == "danger").count();
        self.suggestions = f.iter().filter(|x| x.severity == "suggestion").count();
        self.findings = f;
        self.verdict = if dangers == 0 { "clear" } else { "findings" };
        dangers
    }

    pub fn verdict(&mut self) -> Verdict {
        match self.judge() {
            0 => Verdict::Clear,
            n => Verdict::Findings(n),
        }
    }

    /// The summary: the verdict, the findings, the gate and the smoke tests.
    fn summary_lines(&mut self) -> Vec<String> {
        let dangers = self.judge();
        let mut out = Vec::new();
        let applied = self.migrations.iter().filter(|m| m.failure.is_none()).count();
        let suggestions = match self.suggestions {
            0 => String::new(),
            1 => ", 1 suggestion".into(),
            n => format!(", {n} suggestions"),
        };
        let verdict = match (dangers, suggestions.is_empty()) {
            (0, true) => "All clear".to_string(),
            (0, false) => format!("Clear{suggestions}"),
            (n, _) => format!("{n} finding(s){suggestions}"),
        };
        out.push(format!(
            "**{verdict}**: {applied} of {} pending migration(s) applied on a copy of `{}`.",
            self.pending.len(),
            self.from
        ));
        for f in &self.findings {
            let mark = match f.severity {
                "danger" => "⛔",
                "warning" => "⚠️",
                _ => "💡",
            };
            out.push(format!("- {mark} {}", f.text));
        }
        match &self.gate {
            Some(g) if g.equal => out.push(format!("- ✅ gate: {}", g.summary)),
            Some(_) => {}
            None => out.push("- gate: not run (the migrations did not all apply)".into()),
        }
        for s in [&self.smoke_before, &self.smoke_after].into_iter().flatten().filter(|s| s.passed) {
            out.push(format!("- ✅ smoke test {}: {}", s.when, s.detail));
        }
        out
    }

    pub fn summary_text(&mut self) -> String {
        let mut s = self.summary_lines().join("\n").replace("**", "");
        s.push('\n');
        s
    }

    pub fn markdown(&mut self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## Migration rehearsal on a copy of `{}`\n", self.from);
        for line in self.summary_lines() {
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(
            md,
            "\nPostgreSQL {}; thresholds: locks that block reads or writes {}, statements {}; {} in all.",
            self.server_version.split_whitespace().next().unwrap_or(""),
            duration(self.thresholds.max_lock_ms as f64),
            duration(self.thresholds.max_statement_ms as f64),
            duration(self.duration_ms as f64)
        );
        if let Some(g) = self.gate.as_ref().filter(|g| !g.equal) {
            let _ = writeln!(md, "\n### The gate\n\n```");
            for d in &g.differences {
                let _ = writeln!(md, "{d}");
            }
            let _ = writeln!(md, "```");
        }
        for m in &self.migrations {
            let how = if m.transaction {
                "one transaction; locks read from it"
            } else {
                "no transaction; locks sampled from a second session"
            };
            let _ = writeln!(
                md,
                "\n### {}\n\n{} · {} · WAL {} · {how}\n",
                m.file,
                if m.failure.is_some() { "**failed**" } else { "applied" },
                duration(m.duration_ms),
                human_size(m.wal_bytes)
            );
            if !m.locks.is_empty() {
                let _ = writeln!(md, "| Lock | On | Held | Blocks | From statement |\n|---|---|---|---|---|");
                for l in &m.locks {
                    let blocks = match (l.blocks_reads_ms, l.blocks_writes_ms) {
                        (Some(_), _) => "reads, writes",
                        (None, Some(_)) => "writes",
                        _ => "—",
                    };
                    let rows = l.rows.map(|n| format!(", {}", rows(n))).unwrap_or_default();
                    let _ = writeln!(
                        md,
                        "| {} | {} ({}{rows}) | {} | {blocks} | {} |",
                        l.mode,
                        cell(&l.relation),
                        l.kind,
                        duration(l.held_ms),
                        l.statement
                    );
                }
                md.push('\n');
            }
            let _ = writeln!(md, "| # | Line | Statement | Time | Rows | WAL | Notes |\n|---|---|---|---|---|---|---|");
            for s in &m.statements {
                let mut notes: Vec<String> = s.locks.iter().map(|l| format!("{} on {}", l.mode, l.relation)).collect();
                notes.extend(
                    s.rewrites.iter().map(|r| format!("**rewrote** {} ({})", r.relation, human_size(r.size_before))),
                );
                notes.extend(s.hints.iter().map(|h| format!("hint: {h}")));
                let _ = writeln!(
                    md,
                    "| {} | {} | `{}` | {} | {} | {} | {} |",
                    s.index,
                    s.line,
                    cell(&s.sql).replace('`', "'"),
                    duration(s.duration_ms),
                    s.rows.map(|r| r.to_string()).unwrap_or_default(),
                    human_size(s.wal_bytes),
                    cell(&notes.join("; "))
                );
            }
            if let Some(e) = &m.failure {
                let rows =
                    e.violating_rows.map(|n| format!(" ({} existing row(s) violate it)", count(n))).unwrap_or_default();
                let hints: String = e.hints.iter().map(|h| format!("; hint: {h}")).collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | **failed** | | | | {}{rows}{} |",
                    e.statement,
                    e.line,
                    cell(&format!("{} [{}]", e.error, e.sqlstate)),
                    cell(&hints)
                );
            }
            let sizes: Vec<_> = m
                .sizes
                .iter()
                .filter(|s| s.table_after != Some(s.table_before) || s.indexes_after != Some(s.indexes_before))
                .collect();
            if !sizes.is_empty() {
                let _ = writeln!(md, "\n| Relation | Table before → after | Indexes before → after |\n|---|---|---|");
                for s in sizes {
                    let after = |v: Option<i64>| v.map(human_size).unwrap_or_else(|| "dropped".into());
                    let _ = writeln!(
                        md,
                        "| {} | {} → {} | {} → {} |",
                        cell(&s.relation),
                        human_size(s.table_before),
                        after(s.table_after),
                        human_size(s.indexes_before),
                        after(s.indexes_after)
                    );
                }
            }
        }
        if self.pending.is_empty() {
            let _ = writeln!(md, "\nNo migration was pending: the copy is at this branch's latest migration.");
        }
        md
    }
}

/// `1.2 M rows`, `104 k rows`, `1 row`.
fn rows(n: i64) -> String {
    if n == 1 {
        "1 row".into()
    } else {
        format!("{} rows", count(n))
    }
}

/// `1.2 M`, `104 k`, `950`.
fn count(n: i64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{} k", n / 1000),
        n => n.to_string(),
    }
}

/// `4.8 s`, `120 ms`, `0.4 ms`.
fn duration(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Text for a Markdown table cell: no line breaks, no column separators.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_say_them() {
        assert_eq!(count(1_234_567), "1.2 M");
        assert_eq!(count(104_000), "104 k");
        assert_eq!(count(950), "950");
        assert_eq!(duration(4800.0), "4.8 s");
        assert_eq!(duration(120.4), "120 ms");
        assert_eq!(duration(0.42), "0.4 ms");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }

    /// Random traces (odd text, empty and huge numbers, failures, gates, smoke tests): every form
    /// of the report renders without a panic, and the verdict agrees with the findings.
    #[test]
    fn random_reports_never_panic() {
        use super::super::model::{LockTrace, MigrationFailure, Rewrite, SizeChange, StatementTrace};
        let mut rng = crate::sql::fuzz::Rng::new(0x4e90_2026);
        let nums = [0.0, 0.04, 9.99, 10.0, 999.9, 1000.0, 59_999.0, 1e12, -1.0, f64::NAN];
        let ints = [0i64, 1, -1, 9_999, 10_000, 999_999, 1_000_000, i64::MAX, i64::MIN];
        for _ in 0..2_000 {
            let thresholds =
                Thresholds { max_lock_ms: rng.below(2000) as u64, max_statement_ms: rng.below(2000) as u64 };
            let mut r = Report::new(&crate::sql::fuzz::sql(&mut rng, 4), "db", thresholds, "");
            for m in 0..rng.below(4) {
                let text = |rng: &mut crate::sql::fuzz::Rng| crate::sql::fuzz::sql(rng, 8);
                let statements: Vec<StatementTrace> = (0..rng.below(4))
                    .map(|i| StatementTrace {
                        index: i + 1,
                        line: rng.below(100),
                        sql: text(&mut rng),
                        duration_ms: rng.pick(&nums),
                        rows: Some(rng.next()).filter(|_| rng.below(2) == 0),
                        wal_bytes: rng.pick(&ints),
                        locks: (0..rng.below(3))
                            .map(|_| LockTrace {
                                oid: 1,
                                relation: text(&mut rng),
                                kind: "index",
                                mode: rng.pick(&["ACCESS EXCLUSIVE", "SHARE", "odd"]).to_string(),
                                statement: i + 1,
                                held_ms: rng.pick(&nums),
                                blocks_reads_ms: Some(rng.pick(&nums)).filter(|_| rng.below(2) == 0),
                                blocks_writes_ms: Some(rng.pick(&nums)).filter(|_| rng.below(2) == 0),
                                rows: Some(rng.pick(&ints)).filter(|_| rng.below(2) == 0),
                                size_bytes: rng.pick(&ints),
                                table: Some(text(&mut rng)).filter(|_| rng.below(2) == 0),
                            })
                            .collect(),
                        rewrites: (0..rng.below(2))
                            .map(|_| Rewrite {
                                relation: text(&mut rng),
                                rows: Some(rng.pick(&ints)),
                                size_before: rng.pick(&ints),
                            })
                            .collect(),
                        hints: (0..rng.below(3)).map(|_| text(&mut rng)).collect(),
                    })
                    .collect();
                let mut trace = MigrationTrace {
                    version: m as i64,
                    file: text(&mut rng),
                    transaction: rng.below(2) == 0,
                    no_transaction: rng.below(2) == 0,
                    traced: "transaction",
                    samples: None,
                    duration_ms: 0.0,
                    wal_bytes: 0,
                    statements: Vec::new(),
                    locks: Vec::new(),
                    sizes: Vec::new(),
                    failure: None,
                    cluster: (0..rng.below(3))
                        .map(|_| {
                            let (kind, name, undo) = (text(&mut rng), text(&mut rng), text(&mut rng));
                            let value = serde_json::Value::String(text(&mut rng));
                            let what = ["created", "changed", "removed"][rng.below(3)];
                            let before = Some(value.clone()).filter(|_| what != "created");
                            let after = Some(value).filter(|_| what != "removed");
                            super::super::cluster::Change::sample(kind, name, what, before, after, undo)
                        })
                        .collect(),
                };
                trace.statements = statements;
                trace.locks = trace.statements.iter().flat_map(|s| s.locks.clone()).collect();
                trace.duration_ms = rng.pick(&nums);
                trace.wal_bytes = rng.pick(&ints);
                trace.sizes = (0..rng.below(2))
                    .map(|_| SizeChange {
                        relation: text(&mut rng),
                        table_before: rng.pick(&ints),
                        table_after: Some(rng.pick(&ints)).filter(|_| rng.below(2) == 0),
                        indexes_before: rng.pick(&ints),
                        indexes_after: Some(rng.pick(&ints)),
                    })
                    .collect();
                if rng.below(3) == 0 {
                    trace.failure = Some(MigrationFailure {
                        statement: rng.below(5),
                        line: rng.below(5),
                        sqlstate: text(&mut rng),
                        error: text(&mut rng),
                        violating_rows: Some(rng.pick(&ints)),
                        applied: text(&mut rng),
                        hints: (0..rng.below(2)).map(|_| text(&mut rng)).collect(),
                    });
                }
                r.pending.push(trace.file.clone());
                r.migrations.push(trace);
            }
            if rng.below(2) == 0 {
                r.gate = Some(Gate {
                    equal: rng.below(2) == 0,
                    summary: crate::sql::fuzz::sql(&mut rng, 4),
                    differences: vec![crate::sql::fuzz::sql(&mut rng, 4)],
                    warnings: Vec::new(),
                });
            }
            let md = r.markdown();
            let summary = r.summary_text();
            let _ = serde_json::to_string(&r).unwrap();
            let hints: usize = r
                .migrations
                .iter()
                .map(|m| {
                    m.statements.iter().map(|s| s.hints.len()).sum::<usize>()
                        + m.failure.as_ref().map_or(0, |f| f.hints.len())
                })
                .sum();
            assert_eq!(r.suggestions, hints);
            let clear = matches!(r.verdict(), Verdict::Clear);
            assert_eq!(clear, r.verdict == "clear");
            assert!(md.starts_with("## Migration rehearsal") && !summary.is_empty(), "{summary}");
        }
    }

    #[test]
    fn an_index_lock_is_a_finding_only_when_it_blocks_more_than_its_tables() {
        use super::super::model::LockTrace;
        let lock = |relation: &str, mode: &str, reads: bool, table: Option<&str>| LockTrace {
            oid: 1,
            relation: relation.into(),
            kind: if table.is_some() { "index" } else { "table" },
            mode: mode.into(),
            statement: 1,
            held_ms: 5000.0,
            blocks_reads_ms: reads.then_some(5000.0),
            blocks_writes_ms: Some(5000.0),
            rows: None,
            size_bytes: 0,
            table: table.map(str::to_string),
        };
        let mut r = Report::new("p", "db", Thresholds { max_lock_ms: 1000, max_statement_ms: 60_000 }, "");
        r.migrations.push(MigrationTrace {
            version: 1,
            file: "1.sql".into(),
            transaction: true,
            no_transaction: false,
            traced: "transaction",
            samples: None,
            duration_ms: 5000.0,
            wal_bytes: 0,
            statements: Vec::new(),
            // DROP INDEX: the table's ACCESS EXCLUSIVE covers its index's; REINDEX: the index's
            // ACCESS EXCLUSIVE blocks reads its table's SHARE does not.
            locks: vec![
                lock("a.t", "ACCESS EXCLUSIVE", true, None),
                lock("a.t_i", "ACCESS EXCLUSIVE", true, Some("a.t")),
                lock("a.u", "SHARE", false, None),
                lock("a.u_i", "ACCESS EXCLUSIVE", true, Some("a.u")),
            ],
            sizes: Vec::new(),
            failure: None,
            cluster: Vec::new(),
        });
        r.verdict();
        let texts: Vec<&str> = r.findings.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:#?}");
        assert!(texts.iter().any(|t| t.starts_with("ACCESS EXCLUSIVE on a.u_i (index)")), "{texts:#?}");
        assert!(!texts.iter().any(|t| t.contains("a.t_i")), "{texts:#?}");
    }
}
