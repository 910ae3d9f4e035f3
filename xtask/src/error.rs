//! Errors the user can act on, and the exit codes they map to.
//!
//! Anything may fail with a plain `anyhow` error (exit 2, "environment error"). Where we know the
//! fix, the error carries it: [`fail`] builds one, [`WithFix::fix`] attaches one to an existing
//! error. The top level prints the whole chain on one line, then the fix.

use std::fmt;

/// 1: a negative verdict (a schema differs, a generated file is stale).
pub const EXIT_VERDICT: i32 = 1;
/// 2: a usage or environment error.
pub const EXIT_ERROR: i32 = 2;

/// An error with the command or change that fixes it.
#[derive(Debug)]
pub struct Fix {
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Fix {}

/// The fix for an error further down the chain (attached with [`WithFix::fix`]).
#[derive(Debug)]
struct FixOnly(String);
impl fmt::Display for FixOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FixOnly {}

/// A negative verdict: printed like an error, exits 1.
#[derive(Debug)]
pub struct Verdict(pub String);
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Verdict {}

/// A program this run handed the terminal to (psql, the AWS tooling) exited with this code and
/// said why itself: the run exits with the same code and prints nothing more.
#[derive(Debug)]
pub struct ChildExit(pub i32);
impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exited with status {}", self.0)
    }
}
impl std::error::Error for ChildExit {}

/// The run was stopped by a signal; everything it created has been removed.
#[derive(Debug)]
pub struct Interrupted(pub i32);
impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::SIGINT => "SIGINT (Ctrl-C)",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            _ => "a signal",
        };
        write!(f, "interrupted by {name}")
    }
}
impl std::error::Error for Interrupted {}

/// Several problems found at once (a check that looks at everything before acting): each with
/// its fix, all printed, one per line.
#[derive(Debug)]
pub struct Problems {
    /// What cannot go on, e.g. "clone-prod cannot start".
    pub what: String,
    pub list: Vec<Fix>,
}
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.list.as_slice() {
            [one] => write!(f, "{}: {}", self.what, one.message),
            list => write!(f, "{}: {} problems", self.what, list.len()),
        }
    }
}
impl std::error::Error for Problems {}

impl Problems {
    pub fn new(what: impl Into<String>) -> Problems {
        Problems { what: what.into(), list: Vec::new() }
    }
    pub fn add(&mut self, message: impl Into<String>, fix: impl Into<String>) {
        self.list.push(Fix { message: message.into(), fix: fix.into() });
    }
    /// Keeps an error's message and fix (when it has one) as one more problem.
    pub fn add_error(&mut self, err: anyhow::Error) {
        let r = report(&err);
        let line = r.line.strip_prefix("error: ").unwrap_or(&r.line);
        match line.split_once(" — ") {
            Some((m, f)) => self.add(m, f),
            None => self.add(line, ""),
        }
    }
    /// Ok when nothing was found, else this as the error.
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(self.into())
        }
    }
}

/// An error with its fix: `return Err(fail("template `x` does not exist", "run `cargo xtask db template create`"))`.
pub fn fail(message: impl Into<String>, fix: impl Into<String>) -> anyhow::Error {
    Fix { message: message.into(), fix: fix.into() }.into()
}

/// The line of a program's stderr that says what went wrong: the first `error:`/`fatal:` line
/// (libpq's `detail:` lines after it repeat the query; git's hints follow it), else the last
/// line that is not empty.
pub fn telling_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error:") || l.starts_with("fatal:")
        })
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim()
}

pub trait WithFix<T> {
    /// Attaches the way out to an error (keeps its message and chain).
    fn fix(self, fix: impl Into<String>) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> WithFix<T> for Result<T, E> {
    fn fix(self, fix: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            e.context(FixOnly(fix.into()))
        })
    }
}

/// What the top level prints and returns for an error.
pub struct Report {
    pub line: String,
    pub code: i32,
}

pub fn report(err: &anyhow::Error) -> Report {
    if let Some(ChildExit(code)) = err.downcast_ref::<ChildExit>() {
        return Report { line: String::new(), code: *code };
    }
    // Context layers are found with `anyhow::Error::downcast_ref`; root errors through the chain.
    let fix_only = err.downcast_ref::<FixOnly>().map(|f| f.0.clone());
    let mut fix = fix_only.clone();
    let mut parts: Vec<String> = Vec::new();
    let mut code = EXIT_ERROR;
    if err.downcast_ref::<Verdict>().is_some() {
        code = EXIT_VERDICT;
    }
    if let Some(i) = err.downcast_ref::<Interrupted>() {
        code = 128 + i.0;
    }
    if let Some(p) = err.downcast_ref::<Problems>().filter(|p| p.list.len() > 1) {
        let mut line = format!("error: {p}:");
        for f in &p.list {
            line.push_str(&format!("\n  - {}", f.message));
            if !f.fix.is_empty() {
                line.push_str(&format!(" — {}", f.fix));
            }
        }
        return Report { line, code };
    }
    if let Some(p) = err.downcast_ref::<Problems>().filter(|p| p.list.len() == 1) {
        let f = &p.list[0];
        let line = format!("error: {}: {}", p.what, f.message);
        return Report { line: if f.fix.is_empty() { line } else { format!("{line} — {}", f.fix) }, code };
    }
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if fix_only.as_deref() == Some(text) {
            continue;
        }
        if let Some(f) = cause.downcast_ref::<Fix>() {
            fix.get_or_insert_with(|| f.fix.clone());
        }
        // Skip a cause already contained in the message before it (tools repeat themselves).
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
    }
    // A negative verdict (exit 1) is an answer, not an error.
    let mut line = if code == EXIT_VERDICT { parts.join(": ") } else { format!("error: {}", parts.join(": ")) };
    if let Some(fix) = fix {
        line.push_str(" — ");
        line.push_str(&fix);
    }
    Report { line, code }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn report_joins_chain_and_appends_fix() {
        let err: anyhow::Result<()> = Err(fail("template `t` does not exist", "run `cargo xtask db template create`"));
        let err = err.context("cloning `t` into `b`").unwrap_err();
        let r = report(&err);
        assert_eq!(
            r.line,
            "error: cloning `t` into `b`: template `t` does not exist — run `cargo xtask db template create`"
        );
        assert_eq!(r.code, EXIT_ERROR);
    }

    #[test]
    fn fix_attached_later_and_exit_codes() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("connection refused"));
        let r = report(&err.fix("start it with `cargo xtask db up`").unwrap_err());
        assert_eq!(r.line, "error: connection refused — start it with `cargo xtask db up`");
        assert_eq!(report(&Verdict("schemas differ".into()).into()).code, EXIT_VERDICT);
        assert_eq!(report(&Interrupted(libc::SIGINT).into()).code, 130);
        assert_eq!(report(&Interrupted(libc::SIGTERM).into()).code, 143);
    }

    #[test]
    fn problems_are_all_listed_each_with_its_fix() {
        let mut p = Problems::new("clone-prod cannot start");
        p.add("no source instance is configured", "pass --source-instance ID");
        p.add_error(fail("`pg_dump` not found", "install the PostgreSQL client programs"));
        p.add_error(anyhow::anyhow!("no fix known"));
        let r = report(&p.into());
        assert_eq!(
            r.line,
            "error: clone-prod cannot start: 3 problems:\n  - no source instance is configured — pass --source-instance ID\n  - `pg_dump` not found — install the PostgreSQL client programs\n  - no fix known"
        );
        assert_eq!(r.code, EXIT_ERROR);
        let mut one = Problems::new("clone-prod cannot start");
        one.add("no region", "pass --region");
        assert_eq!(report(&one.into()).line, "error: clone-prod cannot start: no region — pass --region");
        assert!(Problems::new("x").into_result().is_ok());
    }
}
