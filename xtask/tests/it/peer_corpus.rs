//! The schema-diff test cases of three peers (stripe/pg-schema-diff, pgschema, migra), with the
//! verdict each peer expects, run against `db schema-diff` on the real server.
//!
//! The cases are vendored in `xtask/tests/vendor/peer-schema-corpus/` as `cases.tar.gz`, unpacked
//! into a temporary directory on first use (`SOURCES.md` there says where each comes from, how it
//! was converted, and under which license; `run.sh` there is the stand-alone runner). Every `cargo xtask test` runs a slice: every eighth case of each source,
//! every case that once broke the tool, and every ambiguous case. With
//! `XTASK_TEST_PEER_CORPUS=all` (which `.ci/run` sets) it runs all of them.
//!
//! A case is two SQL files loaded into two fresh databases; the tool must answer with the peer's
//! verdict: exit 0 for `equal`, 1 for `different`. Anything else (a panic's 101, an error's 2, a
//! signal) is an error. It prints a `peer corpus SUMMARY:` line with `run.sh`'s counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{psql, try_sql, Project, Run};

/// `all` runs every case; anything else (or unset) runs the slice.
const CORPUS_ENV: &str = "XTASK_TEST_PEER_CORPUS";

/// Cases that once made the tool crash or miss a change (the issue that brought the corpus in:
/// a panic slicing a table with no columns, a missed extension upgrade, policies, enums).
const REGRESSIONS: &[&str] = &[
    "stripe-pg-schema-diff/column__delete_one_column",
    "stripe-pg-schema-diff/enum__create_enum",
    "stripe-pg-schema-diff/extensions__upgrade_an_extension_implicitly_and_explicitly",
    "stripe-pg-schema-diff/policy__add_policy_on_new_table",
    "migra/everything",
    "migra/privileges",
    "pgschema/create_policy__add_policy",
];

/// The ambiguous cases: the peer expects `equal` for a reason of its own while the two catalogs
/// differ. Each is decided here, with why; a new ambiguous case in the corpus fails the test until
/// it is decided.
const AMBIGUOUS: &[(&str, Said, &str)] = &[
    // A sequence's data type (bigint vs integer) is part of its definition: `nextval` overflows at
    // a different value. migra ignores it; we report it.
    ("migra-applied/everything", Said::Different, "sequence data types and the owner's own privileges differ"),
    ("migra-applied/rls2", Said::Different, "sequence data type bigint vs integer"),
    ("migra-applied/seq", Said::Different, "sequence data types differ"),
    // What a table's owner may do on it is a privilege like any other (REVOKE from the owner is
    // honoured by PostgreSQL); with --with-privileges we compare it.
    ("migra-applied/privileges", Said::Different, "the owner lacks SELECT and DELETE on its own table"),
    // A column declared locally on an inheritance child survives `NO INHERIT`; one inherited does
    // not. pg_dump writes them differently, and so do we.
    ("migra-applied/inherit", Said::Different, "child columns local (attislocal) vs inherited"),
    // The peer ran with options that leave part of the schema out; without the same ignore list
    // (`--ignore 'excludedschema.*'` would give equal) the schemas differ.
    ("migra-applied/excludeschema", Said::Different, "the peer excluded a schema that a still holds"),
    ("migra-applied/singleschema_ext", Said::Different, "the peer applied extension changes only"),
    // Explicit grants are catalog state even when default privileges would have made the same.
    ("pgschema/default_privilege__auto_grant_idempotent", Said::Different, "a's explicit GRANTs are absent in b"),
    (
        "pgschema-applied/default_privilege__auto_grant_idempotent",
        Said::Different,
        "a's explicit GRANTs are absent in b",
    ),
    // A function body is compared as stored (prosrc): whitespace in it is the code the server
    // runs and what pg_dump restores; we do not guess which whitespace matters.
    ("pgschema-applied/create_function__issue_326_param_name_change", Said::Different, "body whitespace trimmed"),
    ("pgschema-applied/create_function__issue_326_param_type_change", Said::Different, "body whitespace trimmed"),
    ("pgschema-applied/create_function__issue_326_return_type_change", Said::Different, "body whitespace trimmed"),
    ("pgschema-applied/dependency__sql_function_body_reference", Said::Different, "body whitespace trimmed"),
    ("pgschema-applied/dependency__table_fk_to_generated_column", Said::Different, "body whitespace trimmed"),
    ("pgschema-applied/migrate__v4", Said::Different, "trailing spaces inside a plpgsql body"),
    ("pgschema-applied/dependency__table_to_function", Said::Different, "a table name schema-qualified in a body"),
    // ROWS is part of the function's definition (the planner's estimate).
    ("pgschema-applied/dependency__issue_300_function_table_composite_type", Said::Different, "ROWS 1000 vs 1"),
    // Equivalent but different expression trees: proving two CHECKs equivalent is not ours to do.
    ("pgschema-applied/online__add_constraint", Said::Different, "an equivalent CHECK with another expression tree"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    Equal,
    Different,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Equal,
    Different,
    Ambiguous,
}

struct Case {
    /// `<source>/<case>`
    id: String,
    dir: PathBuf,
    verdict: Verdict,
    args: Vec<String>,
}

#[derive(Debug)]
enum Outcome {
    Agreed,
    Ambiguous(Said),
    Spurious(String),
    Missed,
    Error(String),
    LoadFailed(String),
}

/// The case directories, unpacked once from the vendored `cases.tar.gz` into a directory named
/// by the archive's hash (kept for later runs; a changed archive gets a directory of its own).
fn corpus_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use sha2::Digest;
        let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vendor/peer-schema-corpus/cases.tar.gz");
        let bytes = std::fs::read(&archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
        let hash: String = sha2::Sha256::digest(&bytes)[..8].iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("xtask-peer-corpus-{hash}"));
        if !dir.is_dir() {
            // Unpacked beside it and renamed: a run interrupted half-way leaves no half a corpus.
            let part = std::env::temp_dir().join(format!("xtask-peer-corpus-{hash}.part{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&part);
            std::fs::create_dir_all(&part).unwrap();
            let out =
                std::process::Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&part).output().unwrap();
            assert!(out.status.success(), "tar -xzf {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
            if std::fs::rename(&part, &dir).is_err() {
                // Another test run unpacked it first.
                let _ = std::fs::remove_dir_all(&part);
            }
        }
        dir
    })
    .clone()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut sources: Vec<PathBuf> =
        std::fs::read_dir(corpus_dir()).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    sources.sort();
    for src in sources {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&src)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("verdict").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let verdict = match read("verdict").trim() {
                "equal" => Verdict::Equal,
                "different" => Verdict::Different,
                "ambiguous" => Verdict::Ambiguous,
                other => panic!("{}: verdict {other:?}", dir.display()),
            };
            let id = format!(
                "{}/{}",
                src.file_name().unwrap().to_string_lossy(),
                dir.file_name().unwrap().to_string_lossy()
            );
            cases.push(Case { id, verdict, args: read("args").split_whitespace().map(String::from).collect(), dir });
        }
    }
    cases
}

/// Every eighth case of each source, the regressions and the ambiguous cases.
fn slice(cases: Vec<Case>) -> Vec<Case> {
    let mut nth: BTreeMap<String, usize> = BTreeMap::new();
    cases
        .into_iter()
        .filter(|c| {
            let source = c.id.split('/').next().unwrap().to_string();
            let i = nth.entry(source).or_default();
            *i += 1;
            (*i - 1) % 8 == 0 || REGRESSIONS.contains(&c.id.as_str()) || c.verdict == Verdict::Ambiguous
        })
        .collect()
}

/// Loads a case's two sides into two fresh databases and asks the tool.
fn run_case(p: &Project, n: usize, case: &Case) -> Outcome {
    let (da, db) = (format!("{}{n}_a", p.prefix), format!("{}{n}_b", p.prefix));
    let outcome = (|| {
        for (side, d) in [("a", &da), ("b", &db)] {
            try_sql("postgres", &format!("CREATE DATABASE \"{d}\"")).map_err(Outcome::LoadFailed)?;
            let out = psql(d)
                .args(["-v", "ON_ERROR_STOP=1", "-f"])
                .arg(case.dir.join(format!("{side}.sql")))
                .env("PGOPTIONS", "-c client_min_messages=warning")
                .stdout(Stdio::null())
                .output()
                .unwrap();
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(Outcome::LoadFailed(format!("{side}.sql: {}", err.lines().next().unwrap_or(""))));
            }
        }
        let mut args = vec!["db", "schema-diff", "--a", &da, "--b", &db];
        args.extend(case.args.iter().map(String::as_str));
        let run = with_timeout(p.command(&p.dir, &args, &[]), Duration::from_secs(120));
        Ok(match (case.verdict, run.code) {
            (Verdict::Equal, 0) | (Verdict::Different, 1) => Outcome::Agreed,
            (Verdict::Equal, 1) => Outcome::Spurious(first_lines(&run.stdout)),
            (Verdict::Different, 0) => Outcome::Missed,
            (Verdict::Ambiguous, 0) => Outcome::Ambiguous(Said::Equal),
            (Verdict::Ambiguous, 1) => Outcome::Ambiguous(Said::Different),
            (_, code) => Outcome::Error(format!("exit {code}: {}", first_lines(&run.stderr))),
        })
    })()
    .unwrap_or_else(|e| e);
    for d in [&da, &db] {
        let _ = try_sql("postgres", &format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"));
    }
    outcome
}

fn first_lines(s: &str) -> String {
    s.lines().filter(|l| !l.trim().is_empty()).take(3).collect::<Vec<_>>().join(" | ")
}

/// Runs `cmd`; after `limit` it is killed and reported as exit 137.
fn with_timeout(mut cmd: std::process::Command, limit: Duration) -> Run {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if t0.elapsed() > limit {
                    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    let _ = watch.join();
    Run::from(out)
}

#[test]
fn the_peers_cases_get_the_peers_verdicts() {
    let all = std::env::var(CORPUS_ENV).is_ok_and(|v| v == "all");
    let corpus = cases();
    assert!(corpus.len() >= 761, "the vendored corpus has {} cases", corpus.len());
    for (id, _, _) in AMBIGUOUS {
        assert!(corpus.iter().any(|c| c.id == *id && c.verdict == Verdict::Ambiguous), "no ambiguous case {id}");
    }
    for c in corpus.iter().filter(|c| c.verdict == Verdict::Ambiguous) {
        assert!(AMBIGUOUS.iter().any(|(id, _, _)| *id == c.id), "ambiguous case {} is not decided in AMBIGUOUS", c.id);
    }
    for id in REGRESSIONS {
        assert!(corpus.iter().any(|c| c.id == *id), "no case {id}");
    }
    let chosen = if all { corpus } else { slice(corpus) };

    // The roles the cases name, created once (they are server-wide, as in the peers' harnesses).
    let mut roles: Vec<String> = chosen
        .iter()
        .flat_map(|c| {
            std::fs::read_to_string(c.dir.join("roles"))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|r| !r.trim().is_empty())
        .collect();
    roles.sort();
    roles.dedup();
    for r in &roles {
        try_sql(
            "postgres",
            &format!("DO $peer$BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN ALTER ROLE {r}; END$peer$"),
        )
        .unwrap();
    }

    let p = Project::new("peer");
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = chosen.get(i) else { break };
                let outcome = run_case(&p, i, case);
                results.lock().unwrap().push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);

    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, outcome) in &results {
        let case = &chosen[*i];
        let key = match outcome {
            Outcome::Agreed if case.verdict == Verdict::Equal => "equal-ok",
            Outcome::Agreed => "different-ok",
            Outcome::Ambiguous(said) => {
                let decided = AMBIGUOUS.iter().find(|(id, _, _)| *id == case.id).map(|(_, s, _)| *s);
                if decided != Some(*said) {
                    failures.push(format!("{}: ambiguous, decided {decided:?}, said {said:?}", case.id));
                }
                if *said == Said::Equal {
                    "ambiguous-said-equal"
                } else {
                    "ambiguous-said-different"
                }
            }
            Outcome::Spurious(first) => {
                failures.push(format!("{}: spurious diff: {first}", case.id));
                "spurious"
            }
            Outcome::Missed => {
                failures.push(format!("{}: missed difference", case.id));
                "missed"
            }
            Outcome::Error(e) => {
                failures.push(format!("{}: error: {e}", case.id));
                "error"
            }
            Outcome::LoadFailed(e) => {
                failures.push(format!("{}: load failed: {e}", case.id));
                "load"
            }
        };
        *count.entry(key).or_default() += 1;
    }
    let c = |k: &str| count.get(k).copied().unwrap_or(0);
    // Straight to stderr, past the test harness's capture: the summary belongs in every log.
    let mut err = std::io::stderr().lock();
    for f in &failures {
        let _ = writeln!(err, "FAIL {f}");
    }
    let _ = writeln!(
        err,
        "peer corpus SUMMARY: {} cases{}: {} equal-ok, {} different-ok, {} spurious diffs, {} missed differences, {} errors, \
         {} ambiguous (said equal {} / different {}), {} load failures; {}s",
        results.len(),
        if all { "" } else { " (the slice; XTASK_TEST_PEER_CORPUS=all runs every case)" },
        c("equal-ok"),
        c("different-ok"),
        c("spurious"),
        c("missed"),
        c("error"),
        c("ambiguous-said-equal") + c("ambiguous-said-different"),
        c("ambiguous-said-equal"),
        c("ambiguous-said-different"),
        c("load"),
        t0.elapsed().as_secs()
    );
    drop(err);
    assert!(failures.is_empty(), "{} of {} peer cases failed:\n{}", failures.len(), results.len(), failures.join("\n"));
}
