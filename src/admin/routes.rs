//! Admin endpoints. Store reads run on the blocking pool: sled calls block.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, mpsc};

use super::Token;
use super::views::{self, OffsetRow};
use crate::kafka::{KafkaConfig, OutRecord, Producer, partition_for_key};
use crate::pipeline::Live;
use crate::store::{Store, StoreError};

pub(super) struct AdminState {
    live: Arc<Live>,
    token: Option<Token>,
    kafka: KafkaConfig,
    /// Connected on first publish, so a daemon that never publishes never dials out for it.
    producer: OnceCell<Producer>,
    round_robin: AtomicU32,
}

impl AdminState {
    pub fn new(live: Arc<Live>, token: Option<Token>, kafka: KafkaConfig) -> Self {
        AdminState {
            live,
            token,
            kafka,
            producer: OnceCell::new(),
            round_robin: AtomicU32::new(0),
        }
    }
}

type S = State<Arc<AdminState>>;

pub(super) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/partitions", get(partitions))
        .route("/v1/group", get(group))
        .route("/v1/stats", get(stats))
        .route("/v1/ids", get(id_counts))
        .route("/v1/ids/export", get(id_export))
        .route("/v1/ids/prune", post(id_prune))
        .route("/v1/ids/{route}/{*key}", get(id_lookup))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/replay", post(dead_letter_replay))
        .route("/v1/dead-letters/purge", post(dead_letter_purge))
        .route("/v1/dead-letters/{id}", get(dead_letter))
        .route("/v1/topics/{topic}/records", post(publish))
        .with_state(state)
}

/// An error answer: `{"error": "..."}` with a status.
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Run a store read on the blocking pool.
async fn with_store<T: Send + 'static>(
    st: &AdminState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let store = Arc::clone(&st.live.store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn require_token(st: &AdminState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = &st.token else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "no admin token is configured ([admin] token_env or token_file): this endpoint is disabled".into(),
        ));
    };
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if token.accepts(given) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ))
    }
}

async fn metrics(State(st): S) -> ApiResult<Response> {
    let live = Arc::clone(&st.live);
    let text = tokio::task::spawn_blocking(move || {
        live.refresh_store_gauges();
        live.metrics.encode()
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): S) -> Response {
    let r = st.live.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(r)).into_response()
}

/// Group mode: this member's view of the group; 404 in static mode.
async fn group(State(st): S) -> ApiResult<axum::Json<views::GroupView>> {
    st.live.group().map(axum::Json).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "not in group mode ([assignment] mode = \"static\")".into(),
        )
    })
}

async fn partitions(State(st): S) -> ApiResult<axum::Json<Vec<OffsetRow>>> {
    let live = st.live.partitions();
    let group = st.live.group();
    let stored = with_store(&st, |s| s.offsets()).await?;
    let mut rows: Vec<OffsetRow> = Vec::with_capacity(stored.len());
    for (topic, partition, entry) in &stored {
        let view = live
            .iter()
            .find(|v| &v.topic == topic && v.partition == *partition);
        let log_end = view
            .map(|v| v.high_watermark)
            .filter(|hw| *hw > 0 || entry.next_offset == 0);
        let mut row = OffsetRow::from_store(topic, *partition, entry, log_end);
        if let Some(v) = view {
            // The live committed offset can be a moment ahead of the read above.
            row.committed = row.committed.max(v.committed);
            row.lag = log_end.map(|e| (e - row.committed).max(0));
            row.route = Some(v.route.clone());
            row.state = serde_json::to_value(v.state)
                .ok()
                .and_then(|s| s.as_str().map(str::to_string));
            row.backoff_seconds = Some(v.backoff_seconds);
        }
        if let Some(g) = &group {
            row.group = Some(g.group_id.clone());
            row.generation = Some(g.generation);
            row.member = Some(g.member_id.clone());
            row.owned = Some(g.owns(topic, *partition));
        }
        rows.push(row);
    }
    Ok(axum::Json(rows))
}

async fn stats(State(st): S) -> ApiResult<axum::Json<views::StatsView>> {
    Ok(axum::Json(with_store(&st, views::stats).await?))
}

async fn id_counts(State(st): S) -> ApiResult<axum::Json<Vec<views::RouteCount>>> {
    let batches = with_store(&st, |s| s.batches()).await?;
    Ok(axum::Json(views::route_counts(&batches)))
}

async fn id_lookup(
    State(st): S,
    Path((route, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (r, k) = (route.clone(), key.clone());
    match with_store(&st, move |s| s.lookup(&r, &k)).await? {
        Some(loc) => Ok(axum::Json(views::id_location(&route, &key, &loc)).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no committed tracking ID {key:?} for route {route:?}"),
        )),
    }
}

#[derive(Deserialize)]
struct RouteQuery {
    route: Option<String>,
    reason: Option<String>,
}

/// NDJSON, streamed: the export can be millions of lines.
async fn id_export(State(st): S, Query(q): Query<RouteQuery>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let store = Arc::clone(&st.live.store);
    tokio::task::spawn_blocking(move || {
        let mut buf = String::with_capacity(64 * 1024);
        let result = views::export_ids(
            &store,
            q.route.as_deref(),
            |line| {
                buf.push_str(&line);
                buf.push('\n');
                if buf.len() >= 60 * 1024 {
                    let chunk = Bytes::from(std::mem::take(&mut buf));
                    return tx.blocking_send(chunk).is_ok();
                }
                true
            },
            |_, _| {},
        );
        if let Err(e) = result {
            buf.push_str(&json!({ "error": e.to_string() }).to_string());
            buf.push('\n');
        }
        if !buf.is_empty() {
            let _ = tx.blocking_send(Bytes::from(buf));
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::new(ChannelBody(rx)),
    )
        .into_response()
}

/// An HTTP body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[derive(Deserialize)]
struct PruneQuery {
    older_than: String,
}

async fn id_prune(
    State(st): S,
    headers: HeaderMap,
    Query(q): Query<PruneQuery>,
) -> ApiResult<Response> {
    require_token(&st, &headers)?;
    let age = humantime::parse_duration(&q.older_than).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("older_than {:?} is not a duration ({e})", q.older_than),
        )
    })?;
    let stats = with_store(&st, move |s| s.prune_older_than(age)).await?;
    st.live.metrics.pruned_ids.inc_by(stats.ids as u64);
    Ok(axum::Json(json!({
        "batches": stats.batches,
        "ids": stats.ids,
        "cutoff": views::ms(stats.cutoff_ms),
    }))
    .into_response())
}

async fn dead_letters(
    State(st): S,
    Query(q): Query<RouteQuery>,
) -> ApiResult<axum::Json<Vec<Value>>> {
    let list = with_store(&st, move |s| {
        views::dead_letter_list(s, q.route.as_deref(), q.reason.as_deref())
    })
    .await?;
    Ok(axum::Json(list))
}

async fn dead_letter(State(st): S, Path(id): Path<u64>) -> ApiResult<axum::Json<Value>> {
    match with_store(&st, move |s| s.dead_letter(id)).await? {
        Some(d) => Ok(axum::Json(views::dead_letter(id, &d, true))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no dead letter with id {id}"),
        )),
    }
}

/// Which dead letters a replay or purge acts on (the CLI's arguments).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterSelection {
    id: Option<u64>,
    #[serde(default)]
    all: bool,
    route: Option<String>,
    /// Purge only: a duration like "30d".
    older_than: Option<String>,
}

impl DeadLetterSelection {
    fn parse(body: &[u8]) -> ApiResult<Self> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"id\": 7}} or {{\"all\": true, \"route\": \"usage\"}}: {e}"
                ),
            )
        })
    }
}

impl From<crate::dlq::ReplayError> for ApiError {
    fn from(e: crate::dlq::ReplayError) -> Self {
        match e {
            crate::dlq::ReplayError::Store(e) => e.into(),
            crate::dlq::ReplayError::Changelog { .. }
            | crate::dlq::ReplayError::ChangelogRead { .. } => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<crate::dlq::SelectError> for ApiError {
    fn from(e: crate::dlq::SelectError) -> Self {
        match e {
            crate::dlq::SelectError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            crate::dlq::SelectError::Store(e) => e.into(),
        }
    }
}

/// Replay through the daemon's own routes: the workers' decoders and sinks,
/// the same dedupe index, and their in-flight key set (a key a partition
/// is sending is not sent twice).
async fn dead_letter_replay(
    State(st): S,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    require_token(&st, &headers)?;
    let sel = DeadLetterSelection::parse(&body)?;
    if sel.id.is_none() != sel.all || sel.older_than.is_some() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give either \"id\" or \"all\": true (and optionally \"route\")".into(),
        ));
    }
    let store = Arc::clone(&st.live.store);
    let letters = tokio::task::spawn_blocking(move || {
        crate::dlq::select(&store, sel.id, sel.route.as_deref())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let routes = st.live.replay_routes();
    let out = crate::dlq::ReplayProducer {
        kafka: Some(&st.kafka),
        producer: &st.producer,
    };
    let summary = crate::dlq::replay_with(
        &routes,
        &st.live.store,
        letters,
        Some(&st.live.inflight),
        &out,
    )
    .await?;
    Ok(axum::Json(views::replay_summary(&summary)))
}

async fn dead_letter_purge(
    State(st): S,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    require_token(&st, &headers)?;
    let sel = DeadLetterSelection::parse(&body)?;
    let older_than = sel
        .older_than
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("older_than: {e}")))?;
    if sel.id.is_none() == older_than.is_none() || sel.all {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give either \"id\" or \"older_than\" (and optionally \"route\")".into(),
        ));
    }
    let store = Arc::clone(&st.live.store);
    let purged = tokio::task::spawn_blocking(move || {
        crate::dlq::purge(&store, sel.id, older_than, sel.route.as_deref())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(axum::Json(json!({ "purged": purged })))
}

#[derive(Deserialize)]
struct PublishQuery {
    key: Option<String>,
    partition: Option<i32>,
}

/// Header carrying the record key when not given as `?key=`.
pub const KEY_HEADER: &str = "x-kafka-key";

/// Publish one record: the body is the value (must be JSON), partitioned
/// like Kafka's default partitioner by key, round-robin without one.
async fn publish(
    State(st): S,
    Path(topic): Path<String>,
    headers: HeaderMap,
    Query(q): Query<PublishQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    require_token(&st, &headers)?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be the record value as JSON: {e}"),
        ));
    }
    let key = match q.key {
        Some(k) => Some(k.into_bytes()),
        None => headers.get(KEY_HEADER).map(|v| v.as_bytes().to_vec()),
    };
    let producer = st
        .producer
        .get_or_try_init(|| Producer::connect(&st.kafka))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let partitions = producer
        .partition_count(&topic)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("topic {topic}: {e}")))?;
    if partitions <= 0 {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("topic {topic} has no partitions"),
        ));
    }
    let partition = match (q.partition, &key) {
        (Some(p), _) if (0..partitions).contains(&p) => p,
        (Some(p), _) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("topic {topic} has partitions 0..{partitions}, not {p}"),
            ));
        }
        (None, Some(k)) => partition_for_key(k, partitions),
        (None, None) => (st.round_robin.fetch_add(1, Ordering::Relaxed) % partitions as u32) as i32,
    };
    let offsets = producer
        .send(
            &topic,
            partition,
            vec![OutRecord {
                key,
                value: body.to_vec(),
                headers: Vec::new(),
            }],
        )
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "topic": topic,
            "partition": partition,
            "offset": offsets.first(),
        })),
    )
        .into_response())
}
