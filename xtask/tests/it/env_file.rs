//! `.env` as `db worktree` reads and rewrites it: one meaning per key, every other byte kept.

use crate::support::url_for;
use crate::worktree::{env_db, project, run_in, worktree};

#[test]
fn database_url_twice_with_different_values_is_refused_and_twice_alike_is_rewritten_twice() {
    let p = project("envdup");
    // The main worktree's .env, copied into a worktree that has none: the app would read the
    // first line (the golden template), a shell the last.
    let text = format!("DATABASE_URL={}\nPORT=4200\nDATABASE_URL={}\n", url_for(&p.template()), url_for("postgres"));
    std::fs::write(p.dir.join(".env"), &text).unwrap();
    let wt = worktree(&p, "dup");
    let before = p.databases();
    let run = run_in(&p, &wt, &[]).fails(2, "keep one");
    let last = run.stderr.lines().last().unwrap();
    assert!(last.contains(&p.dir.join(".env").display().to_string()), "names the file: {last}");
    assert!(last.contains("DATABASE_URL") && last.contains("lines 1, 3"), "{last}");
    assert_eq!(p.databases(), before, "nothing created");
    assert!(!wt.join(".env").exists(), "nothing written");

    // The same value twice: no doubt what is meant, and afterwards both lines agree again.
    let same = format!(
        "DATABASE_URL={}\nPORT=4200\nexport DATABASE_URL='{}'\n",
        url_for(&p.template()),
        url_for(&p.template())
    );
    std::fs::write(p.dir.join(".env"), &same).unwrap();
    run_in(&p, &wt, &[]).ok();
    let db = env_db(&wt);
    assert!(db.starts_with(&format!("{}dup", p.prefix)), "{db}");
    let written = std::fs::read_to_string(wt.join(".env")).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert!(lines[0].starts_with("DATABASE_URL=postgres") && lines[0].ends_with(&format!("/{db}")), "{written}");
    assert!(
        lines[2].starts_with("export DATABASE_URL='postgres") && lines[2].ends_with(&format!("/{db}'")),
        "{written}"
    );
}

#[test]
fn a_crlf_env_behind_a_symlink_is_edited_in_place_and_a_read_only_one_not_at_all() {
    use std::os::unix::fs::PermissionsExt;
    let p = project("envbytes");
    // A worktree whose .env is a link to a CRLF file kept elsewhere.
    let shared = p.dir.join("shared.env");
    let text =
        format!("# shared\r\nAPP_HOST=https://me.example.test # tunnel\r\nDATABASE_URL={}\r\n", url_for(&p.template()));
    std::fs::write(&shared, &text).unwrap();
    let wt = worktree(&p, "bytes");
    std::os::unix::fs::symlink(&shared, wt.join(".env")).unwrap();
    run_in(&p, &wt, &[]).ok();
    assert!(std::fs::symlink_metadata(wt.join(".env")).unwrap().file_type().is_symlink(), "the link stays a link");
    let db = env_db(&wt);
    assert!(db.starts_with(&format!("{}bytes", p.prefix)), "{db}");
    let written = std::fs::read_to_string(&shared).unwrap();
    let port = written.rsplit("PORT=").next().unwrap().trim_end().to_string();
    let expected = format!(
        "# shared\r\nAPP_HOST=https://me.example.test # tunnel\r\nDATABASE_URL={}\r\nPORT={port}\r\n",
        url_for(&db)
    );
    assert_eq!(written, expected, "CRLF kept, every other byte kept");

    // Read-only: refused before anything is created, the file as it was.
    let wt = worktree(&p, "readonly");
    let env = wt.join(".env");
    let text = format!("DATABASE_URL={}\n", url_for(&p.template()));
    std::fs::write(&env, &text).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = p.databases();
    let run = run_in(&p, &wt, &[]).fails(2, "chmod u+w");
    assert!(run.stderr.contains(&format!("{} is read-only", env.display())), "{}", run.stderr);
    assert_eq!(p.databases(), before, "nothing created");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), text);
    assert_eq!(std::fs::metadata(&env).unwrap().permissions().mode() & 0o777, 0o444);
}

#[test]
fn database_url_in_the_environment_is_called_out_after_the_report() {
    let p = project("envshadow");
    let wt = worktree(&p, "shadow");
    // The environment names the golden template: the app (dotenvy never overrides it) would
    // ignore the branch database that .env now names.
    let env_url = url_for(&p.template());
    let run = p.xtask_in(&wt, &["db", "worktree"], &[("DATABASE_URL", &env_url)]).ok();
    let db = env_db(&wt);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let total = lines.iter().position(|l| l.trim_start().starts_with("total")).expect("a report");
    let warning = lines[total..].iter().find(|l| l.starts_with("warning: DATABASE_URL")).unwrap_or_else(|| {
        panic!("no warning after the report:\n{}", run.stderr);
    });
    assert!(warning.contains(&format!("`{}`", p.template())) && warning.contains(&format!("`{db}`")), "{warning}");
    assert!(warning.contains("unset DATABASE_URL"), "{warning}");
    assert!(!warning.contains("devpw"), "{warning}");

    // Naming the branch database itself, it shadows nothing.
    let run = p.xtask_in(&wt, &["db", "worktree"], &[("DATABASE_URL", &url_for(&db))]).ok();
    assert!(!run.stderr.contains("warning: DATABASE_URL"), "{}", run.stderr);
}
