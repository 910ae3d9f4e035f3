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
