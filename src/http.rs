//! HTTP endpoints of CONTRACT section 4: metrics, liveness, readiness and one customer's state.
//! Must not know about Kafka or how state is folded: it reads the committed store. The customer
//! lookup serves personal data, so it is off unless a bearer token is configured.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::fold::CustomerState;
use crate::processor::partition_for;
use crate::risk::{assess, RiskSettings};
use crate::store::Store;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub telemetry: Arc<Telemetry>,
    pub partitions: i32,
    pub risk: Arc<RiskSettings>,
    /// `None`: the customer lookup is off.
    pub customer_token: Option<Arc<Secret>>,
    /// Whether this instance owns a state partition now; `None` when it owns them all (a file
    /// replay, a test). The local copy of a partition owned elsewhere may be stale.
    pub owns: Option<Arc<dyn Fn(i32) -> bool + Send + Sync>>,
    /// The advertised URL of the instance that owns a state partition, as far as it can be
    /// found out (it blocks); `None` when nobody can tell.
    pub owner_of: Option<Arc<dyn Fn(i32) -> Option<String> + Send + Sync>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/customers/{customer_id}", get(customer))
        .with_state(state)
}

/// How long a client may take to send a request's head, or stay connected between requests,
/// before it is disconnected. Without it one client that sent part of a request and waited
/// held its connection open for as long as it liked.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the requests under way at shutdown may take to finish before their connections are
/// dropped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is cancelled; then stops accepting, lets the requests under way
/// finish for at most [`DRAIN_TIMEOUT`] and drops the connections left. Until 2026-12-05 a
/// client that had sent part of a request held the process at SIGTERM until it went away.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // A connection that failed before it was accepted concerns that client alone.
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors, say: wait for some to be freed rather than spin.
            Err(e) => {
                tracing::warn!(error = %e, "The HTTP listener cannot accept a connection; trying again in a second.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http1.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            "HTTP requests still under way at shutdown were dropped."
        );
    }
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.telemetry.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.telemetry.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// The customer's state as `GET /customers/{id}` shows it: its serde fields and the latest
/// renewal's time, which serde skips (it is stored apart from the postcard fields,
/// `store::codec`).
pub fn state_json(state: &CustomerState) -> serde_json::Value {
    let mut json = serde_json::json!(state);
    json["last_renewal_at"] = serde_json::json!(state.last_renewal_at);
    json
}

/// Whether the request may read personal data: `Authorization: Bearer <token>`.
fn authorised(token: &Secret, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|offered| token.matches(offered))
}

async fn customer(
    State(state): State<HttpState>,
    Path(customer_id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(token) = &state.customer_token else {
        return (
            StatusCode::NOT_FOUND,
            "customer lookup is off (set http.customer_lookup_token to turn it on)\n",
        )
            .into_response();
    };
    if !authorised(token, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response();
    }
    let store = state.store.clone();
    let partitions = state.partitions;
    let risk = state.risk.clone();
    // The customer's partition is where its events were published. Kafka's default partitioner
    // is tried first; the others follow, for publishers that partition differently.
    let home = partition_for(customer_id.as_bytes(), partitions);
    let found = tokio::task::spawn_blocking(move || {
        let order = std::iter::once(home).chain((0..partitions).filter(|p| *p != home));
        for partition in order {
            if let Some(customer) = store.customer_record(partition, &customer_id)? {
                return Ok(Some((partition, customer)));
            }
        }
        Ok::<_, crate::store::StoreError>(None)
    })
    .await;
    // A partition another instance owns: what is held here may be stale, and a customer not
    // held here may be held there.
    let elsewhere = match &found {
        Ok(Ok(Some((partition, _)))) => Some(*partition),
        Ok(Ok(None)) => Some(home),
        _ => None,
    }
    .filter(|p| state.owns.as_ref().is_some_and(|owns| !owns(*p)));
    if let Some(partition) = elsewhere {
        return misdirected(&state, partition).await;
    }
    match found {
        Ok(Ok(Some((partition, customer)))) => {
            // The risk as of the customer's newest event; `last_published` is what
            // `customer.churn-risk` carries, `next_check_at` the pending timer.
            let as_of = customer.risk.as_of(&customer.state);
            let body = serde_json::json!({
                "partition": partition,
                "state": state_json(&customer.state),
                "risk": assess(&customer.state, &customer.trailing, as_of, &risk),
                "last_published": customer.risk.last,
                "next_check_at": customer.risk.timer_at.map(crate::event::format_millis),
                "losses": customer.losses,
                // Stored apart from the state's own fields, and so left out of its JSON.
                "early_closes": customer.state.early_closes,
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "unknown customer\n").into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Reading a customer from the store failed.");
            (StatusCode::INTERNAL_SERVER_ERROR, "store error\n").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "lookup failed\n").into_response(),
    }
}

/// 421 for a customer of `partition`, which another instance owns, naming that instance when
/// it can be found out.
async fn misdirected(state: &HttpState, partition: i32) -> Response {
    let owner = match state.owner_of.clone() {
        Some(owner_of) => tokio::task::spawn_blocking(move || owner_of(partition))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let message = match &owner {
        Some(_) => "another instance of the consumer group owns this customer's partition: ask it",
        None => "another instance of the consumer group owns this customer's partition; which one is not known here (set http.advertised_url on every instance)",
    };
    let body = serde_json::json!({
        "partition": partition,
        "owned_here": false,
        "owner": owner,
        "message": message,
    });
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
