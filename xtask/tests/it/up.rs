//! `db up | down | status` with a real embedded cluster of the test's own, and the app's
//! `/health` against the template on it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::{app_bin, free_port, git, Project};

#[test]
fn up_template_status_down_up_keeps_data_and_the_app_answers() {
    let p = Project::new("up");
    std::fs::remove_file(p.dir.join(".env")).unwrap();
    let data_dir = p.dir.join("cluster");
    let set = format!("data_dir={}", data_dir.display());
    let db = |args: &[&str]| {
        let mut all = vec!["db", "--set", &set];
        all.extend_from_slice(args);
        p.xtask(&all)
    };

    let up = db(&["up"]).ok();
    assert!(up.stderr.contains("is up on 127.0.0.1:"), "{}", up.stderr);
    let env = std::fs::read_to_string(p.dir.join(".env")).unwrap();
    let url_line = env.lines().find(|l| l.starts_with("DATABASE_URL=")).expect(".env has DATABASE_URL");
    assert!(url_line.ends_with(&format!("/{}", p.template())), "{url_line}");
    let password = url_line.split(':').nth(2).unwrap().split('@').next().unwrap();
    assert!(!up.all().contains(password), "db up printed the password");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(p.dir.join(".env")).unwrap().permissions().mode() & 0o777, 0o600);

    db(&["template", "create"]).ok();
    let status = db(&["status"]).ok();
    assert!(status.stdout.contains("— up"), "{}", status.stdout);
    assert!(status.stdout.contains("embedded  running"), "{}", status.stdout);
    assert!(status.stdout.contains(&p.template()), "{}", status.stdout);
    assert!(!status.all().contains(password));
    let json: serde_json::Value = serde_json::from_str(&db(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(json["template"]["exists"], true);
    assert_eq!(json["template"]["migrations"]["pending"], serde_json::json!([]));

    // A branch database shows its branch, worktree and PORT.
    let wt = crate::worktree::worktree(&p, "shown");
    p.xtask_in(&wt, &["db", "--set", &set, "worktree", "--skip-generate"], &[]).ok();
    let port = crate::worktree::env_value(&wt, "PORT");
    let status = db(&["status"]).ok();
    let line = format!("branch shown, worktree {}, PORT {port}", wt.display());
    assert!(status.stdout.contains(&line), "{line:?} not in\n{}", status.stdout);
    let json: serde_json::Value = serde_json::from_str(&db(&["status", "--json"]).ok().stdout).unwrap();
    let branch = json["databases"].as_array().unwrap().iter().find(|d| d["kind"] == "branch").unwrap().clone();
    assert_eq!(branch["branch"]["worktree_exists"], true, "{json}");

    // Up again is a no-op; down then up keeps the data.
    assert!(db(&["up"]).ok().stderr.contains("already running"));
    db(&["down"]).ok();
    // Down: it says so, and does not claim there are no databases.
    let down = db(&["status"]).ok();
    assert!(down.stdout.contains("server    down"), "{}", down.stdout);
    assert!(down.stdout.contains("databases unknown"), "{}", down.stdout);
    assert!(!down.stdout.contains("none besides the template"), "{}", down.stdout);
    let json: serde_json::Value = serde_json::from_str(&db(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(json["server"]["up"], false);
    assert!(json["databases"].is_null(), "{json}");
    db(&["up"]).ok();
    let json: serde_json::Value = serde_json::from_str(&db(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(json["template"]["exists"], true, "the template survived down/up");

    // The app serves /health against the template.
    let port = free_port();
    let database_url = url_line.trim_start_matches("DATABASE_URL=");
    let mut app = std::process::Command::new(app_bin())
        .arg("serve")
        .current_dir(&p.dir)
        .env("DATABASE_URL", database_url)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = http_get(port, "/health");
    let _ = app.kill();
    let _ = app.wait();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(health["database"], p.template().as_str(), "{body}");
    assert_eq!(health["migration"], 10, "{body}");

    db(&["down"]).ok();
    assert!(db(&["down"]).ok().stderr.contains("not running"));
}

#[test]
fn up_refuses_to_shadow_a_configured_server() {
    let p = Project::new("upext");
    let data_dir = p.dir.join("cluster");
    let run = p.xtask(&["db", "--set", &format!("data_dir={}", data_dir.display()), "up"]);
    run.fails(2, "already points at a server that is not the embedded one");
    assert!(!data_dir.join("data").exists(), "nothing was created");
}

#[test]
fn up_from_a_linked_worktree_writes_the_main_env() {
    let p = Project::new("upwt");
    std::fs::remove_file(p.dir.join(".env")).unwrap();
    let wt = p.dir.with_file_name(format!("{}-wt", p.dir.file_name().unwrap().to_string_lossy()));
    git(&p.dir, &["worktree", "add", "-q", "-b", "feature", wt.to_str().unwrap()]);
    let data_dir = p.dir.join("cluster");
    let set = format!("data_dir={}", data_dir.display());
    p.xtask_in(&wt, &["db", "--set", &set, "up"], &[]).ok();
    assert!(std::fs::read_to_string(p.dir.join(".env")).unwrap().contains("DATABASE_URL="));
    assert!(!wt.join(".env").exists());
    p.xtask_in(&wt, &["db", "--set", &set, "down"], &[]).ok();
    let _ = std::fs::remove_dir_all(&wt);
}

/// A minimal HTTP/1.0 GET, retried until the server listens (at most 30 s).
fn http_get(port: u16, path: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            return resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the app never listened on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
