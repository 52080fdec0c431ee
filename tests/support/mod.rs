//! Helpers for tally's end-to-end tests. Use from an integration test with
//! `mod support;`.
//!
//! The tests expect a running broker and the rig's Python tools, which
//! `scripts/test.sh` provides through the environment:
//!
//! * `TALLY_TEST_BROKER`      host:port of a Kafka-compatible broker (Tansu)
//! * `TALLY_TEST_PYTHON`      the venv python with confluent-kafka
//! * `TALLY_TEST_KAFKA_TOOL`  path of `tests/support/kafka_tool.py`
//!
//! For a manual run: `scripts/broker.sh install && scripts/broker.sh start &&
//! eval "$(scripts/broker.sh env)" && cargo test --test NAME`.
//!
//! Every wait here has a timeout; every spawned process is killed on drop.
#![allow(dead_code)]

pub mod admin_http;
pub mod amqp;
pub mod http_receiver;
pub mod killbill_double;
pub mod logs;
pub mod proxy;
pub mod tls;
pub mod tls_rig;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Default timeout for kafka_tool invocations.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn env_or_panic(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run scripts/test.sh (or scripts/broker.sh start and \
             eval \"$(scripts/broker.sh env)\") before running end-to-end tests"
        ),
    }
}

/// `host:port` of the test broker (`TALLY_TEST_BROKER`).
pub fn broker() -> String {
    env_or_panic("TALLY_TEST_BROKER")
}

/// The venv python that has confluent-kafka (`TALLY_TEST_PYTHON`).
pub fn python() -> String {
    env_or_panic("TALLY_TEST_PYTHON")
}

/// Path of `kafka_tool.py` (`TALLY_TEST_KAFKA_TOOL`, else the copy beside this file).
pub fn kafka_tool() -> PathBuf {
    match std::env::var("TALLY_TEST_KAFKA_TOOL") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kafka_tool.py"),
    }
}

/// The repository root (for `data/...`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A topic name unique across tests, processes and runs:
/// `PREFIX-<pid>-<millis>-<n>` (only characters legal in Kafka topic names).
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{}-{ms}-{n}", std::process::id())
}

/// Runs `kafka_tool.py ARGS` with optional stdin and returns its JSON stdout.
/// Panics (with stderr) on a non-zero exit, a timeout or non-JSON output.
pub fn run_kafka_tool<S: AsRef<OsStr>>(args: &[S], stdin: Option<&[u8]>) -> Value {
    run_kafka_tool_timeout(args, stdin, TOOL_TIMEOUT)
}

/// [`run_kafka_tool`] with an explicit timeout.
pub fn run_kafka_tool_timeout<S: AsRef<OsStr>>(
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Value {
    let (status, stdout, stderr) = run_kafka_tool_raw(args, stdin, timeout);
    let shown: Vec<_> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(
        status.success(),
        "kafka_tool {shown:?} failed ({status}):\nstdout: {stdout}\nstderr: {stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("kafka_tool {shown:?}: stdout is not JSON ({e}):\n{stdout}\nstderr: {stderr}")
    })
}

/// Runs kafka_tool and returns (status, stdout, stderr) without judging them.
/// Panics only if it cannot be spawned or exceeds `timeout` (then it is killed).
pub fn run_kafka_tool_raw<S: AsRef<OsStr>>(
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(python());
    cmd.arg(kafka_tool())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} kafka_tool.py: {e}", python()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // Files take stdout/stderr, so writing cannot deadlock on a full pipe;
        // a child that exits early (broken pipe) is judged by its status.
        if let Err(e) = pipe.write_all(input) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write kafka_tool stdin: {e}"
            );
        }
    }
    let status = match wait_child_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kafka_tool timed out after {timeout:?}; stderr: {}",
                read_to_string_lossy(&err_path)
            );
        }
    };
    (
        status,
        read_to_string_lossy(&out_path),
        read_to_string_lossy(&err_path),
    )
}

/// Creates `name` with `partitions` partitions on the test broker and waits
/// until metadata shows all of them. Fine if the topic exists already.
pub fn create_topic(name: &str, partitions: u32) -> Value {
    let partitions = partitions.to_string();
    run_kafka_tool(
        &[
            "create-topic",
            "--broker",
            &broker(),
            "--topic",
            name,
            "--partitions",
            &partitions,
        ],
        None,
    )
}

/// Produces one record per line (blank lines skipped) with confluent-kafka,
/// keyed by the JSON pointer if given. Returns
/// `{"count": N, "partitions": {"0": n, ..}, "offsets": {"0": [first, last]}, ..}`.
pub fn produce_jsonl<S: AsRef<str>>(topic: &str, lines: &[S], key_pointer: Option<&str>) -> Value {
    let mut input = String::new();
    for l in lines {
        input.push_str(l.as_ref());
        input.push('\n');
    }
    let b = broker();
    let mut args = vec!["produce", "--broker", &b, "--topic", topic];
    if let Some(p) = key_pointer {
        args.extend(["--key-pointer", p]);
    }
    let v = run_kafka_tool(&args, Some(input.as_bytes()));
    assert_eq!(v["failed"], 0, "produce failures: {v}");
    v
}

/// Produces one record whose value is exactly `value` (for data/bad corpus tests).
pub fn produce_raw(topic: &str, value: &[u8], key: Option<&str>) -> Value {
    let b = broker();
    let mut args = vec!["produce", "--broker", &b, "--topic", topic, "--whole"];
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    run_kafka_tool(&args, Some(value))
}

/// Consumes `count` records from the start of every partition (no group)
/// with confluent-kafka, records included in the output (`"records": [...]`).
pub fn consume_records(topic: &str, partitions: u32, count: usize, timeout: Duration) -> Value {
    let (p, c, t) = (
        partitions.to_string(),
        count.to_string(),
        format!("{}", timeout.as_secs_f64()),
    );
    run_kafka_tool_timeout(
        &[
            "consume",
            "--broker",
            &broker(),
            "--topic",
            topic,
            "--partitions",
            &p,
            "--count",
            &c,
            "--timeout",
            &t,
            "--records",
        ],
        None,
        timeout + Duration::from_secs(30),
    )
}

/// Generates `count` Kill Bill usage events (deterministic per seed).
pub fn gen_usage(count: usize, dup_ratio: f64, tenants: u32, seed: u64) -> Vec<String> {
    let (c, d, t, s) = (
        count.to_string(),
        dup_ratio.to_string(),
        tenants.to_string(),
        seed.to_string(),
    );
    let (status, stdout, stderr) = run_kafka_tool_raw(
        &[
            "gen-usage",
            "--count",
            &c,
            "--dup-ratio",
            &d,
            "--tenants",
            &t,
            "--seed",
            &s,
        ],
        None,
        TOOL_TIMEOUT,
    );
    assert!(status.success(), "gen-usage failed: {stderr}");
    stdout.lines().map(str::to_owned).collect()
}

/// The dedupe key tally gives a `gen_usage` event (Kill Bill's scope:
/// `tenantId/subscriptionExternalKey/trackingId`).
pub fn usage_key(event: &str) -> String {
    let v: Value = serde_json::from_str(event).expect("generated event is JSON");
    let field = |name: &str| v[name].as_str().unwrap_or_default().to_string();
    format!(
        "{}/{}/{}",
        field("tenantId"),
        field("subscriptionExternalKey"),
        field("trackingId")
    )
}

/// Polls `cond` every 25 ms until it returns true or `timeout` passes.
/// Returns whether it became true.
#[must_use]
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// [`wait_until`] that panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Reads a JSON-lines file. A missing file is empty; a last line without a
/// trailing newline (a write in progress) is ignored; a bad complete line panics.
pub fn read_jsonl(path: impl AsRef<Path>) -> Vec<Value> {
    let path = path.as_ref();
    let text = match std::fs::read(path) {
        Ok(b) => {
            String::from_utf8(b).unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: bad JSON ({e}): {l}", path.display(), i + 1))
        })
        .collect()
}

/// Number of complete lines in a file (0 if missing).
pub fn count_lines(path: impl AsRef<Path>) -> usize {
    std::fs::read(path.as_ref())
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn read_to_string_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn wait_child_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("wait for child: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the Kill Bill double holds `n` records; panics (with
/// tally's log) if tally exits first or `timeout` passes.
pub fn wait_kill_bill_accepted(
    double: &killbill_double::KillbillDouble,
    tally: &mut TallyProcess,
    n: usize,
    timeout: Duration,
) {
    let ok = wait_until(timeout, || {
        assert!(
            tally.is_running(),
            "tally exited early:\n{}",
            logs::tail(&tally.stderr())
        );
        double.accepted() >= n
    });
    assert!(
        ok,
        "Kill Bill holds {} of {n} records after {timeout:?}; statuses {:?}\n{}",
        double.accepted(),
        double.statuses(),
        logs::tail(&tally.stderr())
    );
}

/// SIGTERM; it must exit 0 within 45 s. Returns the log, colour codes removed.
pub fn stop_cleanly(tally: &mut TallyProcess) -> String {
    let status = tally.terminate_and_wait(Duration::from_secs(45));
    let log = logs::plain_log(&tally.stderr());
    assert!(
        status.success(),
        "tally exit {status:?}:\n{}",
        logs::tail(&log)
    );
    log
}

/// `tally offsets --json` on the stopped store: some partitions, all at lag 0.
pub fn assert_fully_committed(dir: &Path, config: &Path) {
    let out = TallyProcess::run(
        dir,
        &["offsets", "--config", config.to_str().unwrap(), "--json"],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "offsets: {}", out.stderr);
    let rows = out.json().as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty(), "no offsets committed");
    for row in rows {
        assert_eq!(row["lag"], 0, "partition not fully committed: {row}");
    }
}

/// Adds `setting` (one `key = value` line) to the `[kafka]` table of a
/// config written by `write_file_sink_config`.
pub fn add_kafka_setting(config: &Path, setting: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    assert!(text.contains("[kafka]\n"), "no [kafka] table in {config:?}");
    let text = text.replacen("[kafka]\n", &format!("[kafka]\n{setting}\n"), 1);
    std::fs::write(config, text).expect("write config");
}

/// Writes a minimal single-route config into `dir/tally.toml` and returns its
/// path: static assignment (member 0 of 1), store `dir/state`, file sink
/// `dir/delivered.jsonl`. `route_extra` is appended inside the `[[routes]]`
/// table (e.g. `dedupe = "/id"\n`); `extra` is appended at the end.
pub fn write_file_sink_config(
    dir: &Path,
    topics: &[&str],
    format: &str,
    route_extra: &str,
    extra: &str,
) -> PathBuf {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        r#"[kafka]
brokers = [{broker:?}]

[store]
path = {store:?}

[assignment]
mode = "static"
member = 0
members = 1

[[routes]]
name = "main"
topics = [{topics}]
format = {format:?}
sink = "file"
start = "earliest"
{route_extra}
[sinks.file]
path = {out:?}
{extra}"#,
        broker = broker(),
        store = dir.join("state").display().to_string(),
        topics = topics.join(", "),
        out = dir.join("delivered.jsonl").display().to_string(),
    );
    let path = dir.join("tally.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `tally` process (the binary under test). Its stdout and stderr
/// go to files in its directory; it gets `TALLY_BROKERS` pointing at the test
/// broker. Dropping it kills it (SIGKILL) and reaps it.
pub struct TallyProcess {
    child: Option<Child>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    args: Vec<String>,
}

/// Outcome of a finished `tally` command.
#[derive(Debug)]
pub struct TallyOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl TallyOutput {
    /// stdout parsed as JSON (panics with the output if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "tally stdout is not JSON ({e}):\n{}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The line `tally check` printed for the `kind` sink (panics without one).
    pub fn sink_line(&self, kind: &str) -> String {
        let prefix = format!("# sink {kind}");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} line:\n{}{}", self.stdout, self.stderr))
            .to_string()
    }
}

static SPAWNED: AtomicU64 = AtomicU64::new(0);

impl TallyProcess {
    /// Path of the binary under test: `TALLY_BIN` when set (CI points it at
    /// the static release build, so the shipped artifact is the tested one),
    /// else the one cargo built for these tests.
    pub fn bin() -> String {
        match std::env::var("TALLY_BIN") {
            Ok(b) if !b.is_empty() => b,
            _ => env!("CARGO_BIN_EXE_tally").to_string(),
        }
    }

    /// Spawns `tally ARGS` in a fresh temp dir (kept until drop).
    pub fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        let mut p = Self::spawn_in(&dir, args, &[]);
        p._temp = Some(temp);
        p
    }

    /// Spawns `tally ARGS` with working directory `dir` and extra `envs`
    /// (restarts reuse the same dir, hence the same store).
    pub fn spawn_in<S: AsRef<OsStr>>(dir: &Path, args: &[S], envs: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).expect("create process dir");
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let stdout_path = dir.join(format!("tally-{n}.stdout"));
        let stderr_path = dir.join(format!("tally-{n}.stderr"));
        let mut cmd = Command::new(Self::bin());
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        if let Ok(b) = std::env::var("TALLY_TEST_BROKER") {
            cmd.env("TALLY_BROKERS", b);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", Self::bin()));
        TallyProcess {
            child: Some(child),
            dir: dir.to_path_buf(),
            _temp: None,
            stdout_path,
            stderr_path,
            status: None,
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// Runs `tally ARGS` in `dir` to completion (killed after `timeout`, which panics).
    pub fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> TallyOutput {
        let mut p = Self::spawn_in(dir, args, envs);
        let status = p.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "tally {:?} did not finish within {timeout:?}; stderr:\n{}",
                p.args,
                p.stderr()
            )
        });
        TallyOutput {
            status,
            stdout: p.stdout(),
            stderr: p.stderr(),
        }
    }

    /// `tally check --connect --config CONFIG`, run to completion.
    pub fn check_connect(dir: &Path, config: &Path, envs: &[(&str, &str)]) -> TallyOutput {
        Self::run(
            dir,
            &["check", "--connect", "--config", config.to_str().unwrap()],
            envs,
            Duration::from_secs(60),
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// stdout so far.
    pub fn stdout(&self) -> String {
        read_to_string_lossy(&self.stdout_path)
    }

    /// stderr so far (logs).
    pub fn stderr(&self) -> String {
        read_to_string_lossy(&self.stderr_path)
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Exit status if it has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.status = child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// SIGKILL (a crash, from the store's point of view) and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let child = self.child.as_mut().expect("child");
        let _ = child.kill();
        let s = child.wait().expect("wait after kill");
        self.status = Some(s);
        s
    }

    /// Sends SIGTERM (graceful: drain, commit, exit 0). Does not wait.
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// Sends `SIG<name>` (e.g. "STOP", "CONT") unless it has exited.
    pub fn signal(&mut self, name: &str) {
        if self.try_status().is_some() {
            return;
        }
        let pid = self.pid().expect("pid").to_string();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok || self.try_status().is_some(),
            "kill -{name} {pid} failed"
        );
    }

    /// SIGTERM, then wait up to `timeout` for exit; panics if it does not exit.
    pub fn terminate_and_wait(&mut self, timeout: Duration) -> ExitStatus {
        self.terminate();
        self.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "tally did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// Waits up to `timeout` for exit; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let s = wait_child_timeout(self.child.as_mut().expect("child"), timeout);
        self.status = s;
        s
    }
}

impl Drop for TallyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && self.status.is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One row of the data/bad corpus table (data/bad/README.md).
#[derive(Debug, Clone)]
pub struct CorpusEntry {
    pub file: String,
    /// Delivered (true) or dead-lettered (false).
    pub good: bool,
    /// For bad records: text the dead letter's reason must contain.
    pub reason: String,
}

/// The corpus table, parsed: rows `| `file` | kind | good/bad | `reason` |`.
/// The README is the contract, so the tests read it rather than repeat it.
pub fn bad_corpus() -> Vec<CorpusEntry> {
    let text = std::fs::read_to_string(repo_root().join("data/bad/README.md"))
        .expect("data/bad/README.md");
    let code = |cell: &str| {
        cell.trim()
            .trim_start_matches('`')
            .trim_end_matches('`')
            .trim()
            .to_string()
    };
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            assert_eq!(cells.len(), 6, "corpus row has 4 columns: {l}");
            let good = match cells[3].trim() {
                "good" => true,
                "bad" => false,
                other => panic!("outcome must be good or bad, got {other:?}: {l}"),
            };
            CorpusEntry {
                file: code(cells[1]),
                good,
                reason: if good { String::new() } else { code(cells[4]) },
            }
        })
        .collect()
}

/// The corpus's `max_record_bytes` (see data/bad/README.md).
pub const CORPUS_MAX_RECORD_BYTES: usize = 262_144;
