//! The justfile's worktree recipes, run by the real `just` (installed by `cargo xtask test`), and
//! `db worktree BRANCH` behind them: the git worktree and its database from one command.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{git, repo_root, sql, Project, Run};
use crate::worktree::{env_db, wait_for, Held};

fn just() -> PathBuf {
    let bin = std::env::var_os("XTASK_TEST_VENV_BIN").expect("run through `cargo xtask test`, which installs `just`");
    PathBuf::from(bin).join("just")
}

/// A project with its template, the repository's justfile, and a `cargo` on PATH that runs the
/// xtask under test for `cargo xtask …` and records the directory it ran in.
struct JustProject {
    p: Project,
    path: String,
    cargo_log: PathBuf,
}

impl JustProject {
    fn new(tag: &str) -> JustProject {
        let p = Project::new(tag);
        p.xtask(&["db", "template", "create"]).ok();
        std::fs::copy(repo_root().join("justfile"), p.dir.join("justfile")).unwrap();
        // As in the real repository: the generated files are committed, so worktrees start current.
        p.xtask(&["db", "generate"]).ok();
        commit(&p.dir, "generated");
        let shim = p.dir.with_file_name(format!("{}-shim", p.dir.file_name().unwrap().to_string_lossy()));
        std::fs::create_dir_all(&shim).unwrap();
        let cargo_log = shim.join("cargo.log");
        std::fs::write(
            shim.join("cargo"),
            format!(
                "#!/bin/sh\npwd >> '{}'\n[ \"$1\" = xtask ] || exit 97\nshift\nexec {} \"$@\"\n",
                cargo_log.display(),
                env!("CARGO_BIN_EXE_xtask")
            ),
        )
        .unwrap();
        std::fs::set_permissions(shim.join("cargo"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
        JustProject { p, path, cargo_log }
    }

    fn just(&self, args: &[&str]) -> Run {
        let mut just = Command::new(just());
        just.args(args)
            .current_dir(&self.p.dir)
            .env("PATH", &self.path)
            .stdin(std::process::Stdio::null())
            .env_remove("DATABASE_URL")
            .env_remove("WORKTREE_TEMPLATE_DB")
            .env_remove("CARGO_TARGET_DIR");
        Run::from(just.output().unwrap())
    }

    /// Where `just worktree NAME` puts the worktree.
    fn dir_of(&self, branch: &str) -> PathBuf {
        self.p.dir.with_file_name(format!(
            "{}-{}",
            self.p.dir.file_name().unwrap().to_string_lossy(),
            branch.replace('/', "-")
        ))
    }

    fn worktree_count(&self) -> usize {
        git(&self.p.dir, &["worktree", "list", "--porcelain"]).lines().filter(|l| l.starts_with("worktree ")).count()
    }

    /// The directories `cargo` was run in, one per run.
    fn cargo_dirs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.cargo_log).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

fn commit(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message]);
}

#[test]
fn worktree_recipes_create_and_remove_a_worktree_with_its_database() {
    let j = JustProject::new("just");
    let branch = "feature/it's-\"odd\"";
    let run = j.just(&["worktree", branch]).ok();
    let dir = j.dir_of(branch);
    // The command ends with the directory to cd into, on stdout.
    assert_eq!(run.stdout.lines().last().unwrap(), dir.to_str().unwrap(), "{}", run.stderr);
    let db = env_db(&dir);
    assert_eq!(sql(&db, "SELECT count(*) > 0 FROM crm.customers"), "t");
    // Nothing ran (nothing was compiled) in the new worktree: `cargo xtask` ran where `just` did.
    assert_eq!(j.cargo_dirs(), vec![j.p.dir.to_str().unwrap().to_string()]);
    assert!(!dir.join("target").exists(), "the command built something in the new worktree");

    // Again: the worktree exists, its database is kept.
    let again = j.just(&["worktree", branch]).ok();
    assert!(again.stderr.contains("already has a worktree"), "{}", again.stderr);
    assert!(again.stderr.contains("exists: kept as it is"), "{}", again.stderr);

    j.just(&["worktree-remove", branch, "-y"]).ok();
    assert!(!dir.exists());
    assert!(!j.p.databases().contains(&db), "{:?}", j.p.databases());
}

#[test]
fn worktree_opens_an_existing_branch() {
    let j = JustProject::new("jexist");
    git(&j.p.dir, &["branch", "already-there"]);
    git(&j.p.dir, &["checkout", "-q", "already-there"]);
    std::fs::write(j.p.dir.join("only-on-branch.txt"), "yes\n").unwrap();
    commit(&j.p.dir, "on the branch");
    git(&j.p.dir, &["checkout", "-q", "main"]);

    let run = j.just(&["worktree", "already-there"]).ok();
    assert!(run.stderr.contains("on the existing branch `already-there`"), "{}", run.stderr);
    let dir = j.dir_of("already-there");
    assert!(dir.join("only-on-branch.txt").exists());
    assert!(j.p.databases().contains(&env_db(&dir)));
}

#[test]
fn bad_input_makes_nothing() {
    let j = JustProject::new("jbad");
    let before = (j.worktree_count(), j.p.databases());
    let check = |run: Run, needle: &str| {
        assert_eq!(run.code, 2, "{}", run.all());
        // The tool's one error line (under `just`, followed by just's own "recipe … failed").
        let ours: Vec<&str> =
            run.stderr.lines().filter(|l| l.starts_with("error: ") && !l.contains("recipe `")).collect();
        assert!(ours.len() == 1 && ours[0].contains(needle), "{needle:?} not in one error line:\n{}", run.stderr);
        assert_eq!((j.worktree_count(), j.p.databases()), before, "something was made:\n{}", run.stderr);
    };
    check(j.just(&["worktree", "bad..name"]), "is not a valid branch name");
    for name in ["has space", "-x", "trailing/", "lock.lock", "x@{1}", "", "tab\there"] {
        check(j.p.xtask(&["db", "worktree", "--", name]), "is not a valid branch name");
        assert!(!j.dir_of(name).exists() || name.is_empty(), "{name}");
    }
    // The directory is taken.
    std::fs::create_dir_all(j.dir_of("taken")).unwrap();
    check(j.just(&["worktree", "taken"]), "already exists");
    assert_eq!(git(&j.p.dir, &["branch", "--list", "taken"]), "");
    // The main worktree's own branch.
    check(j.just(&["worktree", "main"]), "checked out in the main worktree");
    // The branch is checked out elsewhere (asked for at another place).
    let elsewhere = j.p.dir.with_file_name(format!("{}-elsewhere", j.p.dir.file_name().unwrap().to_string_lossy()));
    git(&j.p.dir, &["worktree", "add", "-q", "-b", "busy", elsewhere.to_str().unwrap()]);
    let before = (j.worktree_count(), j.p.databases());
    let other = j.p.dir.with_file_name("somewhere-else");
    let run = j.p.xtask(&["db", "worktree", "busy", "--path", other.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("already checked out in"), "{}", run.stderr);
    assert_eq!((j.worktree_count(), j.p.databases()), before);
}

#[test]
fn a_failed_setup_removes_the_new_worktree_and_its_branch() {
    let j = JustProject::new("jfail");
    let before = (j.worktree_count(), j.p.databases());
    let missing = format!("{}missing", j.p.prefix);
    let run = j.p.xtask_in(&j.p.dir, &["db", "worktree", "doomed"], &[("WORKTREE_TEMPLATE_DB", missing.as_str())]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(run.stderr.contains("removed the new worktree"), "{}", run.stderr);
    assert!(!j.dir_of("doomed").exists());
    assert_eq!(git(&j.p.dir, &["branch", "--list", "doomed"]), "");
    assert_eq!((j.worktree_count(), j.p.databases()), before);
}

#[test]
fn reset_re_clones_under_the_same_name() {
    let j = JustProject::new("jreset");
    j.just(&["worktree", "resettable"]).ok();
    let dir = j.dir_of("resettable");
    let db = env_db(&dir);
    sql(&db, "INSERT INTO crm.organizations (name, slug) VALUES ('Branch only', 'branch-only')");
    let _app = Held::open(&db);
    wait_for("the app's connection", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'")) == "1"
    });
    // Without a terminal it asks for -y, and changes nothing.
    let run = j.p.xtask_in(&dir, &["db", "worktree", "--reset"], &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("1 open connection"), "{}", run.stderr);
    assert_eq!(sql(&db, "SELECT count(*) FROM crm.organizations WHERE slug = 'branch-only'"), "1");
    // With -y: the connection is ended, the name kept, the branch-only row gone.
    j.p.xtask_in(&dir, &["db", "worktree", "--reset", "-y"], &[]).ok();
    assert_eq!(env_db(&dir), db);
    assert_eq!(sql(&db, "SELECT count(*) FROM crm.organizations WHERE slug = 'branch-only'"), "0");
    assert_eq!(sql(&db, "SELECT count(*) > 0 FROM crm.customers"), "t");
}

#[test]
fn two_runs_for_one_new_branch_at_once_leave_one_worktree_and_its_database() {
    let j = JustProject::new("jtwice");
    let spawn = || {
        j.p.command(&j.p.dir, &["db", "worktree", "--skip-generate", "twice"], &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let all: String = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect();
    // They take turns: the second finds the first one's worktree and sets it up after it.
    assert_eq!(ok, 2, "{all}");
    assert!(all.contains("exists: kept as it is"), "{all}");
    let dir = j.dir_of("twice");
    assert!(dir.join(".env").is_file(), "{all}");
    assert!(j.p.databases().contains(&env_db(&dir)), "{all}");
    assert_eq!(
        git(&j.p.dir, &["branch", "--list", "twice"]).trim().trim_start_matches(['*', '+', ' ']),
        "twice",
        "{all}"
    );
}

#[test]
fn the_schema_diff_recipe_takes_its_sides_as_the_verb_does() {
    let j = JustProject::new("jdiff");
    let t = j.p.template();
    let other = format!("{}other", j.p.prefix);
    sql("postgres", &format!("CREATE DATABASE {other} TEMPLATE {t}"));
    j.just(&["schema-diff", &t, &other]).ok();
    sql(&other, "CREATE TABLE extra (x int)");
    let run = j.just(&["schema-diff", &t, &other, "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["only_in_b"], serde_json::json!(["table public.extra"]), "{json}");
}

/// `just worktree-remove B` with an untracked file in B's worktree: git would keep the worktree,
/// so the database is not dropped either, and the error names the file; `--dry-run -y` drops
/// nothing; once clean, both go.
#[test]
fn worktree_remove_refuses_before_dropping_what_git_would_keep() {
    let j = JustProject::new("justrm");
    j.just(&["worktree", "rm-me"]).ok();
    let dir = j.dir_of("rm-me");
    let db = env_db(&dir);
    std::fs::write(dir.join("scratch.txt"), "mine\n").unwrap();
    let run = j.just(&["worktree-remove", "rm-me", "-y"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("scratch.txt") && run.stderr.contains("nothing dropped"), "{}", run.stderr);
    assert!(j.p.databases().contains(&db), "the database was dropped:\n{}", run.stderr);
    assert!(dir.join("scratch.txt").is_file());
    std::fs::remove_file(dir.join("scratch.txt")).unwrap();
    let dry = j.just(&["worktree-remove", "rm-me", "--dry-run", "-y"]).ok();
    assert!(dry.stderr.contains(&db) && dry.stderr.contains(&*dir.to_string_lossy()), "{}", dry.stderr);
    assert!(j.p.databases().contains(&db) && dir.is_dir(), "{}", dry.stderr);
    j.just(&["worktree-remove", "rm-me", "-y"]).ok();
    assert!(!dir.exists() && !j.p.databases().contains(&db));
}
