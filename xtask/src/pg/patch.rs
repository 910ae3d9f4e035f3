//! Bringing a stale copy of the template up to date without a dump: when only rows of its
//! tables changed since the copy's record, the template's rows of exactly those tables are
//! copied over, from one snapshot, in one transaction on the copy (the script and the argument
//! are [`super::freshness::patch_script`]'s). A worktree made while the template is in use and
//! a row was written takes the spare clone this way instead of dumping the whole template.
//!
//! The copy's side runs with `session_replication_role = replica` (no trigger fires, no foreign
//! key is checked: the rows are the template's as one snapshot saw them, consistent already),
//! and commits only after the template's side has ended well: an error, a refusal or an
//! interruption on either side leaves the copy as it was, and the caller dumps instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use anyhow::{Context, Result};

use super::freshness::{self, FrozenState, PatchPlan};
use super::Server;
use crate::proc::{self, Registered};

/// What [`patch`] came to.
#[derive(Debug)]
pub enum Patched {
    /// The copy now equals the template; this many relations were copied over.
    Done { relations: i64 },
    /// Not patched (the copy is unchanged), and why: the caller copies another way.
    Refused(String),
}

/// Brings `copy`, a copy of `template` recorded as `state`, up to date with the template (see
/// the module documentation). `copy` must accept connections and have no other session.
pub fn patch(server: &Server, template: &str, state: &FrozenState, copy: &str) -> Result<Patched> {
    let (Some(rows), Some(counters), None) = (&state.rows, &state.counters, &state.unverified) else {
        return Ok(Patched::Refused("the copy's record names no rows to compare".into()));
    };
    if let Some(why) = freshness::unprobeable(server, template)? {
        return Ok(Patched::Refused(why));
    }
    let Some(script) = freshness::patch_script(rows, counters.oid) else {
        return Ok(Patched::Refused("the copy's record has no per-relation counts (an older version made it)".into()));
    };
    let (mut source, app) = freshness::patch_session(server, template)?;
    source.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut reading = Registered::spawn(&mut source)?;
    let outcome = feed(server, &mut reading, script, copy);
    let _ = reading.child.kill();
    let _ = reading.wait();
    freshness::session_gone(server, &app)?;
    proc::check_interrupt()?;
    outcome
}

/// Runs the template's side (`reading`, its script `script`) and, when it goes ahead, the
/// copy's side on `copy`, fed from it.
fn feed(server: &Server, reading: &mut Registered, script: String, copy: &str) -> Result<Patched> {
    let mut to_source = reading.child.stdin.take().context("psql's stdin")?;
    let writer = std::thread::spawn(move || to_source.write_all(script.as_bytes()));
    let errors = drain(reading.child.stderr.take().context("psql's stderr")?);
    let mut from_source = BufReader::new(reading.child.stdout.take().context("psql's stdout")?);
    let mut first = String::new();
    from_source.read_line(&mut first)?;
    let _ = writer.join();
    let said: Option<PatchPlan> = serde_json::from_str(first.trim()).ok();
    let said = match said {
        Some(s) if s.refused.is_empty() => s,
        other => {
            let status = reading.wait()?;
            proc::check_interrupt()?;
            let why = match other {
                Some(s) => s.refused,
                None => {
                    format!("its rows could not be compared ({})", telling(&errors.join().unwrap_or_default(), status))
                }
            };
            return Ok(Patched::Refused(why));
        }
    };

    let mut target = server.psql(copy)?;
    target.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut writing = Registered::spawn(&mut target)?;
    let target_errors = drain(writing.child.stderr.take().context("psql's stderr")?);
    let target_output = drain(writing.child.stdout.take().context("psql's stdout")?);
    let mut to_target = writing.child.stdin.take().context("psql's stdin")?;
    let copied = to_target
        .write_all(b"SET session_replication_role = replica;\nSET statement_timeout = 0;\nBEGIN;\n")
        .and_then(|()| std::io::copy(&mut from_source, &mut to_target).map(drop));
    let source_status = reading.wait()?;
    // Committed only when the template's side ended well: otherwise the copy's transaction
    // ends with its input, rolled back.
    // The mark after the COMMIT proves that psql read it as a statement: a COPY that never saw
    // its end-of-data line would take everything that follows as rows and end with the input,
    // exit status 0, transaction rolled back.
    let committed =
        copied.is_ok() && source_status.success() && to_target.write_all(COMMIT_AND_MARK.as_bytes()).is_ok();
    drop(to_target);
    let target_status = writing.wait()?;
    let marked = String::from_utf8_lossy(&target_output.join().unwrap_or_default()).lines().any(|l| l == MARK);
    proc::check_interrupt()?;
    if !source_status.success() {
        let why = telling(&errors.join().unwrap_or_default(), source_status);
        return Ok(Patched::Refused(format!("reading the template's rows failed ({why})")));
    }
    if !committed || !target_status.success() {
        let why = telling(&target_errors.join().unwrap_or_default(), target_status);
        return Ok(Patched::Refused(format!("writing the rows into the copy failed ({why})")));
    }
    if !marked {
        return Ok(Patched::Refused("the copy's side never reached its COMMIT (an end of data went unseen)".into()));
    }
    Ok(Patched::Done { relations: said.relations })
}

/// What the copy's side prints once it has committed.
const MARK: &str = "xtask-patch-committed";
const COMMIT_AND_MARK: &str = "COMMIT;\nSELECT 'xtask-patch-committed';\n";

/// Reads a child's stream to its end, in a thread.
fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// What a psql's stderr says (its `ERROR:` line, else its last line), or its exit status.
fn telling(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let error = lines.iter().rfind(|l| l.contains("ERROR:") || l.contains("FATAL:")).or(lines.last());
    error.map(|l| l.to_string()).unwrap_or_else(|| proc::describe(status))
}
