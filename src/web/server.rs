//! The HTTP/1 accept loop (instead of `axum::serve`, which has no limits): at most
//! `web.max_connections` open connections (the rest wait in the kernel's accept queue and use
//! no file descriptor), at most a quarter of them (at least 4) from one client address (so one
//! machine holding idle connections cannot lock everyone else out), headers within
//! `web.header_timeout_ms` (also the idle keep-alive limit: hyper's header timer runs while it
//! waits for the next request), bounded header buffers. Body timeouts are per route
//! (`web.body_timeout_ms`, in the handlers).

use super::security::PerClient;
use crate::config::WebConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// Largest request head (request line + headers) kept in memory per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Connections one client address may hold open at once.
pub fn per_client_limit(max_connections: usize) -> usize {
    (max_connections / 4).max(4).min(max_connections.max(1))
}

/// Serve `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, cfg: &WebConfig) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let header_timeout = Duration::from_millis(cfg.header_timeout_ms.max(1));
    let per_client = PerClient::default();
    let per_client_max = per_client_limit(cfg.max_connections);
    let mut accept_errors = 0u64;
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or an aborted handshake: back off
                // and keep serving instead of spinning or exiting.
                accept_errors += 1;
                if accept_errors.is_power_of_two() {
                    log::warn!("web: accept failed ({accept_errors} times): {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(client_slot) = per_client.take(peer.ip(), per_client_max) else {
            // Over this client's share: closed at once, the global slot goes back.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _client_slot = client_slot;
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let mut app = app.clone();
                    async move { app.call(req.map(axum::body::Body::new)).await }
                },
            );
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(true);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
