//! The justfile's worktree recipes, run by the real `just` (installed by `cargo xtask test`).

use std::path::PathBuf;
use std::process::Command;

use crate::support::{repo_root, sql, Project};

fn just() -> PathBuf {
    let bin = std::env::var_os("XTASK_TEST_VENV_BIN").expect("run through `cargo xtask test`, which installs `just`");
    PathBuf::from(bin).join("just")
}

#[test]
fn worktree_recipes_create_and_remove_a_worktree_with_its_database() {
    let p = Project::new("just");
    p.xtask(&["db", "template", "create"]).ok();
    std::fs::copy(repo_root().join("justfile"), p.dir.join("justfile")).unwrap();
    // As in the real repository: the generated files are committed, so worktrees start current.
    p.xtask(&["db", "generate"]).ok();
    crate::support::git(&p.dir, &["add", "-A"]);
    crate::support::git(&p.dir, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "generated"]);
    // `cargo xtask …` in the recipes reaches the binary under test.
    let shim = p.dir.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(
        shim.join("cargo"),
        format!("#!/bin/sh\n[ \"$1\" = xtask ] || exit 97\nshift\nexec {} \"$@\"\n", env!("CARGO_BIN_EXE_xtask")),
    )
    .unwrap();
    std::fs::set_permissions(shim.join("cargo"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let run = |args: &[&str]| {
        let mut just = Command::new(just());
        just.args(args)
            .current_dir(&p.dir)
            .env("PATH", &path)
            .env_remove("DATABASE_URL")
            .env_remove("WORKTREE_TEMPLATE_DB");
        let out = just.output().unwrap();
        assert!(
            out.status.success(),
            "just {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let branch = "feature/it's-\"odd\"";
    run(&["worktree", branch]);
    let dir = p.dir.with_file_name(format!("{}-feature-it's-\"odd\"", p.dir.file_name().unwrap().to_string_lossy()));
    assert!(dir.join(".env").exists(), "{} has a .env", dir.display());
    let env = std::fs::read_to_string(dir.join(".env")).unwrap();
    let db = env.lines().find_map(|l| l.strip_prefix("DATABASE_URL=")).unwrap().rsplit('/').next().unwrap().to_string();
    assert_eq!(sql(&db, "SELECT count(*) > 0 FROM crm.customers"), "t");

    run(&["worktree-remove", branch]);
    assert!(!dir.exists());
    assert!(!p.databases().contains(&db), "{:?}", p.databases());
}
