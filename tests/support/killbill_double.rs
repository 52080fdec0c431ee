//! An in-process Kill Bill that enforces the usage API contract tally relies
//! on, with fault injection, for end-to-end tests and the benchmark.
//!
//! * Basic auth (username/password) and tenant api key/secret on every
//!   request, `X-Killbill-CreatedBy` on writes; bad credentials → 401.
//! * `GET /1.0/kb/subscriptions?externalKey=K` → the subscription, or 404
//!   with code 1083.
//! * `POST /1.0/kb/usages`: body validated (400 otherwise), unknown
//!   subscription → 404, trackingId already recorded for the subscription →
//!   400 code 50000, else 201 with an empty body. Accepted records are kept
//!   (amounts as the JSON text they arrived in) so tests can check
//!   exactly-once.
//! * Faults: latency, 5xx for N requests or a window, hangs (longer than the
//!   client's timeout), 401 windows, outage (listener down, connections
//!   closed) and restart on the same port.
//!
//! It runs on its own tokio runtime, so plain `#[test]` functions use it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};

/// Who may call, and which tenants exist (told apart by api key/secret).
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    pub username: String,
    pub password: String,
    /// (tenant name, api key, api secret). Tests use the tenantId as the name.
    pub tenants: Vec<(String, String, String)>,
}

/// One accepted usage record set (one POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUsage {
    pub tenant: String,
    pub subscription_id: String,
    pub external_key: String,
    pub tracking_id: String,
    /// (unitType, [(recordDate, amount as JSON text)])
    pub units: Vec<(String, Vec<(String, String)>)>,
    /// Accepted POSTs for this (tenant, subscription, trackingId): must be 1.
    pub count: u32,
}

#[derive(Debug, Default)]
struct Faults {
    latency: Duration,
    fail_next: u32,
    fail_until: Option<Instant>,
    hang_next: u32,
    hang_until: Option<Instant>,
    hang_for: Duration,
    unauthorized_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Data {
    /// (tenant, externalKey) → subscriptionId
    subscriptions: HashMap<(String, String), String>,
    /// (tenant, subscriptionId) → externalKey
    by_id: HashMap<(String, String), String>,
    /// (tenant, subscriptionId, trackingId) → record
    usages: HashMap<(String, String, String), StoredUsage>,
    statuses: BTreeMap<u16, u64>,
}

struct Shared {
    username: String,
    password: String,
    /// (api key, api secret) → tenant
    tenants: HashMap<(String, String), String>,
    data: Mutex<Data>,
    faults: Mutex<Faults>,
    requests: AtomicU64,
    duplicate_posts: AtomicU64,
    /// Wakes hanging handlers when the server stops (an outage ends them).
    stopped: Notify,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct KillbillDouble {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl KillbillDouble {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start(cfg: DoubleConfig) -> KillbillDouble {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kb-double")
            .enable_all()
            .build()
            .expect("kill bill double runtime");
        let shared = Arc::new(Shared {
            username: cfg.username,
            password: cfg.password,
            tenants: cfg
                .tenants
                .into_iter()
                .map(|(name, key, secret)| ((key, secret), name))
                .collect(),
            data: Mutex::new(Data::default()),
            faults: Mutex::new(Faults::default()),
            requests: AtomicU64::new(0),
            duplicate_posts: AtomicU64::new(0),
            stopped: Notify::new(),
        });
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let listener = rt.block_on(bind(addr)).expect("bind kill bill double");
        let addr = listener.local_addr().expect("local addr");
        let double = KillbillDouble {
            rt,
            shared,
            addr,
            server: Mutex::new(None),
        };
        double.serve(listener);
        double
    }

    /// Default credentials for tests: admin/password, the given tenants with
    /// api key `key-N` and secret `secret-N`.
    pub fn with_tenants(tenants: &[&str]) -> KillbillDouble {
        KillbillDouble::start(DoubleConfig {
            username: "admin".into(),
            password: "password".into(),
            tenants: tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (t.to_string(), format!("key-{i}"), format!("secret-{i}")))
                .collect(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Registers a subscription and returns its id (deterministic).
    pub fn add_subscription(&self, tenant: &str, external_key: &str) -> String {
        let mut d = self.shared.data();
        let n = d.subscriptions.len();
        let id = d
            .subscriptions
            .entry((tenant.to_string(), external_key.to_string()))
            .or_insert_with(|| format!("00000000-0000-4000-8000-{n:012}"))
            .clone();
        d.by_id
            .insert((tenant.to_string(), id.clone()), external_key.to_string());
        id
    }

    // ---- faults ----

    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = latency;
    }

    /// The next `n` requests answer 503.
    pub fn fail_next(&self, n: u32) {
        self.shared.faults().fail_next = n;
    }

    /// Every request answers 503 for `d`.
    pub fn fail_for(&self, d: Duration) {
        self.shared.faults().fail_until = Some(Instant::now() + d);
    }

    /// The next `n` requests hang for `hang` before answering 503.
    pub fn hang_next(&self, n: u32, hang: Duration) {
        let mut f = self.shared.faults();
        f.hang_next = n;
        f.hang_for = hang;
    }

    /// Every request in the next `window` hangs for `hang`, then answers 503.
    pub fn hang_window(&self, window: Duration, hang: Duration) {
        let mut f = self.shared.faults();
        f.hang_until = Some(Instant::now() + window);
        f.hang_for = hang;
    }

    /// Every request answers 401 for `d` (credentials rotated under tally).
    pub fn unauthorized_for(&self, d: Duration) {
        self.shared.faults().unauthorized_until = Some(Instant::now() + d);
    }

    pub fn clear_faults(&self) {
        *self.shared.faults() = Faults::default();
    }

    /// Outage: the listener closes (connects are refused), open connections
    /// are closed after their current request, hanging requests end.
    pub fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, task)) = server {
            let _ = tx.send(());
            self.shared.stopped.notify_waiters();
            let waited = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
            if waited.is_err() {
                // Connections that would not close: the listener is gone already.
                eprintln!("kill bill double: connections still open 5 s after stop");
            }
        }
    }

    /// Back on the same port, same data.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match self.rt.block_on(bind(self.addr)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("kill bill double: rebind {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("kill bill double: cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    // ---- what it holds ----

    /// Accepted records by `tenant/externalKey/trackingId` (tally's dedupe key).
    pub fn records(&self) -> BTreeMap<String, StoredUsage> {
        self.shared
            .data()
            .usages
            .values()
            .map(|u| {
                (
                    format!("{}/{}/{}", u.tenant, u.external_key, u.tracking_id),
                    u.clone(),
                )
            })
            .collect()
    }

    pub fn accepted(&self) -> usize {
        self.shared.data().usages.len()
    }

    /// POSTs answered "already exists" (re-sends absorbed by the trackingId).
    pub fn duplicate_posts(&self) -> u64 {
        self.shared.duplicate_posts.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Responses sent, by status code.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.shared.data().statuses.clone()
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// The double's routes over the same data, for serving them elsewhere
    /// (e.g. behind a TLS front that requires client certificates).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/1.0/kb/subscriptions", get(lookup))
            .route("/1.0/kb/usages", post(post_usage))
            .with_state(Arc::clone(&self.shared))
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = self.router();
        let (tx, rx) = oneshot::channel::<()>();
        let task = self.rt.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some((tx, task));
    }
}

impl Drop for KillbillDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn kb_error(status: StatusCode, code: i64, message: String) -> Response {
    let body = serde_json::json!({
        "className": "org.killbill.billing.BillingExceptionBase",
        "code": code,
        "message": message,
        "causeClassName": null,
        "causeMessage": null,
        "stackTrace": []
    });
    (status, axum::Json(body)).into_response()
}

/// Faults, then auth. `Ok(tenant)` or the response to send.
async fn gate(s: &Shared, headers: &HeaderMap, write: bool) -> Result<String, Response> {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let (latency, hang, fail, unauthorized) = {
        let mut f = s.faults();
        let now = Instant::now();
        let hang = if f.hang_next > 0 {
            f.hang_next -= 1;
            Some(f.hang_for)
        } else if f.hang_until.is_some_and(|u| now < u) {
            Some(f.hang_for)
        } else {
            None
        };
        let fail = if f.fail_next > 0 {
            f.fail_next -= 1;
            true
        } else {
            f.fail_until.is_some_and(|u| now < u)
        };
        let unauthorized = f.unauthorized_until.is_some_and(|u| now < u);
        (f.latency, hang, fail, unauthorized)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(h) = hang {
        tokio::select! {
            _ = tokio::time::sleep(h) => {}
            _ = s.stopped.notified() => {}
        }
        return Err((StatusCode::SERVICE_UNAVAILABLE, "hung").into_response());
    }
    if fail {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "injected failure").into_response());
    }
    if unauthorized {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    }
    let basic_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|up| up == format!("{}:{}", s.username, s.password));
    if !basic_ok {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let Some(tenant) = s
        .tenants
        .get(&(header("x-killbill-apikey"), header("x-killbill-apisecret")))
    else {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    };
    if write && header("x-killbill-createdby").is_empty() {
        return Err(kb_error(
            StatusCode::BAD_REQUEST,
            1,
            "X-Killbill-CreatedBy header is required".into(),
        ));
    }
    Ok(tenant.clone())
}

fn record_status(s: &Shared, r: Response) -> Response {
    *s.data().statuses.entry(r.status().as_u16()).or_default() += 1;
    r
}

#[derive(Deserialize)]
struct LookupQuery {
    #[serde(rename = "externalKey")]
    external_key: Option<String>,
}

async fn lookup(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<LookupQuery>,
) -> Response {
    let r = match gate(&s, &headers, false).await {
        Err(r) => r,
        Ok(tenant) => {
            let key = q.external_key.unwrap_or_default();
            let found = s
                .data()
                .subscriptions
                .get(&(tenant.clone(), key.clone()))
                .cloned();
            match found {
                Some(id) => axum::Json(serde_json::json!({
                    "subscriptionId": id,
                    "externalKey": key,
                    "productName": "Standard",
                    "state": "ACTIVE"
                }))
                .into_response(),
                None => kb_error(
                    StatusCode::NOT_FOUND,
                    1083,
                    format!("Object id={key} type=SUBSCRIPTION doesn't exist!"),
                ),
            }
        }
    };
    record_status(&s, r)
}

#[derive(Deserialize)]
struct UsageIn<'a> {
    #[serde(rename = "subscriptionId")]
    subscription_id: String,
    #[serde(rename = "trackingId")]
    tracking_id: String,
    #[serde(rename = "unitUsageRecords", borrow)]
    unit_usage_records: Vec<UnitIn<'a>>,
}

#[derive(Deserialize)]
struct UnitIn<'a> {
    #[serde(rename = "unitType")]
    unit_type: String,
    #[serde(rename = "usageRecords", borrow)]
    usage_records: Vec<RecordIn<'a>>,
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    #[serde(rename = "recordDate")]
    record_date: String,
    #[serde(borrow)]
    amount: &'a RawValue,
}

/// The body as Kill Bill would accept it, or why not.
fn validate(body: &[u8]) -> Result<UsageIn<'_>, String> {
    let u: UsageIn<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if u.subscription_id.is_empty() || u.tracking_id.is_empty() {
        return Err("subscriptionId and trackingId are required".into());
    }
    if u.unit_usage_records.is_empty() {
        return Err("unitUsageRecords must not be empty".into());
    }
    for unit in &u.unit_usage_records {
        if unit.unit_type.is_empty() || unit.usage_records.is_empty() {
            return Err("unitType and usageRecords are required".into());
        }
        for r in &unit.usage_records {
            let a = r.amount.get();
            if !(a.starts_with('-') || a.starts_with(|c: char| c.is_ascii_digit())) {
                return Err(format!("amount must be a JSON number, got {a}"));
            }
            chrono::DateTime::parse_from_rfc3339(&r.record_date)
                .map_err(|e| format!("recordDate {:?}: {e}", r.record_date))?;
        }
    }
    Ok(u)
}

async fn post_usage(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = match gate(&s, &headers, true).await {
        Err(r) => r,
        Ok(tenant) => match validate(&body) {
            Err(e) => kb_error(StatusCode::BAD_REQUEST, 2, e),
            Ok(u) => store(&s, tenant, u),
        },
    };
    record_status(&s, r)
}

fn store(s: &Shared, tenant: String, u: UsageIn<'_>) -> Response {
    let mut d = s.data();
    let Some(external_key) = d
        .by_id
        .get(&(tenant.clone(), u.subscription_id.clone()))
        .cloned()
    else {
        return kb_error(
            StatusCode::NOT_FOUND,
            1002,
            format!(
                "Object id={} type=SUBSCRIPTION doesn't exist!",
                u.subscription_id
            ),
        );
    };
    let key = (
        tenant.clone(),
        u.subscription_id.clone(),
        u.tracking_id.clone(),
    );
    if d.usages.contains_key(&key) {
        s.duplicate_posts.fetch_add(1, Ordering::Relaxed);
        return kb_error(
            StatusCode::BAD_REQUEST,
            50000,
            format!(
                "A usage record with tracking ID {} already exists for subscription {}",
                u.tracking_id, u.subscription_id
            ),
        );
    }
    let units = u
        .unit_usage_records
        .iter()
        .map(|unit| {
            (
                unit.unit_type.clone(),
                unit.usage_records
                    .iter()
                    .map(|r| (r.record_date.clone(), r.amount.get().to_string()))
                    .collect(),
            )
        })
        .collect();
    d.usages.insert(
        key,
        StoredUsage {
            tenant,
            subscription_id: u.subscription_id,
            external_key,
            tracking_id: u.tracking_id,
            units,
            count: 1,
        },
    );
    StatusCode::CREATED.into_response()
}

/// A `[sinks.killbill]` table for this double, with the tenants of
/// [`KillbillDouble::with_tenants`] (secrets by env var `KB_SECRET_N`, the
/// password from `password_file`); `extra` goes inside the table. Returns the
/// TOML and the environment tally needs.
pub fn sink_toml(
    double: &KillbillDouble,
    dir: &std::path::Path,
    tenants: &[&str],
    extra: &str,
) -> (String, Vec<(String, String)>) {
    let password_file = dir.join("kb-password");
    std::fs::write(&password_file, "password\n").expect("write password file");
    let mut text = format!(
        "[sinks.killbill]\nurl = {:?}\nusername = \"admin\"\npassword_file = {:?}\ncreated_by = \"tally-test\"\n{extra}\n",
        double.url(),
        password_file.display().to_string()
    );
    let mut envs = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        text.push_str(&format!(
            "[sinks.killbill.tenants.{t:?}]\napi_key = \"key-{i}\"\napi_secret_env = \"KB_SECRET_{i}\"\n"
        ));
        envs.push((format!("KB_SECRET_{i}"), format!("secret-{i}")));
    }
    (text, envs)
}
