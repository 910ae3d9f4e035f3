//! The command line teaches: every verb is listed with a description, here and in the README.

use crate::support::{repo_root, Project};

/// Every leaf verb under `cargo xtask db`, as users type it (`template create`).
fn db_verbs() -> Vec<(String, String)> {
    let cmd = xtask::flags::command();
    let db = cmd.get_subcommands().find(|c| c.get_name() == "db").unwrap();
    let mut out = Vec::new();
    for verb in db.get_subcommands().filter(|v| !v.is_hide_set()) {
        let subs: Vec<_> = verb.get_subcommands().collect();
        if subs.is_empty() {
            out.push((verb.get_name().to_string(), verb.get_about().map(|a| a.to_string()).unwrap_or_default()));
        }
        for sub in subs {
            out.push((
                format!("{} {}", verb.get_name(), sub.get_name()),
                sub.get_about().map(|a| a.to_string()).unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn help_lists_every_verb_with_a_description() {
    let p = Project::new("help");
    let top = p.xtask(&["--help"]).ok();
    assert!(top.stdout.contains("db") && top.stdout.contains("test"), "{}", top.stdout);
    let db = p.xtask(&["db", "--help"]).ok();
    for (verb, about) in db_verbs() {
        assert!(!about.is_empty(), "`db {verb}` has no description");
        let first = verb.split(' ').next().unwrap();
        assert!(db.stdout.contains(first), "`db --help` does not list `{first}`:\n{}", db.stdout);
    }
    let template = p.xtask(&["db", "template", "--help"]).ok();
    assert!(template.stdout.contains("create"));
}

#[test]
fn readme_verb_table_lists_every_verb() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for (verb, _) in db_verbs() {
        let row = format!("| `cargo xtask db {verb}`");
        assert!(readme.contains(&row), "README.md's verb table has no row starting with {row:?}");
    }
    assert!(readme.contains("| `cargo xtask test`"), "README.md's verb table lacks `cargo xtask test`");
}

#[test]
fn help_never_shows_the_database_password() {
    let p = Project::new("helppw");
    let secret = "hunter2-help-secret";
    let url = format!("postgres://me:{secret}@127.0.0.1:1/db");
    for args in [&["--help"][..], &["db", "--help"], &["db", "up", "--help"], &["db", "status", "--help"]] {
        let run = p.xtask_in(&p.dir, args, &[("DATABASE_URL", &url)]);
        assert!(!run.all().contains(secret), "{args:?} printed the password");
    }
}

#[test]
fn usage_errors_exit_2() {
    let p = Project::new("usage");
    let run = p.xtask(&["db", "no-such-verb"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no-such-verb"));
}

#[test]
fn the_worktree_build_contains_no_aws_crate() {
    // `cargo xtask db worktree` builds the `xtask` package: the AWS SDK must not be in it.
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["tree", "--package", "xtask", "--edges", "normal,build", "--prefix", "none", "--offline"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().count() > 10, "{tree}");
    let aws: Vec<&str> = tree.lines().filter(|l| l.starts_with("aws-")).collect();
    assert!(aws.is_empty(), "AWS crates in the worktree build: {aws:?}");
}
