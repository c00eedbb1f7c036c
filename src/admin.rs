//! The admin server: `/livez`, `/readyz` (ready once the caches have synced and, with
//! leader election, whether leading or standing by), `/metrics` (`?collect[]=controller`
//! or `organizations` for one group of series), and `/debug/caches` (what
//! the caches hold per kind: objects and their encoded size, computed on request; the
//! benchmark reads it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::routing::get;

/// Computes `/debug/caches` on request.
type CacheReport = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Readiness, shared with the controller.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    caches: Arc<OnceLock<CacheReport>>,
}

impl Health {
    /// What `/debug/caches` reports, once the controller's caches exist.
    pub fn set_cache_report(&self, report: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        let _ = self.caches.set(Arc::new(report));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Serves the admin endpoints on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let caches = health.caches.clone();
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/debug/caches",
            get(move || {
                let caches = caches.clone();
                async move {
                    match caches.get() {
                        Some(report) => (StatusCode::OK, report().to_string()),
                        None => (StatusCode::SERVICE_UNAVAILABLE, "no caches yet".into()),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    if health.is_ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|query: RawQuery| async move {
                match crate::metrics::Group::from_query(query.0.as_deref()) {
                    Ok(groups) => (
                        StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        crate::metrics::encode_groups(&groups),
                    ),
                    Err(message) => (
                        StatusCode::BAD_REQUEST,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; charset=utf-8",
                        )],
                        message,
                    ),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening (/livez, /readyz, /metrics, /debug/caches)");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
