//! API tokens (RFC 6750 bearer tokens): with `PRISM_API_TOKEN` set, every write and admin
//! endpoint (`POST /v1/events/…`, anything under `/v1/admin/`) needs
//! `Authorization: Bearer <token>`; with `PRISM_READ_TOKEN` set, so does every other `/v1/`
//! endpoint (the API token is accepted there too). Operations endpoints (`/healthz`, `/readyz`,
//! `/metrics`), the OpenAPI document, `/docs` and the dashboard stay open. Tokens are compared in
//! constant time (`subtle`); a refusal is a 401 with `WWW-Authenticate: Bearer` and a JSON
//! reason, and never says which token was expected.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The token flags (environment variables preferred: a flag shows in `ps`). An empty value
/// means unset.
#[derive(Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Bearer token every write and admin endpoint requires (`POST /v1/events/…`,
    /// `/v1/admin/…`); unset: they are open.
    #[arg(long, env = "PRISM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Bearer token every read endpoint (`GET /v1/…`) requires; the API token is accepted too.
    /// Unset: reads are open.
    #[arg(long, env = "PRISM_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("read_token", &self.read_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: operations endpoints, documentation, the dashboard.
    Open,
    /// The read token (or the API token), when one is set.
    Read,
    /// The API token, when set.
    Write,
}

/// Classifies a request: anything under `/v1/admin/` and every method but `GET`/`HEAD` under
/// `/v1/` is a write; other `/v1/` requests are reads; the rest is open.
pub fn access_of(method: &Method, path: &str) -> Access {
    let api = path == "/v1" || path.starts_with("/v1/");
    if !api {
        return Access::Open;
    }
    if path == "/v1/admin" || path.starts_with("/v1/admin/") || !(method == Method::GET || method == Method::HEAD) {
        Access::Write
    } else {
        Access::Read
    }
}

#[derive(Clone)]
struct Tokens {
    api: Option<Vec<u8>>,
    read: Option<Vec<u8>>,
}

fn set(token: &Option<String>) -> Option<Vec<u8>> {
    token.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(|t| t.as_bytes().to_vec())
}

/// `router` with the tokens of `auth` enforced; unchanged when neither is set.
pub fn protect(router: Router, auth: &AuthArgs) -> Router {
    let tokens = Tokens { api: set(&auth.api_token), read: set(&auth.read_token) };
    if tokens.api.is_none() && tokens.read.is_none() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(tokens, check))
}

fn matches(given: &[u8], token: &Option<Vec<u8>>) -> bool {
    token.as_ref().is_some_and(|t| bool::from(given.ct_eq(t)))
}

async fn check(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let given: Option<Vec<u8>> = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().as_bytes().to_vec());
    let allowed = match access_of(request.method(), request.uri().path()) {
        Access::Open => true,
        Access::Write => tokens.api.is_none() || given.as_deref().is_some_and(|g| matches(g, &tokens.api)),
        Access::Read => tokens.read.is_none() || given.as_deref().is_some_and(|g| matches(g, &tokens.read) || matches(g, &tokens.api)),
    };
    if allowed {
        return next.run(request).await;
    }
    let reason = if given.is_some() { "the bearer token is not valid here" } else { "this endpoint needs Authorization: Bearer <token>" };
    let mut response = ApiError::unauthorized(reason).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"prism\""));
    response
}

/// Declares the bearer scheme in `doc` (`components.securitySchemes.bearer`) and on each
/// operation: required on writes and admin endpoints, optional (`{}` or bearer) on reads.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("PRISM_API_TOKEN for writes and /v1/admin/; PRISM_READ_TOKEN (or the API token) for reads when set"))
                .build(),
        ),
    );
    let bearer = || SecurityRequirement::new("bearer", Vec::<String>::new());
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            op.security = match access_of(&method, path) {
                Access::Open => None,
                Access::Write => Some(vec![bearer()]),
                Access::Read => Some(vec![SecurityRequirement::default(), bearer()]),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(api: Option<&str>, read: Option<&str>) -> Router {
        let router = Router::new()
            .route("/v1/bars/{s}", get(|| async { "bars" }))
            .route("/v1/events/{t}", axum::routing::post(|| async { "posted" }))
            .route("/v1/admin/replays", get(|| async { "replays" }))
            .route("/healthz", get(|| async { "ok" }));
        protect(router, &AuthArgs { api_token: api.map(str::to_string), read_token: read.map(str::to_string) })
    }

    async fn status(app: &Router, method: &str, path: &str, token: Option<&str>) -> StatusCode {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("response").status()
    }

    #[tokio::test]
    async fn writes_and_admin_need_the_api_token_reads_the_read_token() {
        let open = app(None, Some(""));
        assert_eq!(status(&open, "POST", "/v1/events/q", None).await, StatusCode::OK, "no token set: open");
        let a = app(Some("s3cret"), None);
        assert_eq!(status(&a, "POST", "/v1/events/q", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&a, "POST", "/v1/events/q", Some("wrong")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&a, "POST", "/v1/events/q", Some("s3cret")).await, StatusCode::OK);
        assert_eq!(status(&a, "GET", "/v1/admin/replays", None).await, StatusCode::UNAUTHORIZED, "admin reads are admin");
        assert_eq!(status(&a, "GET", "/v1/bars/AAPL", None).await, StatusCode::OK, "reads stay open");
        assert_eq!(status(&a, "GET", "/healthz", None).await, StatusCode::OK);
        let both = app(Some("s3cret"), Some("r34d"));
        assert_eq!(status(&both, "GET", "/v1/bars/AAPL", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&both, "GET", "/v1/bars/AAPL", Some("r34d")).await, StatusCode::OK);
        assert_eq!(status(&both, "GET", "/v1/bars/AAPL", Some("s3cret")).await, StatusCode::OK, "the API token reads too");
        assert_eq!(status(&both, "POST", "/v1/events/q", Some("r34d")).await, StatusCode::UNAUTHORIZED, "the read token cannot write");
        assert_eq!(status(&both, "GET", "/healthz", None).await, StatusCode::OK);
    }

    #[test]
    fn classifies_requests() {
        assert_eq!(access_of(&Method::POST, "/v1/events/prism.quotes"), Access::Write);
        assert_eq!(access_of(&Method::DELETE, "/v1/admin/replays/ohlcv.v2"), Access::Write);
        assert_eq!(access_of(&Method::GET, "/v1/admin/replays"), Access::Write);
        assert_eq!(access_of(&Method::GET, "/v1/changes/public.flights"), Access::Read);
        assert_eq!(access_of(&Method::GET, "/v1administrator"), Access::Open);
        assert_eq!(access_of(&Method::GET, "/metrics"), Access::Open);
        assert_eq!(access_of(&Method::POST, "/v1/admin"), Access::Write);
    }
}
