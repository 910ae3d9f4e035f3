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
    // With a build script whose output it includes: its dep-info names this build's OUT_DIR,
    // which differs between worktrees.
    std::fs::write(
        dep.join("build.rs"),
        "fn main() { let out = std::env::var(\"OUT_DIR\").unwrap(); \
         std::fs::write(format!(\"{out}/word.rs\"), \"\\\"hello\\\"\").unwrap(); }\n",
    )
    .unwrap();
    std::fs::write(
        dep.join("src/lib.rs"),
        "pub fn greet() -> &'static str { include!(concat!(env!(\"OUT_DIR\"), \"/word.rs\")) }\n",
    )
    .unwrap();
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

    // A dependency rebuilt in a new worktree never writes through a file the main worktree's
    // target/ shares with it: every file whose inode is shared has the same content afterwards.
    let before = shared_files(&p.dir.join("target"));
    assert!(before.len() > 3, "nothing is shared: {before:?}");
    let lib = std::fs::read_to_string(dep.join("src/lib.rs")).unwrap();
    std::fs::write(dep.join("src/lib.rs"), format!("{lib}// touched\n")).unwrap();
    let rebuilt = cargo(&a, &["build", "-v", "-p", "hello"]);
    assert!(rebuilt.stderr.contains("Compiling bcdep"), "{}", rebuilt.stderr);
    let mut changed = Vec::new();
    for (path, (ino, hash)) in &before {
        let Ok(meta) = std::fs::metadata(path) else { continue };
        if std::os::unix::fs::MetadataExt::ino(&meta) == *ino && content_hash(path) != *hash {
            changed.push(path.display().to_string());
        }
    }
    assert!(changed.is_empty(), "written through from the new worktree: {changed:#?}");
    let _ = std::fs::remove_dir_all(&dep);
}

/// Every file under `dir` whose inode another path shares (a hard link): its inode and a hash of
/// its content.
fn shared_files(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, (u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() && meta.nlink() > 1 {
                out.insert(e.path(), (meta.ino(), content_hash(&e.path())));
            }
        }
    }
    out
}

fn content_hash(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).unwrap_or_default().hash(&mut h);
    h.finish()
}
