//! The web console at `/console` in a real headless Chromium, against a
//! live 3-node cluster, single-group and sharded (`--groups 2`); and, without
//! a browser, what a sharded node's `/status` and console page say.
//!
//! The browser side is `tests/browser/console.test.mjs` (npm
//! `playwright-core` driving Debian's `/usr/bin/chromium`); this test starts
//! the cluster, runs the script against a follower's console and checks its
//! exit status. It needs, once per machine:
//!
//! ```sh
//! apt-get install -y chromium nodejs npm
//! (cd tests/browser && npm ci)
//! ```
//!
//! and fails, saying so, when any of it is missing. `CHROMIUM` points at
//! another Chromium binary. The screenshot goes to
//! `$CARGO_TARGET_TMPDIR/console.png`.

mod common;

use common::Cluster;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole browser run (start Chromium, a few statements, screenshots).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics with what to install when the browser test cannot run here.
fn require_browser_tools() {
    const HOW: &str = "the console test needs Node.js, Chromium and playwright-core: \
                       `apt-get install -y chromium nodejs npm` and \
                       `(cd tests/browser && npm ci)`";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not on PATH; {HOW}"
    );
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "no Chromium at {} (set CHROMIUM to another path); {HOW}",
        chromium.display()
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "{} is missing; {HOW}",
        playwright.display()
    );
}

/// Runs the browser script against node `at`'s console; `data_groups`
/// above 1 tells it to check the Shards panel too. Panics with the
/// script's output unless it passed; the screenshot goes to
/// `$CARGO_TARGET_TMPDIR/<name>/console.png`.
fn run_browser_script(c: &Cluster, at: u64, name: &str, data_groups: u32) {
    let url = format!("http://{}/console", c.node(at).http);
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&out_dir).unwrap();
    let screenshot = out_dir.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let stdout_path = out_dir.join("node.stdout");
    let stderr_path = out_dir.join("node.stderr");

    let mut child = Command::new("node")
        .arg(browser_dir().join("console.test.mjs"))
        .arg(&url)
        .arg(&screenshot)
        .arg(data_groups.to_string())
        .current_dir(browser_dir())
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("the browser test took over {BROWSER_TIMEOUT:?}\n{stdout}\n{stderr}")
    });
    assert!(
        status.success(),
        "the browser test failed ({status}) at {url}:\n{stdout}\n{stderr}"
    );

    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "a suspiciously small screenshot");
}

#[test]
fn the_console_runs_sql_and_shows_the_cluster_in_chromium() {
    require_browser_tools();
    let c = Cluster::start(3);
    let leader = c.leader();
    let at = c.running().into_iter().find(|&n| n != leader).unwrap();
    // A single-group cluster's /status is as before sharding, plus what
    // tells it apart: the page hides its Shards panel by it.
    let status = c.status(at).unwrap();
    assert_eq!(status["sharded"], json!(false), "{status}");
    assert_eq!(
        status["groups"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["groups"][0]["kind"], json!("data"), "{status}");
    run_browser_script(&c, at, "console-test", 1);
}

#[test]
fn the_console_shows_the_groups_and_ranges_of_a_sharded_cluster_in_chromium() {
    require_browser_tools();
    let c = Cluster::start_with(3, &["--groups", "2"]);
    run_browser_script(&c, 2, "console-sharded-test", 2);
}

/// What `/status` of one node of a `--groups 2` cluster must say: the
/// metadata group and two data groups, this node's role in each, a leader
/// for each, and indexes with `applied <= decided`.
fn check_sharded_status(id: u64, status: &Value) -> Result<(), String> {
    if status["node_id"] != json!(id) || status["sharded"] != json!(true) {
        return Err(format!("node {id}: not a sharded node's status"));
    }
    let groups = status["groups"].as_array().ok_or("no groups")?;
    let ids: Vec<&Value> = groups.iter().map(|g| &g["group"]).collect();
    let kinds: Vec<&Value> = groups.iter().map(|g| &g["kind"]).collect();
    if ids != [&json!(0), &json!(1), &json!(2)]
        || kinds != [&json!("metadata"), &json!("data"), &json!("data")]
    {
        return Err(format!("node {id}: groups {ids:?} holding {kinds:?}"));
    }
    for g in groups {
        let leader = g["leader"].as_u64();
        if !leader.is_some_and(|l| (1..=3).contains(&l)) {
            return Err(format!("node {id}: group {} has no leader", g["group"]));
        }
        let role = g["role"].as_str().unwrap_or_default();
        if (role == "leader") != (leader == Some(id)) || !["leader", "follower"].contains(&role) {
            return Err(format!("node {id}: group {}: role {role}", g["group"]));
        }
        let (decided, applied) = (g["decided_index"].as_u64(), g["applied_index"].as_u64());
        let in_order = matches!((decided, applied), (Some(d), Some(a)) if a <= d);
        if !in_order {
            return Err(format!("node {id}: group {} indexes", g["group"]));
        }
    }
    Ok(())
}

#[test]
fn a_sharded_node_reports_each_group_with_its_leader_and_serves_the_shards_panel() {
    let c = Cluster::start_with(3, &["--groups", "2"]);

    // Every node names each group's leader, and they agree; the node named
    // says it leads. Elections may still settle: polled, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let statuses: Result<Vec<Value>, String> =
            c.running().iter().map(|&id| c.status(id)).collect();
        let verdict = statuses.and_then(|all| {
            for (id, s) in c.running().into_iter().zip(&all) {
                check_sharded_status(id, s)?;
            }
            for g in 0..3 {
                let named: Vec<&Value> = all.iter().map(|s| &s["groups"][g]["leader"]).collect();
                if named.iter().any(|l| *l != named[0]) {
                    return Err(format!("group {g}: leaders named {named:?}"));
                }
            }
            Ok(())
        });
        match verdict {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => last = e,
            Err(e) => panic!("/status of a sharded cluster: {e} (before: {last})"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The console served by the node has the Shards panel, hidden until
    // /status says the node is sharded, and the code that fills it from
    // /shards as text.
    let (code, html) = c.get(1, "/console").unwrap();
    assert_eq!(code, 200);
    let html = html.as_str().expect("the page as text");
    let panel = html
        .find("<section id=\"shards-panel\"")
        .map(|at| &html[at..at + html[at..].find('>').unwrap()])
        .unwrap_or_else(|| panic!("no Shards panel in the page:\n{html}"));
    assert!(
        panel.ends_with(" hidden"),
        "shown before /status is read: {panel}"
    );
    for table in ["<table id=\"shard-groups\">", "<table id=\"ranges\">"] {
        assert!(html.contains(table), "{table} missing from the page");
    }
    let (code, js) = c.get(1, "/console/console.js").unwrap();
    assert_eq!(code, 200);
    let js = js.as_str().expect("the script as text");
    for needle in [
        "fetchJson('/shards'",
        "function showShardGroups(",
        "function showRanges(",
        "refreshShards(status)",
    ] {
        assert!(js.contains(needle), "{needle} missing from console.js");
    }
    assert!(
        !js.contains("innerHTML"),
        "console.js puts HTML in the page"
    );
}
