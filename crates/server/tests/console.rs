//! The web console at `/console` in a real headless Chromium, against a
//! live 3-node cluster.
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

#[test]
fn the_console_runs_sql_and_shows_the_cluster_in_chromium() {
    require_browser_tools();
    let c = Cluster::start(3);
    let leader = c.leader();
    let at = c.running().into_iter().find(|&n| n != leader).unwrap();
    let url = format!("http://{}/console", c.node(at).http);

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-test");
    std::fs::create_dir_all(&out_dir).unwrap();
    let screenshot = out_dir.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let stdout_path = out_dir.join("node.stdout");
    let stderr_path = out_dir.join("node.stderr");

    let mut child = Command::new("node")
        .arg(browser_dir().join("console.test.mjs"))
        .arg(&url)
        .arg(&screenshot)
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
