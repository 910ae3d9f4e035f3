//! One `psql` process kept open for a whole run: every admin statement costs ~1 ms instead of a
//! new process and connection (~15 ms, ~40 ms through Debian's `pg_wrapper`).
//!
//! Protocol: each call sends one SQL statement, then
//! `\if :ERROR \echo <sentinel>ERR :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE \else \echo <sentinel>OK :ROW_COUNT \endif`, and reads
//! stdout up to the sentinel. Statements run in autocommit, one at a time, so `:ERROR` speaks for
//! exactly the statement sent. If `psql` dies (lost connection, a signal), the session is gone and
//! the error says why; the owner opens a new one on the next call.
//!
//! [`Session::run_verbatim`] sends a text to the server exactly as it is, never read by psql's
//! lexer as SQL: no variable interpolation (`:name`, `:'name'`), no meta-command, no splitting.
//! The text travels as a dollar-quoted literal under a tag it does not contain, into a setting of
//! the session (`xtask.verbatim`), and `SHOW xtask.verbatim` + `\gexec` sends the value back as
//! one query with `PQsendQuery` — the simple Query protocol, as sqlx sends a migration (several
//! statements in it run as one implicit transaction, as there). Neither `SET` nor `SHOW` takes a
//! snapshot, so the statement is still the first query of a transaction it opens (`SET
//! TRANSACTION ISOLATION LEVEL` must be), which a `SELECT` of the text would not leave it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};

use crate::proc::{self, Registered};

pub struct Session {
    reg: Registered,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    sentinel: String,
    description: String,
    /// Set while a statement runs: only then do signals reach psql (to cancel the statement).
    busy: Arc<AtomicBool>,
    /// Rows the last statement affected or returned (psql's `ROW_COUNT`).
    rows: Option<u64>,
    /// Rows are read from the command tags printed (a statement sent by `\gexec`).
    tag_rows: bool,
    /// The SQLSTATE of the last statement's error.
    sqlstate: String,
}

/// How a statement failed.
pub enum Failure {
    /// The server rejected the statement; the session is fine.
    Sql(String),
    /// `psql` is gone (it could not connect, lost the connection, or was interrupted).
    Dead(anyhow::Error),
    /// `psql` had already exited: the statement was not sent.
    NotSent,
}

impl Session {
    /// Starts `psql` (`cmd` is the connected `psql` command, its environment set).
    pub fn open(mut cmd: Command) -> Result<Session> {
        cmd.args(["-v", "ON_ERROR_STOP=0"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let description = proc::display(&cmd);
        let busy = Arc::new(AtomicBool::new(false));
        let mut reg = Registered::spawn_with(&mut cmd, Some(Arc::clone(&busy)))?;
        let stdin = reg.child.stdin.take().expect("piped");
        let stdout = BufReader::new(reg.child.stdout.take().expect("piped"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = reg.child.stderr.take().expect("piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
            }
        });
        let sentinel = format!("__xtask_{}_{:x}__", std::process::id(), std::ptr::addr_of!(reg) as usize);
        Ok(Session {
            reg,
            stdin,
            stdout,
            stderr,
            sentinel,
            description,
            busy,
            rows: None,
            tag_rows: false,
            sqlstate: String::new(),
        })
    }

    /// Runs one statement; returns what it printed (rows, unaligned, tuples only).
    pub fn run(&mut self, sql: &str) -> std::result::Result<String, Failure> {
        self.run_keeping(sql, true)
    }

    /// Runs one statement and throws away what it printed (a migration's `SELECT` of a million
    /// rows is not held in memory).
    pub fn run_discarding(&mut self, sql: &str) -> std::result::Result<(), Failure> {
        self.run_keeping(sql, false).map(drop)
    }

    /// Sends `sql` to the server byte for byte as one simple-protocol query (see the module
    /// header) and throws away what it printed.
    pub fn run_verbatim(&mut self, sql: &str) -> std::result::Result<(), Failure> {
        let tag = verbatim_tag(sql);
        // Should the SET fail, the SHOW would run the previous statement again: it is skipped.
        // `\gexec` leaves ROW_COUNT to the SHOW: the statement's rows are read from the command
        // tag psql prints for it when not quiet (`UPDATE 100000`).
        // psql 18 leaves LAST_ERROR_SQLSTATE and LAST_ERROR_MESSAGE empty for a statement
        // `\gexec` ran: the error is read from its stderr then, where VERBOSITY verbose puts the
        // SQLSTATE (`ERROR:  42601: syntax error …`).
        let script = format!(
            "SET xtask.verbatim = {tag}{sql}{tag};\n\\if :ERROR\n\\else\n\\set QUIET off\n\\set VERBOSITY verbose\nSHOW xtask.verbatim\n\\gexec\n\\set VERBOSITY default\n\\set QUIET on\n\\endif\n"
        );
        let mark = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).len();
        self.tag_rows = true;
        let result = self.run_script(&script, false).map(drop);
        self.tag_rows = false;
        match result {
            Err(Failure::Sql(msg)) if self.sqlstate.is_empty() => {
                // psql wrote the error before it read the line that echoes the sentinel: it is in
                // the pipe, if not yet in the buffer.
                let start = std::time::Instant::now();
                loop {
                    let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner())[mark..].to_vec();
                    if let Some((state, text)) = verbose_error(&String::from_utf8_lossy(&err)) {
                        self.sqlstate = state;
                        return Err(Failure::Sql(text));
                    }
                    if start.elapsed() > std::time::Duration::from_secs(2) {
                        return Err(Failure::Sql(msg));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            other => other,
        }
    }

    fn run_keeping(&mut self, sql: &str, keep: bool) -> std::result::Result<String, Failure> {
        self.run_script(&format!("{}\n;\n", sql.trim_end().trim_end_matches(';')), keep)
    }

    fn run_script(&mut self, body: &str, keep: bool) -> std::result::Result<String, Failure> {
        if !matches!(self.reg.child.try_wait(), Ok(None)) {
            return Err(Failure::NotSent);
        }
        self.busy.store(true, Ordering::SeqCst);
        let result = self.send(body, keep);
        self.busy.store(false, Ordering::SeqCst);
        result
    }

    fn send(&mut self, body: &str, keep: bool) -> std::result::Result<String, Failure> {
        let s = &self.sentinel;
        let script = format!(
            "{body}\\if :ERROR\n\\echo {s}ERR :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n\\else\n\\echo {s}OK :ROW_COUNT\n\\endif\n"
        );
        if self.stdin.write_all(script.as_bytes()).and_then(|_| self.stdin.flush()).is_err() {
            return Err(Failure::Dead(self.death()));
        }
        let mut out = String::new();
        let mut raw = Vec::new();
        let mut tagged = None;
        loop {
            raw.clear();
            // Bytes, not a String: a statement's output in another client encoding is no reason
            // to lose the session.
            match self.stdout.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return Err(Failure::Dead(self.death())),
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw);
            if let Some(rest) = line.strip_prefix(s.as_str()) {
                let rest = rest.trim_end();
                return match rest.strip_prefix("ERR") {
                    Some(msg) => {
                        let (state, msg) = msg.trim().split_once(' ').unwrap_or((msg.trim(), ""));
                        self.sqlstate = state.to_string();
                        self.rows = None;
                        Err(Failure::Sql(msg.trim().to_string()))
                    }
                    None if self.tag_rows => {
                        self.rows = tagged;
                        Ok(out)
                    }
                    None => {
                        self.rows = rest.strip_prefix("OK").and_then(|n| n.trim().parse().ok());
                        Ok(out)
                    }
                };
            }
            if self.tag_rows {
                if let Some(n) = command_tag_rows(line.trim_end()) {
                    tagged = Some(n);
                }
            }
            if keep {
                out.push_str(&line);
            }
        }
    }

    /// Rows the last statement affected or returned, when it succeeded.
    pub fn row_count(&self) -> Option<u64> {
        self.rows
    }

    /// The SQLSTATE of the last statement's error (`23514`: a CHECK violated, …).
    pub fn sqlstate(&self) -> &str {
        &self.sqlstate
    }

    /// Why `psql` ended: its exit and the tail of what it printed on stderr.
    fn death(&mut self) -> anyhow::Error {
        // Still running with its output unreadable: it is of no more use.
        if matches!(self.reg.child.try_wait(), Ok(None)) {
            let _ = self.reg.child.kill();
        }
        let status = self.reg.wait();
        // Let the stderr thread catch the last bytes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = proc::check_interrupt() {
            return e;
        }
        let text = String::from_utf8_lossy(&err);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
        let status = status.map(proc::describe).unwrap_or_else(|e| e.to_string());
        anyhow::anyhow!("`{}` ended ({status}): {tail}", self.description)
    }
}

/// The SQLSTATE and message of the last `ERROR:  XXXXX: message` line psql printed with
/// VERBOSITY verbose.
fn verbose_error(stderr: &str) -> Option<(String, String)> {
    stderr.lines().rev().find_map(|line| {
        let rest = line[line.find("ERROR:")? + "ERROR:".len()..].trim_start();
        let (state, text) = rest.split_once(": ")?;
        (state.len() == 5 && state.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| (state.to_string(), text.trim().to_string()))
    })
}

/// The row count of a command tag as psql prints it (`UPDATE 5`, `INSERT 0 5`, `DELETE 5`,
/// `MERGE 5`, `SELECT 5` of CREATE TABLE AS, `COPY 5`); other lines are `None`.
fn command_tag_rows(line: &str) -> Option<u64> {
    let mut words = line.split(' ');
    let verb = words.next()?;
    let rest: Vec<&str> = words.collect();
    let n = match (verb, rest.as_slice()) {
        ("INSERT", [_oid, n]) => n,
        ("UPDATE" | "DELETE" | "MERGE" | "SELECT" | "COPY" | "MOVE" | "FETCH", [n]) => n,
        _ => return None,
    };
    n.parse().ok()
}

/// A dollar-quote tag that `sql` does not contain: the text cannot end the literal early.
fn verbatim_tag(sql: &str) -> String {
    tag_from(sql, std::process::id() as u64 ^ sql.len() as u64)
}

fn tag_from(sql: &str, mut n: u64) -> String {
    loop {
        let tag = format!("$xtask_{n:x}$");
        // Not in the text, nor ending where the text's tail and the closing tag meet.
        if format!("{sql}{tag}").find(&tag) == Some(sql.len()) {
            return tag;
        }
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    }
}

/// Runs `sql` on `session`, reopening it (with `open`) if it is gone before the statement is sent.
pub fn run_on(slot: &mut Option<Session>, open: impl Fn() -> Result<Session>, sql: &str) -> Result<String> {
    if slot.is_none() {
        *slot = Some(open()?);
    }
    let mut result = slot.as_mut().expect("just set").run(sql);
    if matches!(result, Err(Failure::NotSent)) {
        *slot = Some(open()?);
        result = slot.as_mut().expect("just set").run(sql);
    }
    match result {
        Ok(out) => Ok(out),
        Err(Failure::Sql(msg)) => {
            proc::check_interrupt()?;
            bail!("ERROR: {msg}")
        }
        Err(Failure::Dead(e)) => {
            *slot = None;
            Err(e)
        }
        Err(Failure::NotSent) => {
            *slot = None;
            bail!("psql exited right after starting")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verbatim_tag_is_not_in_the_text() {
        let first = super::tag_from("", 7);
        // In the text, or the text's tail plus the tag's `$`: another tag.
        for text in [format!("SELECT {first}x{first}"), format!("SELECT 1 {}", &first[..first.len() - 1])] {
            let tag = super::tag_from(&text, 7);
            assert_ne!(tag, first);
            assert_eq!(format!("{text}{tag}").find(&tag), Some(text.len()), "{tag}");
        }
        assert!(super::verbatim_tag("SELECT 1").starts_with("$xtask_"));
    }

    #[test]
    fn command_tags_give_their_rows_and_nothing_else_does() {
        assert_eq!(super::command_tag_rows("UPDATE 100000"), Some(100_000));
        assert_eq!(super::command_tag_rows("INSERT 0 7"), Some(7));
        assert_eq!(super::command_tag_rows("DELETE 0"), Some(0));
        for other in ["CREATE TABLE", "ALTER TABLE", "UPDATE", "INSERT 5", "SET", "UPDATE x", "some row"] {
            assert_eq!(super::command_tag_rows(other), None, "{other}");
        }
    }

    #[test]
    fn a_verbose_error_line_gives_its_sqlstate_and_message() {
        let stderr = "NOTICE:  00000: x\nERROR:  42601: syntax error at or near \":\"\nLINE 1: SELECT :'DBNAME'\nLOCATION:  scanner_yyerror, scan.l:1237\n";
        assert_eq!(
            super::verbose_error(stderr),
            Some(("42601".to_string(), "syntax error at or near \":\"".to_string()))
        );
        assert_eq!(
            super::verbose_error("psql:<stdin>:3: ERROR:  23514: new row violates"),
            Some(("23514".into(), "new row violates".into()))
        );
        assert_eq!(super::verbose_error("ERROR:  plain message"), None);
    }
}
