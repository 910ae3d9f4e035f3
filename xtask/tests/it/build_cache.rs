//! `db worktree BRANCH` seeds the new worktree's `target/` (hard links to the built
//! dependencies, and the workspace's own units where nothing can make them stale), with the real
//! cargo: its first build compiles only what differs from the main worktree's build, never less,
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

/// Writes `files` (path, content) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// A member crate `name` (a bin; `lib` also gives it a library its binary calls).
fn member(name: &str, main: &str, lib: Option<&str>) -> Vec<(String, String)> {
    let mut files = vec![
        (
            format!("{name}/Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        ),
        (format!("{name}/src/main.rs"), main.to_string()),
    ];
    if let Some(lib) = lib {
        files.push((format!("{name}/src/lib.rs"), lib.to_string()));
    }
    files
}

/// The test project with these member crates and files, committed and built in the main worktree.
fn workspace_of(p: &crate::support::Project, members: &[&str], files: Vec<(String, String)>) {
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    write_files(&p.dir, &files);
    let list = members.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ");
    let manifest = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(p.dir.join("Cargo.toml"), manifest.replace("members = []", &format!("members = [{list}]"))).unwrap();
    std::fs::write(p.dir.join(".gitignore"), ".env\n/target/\n/dump/\n/.dev-db/\n").unwrap();
    commit(&p.dir, "members");
    cargo(&p.dir, &["build"]);
}

fn commit(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message]);
}

/// `db worktree BRANCH` from the main worktree: the new worktree's directory.
fn open(p: &crate::support::Project, branch: &str) -> std::path::PathBuf {
    let mut cmd = p.command(&p.dir, &["db", "worktree", "--skip-generate", branch], &[]);
    cmd.env_remove("CARGO_TARGET_DIR");
    let run = Run::from(cmd.output().unwrap()).ok();
    assert!(run.stderr.contains("seeded from"), "{}", run.stderr);
    std::path::PathBuf::from(run.stdout.lines().last().unwrap())
}

/// `cargo build` with cargo's JSON messages: for each workspace binary, whether cargo found it
/// fresh (nothing compiled). Also the human output, for messages.
fn build_freshness(dir: &Path) -> (std::collections::BTreeMap<String, bool>, String) {
    let run = cargo(dir, &["build", "--message-format=json"]);
    let mut fresh = std::collections::BTreeMap::new();
    for line in run.stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["target"]["kind"][0] == "bin" {
            fresh.insert(msg["target"]["name"].as_str().unwrap().to_string(), msg["fresh"].as_bool().unwrap());
        }
    }
    (fresh, run.stderr)
}

fn run_bin(dir: &Path, name: &str) -> String {
    let out = Command::new(dir.join("target/debug").join(name)).output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_new_worktree_on_the_same_commit_compiles_nothing_it_can_reuse() {
    let p = project("bcsame");
    let mut files = member(
        "hello",
        "fn main() { println!(\"{}\", hello::word()); }\n",
        Some("pub fn word() -> &'static str { include_str!(\"word.txt\").trim_ascii() }\n"),
    );
    files.push(("hello/src/word.txt".into(), "main\n".into()));
    // A compile-time path (cargo does not track it): a copy would print the main worktree's.
    files.extend(member("where", "fn main() { println!(\"{}\", env!(\"CARGO_MANIFEST_DIR\")); }\n", None));
    // Changed and committed after the main worktree's build: its artifact there is stale, though
    // the new worktree's file is the main worktree's, byte for byte.
    files.extend(member("later", "fn main() { println!(\"before\"); }\n", None));
    workspace_of(&p, &["hello", "where", "later"], files);
    write_files(&p.dir, &[("later/src/main.rs", "fn main() { println!(\"after\"); }\n")]);
    commit(&p.dir, "later");

    let new = open(&p, "bc-same");
    // What cargo learned of rustc comes along before the run returns: the first `cargo` there
    // need not ask rustc again (~50 ms).
    assert_eq!(
        std::fs::read(new.join("target/.rustc_info.json")).ok(),
        std::fs::read(p.dir.join("target/.rustc_info.json")).ok().filter(|b| !b.is_empty()),
        "target/.rustc_info.json seeded"
    );
    let (fresh, stderr) = build_freshness(&new);
    assert_eq!(fresh.get("hello"), Some(&true), "{fresh:?}\n{stderr}");
    assert!(!stderr.contains("Compiling hello"), "{stderr}");
    assert_eq!(fresh.get("where"), Some(&false), "{fresh:?}");
    assert_eq!(fresh.get("later"), Some(&false), "{fresh:?}");
    assert_eq!(run_bin(&new, "hello"), "main");
    assert_eq!(run_bin(&new, "where"), new.join("where").display().to_string());
    assert_eq!(run_bin(&new, "later"), "after");

    // An edit in the new worktree after the seed is seen, and the main worktree keeps its binary.
    write_files(&new, &[("hello/src/word.txt", "edited\n")]);
    let (fresh, _) = build_freshness(&new);
    assert_eq!(fresh.get("hello"), Some(&false), "{fresh:?}");
    assert_eq!(run_bin(&new, "hello"), "edited");
    assert_eq!(run_bin(&p.dir, "hello"), "main");
}

#[test]
fn a_branch_that_differs_rebuilds_what_differs() {
    let p = project("bcdiff");
    let mut files = member("same", "fn main() { println!(\"same\"); }\n", None);
    files.extend(member("hello", "fn main() { println!(\"{}\", include_str!(\"word.txt\").trim()); }\n", None));
    files.push(("hello/src/word.txt".into(), "main\n".into()));
    // Reads a file outside its package, as the app's `sqlx::migrate!("../migrations")` does.
    files.extend(member(
        "outside",
        "fn main() { println!(\"{}\", include_str!(\"../../shared.txt\").trim()); }\n",
        None,
    ));
    files.push(("shared.txt".into(), "main\n".into()));
    workspace_of(&p, &["same", "hello", "outside"], files);
    // The branch, committed without touching the main worktree's files (its build stays fresh).
    branch_with(&p.dir, "bc-diff", &[("hello/src/word.txt", "branch\n"), ("shared.txt", "branch\n")]);

    let new = open(&p, "bc-diff");
    let (fresh, stderr) = build_freshness(&new);
    assert_eq!(fresh.get("same"), Some(&true), "{fresh:?}\n{stderr}");
    assert_eq!(fresh.get("hello"), Some(&false), "{fresh:?}");
    assert_eq!(fresh.get("outside"), Some(&false), "{fresh:?}");
    assert_eq!(run_bin(&new, "hello"), "branch");
    assert_eq!(run_bin(&new, "outside"), "branch");
    assert_eq!(run_bin(&p.dir, "hello"), "main");
}

/// Makes `branch` from HEAD with `files` changed, without touching the worktree's files.
fn branch_with(dir: &Path, branch: &str, files: &[(&str, &str)]) {
    let index = dir.join(".git/bc-index");
    let with_index = |args: &[&str]| {
        let out = Command::new("git").args(args).current_dir(dir).env("GIT_INDEX_FILE", &index).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    with_index(&["read-tree", "HEAD"]);
    for (path, text) in files {
        let file = dir.join(".git/bc-blob");
        std::fs::write(&file, text).unwrap();
        let blob = git(dir, &["hash-object", "-w", file.to_str().unwrap()]);
        with_index(&["update-index", "--add", "--cacheinfo", &format!("100644,{},{path}", blob.trim())]);
    }
    let tree = with_index(&["write-tree"]);
    let commit = git(
        dir,
        &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit-tree", &tree, "-p", "HEAD", "-m", "branch"],
    );
    git(dir, &["branch", branch, commit.trim()]);
}

#[test]
fn a_branch_s_pending_migrations_run_on_the_seeded_build() {
    let p = project("bcmig");
    // The migrator is a workspace crate run through cargo, as the app's (`cargo run -p app --
    // migrate`): it runs the real one.
    let main = format!(
        "fn main() {{ let s = std::process::Command::new({:?}).arg(\"migrate\").env(\"APP_MIGRATIONS_DIR\", \"migrations\").status().unwrap(); std::process::exit(s.code().unwrap_or(1)); }}\n",
        crate::support::app_bin().display().to_string()
    );
    let manifest = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    let (before, after) = manifest.split_once("migrate_command = ").unwrap();
    let rest = after.split_once('\n').unwrap().1;
    std::fs::write(
        p.dir.join("Cargo.toml"),
        format!("{before}migrate_command = [\"cargo\", \"run\", \"--offline\", \"--package\", \"migrator\"]\n{rest}"),
    )
    .unwrap();
    workspace_of(&p, &["migrator"], member("migrator", &main, None));
    branch_with(
        &p.dir,
        "bc-mig",
        &[("migrations/0099_bc_branch_table.sql", "CREATE TABLE bc_branch_table (id int);\n")],
    );

    let mut cmd = p.command(&p.dir, &["db", "worktree", "--skip-generate", "bc-mig"], &[]);
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    let run = Run::from(cmd.output().unwrap()).ok();
    // Seeded before the migration ran: the migrator was not compiled there.
    assert!(run.stderr.contains("seeded from"), "{}", run.stderr);
    assert!(run.stderr.contains("1 applied"), "{}", run.stderr);
    assert!(!run.stderr.contains("Compiling migrator"), "{}", run.stderr);
}

/// `cargo` with global flags before the subcommand (`cargo -v xtask …`: an alias takes nothing of
/// cargo's after it), given at most two minutes: killed after that (it waited for a lock).
fn cargo_waits(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["-v", "--offline"]).args(args).current_dir(dir);
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    Run::from(child.wait_with_output().unwrap())
}

/// An exclusive `flock` on `path`, held until dropped (as cargo holds its lock while it builds).
fn hold_lock(path: &Path) -> std::fs::File {
    let file = std::fs::File::options().read(true).write(true).create(true).truncate(false).open(path).unwrap();
    // SAFETY: flock on a descriptor we own; released when it is closed.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) }, 0);
    file
}

#[test]
fn the_first_cargo_xtask_in_a_new_worktree_never_waits_for_the_app_s_build() {
    let p = project("bcprof");
    // This repository's own way to run the xtask: its alias and its profile, as they are.
    let root = crate::support::repo_root();
    let config = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let profile = manifest.split_once("[profile.xtask]").expect("the root Cargo.toml has [profile.xtask]").1;
    let profile = profile.split("\n[").next().unwrap();
    let ours = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(p.dir.join("Cargo.toml"), format!("{ours}\n[profile.xtask]{profile}\n")).unwrap();
    // A dependency outside the repository (as a registry crate is), used by both.
    let dep = p.dir.with_file_name(format!("{}-dep", p.dir.file_name().unwrap().to_string_lossy()));
    write_files(
        &dep,
        &[
            ("Cargo.toml", "[package]\nname = \"bcpdep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
            ("src/lib.rs", "pub fn word() -> &'static str { \"dep\" }\n"),
        ],
    );
    let with_dep = |name: &str, main: &str| {
        let mut files = member(name, main, None);
        files[0].1.push_str(&format!("\n[dependencies]\nbcpdep = {{ path = {:?} }}\n", dep.display().to_string()));
        files
    };
    let mut files = with_dep(
        "xtask",
        "fn main() { println!(\"xtask {} {}\", bcpdep::word(), std::env::args().nth(1).unwrap()); }\n",
    );
    files.extend(with_dep("app", "fn main() { println!(\"app {}\", bcpdep::word()); }\n"));
    files.push((".cargo/config.toml".into(), config));
    workspace_of(&p, &["xtask", "app"], files);
    // The main worktree's xtask, as `cargo xtask` builds it.
    let here = cargo_waits(&p.dir, &["xtask", "here"]).ok();
    assert_eq!(here.stdout.trim(), "xtask dep here");

    let new = open(&p, "bc-prof");
    // Right away: the xtask's units are seeded (at most the seed of those is waited for).
    let first = cargo_waits(&new, &["xtask", "first"]).ok();
    assert_eq!(first.stdout.trim(), "xtask dep first");
    assert!(!first.stderr.contains("Compiling"), "{}", first.stderr);
    assert!(first.stderr.contains("Fresh xtask"), "{}", first.stderr);

    // While the app builds there (cargo's lock on its build directory held), `cargo xtask`
    // runs without waiting for it.
    let app_build = hold_lock(&new.join("target/debug/.cargo-lock"));
    let during = cargo_waits(&new, &["xtask", "during"]);
    drop(app_build);
    assert!(!during.stderr.contains("Blocking waiting for file lock"), "{}", during.stderr);
    let during = during.ok();
    assert_eq!(during.stdout.trim(), "xtask dep during");

    // The app's build there still finds its dependency and itself seeded.
    let app = cargo_waits(&new, &["build", "-p", "app"]).ok();
    assert!(app.stderr.contains("Fresh bcpdep"), "{}", app.stderr);
    assert!(!app.stderr.contains("Compiling"), "{}", app.stderr);
    assert_eq!(run_bin(&new, "app"), "app dep");
    let _ = std::fs::remove_dir_all(&dep);
}
