//! `paxsql shell` against a live 3-node cluster: scripts on stdin, and the
//! exact output, errors and exit status a user sees.

mod common;

use common::{Cluster, BIN};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `paxsql shell --http ADDR EXTRA...` with `script` on stdin.
fn shell(addr: &str, extra: &[&str], script: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(["shell", "--http", addr])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start paxsql shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

const SCRIPT: &str = "\
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);
CREATE INDEX users_by_name ON users (name);
-- a statement over several lines, and two on one line
INSERT INTO users (name, score)
  VALUES ('fiona', 1.5),
         ('sinéad; o''brien', NULL);
INSERT INTO users (name) VALUES ('日本'); SELECT count(*) AS n FROM users;
SELECT id, name, score FROM users ORDER BY id;
SELECT * FROM nope;
INSERT INTO users (name) VALUES (NULL);
.tables
.schema
.schema USERS
.level local
.level
SELECT name FROM users WHERE id = 1;
.level stale
.frobnicate
SELECT 'no semicolon at the end'
";

const WANT_STDOUT: &str = "\
0 rows affected
0 rows affected
2 rows affected
1 row affected
+---+
| n |
+---+
| 3 |
+---+
(1 row)
+----+-----------------+-------+
| id | name            | score |
+----+-----------------+-------+
|  1 | fiona           |   1.5 |
|  2 | sinéad; o'brien | NULL  |
|  3 | 日本            | NULL  |
+----+-----------------+-------+
(3 rows)
users
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);
CREATE INDEX users_by_name ON users (name);
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL);
CREATE INDEX users_by_name ON users (name);
local
+-------+
| name  |
+-------+
| fiona |
+-------+
(1 row)
+---------------------------+
| 'no semicolon at the end' |
+---------------------------+
| no semicolon at the end   |
+---------------------------+
(1 row)
";

const WANT_STDERR: &str = "\
Error: no such table: nope
Error: NOT NULL constraint failed: users.name
Error: unknown level \"stale\": use local, leader or linearizable
Error: unknown command .frobnicate; .help lists the commands
paxsql: 4 of 17 statements and commands failed
";

#[test]
fn a_script_on_stdin_prints_tables_and_errors_and_fails_at_the_end() {
    let c = Cluster::start(3);
    // At a follower, so that the writes are forwarded to the leader.
    let leader = c.leader();
    let at = c.running().into_iter().find(|&n| n != leader).unwrap();
    let out = shell(&c.node(at).http, &[], SCRIPT);
    assert_eq!(text(&out.stdout), WANT_STDOUT);
    assert_eq!(text(&out.stderr), WANT_STDERR);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed statement fails the script"
    );

    // The writes reached every node; a clean script exits 0.
    for id in 1..=3 {
        let out = shell(
            &c.node(id).http,
            &["--level", "linearizable"],
            "SELECT count(*) FROM users;\n",
        );
        assert!(
            text(&out.stdout).contains("|        3 |"),
            "node {id}: {out:?}"
        );
        assert!(out.stderr.is_empty(), "node {id}: {out:?}");
        assert_eq!(out.status.code(), Some(0), "node {id}");
    }
}

#[test]
fn cluster_commands_and_the_timer() {
    let c = Cluster::start(3);
    let leader = c.leader();
    let out = shell(
        &c.node(1).http,
        &[],
        ".nodes\n.status\n.timer on\nSELECT 1 AS one;\n.timer off\nSELECT 2 AS two;\n.help\n.quit\nSELECT 'after quit';\n",
    );
    let stdout = text(&out.stdout);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<&str> = stdout.lines().collect();
    // .nodes: one row per node, the leader marked.
    assert_eq!(lines[1], "| id | peer address    | reachable | leader |");
    for n in &c.nodes {
        let is_leader = if n.id == leader { "yes" } else { "no " };
        let row = format!("|  {} | {} | yes       | {is_leader}    |", n.id, n.peer);
        assert!(lines.contains(&row.as_str()), "no row {row:?} in\n{stdout}");
    }
    // .status: this node and its group.
    let node_line = format!("node 1, peer address {}, engine sqlite", c.node(1).peer);
    assert!(stdout.contains(&node_line), "{stdout}");
    // The role column is as wide as the role shown ("leader" when node 1
    // leads, "follower" otherwise).
    assert!(
        stdout.lines().any(|l| l.starts_with("| group | role ")
            && l.contains(" | leader | ballot | decided | applied | lag |")),
        "{stdout}"
    );
    // .timer: a time after the statement run with it on, none after the one with it off.
    let timed: Vec<&&str> = lines.iter().filter(|l| l.starts_with("Time: ")).collect();
    assert_eq!(timed.len(), 1, "{stdout}");
    let ms = timed[0]
        .strip_prefix("Time: ")
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse::<f64>().ok());
    assert!(ms.is_some_and(|ms| ms > 0.0), "{}", timed[0]);
    let after_one = lines.iter().position(|l| l == &"|   1 |").unwrap();
    assert!(lines[after_one + 3].starts_with("Time: "), "{stdout}");
    assert!(stdout.contains("|   2 |"), "{stdout}");
    // .help, and nothing after .quit.
    assert!(stdout.contains(".schema [TABLE]"), "{stdout}");
    assert!(!stdout.contains("after quit"), "{stdout}");
}

#[test]
fn an_unreachable_node_is_an_error_that_says_so() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = shell(&addr, &[], "SELECT 1;\n.status\n");
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    let want = format!("Error: cannot reach the node at http://{addr}: ");
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    for line in stderr.lines().take(2) {
        assert!(line.starts_with(&want), "{stderr}");
        assert!(line.contains("refused"), "{stderr}");
    }
    assert!(
        stderr.ends_with("paxsql: 2 of 2 statements and commands failed\n"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1));
}
