//! `db worktree BRANCH` seeds the new worktree's `target/` (hard links to the built
//! dependencies), with the real cargo: its first build compiles only the workspace's own crates,
//! and every worktree runs its own binary.

use std::path::Path;
use std::process::Command;

use crate::support::{git, Run};
use crate::worktree::project;

fn cargo(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).arg("--offline").current_dir(dir);
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    Run::from(cmd.output().unwrap()).ok()
}

#[test]
fn a_new_worktree_builds_only_its_own_crates_and_runs_its_own_binary() {
    let p = project("bcache");
    // A dependency outside the repository (as a registry crate is: the same files for every
    // worktree), and a workspace crate that uses it.
    let dep = p.dir.with_file_name(format!("{}-dep", p.dir.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(dep.join("src")).unwrap();
    std::fs::write(dep.join("Cargo.toml"), "[package]\nname = \"bcdep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .unwrap();
    std::fs::write(dep.join("src/lib.rs"), "pub fn greet() -> &'static str { \"hello\" }\n").unwrap();
    std::fs::create_dir_all(p.dir.join("hello/src")).unwrap();
    std::fs::write(
        p.dir.join("hello/Cargo.toml"),
        format!(
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nbcdep = {{ path = {:?} }}\n",
            dep.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        p.dir.join("hello/src/main.rs"),
        "fn main() { println!(\"{} from {}\", bcdep::greet(), include_str!(\"which.txt\").trim()); }\n",
    )
    .unwrap();
    std::fs::write(p.dir.join("hello/src/which.txt"), "main\n").unwrap();
    let manifest = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(p.dir.join("Cargo.toml"), manifest.replace("members = []", "members = [\"hello\"]")).unwrap();
    std::fs::write(p.dir.join(".gitignore"), ".env\n/target/\n/dump/\n/.dev-db/\n").unwrap();
    git(&p.dir, &["add", "-A"]);
    git(&p.dir, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "hello"]);
    cargo(&p.dir, &["build", "-p", "hello"]);

    let open = |branch: &str| {
        let mut cmd = p.command(&p.dir, &["db", "worktree", "--skip-generate", branch], &[]);
        cmd.env_remove("CARGO_TARGET_DIR");
        let run = Run::from(cmd.output().unwrap()).ok();
        assert!(run.stderr.contains("seeded from"), "{}", run.stderr);
        std::path::PathBuf::from(run.stdout.lines().last().unwrap())
    };
    let (a, b) = (open("bc-a"), open("bc-b"));
    std::fs::write(a.join("hello/src/which.txt"), "a\n").unwrap();
    std::fs::write(b.join("hello/src/which.txt"), "b\n").unwrap();

    // The first build in a new worktree: the dependency is reused, only the workspace crate built.
    let first = cargo(&a, &["build", "-v", "-p", "hello"]);
    assert!(first.stderr.contains("Fresh bcdep"), "{}", first.stderr);
    assert!(first.stderr.contains("Compiling hello"), "{}", first.stderr);
    assert!(!first.stderr.contains("Compiling bcdep"), "{}", first.stderr);

    // Each worktree runs its own binary, however their builds interleave.
    for (dir, expected) in [(&a, "a"), (&b, "b"), (&a, "a"), (&p.dir, "main"), (&b, "b")] {
        let run = cargo(dir, &["run", "-q", "-p", "hello"]);
        assert_eq!(run.stdout.trim(), format!("hello from {expected}"), "in {}", dir.display());
    }
    let _ = std::fs::remove_dir_all(&dep);
}
