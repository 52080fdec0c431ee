//! An in-process HTTP receiver for the `http` sink's end-to-end tests: it
//! records every POST (Idempotency-Key, headers, body), answers 200, and
//! can be told to answer other statuses — for a window, for the next N
//! requests, or per body (to reject chosen records) — or to demand a header.
//!
//! It runs on its own tokio runtime, so plain `#[test]` functions use it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::oneshot;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: Option<String>,
    /// Lower-case header name → value (UTF-8 values only).
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
}

type Judge = Box<dyn Fn(&[u8]) -> Option<u16> + Send + Sync>;

#[derive(Default)]
struct Faults {
    status_until: Option<(Instant, u16)>,
    status_next: Option<(u32, u16)>,
    judge: Option<Judge>,
    require: Option<(String, String)>,
    latency: Duration,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    faults: Mutex<Faults>,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct HttpReceiver {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<oneshot::Sender<()>>>,
}

impl HttpReceiver {
    /// Plain HTTP on 127.0.0.1 with a free port.
    pub fn start() -> HttpReceiver {
        Self::start_on(0)
    }

    /// Plain HTTP on 127.0.0.1:`port` (0: a free one), e.g. the port a
    /// tally was pointed at while nothing listened there.
    pub fn start_on(port: u16) -> HttpReceiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http-receiver")
            .enable_all()
            .build()
            .expect("receiver runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind receiver");
        let addr = listener.local_addr().expect("local addr");
        let r = HttpReceiver {
            rt,
            shared: Arc::new(Shared::default()),
            addr,
            server: Mutex::new(None),
        };
        let app = r.app();
        let (tx, rx) = oneshot::channel::<()>();
        r.rt.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        *r.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        r
    }

    fn app(&self) -> Router {
        Router::new()
            .route("/in", post(receive))
            .with_state(Arc::clone(&self.shared))
    }

    pub fn url(&self) -> String {
        format!("http://{}/in", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// The router, for serving it elsewhere (e.g. behind TLS).
    pub fn router(&self) -> Router {
        self.app()
    }

    // ---- faults ----

    /// Every request answers `status` for `d`.
    pub fn status_for(&self, status: u16, d: Duration) {
        self.shared.faults().status_until = Some((Instant::now() + d, status));
    }

    /// The next `n` requests answer `status`.
    pub fn status_next(&self, n: u32, status: u16) {
        self.shared.faults().status_next = Some((n, status));
    }

    /// A body for which `judge` returns a status is answered with it.
    pub fn judge(&self, judge: impl Fn(&[u8]) -> Option<u16> + Send + Sync + 'static) {
        self.shared.faults().judge = Some(Box::new(judge));
    }

    /// Requests without this header value are answered 401.
    pub fn require_header(&self, name: &str, value: &str) {
        self.shared.faults().require = Some((name.to_ascii_lowercase(), value.to_string()));
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = latency;
    }

    // ---- what it holds ----

    pub fn received(&self) -> Vec<Received> {
        self.shared.received().clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.received().len()
    }

    /// 2xx answers by Idempotency-Key (absent key → "").
    pub fn accepted_by_key(&self) -> HashMap<String, Vec<Received>> {
        let mut out: HashMap<String, Vec<Received>> = HashMap::new();
        for r in self.shared.received().iter() {
            if (200..300).contains(&r.status) {
                out.entry(r.idempotency_key.clone().unwrap_or_default())
                    .or_default()
                    .push(r.clone());
            }
        }
        out
    }

    /// Distinct Idempotency-Keys answered 2xx.
    pub fn accepted(&self) -> usize {
        let received = self.shared.received();
        let keys: std::collections::HashSet<_> = received
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.idempotency_key.as_deref())
            .collect();
        keys.len()
    }

    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for r in self.shared.received().iter() {
            *out.entry(r.status).or_insert(0) += 1;
        }
        out
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, latency) = {
        let mut f = shared.faults();
        let now = Instant::now();
        let mut status = 200;
        if let Some((name, value)) = &f.require
            && headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str())
        {
            status = 401;
        }
        if status == 200 {
            if let Some((until, s)) = f.status_until
                && now < until
            {
                status = s;
            } else if let Some((n, s)) = f.status_next
                && n > 0
            {
                f.status_next = Some((n - 1, s));
                status = s;
            } else if let Some(s) = f.judge.as_ref().and_then(|j| j(&body)) {
                status = s;
            }
        }
        (status, f.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let recorded = Received {
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
        status,
    };
    shared.received().push(recorded);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, format!("{{\"status\":{status}}}")).into_response()
}
