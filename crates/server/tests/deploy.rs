//! The ways a node is configured and deployed: config files with
//! environment and flag overrides, the Docker compose file's command lines,
//! and clear refusals of bad settings.

mod common;

use common::{free_port, BIN};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

/// Runs the binary with no PAXSQL_* variables inherited.
fn paxsql(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(repo());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PAXSQL_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn checked(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = paxsql(args, env);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let file = ["node", "--config", "deploy/node2.toml", "--check"];
    let s = checked(&file, &[]);
    assert_eq!(s["id"], 2);
    assert_eq!(s["http"], "127.0.0.1:4002");
    assert_eq!(s["peers"].as_object().unwrap().len(), 3);

    let env = [("PAXSQL_HTTP", "127.0.0.1:5999")];
    assert_eq!(checked(&file, &env)["http"], "127.0.0.1:5999");

    let mut with_flag = file.to_vec();
    with_flag.extend(["--http", "127.0.0.1:6000"]);
    assert_eq!(checked(&with_flag, &env)["http"], "127.0.0.1:6000");
}

#[test]
fn the_compose_file_runs_the_binary_with_valid_command_lines() {
    let json = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo().join("docker-compose.yml"))
        .output()
        .expect("python3 with PyYAML parses the compose file");
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let compose: Value = serde_json::from_slice(&json.stdout).unwrap();
    let services = compose["services"].as_object().unwrap();
    assert_eq!(services.len(), 3);
    for (i, name) in ["node1", "node2", "node3"].iter().enumerate() {
        let svc = &services[*name];
        let command: Vec<&str> = svc["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut args = command.clone();
        args.push("--check");
        let s = checked(&args, &[]);
        assert_eq!(s["id"], i + 1);
        assert_eq!(s["http"], "0.0.0.0:4001");
        assert_eq!(s["peers"][(i + 1).to_string()], format!("{name}:4101"));
        assert_eq!(svc["ports"][0], format!("400{}:4001", i + 1));
        let health = svc["healthcheck"]["test"].to_string();
        assert!(health.contains("/readyz"), "{health}");
        assert!(svc["volumes"][0].as_str().unwrap().ends_with(":/data"));
    }
}

fn refused(args: &[&str]) -> String {
    let out = paxsql(args, &[]);
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.trim().is_empty(), "{args:?}: no reason given");
    err
}

#[test]
fn bad_settings_exit_non_zero_with_the_reason() {
    let err = refused(&["node", "--no-such-flag"]);
    assert!(err.contains("--no-such-flag"), "{err}");
    let err = refused(&["node", "--id", "1", "--peers", "1=127.0.0.1:1"]);
    assert!(err.contains("at least 2 nodes"), "{err}");
    let err = refused(&["node", "--id", "4", "--peers", "1=a:1,2=b:2"]);
    assert!(err.contains("does not list this node"), "{err}");
    let err = refused(&["node", "--config", "/nonexistent.toml"]);
    assert!(err.contains("does not exist"), "{err}");

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let peers = format!("1=127.0.0.1:{},2=127.0.0.1:{}", free_port(), free_port());
    let data = dir.path().join("n1");
    let data = data.to_str().unwrap();
    let err = refused(&[
        "node",
        "--id",
        "1",
        "--peers",
        &peers,
        "--http",
        &addr,
        "--data-dir",
        data,
    ]);
    assert!(err.contains("cannot listen for HTTP"), "{err}");

    // A data dir that belongs to another node.
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(
        Path::new(data).join("node.json"),
        r#"{"node_id": 2, "cluster": "paxsql", "members": [1, 2]}"#,
    )
    .unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let err = refused(&[
        "node",
        "--id",
        "1",
        "--peers",
        &peers,
        "--http",
        &http,
        "--data-dir",
        data,
    ]);
    assert!(err.contains("belongs to node 2"), "{err}");
}
