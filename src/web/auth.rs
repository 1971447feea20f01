//! Request guard: connection caps, token/session auth, login and logout.

use super::pages::page;
use super::security::{self, Credential, SESSION_COOKIE, token_eq};
use super::{ApiError, AppState, SMALL_BODY};
use crate::config::WebConfig;
use axum::extract::{ConnectInfo, Form, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Multipart framing adds a little over the file itself.
pub(super) fn upload_body_limit(cfg: &WebConfig) -> usize {
    cfg.max_upload_bytes + 64 * 1024
}

/// The two routes that take an image (the router mounts them with the upload body limit).
pub(super) const UPLOAD_FORM: &str = "/classify";
pub(super) const UPLOAD_API: &str = "/api/v1/classify";

pub(super) fn is_upload_route(path: &str) -> bool {
    path == UPLOAD_FORM || path == UPLOAD_API
}

pub(super) fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Host and origin checks, access control, body size pre-check and security headers for
/// every response.
/// Every request: counted, Host and cross-origin checks, security headers on the response.
/// Authentication is not decided here but by the router's shape: routes sit in a protected
/// router behind [`require_auth`] unless they are deliberately put in the public one.
pub(super) async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    let mut resp = if req
        .headers()
        .get_all(axum::http::header::HOST)
        .iter()
        .count()
        > 1
    {
        // Which one a proxy in front would use is anyone's guess (RFC 9112: answer 400).
        st.counters.refused_origin.fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::BAD_REQUEST, "more than one Host header").into_response()
    } else if !security::host_allowed(req.headers(), &st.cfg.allowed_hosts) {
        // A DNS-rebinding page reaches the device under the attacker's host name.
        st.counters.refused_origin.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown Host: use the device's IP address or a name in web.allowed_hosts",
        )
        .into_response()
    } else if security::cross_origin(req.method(), req.headers()) {
        st.counters.refused_origin.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: state changes must come from this device's own pages",
        )
        .into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The protected router's layer: with a token configured, a valid session or bearer token
/// first (pages redirect to /login, the API and /metrics answer 401), then the body pre-check.
pub(super) async fn require_auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = st.cfg.token.clone() else {
        return pre_checked(&st, req, next).await;
    };
    let path = req.uri().path().to_string();
    match authorise(&st, &req, &token) {
        Ok(()) => pre_checked(&st, req, next).await,
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => e.into_response(),
        Err(_) if !(path.starts_with("/api/") || path == "/metrics") => {
            Redirect::to("/login").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The public router's layer: only the body pre-check.
pub(super) async fn public(State(st): State<AppState>, req: Request, next: Next) -> Response {
    pre_checked(&st, req, next).await
}

/// A valid session cookie, or the right bearer token. Wrong tokens are rate-limited per client
/// and overall (a session id is 128 random bits: guessing those needs no limit).
pub(super) fn authorise(st: &AppState, req: &Request, token: &str) -> Result<(), ApiError> {
    let unauthorised = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "access token required (Authorization: Bearer <token>, or sign in at /login)",
        )
    };
    match security::credential(req.headers()) {
        Some(Credential::Session(id)) if st.sessions.valid(&id) => Ok(()),
        Some(Credential::Bearer(given)) => {
            let ip = client_ip(req);
            if let Err(wait) = st.auth_limit.allowed(ip) {
                st.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::too_many("authentication", wait));
            }
            if token_eq(&given, token) {
                return Ok(());
            }
            st.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            let _ = st.auth_limit.spend(ip);
            Err(unauthorised())
        }
        _ => Err(unauthorised()),
    }
}

pub(super) async fn pre_checked(st: &AppState, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let upload = is_upload_route(req.uri().path());
    let limit = if upload {
        upload_body_limit(&st.cfg)
    } else {
        SMALL_BODY
    };
    if declared.is_some_and(|n| n > limit) {
        if upload {
            st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
        }
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            if upload {
                format!("upload larger than {} bytes", st.cfg.max_upload_bytes)
            } else {
                format!("request body larger than {SMALL_BODY} bytes")
            },
        )
        .into_response();
    }
    next.run(req).await
}

pub(super) async fn login_page() -> Html<String> {
    page(
        "dermcam login",
        "<main><section><h2>Access token</h2><form method=\"post\" action=\"/login\"><p><input type=\"password\" name=\"token\" required autocomplete=\"current-password\"></p><p><input type=\"submit\" value=\"Sign in\"></p></form></section></main>",
    )
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    pub(super) token: String,
}

pub(super) fn session_cookie(st: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let cookie = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if st.cfg.cookie_secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static(""))
}

/// Token in, random session id out (the cookie never holds the token). The body is decoded by
/// axum's form extractor (no hand-written percent-decoding), capped at SMALL_BODY, read within
/// the body timeout; wrong tokens are rate-limited and never logged.
pub(super) async fn login(State(st): State<AppState>, req: Request) -> Response {
    let Some(token) = st.cfg.token.clone() else {
        return Redirect::to("/").into_response();
    };
    let ip = client_ip(&req);
    let wrong = |st: &AppState| {
        st.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        let _ = st.auth_limit.spend(ip);
        (StatusCode::UNAUTHORIZED, page("dermcam login", "<main><section><p class=\"err\">Wrong token.</p><a href=\"/login\">Try again</a></section></main>")).into_response()
    };
    if let Err(wait) = st.auth_limit.allowed(ip) {
        st.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        return ApiError::too_many("sign-in", wait).into_response();
    }
    let limit = Duration::from_millis(st.cfg.body_timeout_ms);
    let form = match tokio::time::timeout(limit, Form::<LoginForm>::from_request(req, &st)).await {
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )
            .into_response();
        }
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejection.into_response();
        }
        // Undecodable bodies count as wrong tokens (and are not echoed anywhere).
        Ok(Err(_)) => return wrong(&st),
        Ok(Ok(Form(f))) => f,
    };
    if !token_eq(&form.token, &token) {
        return wrong(&st);
    }
    let Some(id) = st.sessions.create() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for a session id",
        )
        .into_response();
    };
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&st, &id, st.sessions.ttl().as_secs()),
    );
    r
}

/// Ends the session (server side: the id stops working at once) and clears the cookie.
pub(super) async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = security::session_cookie(&headers) {
        st.sessions.revoke(&id);
    }
    let mut r = Redirect::to(if st.cfg.token.is_some() {
        "/login"
    } else {
        "/"
    })
    .into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&st, "", 0));
    r
}
