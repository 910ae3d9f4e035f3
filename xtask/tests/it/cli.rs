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
    // Every command, not only db's: bench, completions, test.
    for (path, _) in leaves() {
        let row = format!("| `cargo xtask {path}");
        assert!(readme.contains(&row), "README.md's verb table has no row starting with {row:?}");
    }
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

/// Every command's leaves (`db worktree`, `db template create`, `bench schema-diff`, `test`).
fn leaves() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
        if subs.is_empty() {
            out.push((prefix.trim().to_string(), cmd.clone()));
        }
        for sub in subs {
            walk(&format!("{prefix} {}", sub.get_name()), sub, out);
        }
    }
    let mut out = Vec::new();
    walk("", &xtask::flags::command(), &mut out);
    out
}

/// `a 'b c' d` → `["a", "b c", "d"]`: enough of a shell for the examples.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, any) = (!quoted, true),
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every verb's --help ends with examples and its exit codes, and every example is a command
/// line this version accepts.
#[test]
fn every_help_has_examples_that_parse_and_the_exit_codes() {
    use clap::Parser;
    let leaves = leaves();
    assert!(leaves.len() >= 18, "{:?}", leaves.iter().map(|l| &l.0).collect::<Vec<_>>());
    for (path, cmd) in leaves {
        let after = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(after.contains("Examples:\n"), "`cargo xtask {path} --help` has no examples");
        assert!(after.contains("Exit status: "), "`cargo xtask {path} --help` does not give the exit codes");
        let examples: Vec<&str> = after.lines().filter_map(|l| l.strip_prefix("  cargo xtask ")).collect();
        assert!(!examples.is_empty(), "{path}");
        for example in examples {
            assert!(example.starts_with(&path), "an example of `{path}` runs another verb: {example}");
            let argv = std::iter::once("cargo xtask".to_string()).chain(words(example));
            if let Err(e) = xtask::flags::Xtask::try_parse_from(argv) {
                panic!("the example `cargo xtask {example}` does not parse:\n{e}");
            }
        }
    }
}

/// The justfile calls only verbs that exist, and the README's table names every verb (above).
#[test]
fn the_justfile_calls_only_verbs_that_exist() {
    let justfile = std::fs::read_to_string(repo_root().join("justfile")).unwrap();
    let verbs: Vec<String> = db_verbs().into_iter().map(|(v, _)| v).collect();
    let mut called = 0;
    for line in justfile.lines() {
        let Some(rest) = line.split("cargo xtask db ").nth(1) else { continue };
        let verb = rest.split_whitespace().next().unwrap_or_default();
        assert!(
            verbs.iter().any(|v| v.split(' ').next() == Some(verb)),
            "the justfile calls `db {verb}`: no such verb\n{line}"
        );
        called += 1;
    }
    assert!(called >= 3, "the justfile was expected to call db verbs");
}

/// One way to ask for JSON: `--format json`; the old `--json` still works for now and says so.
#[test]
fn json_is_asked_for_one_way_and_the_old_spelling_still_works() {
    use clap::Parser;
    let p = Project::new("fmt");
    for verb in ["status", "worktrees"] {
        let new = p.xtask(&["db", verb, "--format", "json"]).ok();
        let old = p.xtask(&["db", verb, "--json"]).ok();
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&new.stdout).unwrap(), serde_json::from_str(&old.stdout).unwrap());
        assert!(a.is_object() || a.is_array(), "{verb}: {a}");
        assert_eq!(a, b, "{verb}: the two spellings give the same JSON");
        assert!(old.stderr.contains("--json is deprecated") && old.stderr.contains("--format json"), "{}", old.stderr);
        assert!(!new.stderr.contains("deprecated"), "{}", new.stderr);
    }
    // list-clones: --prune, formerly --delete-expired (the AWS tool warns when it is used).
    for spelling in ["--prune", "--delete-expired"] {
        let f = xtask::flags::Xtask::try_parse_from(["cargo xtask", "db", "list-clones", spelling, "--dry-run"]);
        assert!(f.is_ok(), "{spelling}: {:?}", f.err());
    }
    // A --dry-run on every verb that drops or deletes.
    for argv in [
        &["db", "worktree", "--drop", "--dry-run"][..],
        &["db", "worktrees", "--prune", "--dry-run"],
        &["db", "drop-clone", "--dry-run"],
        &["db", "list-clones", "--prune", "--dry-run"],
        &["db", "clone-prod", "--dry-run"],
    ] {
        let f = xtask::flags::Xtask::try_parse_from(std::iter::once("cargo xtask").chain(argv.iter().copied()));
        assert!(f.is_ok(), "{argv:?}: {:?}", f.err());
    }
}

/// Completions come from the same definition as the parser: every verb and flag is in them.
#[test]
fn completions_cover_every_verb() {
    let p = Project::new("compl");
    let bash = p.xtask(&["completions", "bash"]).ok();
    assert!(bash.stdout.contains("complete -F _xtask"), "{}", &bash.stdout[..bash.stdout.len().min(400)]);
    for (path, cmd) in leaves() {
        // clap_complete's bash names each command's case arm `xtask__subcmd__db__subcmd__…`.
        let arm = format!("xtask__subcmd__{}", path.replace([' ', '-'], "__subcmd__"));
        assert!(bash.stdout.contains(&arm), "`{path}` is not completed (no {arm})");
        for long in cmd.get_arguments().filter(|a| !a.is_hide_set()).filter_map(|a| a.get_long()) {
            assert!(bash.stdout.contains(&format!("--{long}")), "`{path} --{long}` is not completed");
        }
    }
    let unknown = p.xtask(&["completions", "nushell"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("possible values"), "{}", unknown.stderr);
}

/// Every `cargo xtask …` command a message names (a fix, a hint) in the source of the xtask and
/// of the AWS tool is one this version parses: a fix line that names a flag or verb that no
/// longer exists sends the user to a second error. Comments are not messages; `{…}` (filled in at
/// run time) and an upper-case word (`NAME`, `N`) stand for a value; `a && b` is two commands; a
/// command cut by `…` is not checked past it.
#[test]
fn every_command_named_in_a_message_parses() {
    use clap::Parser;
    let mut files = Vec::new();
    for dir in ["xtask/src", "xtask/aws/src"] {
        let mut stack = vec![repo_root().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    files.push(path);
                }
            }
        }
    }
    let (mut checked, mut wrong) = (0, Vec::new());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("`cargo xtask ") {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            if text[line_start..at].trim_start().starts_with("//") {
                continue;
            }
            let rest = &text[at + 1..];
            let Some(end) = rest.find('`') else { continue };
            // A string continued on the next line (`\` at the end) reads as one space.
            let cmd: String = rest[..end].split("\\\n").map(str::trim_start).collect::<Vec<_>>().join(" ");
            if cmd.contains('\n') {
                continue;
            }
            let cmd = cmd.split('…').next().unwrap();
            // A whole command filled in at run time names no verb here.
            if cmd.strip_prefix("cargo xtask ").is_some_and(|r| r.starts_with('{')) {
                continue;
            }
            // `{branch}`, `{}` → a word.
            let mut filled = String::new();
            let mut depth = 0;
            for c in cmd.chars() {
                match c {
                    '{' => {
                        if depth == 0 {
                            filled.push('x');
                        }
                        depth += 1;
                    }
                    '}' if depth > 0 => depth -= 1,
                    c if depth == 0 => filled.push(c),
                    _ => {}
                }
            }
            for one in filled.split("&&") {
                let argv: Vec<String> = words(one.trim())
                    .into_iter()
                    .map(|w| {
                        let placeholder = w.len() <= 12 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                        if placeholder && !w.is_empty() {
                            "1".to_string()
                        } else {
                            w
                        }
                    })
                    .collect();
                // `cargo xtask` parses as the binary `cargo`, its first word `xtask` dropped.
                let parsed = xtask::flags::Xtask::try_parse_from(argv.iter().skip(1).map(String::as_str));
                checked += 1;
                if let Err(e) = parsed {
                    use clap::error::ErrorKind::{DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand};
                    // `cargo xtask db`: a group, named as such.
                    if !matches!(e.kind(), DisplayHelp | DisplayHelpOnMissingArgumentOrSubcommand) {
                        let line = text[..at].lines().count();
                        let why = e.to_string().lines().next().unwrap_or_default().to_string();
                        wrong.push(format!("{}:{line}: `{}`: {why}", file.display(), one.trim()));
                    }
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} commands found: is the scan looking in the right place?");
    assert!(wrong.is_empty(), "{} command(s) named in messages do not parse:\n{}", wrong.len(), wrong.join("\n"));
}
