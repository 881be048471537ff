//! Bounded, seeded fuzzing of the frontend protocol: no byte sequence a
//! client sends may panic the server.
//!
//! The seed corpus is real client traffic: what tokio-postgres sends for a
//! simple query, prepared statements with parameters, a transaction and a
//! portal (recorded live by a byte-capturing proxy at the start of the run),
//! plus what psql and pgbench sent (recorded once into
//! `testdata/client_frames.txt`; `record_psql_and_pgbench_frames` below
//! writes it again). Each case opens a fresh connection, completes a valid
//! startup (or, for a few cases, fuzzes the startup packets themselves),
//! sends valid, mutated and random frames, half-closes, and reads until the
//! server closes. Mutations: bit flips, truncations, length and count field
//! corruptions, NUL removal, inserted and deleted bytes, random frames and
//! splices of two frames.
//!
//! A panic in a connection task is invisible to the client, so a panic hook
//! counts them; the server must also still answer on a connection opened
//! before the run and on fresh ones.
//!
//! `PAXSQL_FUZZ_CASES` (default 5000) and `PAXSQL_FUZZ_SEED` (default: a
//! new one each run) choose the run; a failure prints the command that
//! replays it.

mod common;

use common::{connect, server};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::types::Type;

const CASES_DEFAULT: usize = 5000;
/// How long the server may take to answer one case and close.
const CASE_TIMEOUT: Duration = Duration::from_secs(5);
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSS_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

// ---------------------------------------------------------------- the server

// ------------------------------------------------------------ panic counting

static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts every panic in the process (connection tasks included); the first
/// few are printed as usual and kept for the report.
fn count_panics() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        let mut messages = PANIC_MESSAGES.lock().unwrap_or_else(|e| e.into_inner());
        let server = std::thread::current().name() == Some("tokio-rt-worker");
        if messages.len() < 10 || !server {
            messages.push(info.to_string());
            print(info);
        }
    }));
}

// ------------------------------------------------------------------ the rng

/// SplitMix64: small, and the same sequence for a seed on every platform
/// and every version of every crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------- the corpus

/// Frames of real client traffic, split by phase.
#[derive(Default)]
struct Corpus {
    /// Untyped packets: SSLRequest, StartupMessage, CancelRequest.
    untyped: Vec<Vec<u8>>,
    /// Typed messages after the startup packet.
    typed: Vec<Vec<u8>>,
}

impl Corpus {
    /// Splits one connection's client-to-server bytes into frames.
    fn add_stream(&mut self, mut bytes: &[u8]) {
        let mut untyped = true;
        while !bytes.is_empty() {
            let at = usize::from(!untyped);
            let Some(len) = bytes.get(at..at + 4) else {
                return;
            };
            let total = u32::from_be_bytes(len.try_into().unwrap()) as usize + at;
            let Some(frame) = bytes.get(..total) else {
                return;
            };
            if untyped {
                let code = u32::from_be_bytes(frame[4..8].try_into().unwrap());
                untyped = code == SSL_REQUEST_CODE || code == GSS_REQUEST_CODE;
                self.untyped.push(frame.to_vec());
            } else {
                self.typed.push(frame.to_vec());
            }
            bytes = &bytes[total..];
        }
    }

    /// Frames no recorded client sent, written out by hand.
    fn add_handmade(&mut self) {
        let mut cancel = vec![0, 0, 0, 16];
        cancel.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        cancel.extend_from_slice(&[0, 0, 0, 7, 1, 2, 3, 4]);
        self.untyped.push(cancel);
        let mut gss = vec![0, 0, 0, 8];
        gss.extend_from_slice(&GSS_REQUEST_CODE.to_be_bytes());
        self.untyped.push(gss);
        for (kind, body) in [
            (b'H', &b""[..]),
            (b'p', b"secret\0"),
            (b'd', b"1\tone\n"),
            (b'c', b""),
            (b'f', b"client gave up\0"),
            (b'F', b"\0\0\0\x01\0\x01\0\0\0\x01\0\0\0\x011\0\0"),
            (b'D', b"Snamed\0"),
            (b'C', b"Pnamed\0"),
        ] {
            self.typed.push(typed(kind, body));
        }
    }

    /// The corpus file recorded from psql and pgbench: `source hex` lines.
    fn add_file(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let hex = line.split_whitespace().nth(1).expect("a `source hex` line");
            self.add_stream(&from_hex(hex));
        }
    }
}

fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![kind];
    frame.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A proxy that records what each client connection sends.
async fn recording_proxy(server_port: u16) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let streams = Arc::clone(&recorded);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let streams = Arc::clone(&streams);
            tokio::spawn(async move {
                let mut server = TcpStream::connect(("127.0.0.1", server_port))
                    .await
                    .unwrap();
                let (mut server_read, mut server_write) = server.split();
                let (mut client_read, mut client_write) = client.split();
                let mut seen = Vec::new();
                let upstream = async {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let downstream = async {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                };
                tokio::join!(upstream, downstream);
                streams.lock().unwrap().push(seen);
            });
        }
    });
    (port, recorded)
}

/// Waits until `n` recorded connections have ended.
async fn recorded_streams(recorded: &Mutex<Vec<Vec<u8>>>, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if recorded.lock().unwrap().len() >= n || Instant::now() > deadline {
            return recorded.lock().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What tokio-postgres sends for the usual things an application does.
async fn tokio_postgres_traffic(port: u16) {
    let c = connect(port).await;
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS fuzz_t (id INTEGER PRIMARY KEY, n INTEGER, x REAL, \
         s TEXT, b BLOB, f BOOLEAN); INSERT INTO fuzz_t (n, s) VALUES (1, 'one')",
    )
    .await
    .unwrap();
    let insert = c
        .prepare("INSERT INTO fuzz_t (n, x, s, b, f) VALUES ($1, $2, $3, $4, $5)")
        .await
        .unwrap();
    c.execute(
        &insert,
        &[&7i64, &1.5f64, &"seven", &vec![1u8, 2, 3], &true],
    )
    .await
    .unwrap();
    let nulls: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &None::<i64>,
        &None::<f64>,
        &None::<String>,
        &None::<Vec<u8>>,
        &None::<bool>,
    ];
    c.execute(&insert, &nulls).await.unwrap();
    c.query(
        "SELECT id, n, x, s, b, f FROM fuzz_t WHERE n = $1 OR s = $2",
        &[&7i64, &"one"],
    )
    .await
    .unwrap();
    let typed = c
        .prepare_typed("SELECT count(*) FROM fuzz_t WHERE n = $1", &[Type::INT4])
        .await
        .unwrap();
    c.query_one(&typed, &[&7i32]).await.unwrap();
    drop(typed); // Close
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute("UPDATE fuzz_t SET n = n + 1 WHERE id = $1", &[&1i64])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind("SELECT id, s FROM fuzz_t", &[]).await.unwrap();
    tx.query_portal(&portal, 1).await.unwrap();
    tx.query_portal(&portal, 1).await.unwrap();
    drop(portal);
    tx.rollback().await.unwrap();
    c.simple_query("SELECT s FROM fuzz_t ORDER BY id; SELECT 1")
        .await
        .unwrap();
}

async fn record_tokio_postgres(port: u16, corpus: &mut Corpus) {
    let (proxy, recorded) = recording_proxy(port).await;
    tokio_postgres_traffic(proxy).await;
    for stream in recorded_streams(&recorded, 1).await {
        corpus.add_stream(&stream);
    }
}

// ----------------------------------------------------------------- mutation

/// Offsets and widths of the numeric fields of a frame: its length, and the
/// counts and lengths inside the bodies that have them.
fn fields(frame: &[u8], untyped: bool) -> Vec<(usize, usize)> {
    let mut out = if untyped {
        vec![(0, 4), (4, 4), (4, 2), (6, 2), (8, 4)]
    } else {
        body_fields(frame)
    };
    out.retain(|&(at, width)| at + width <= frame.len());
    out
}

fn body_fields(frame: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(1, 4)];
    let cstr = |at: usize| {
        frame
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == 0))
            .map(|n| at + n + 1)
    };
    let u16_at = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    match frame.first() {
        Some(b'P') => {
            if let Some(at) = cstr(5).and_then(cstr) {
                out.push((at, 2));
                let n = u16_at(at).unwrap_or(0) as usize;
                out.extend((0..n).map(|i| (at + 2 + 4 * i, 4)));
            }
        }
        Some(b'B') => {
            let Some(mut at) = cstr(5).and_then(cstr) else {
                return out;
            };
            out.push((at, 2));
            at += 2 + 2 * u16_at(at).unwrap_or(0) as usize;
            out.push((at, 2));
            let params = u16_at(at).unwrap_or(0);
            at += 2;
            for _ in 0..params {
                out.push((at, 4));
                let len = frame
                    .get(at..at + 4)
                    .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                at += 4 + len.max(0) as usize;
            }
            out.push((at, 2));
        }
        Some(b'E') => {
            if let Some(at) = cstr(5) {
                out.push((at, 4));
            }
        }
        Some(b'D' | b'C') => out.push((5, 1)),
        _ => {}
    }
    out
}

fn interesting(rng: &mut Rng, width: usize, old: i64) -> i64 {
    let values: &[i64] = match width {
        1 => &[0, 1, b'S' as i64, b'P' as i64, 0x7f, 0xff],
        2 => &[0, 1, 2, 3, 0x7fff, 0x8000, 0xffff],
        _ => &[
            0,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
            0x7fff_ffff,
            -1,
            -2,
            -4,
            i32::MIN as i64,
        ],
    };
    match rng.below(4) {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        2 => rng.next() as i64,
        _ => *rng.pick(values),
    }
}

fn write_field(frame: &mut [u8], at: usize, width: usize, value: i64) {
    let bytes = value.to_be_bytes();
    frame[at..at + width].copy_from_slice(&bytes[8 - width..]);
}

fn read_field(frame: &[u8], at: usize, width: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes[8 - width..].copy_from_slice(&frame[at..at + width]);
    i64::from_be_bytes(bytes)
}

/// Makes the length field agree with the frame's size again, so the
/// corruption is in the body, not in the framing.
fn fix_length(frame: &mut [u8], untyped: bool) {
    let at = usize::from(!untyped);
    if frame.len() >= at + 4 {
        let len = (frame.len() - at) as u32;
        frame[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn mutate(rng: &mut Rng, pool: &[Vec<u8>], untyped: bool) -> Vec<u8> {
    let mut f = rng.pick(pool).clone();
    for _ in 0..1 + rng.below(3) {
        if f.is_empty() {
            f.push(rng.next() as u8);
        }
        match rng.below(8) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let bit = rng.below(f.len() * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => f.truncate(rng.below(f.len())),
            2 | 3 => {
                let fields = fields(&f, untyped);
                if !fields.is_empty() {
                    let (at, width) = *rng.pick(&fields);
                    let value = interesting(rng, width, read_field(&f, at, width));
                    write_field(&mut f, at, width, value);
                }
            }
            4 => {
                let other = rng.pick(pool);
                let cut = rng.below(f.len() + 1);
                let from = rng.below(other.len() + 1);
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            5 => {
                let at = rng.below(f.len() + 1);
                let n = 1 + rng.below(8);
                let bytes = if rng.chance(50) {
                    vec![0; n]
                } else {
                    rng.bytes(n)
                };
                f.splice(at..at, bytes);
            }
            6 => {
                let at = rng.below(f.len());
                let end = (at + 1 + rng.below(8)).min(f.len());
                f.drain(at..end);
            }
            _ => {
                for b in f.iter_mut().filter(|b| **b == 0) {
                    if rng.chance(50) {
                        *b = b'x';
                    }
                }
            }
        }
    }
    if rng.chance(60) {
        fix_length(&mut f, untyped);
    }
    f
}

/// A frame made up from nothing: a type byte, a length, random body bytes.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let kinds = b"PBEDCQSHXpdcfF";
    let kind = if rng.chance(90) {
        *rng.pick(kinds)
    } else {
        rng.next() as u8
    };
    let n = if rng.chance(80) {
        rng.below(24)
    } else {
        rng.below(300)
    };
    let body: Vec<u8> = if rng.chance(50) {
        rng.bytes(n)
    } else {
        // Mostly small numbers and NULs: counts and lengths that look real.
        (0..n)
            .map(|_| *rng.pick(&[0u8, 0, 0, 1, 2, 0xff, b'S', b'a']))
            .collect()
    };
    let mut f = typed(kind, &body);
    if rng.chance(30) {
        let len = interesting(rng, 4, body.len() as i64 + 4);
        write_field(&mut f, 1, 4, len);
    }
    f
}

/// One case: the bytes after a valid startup, or the whole stream when the
/// startup packets are fuzzed.
struct Case {
    startup: bool,
    bytes: Vec<u8>,
}

fn make_case(rng: &mut Rng, corpus: &Corpus) -> Case {
    let mut bytes = Vec::new();
    if rng.chance(12) {
        if rng.chance(30) {
            bytes.extend_from_slice(&corpus.untyped[0]); // often an SSLRequest
        }
        bytes.extend(mutate(rng, &corpus.untyped, true));
        if rng.chance(30) {
            bytes.extend_from_slice(rng.pick::<Vec<u8>>(&corpus.typed));
        }
        return Case {
            startup: false,
            bytes,
        };
    }
    for _ in 0..1 + rng.below(4) {
        match rng.below(100) {
            0..=24 => bytes.extend_from_slice(rng.pick::<Vec<u8>>(&corpus.typed)),
            25..=84 => bytes.extend(mutate(rng, &corpus.typed, false)),
            _ => bytes.extend(random_frame(rng)),
        }
    }
    if rng.chance(50) {
        bytes.extend(typed(b'S', b""));
    }
    Case {
        startup: true,
        bytes,
    }
}

// ------------------------------------------------------------------ running

#[derive(Debug, Default)]
struct Outcomes {
    protocol_violation: usize,
    other_error: usize,
    answered: usize,
    reset: usize,
    timed_out: usize,
}

/// Reads backend messages until the one of type `kind`; false on EOF.
async fn read_until(s: &mut TcpStream, kind: u8) -> std::io::Result<bool> {
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).await.is_err() {
            return Ok(false);
        }
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        s.read_exact(&mut body).await?;
        if head[0] == kind {
            return Ok(true);
        }
    }
}

/// SQLSTATEs of the ErrorResponses in a backend byte stream.
fn error_codes(mut bytes: &[u8]) -> Vec<String> {
    let mut codes = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let Some(body) = bytes.get(5..1 + len) else {
            break;
        };
        if bytes[0] == b'E' {
            for field in body.split(|&b| b == 0) {
                if let Some(code) = field.strip_prefix(b"C") {
                    codes.push(String::from_utf8_lossy(code).into_owned());
                }
            }
        }
        bytes = &bytes[1 + len..];
    }
    codes
}

/// Runs one case; false if the server did not close the connection in time.
async fn run_case(port: u16, startup: &[u8], case: &Case, outcomes: &mut Outcomes) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    if case.startup {
        s.write_all(startup).await.unwrap();
        let ready = tokio::time::timeout(CASE_TIMEOUT, read_until(&mut s, b'Z')).await;
        assert!(
            matches!(ready, Ok(Ok(true))),
            "a valid startup got no ReadyForQuery: {ready:?}"
        );
    }
    // The server may close before reading everything: not a failure.
    let _ = s.write_all(&case.bytes).await;
    let _ = s.shutdown().await;
    let mut answer = Vec::new();
    match tokio::time::timeout(CASE_TIMEOUT, s.read_to_end(&mut answer)).await {
        Err(_) => {
            outcomes.timed_out += 1;
            return false;
        }
        Ok(read) => {
            let codes = error_codes(&answer);
            if codes.iter().any(|c| c == "08P01") {
                outcomes.protocol_violation += 1;
            } else if !codes.is_empty() {
                outcomes.other_error += 1;
            } else if read.is_err() {
                outcomes.reset += 1;
            } else {
                outcomes.answered += 1;
            }
        }
    }
    true
}

async fn still_serves(port: u16) {
    let c = connect(port).await;
    let n: i64 = c.query_one("SELECT 40 + 2", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_frontend_bytes_panic_the_server() {
    let cases = env_number("PAXSQL_FUZZ_CASES").map_or(CASES_DEFAULT, |n| n as usize);
    let seed = env_number("PAXSQL_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let replay = format!(
        "PAXSQL_FUZZ_SEED={seed} PAXSQL_FUZZ_CASES={cases} \
         cargo test -p paxsql-pgwire --test fuzz -- --nocapture"
    );
    println!("fuzz: seed {seed}, {cases} cases; replay with:\n  {replay}");
    count_panics();

    let port = server().await;
    let mut corpus = Corpus::default();
    record_tokio_postgres(port, &mut corpus).await;
    let startup = corpus.untyped[0].clone();
    corpus.add_file(include_str!("testdata/client_frames.txt"));
    corpus.add_handmade();
    println!(
        "fuzz: corpus of {} startup-phase and {} typed frames",
        corpus.untyped.len(),
        corpus.typed.len()
    );
    let bystander = connect(port).await;

    let mut rng = Rng(seed);
    let mut outcomes = Outcomes::default();
    let mut failed_cases = Vec::new();
    let started = Instant::now();
    for i in 0..cases {
        let case = make_case(&mut rng, &corpus);
        let before = PANICS.load(Ordering::SeqCst);
        let closed = run_case(port, &startup, &case, &mut outcomes).await;
        let failure = if PANICS.load(Ordering::SeqCst) > before {
            Some("panicked the server")
        } else if !closed {
            Some("was not answered and closed in time")
        } else {
            None
        };
        if let (Some(what), 0..5) = (failure, failed_cases.len()) {
            let after = if case.startup { " after startup" } else { "" };
            failed_cases.push(format!(
                "case {i} {what}; it sent{after} {}",
                to_hex(&case.bytes)
            ));
        }
        if i % 500 == 499 {
            still_serves(port).await;
        }
    }
    let elapsed = started.elapsed();
    let panics = PANICS.load(Ordering::SeqCst);
    println!(
        "fuzz: {cases} cases in {:.1} s, {panics} panics; {outcomes:?}",
        elapsed.as_secs_f64()
    );
    for failed in &failed_cases {
        println!("fuzz: {failed}");
    }
    for m in PANIC_MESSAGES.lock().unwrap().iter() {
        println!("fuzz: panic: {m}");
    }

    still_serves(port).await;
    let n: i64 = bystander
        .query_one("SELECT count(*) FROM fuzz_t WHERE 1 = $1", &[&1i64])
        .await
        .unwrap()
        .get(0);
    assert!(n >= 0);
    assert_eq!(panics, 0, "the server panicked; replay with: {replay}");
    assert_eq!(
        outcomes.timed_out, 0,
        "the server hung on a connection; replay with: {replay}"
    );
}

/// Writes `testdata/client_frames.txt` again from what psql and pgbench
/// (PostgreSQL 15's) send: `cargo test -p paxsql-pgwire --test fuzz --
/// --ignored record_psql_and_pgbench_frames`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs psql and pgbench; rewrites the corpus file"]
async fn record_psql_and_pgbench_frames() {
    let port = server().await;
    tokio_postgres_traffic(port).await; // the table the clients query
    let (proxy, recorded) = recording_proxy(port).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bench.sql");
    std::fs::write(
        &script,
        "\\set n random(1, 100)\n\
         SELECT count(*) FROM fuzz_t WHERE n = :n;\n\
         INSERT INTO fuzz_t (n, s) VALUES (:n, 'pgbench');\n",
    )
    .unwrap();
    let proxy = proxy.to_string();
    let common = ["-h", "127.0.0.1", "-p", &proxy, "-U", "fuzz"];
    let psql = [
        "-d",
        "fuzz",
        "-c",
        "SELECT s, n FROM fuzz_t WHERE n > 1",
        "-c",
        "\\dt",
        "-c",
        "\\d fuzz_t",
    ];
    let mut text = String::from(
        "# Client-to-server bytes of real psql 15 and pgbench 15 connections to\n\
         # paxsql, one connection a line: `source hex`. The fuzz test splits them\n\
         # into frames. Written by `cargo test -p paxsql-pgwire --test fuzz --\n\
         # --ignored record_psql_and_pgbench_frames`.\n",
    );
    for (name, program) in [
        ("psql", "psql"),
        ("pgbench-simple", "pgbench"),
        ("pgbench-extended", "pgbench"),
        ("pgbench-prepared", "pgbench"),
    ] {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(common);
        if let Some(mode) = name.strip_prefix("pgbench-") {
            cmd.args(["-n", "-t", "2", "-M", mode, "-f"]);
            cmd.arg(&script).arg("fuzz");
        } else {
            cmd.args(psql);
        }
        let out = cmd.output().await.expect("psql and pgbench are installed");
        assert!(out.status.success(), "{name}: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await; // the proxy's last bytes
        for stream in recorded.lock().unwrap().drain(..) {
            text.push_str(&format!("{name} {}\n", to_hex(&stream)));
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/client_frames.txt"
    );
    std::fs::write(path, text).unwrap();
}
