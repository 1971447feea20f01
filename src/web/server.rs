//! The HTTP/1 accept loop (instead of `axum::serve`, which has no limits): at most
//! `web.max_connections` open connections (the rest wait in the kernel's accept queue and use
//! no file descriptor), at most an eighth of them (at least 4) from one client address (so a
//! few machines holding connections cannot lock everyone else out), headers within
//! `web.header_timeout_ms` (also the idle keep-alive limit: hyper's header timer runs while it
//! waits for the next request), response writes that progress within `web.write_timeout_ms`
//! (a client that requests and never reads is dropped), bounded header buffers. Body timeouts
//! are per route (`web.body_timeout_ms`, in the handlers).

use super::security::PerClient;
use crate::config::WebConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// Largest request head (request line + headers) kept in memory per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Connections one client address may hold open at once.
pub fn per_client_limit(max_connections: usize) -> usize {
    (max_connections / 8).max(4).min(max_connections.max(1))
}

/// A stream whose writes must make progress: a write that stays blocked (the peer's receive
/// window full because it never reads) for `limit` fails with `TimedOut`, so hyper ends the
/// connection and its slot goes back.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S> WriteDeadline<S> {
    /// After a write poll: progress disarms the timer, a block arms it (once) and fails the
    /// write when it fires.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// Serve `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, cfg: &WebConfig) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let header_timeout = Duration::from_millis(cfg.header_timeout_ms.max(1));
    let write_timeout = Duration::from_millis(cfg.write_timeout_ms.max(1));
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
            let io = WriteDeadline {
                inner: stream,
                limit: write_timeout,
                stalled: None,
            };
            let _ = b.serve_connection(TokioIo::new(io), svc).await;
        });
    }
}
