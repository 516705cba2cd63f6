//! Runs one operation against a platform: the adapter plans, the host sends, the adapter
//! interprets, until the operation is done.
//!
//! This is the only place where an adapter's request meets the network, so it is also where the
//! host adds what adapters must never touch: the base URL, the credential, and the idempotency key.
//! Policies hook in around each request through [`StepHooks`] (budgets wait before sending and
//! read the rate headers after; the outbox records "sent" before the bytes leave).
//!
//! # Ambiguity
//!
//! A transport error is classified by whether the request may have reached the platform:
//! a refused connection never did ([`Transport::NotSent`]), but a timeout or a reset after the
//! request was written may have been applied ([`Transport::Ambiguous`]). Writes that end
//! ambiguous are resolved by read-back before any retry; that decision belongs to the outbox,
//! not here.

use crate::bindings::{AuthScheme, Connection, Failure, HttpRequest, HttpResponse, Method, Operation, Outcome, Step};
use crate::runtime::{Adapter, CallError};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The most requests one operation may take (pagination is driven page by page by the caller, so
/// this only bounds probes and multi-part writes).
pub const MAX_STEPS: usize = 64;

/// A credential, as the host holds it. Never passed to an adapter.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Fields for a Basic-auth template (for example `email` and `token`, or `api_key`).
    Basic(BTreeMap<String, String>),
    /// A bearer token (non-expiring access token, or an OAuth access token).
    Bearer(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs: show only the field names.
        match self {
            Credential::Basic(fields) => f.debug_tuple("Basic").field(&fields.keys().collect::<Vec<_>>()).finish(),
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Why the credential cannot be turned into an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The adapter declares no scheme that fits the credential.
    #[error("the adapter accepts {accepted}, but the connection has a {given} credential; configure one of the accepted kinds")]
    Mismatch {
        /// What the adapter accepts.
        accepted: String,
        /// What was given.
        given: &'static str,
    },
    /// A template needs a field the credential lacks.
    #[error("the credential lacks the field `{0}` that the adapter's Basic-auth template needs")]
    MissingField(String),
}

/// Build the `Authorization` header value for `credential` under the adapter's auth schemes.
///
/// # Errors
/// [`AuthError`] naming what is missing.
pub fn authorization(schemes: &[AuthScheme], credential: &Credential) -> Result<String, AuthError> {
    match credential {
        Credential::Bearer(token) => {
            if schemes.iter().any(|s| matches!(s, AuthScheme::Bearer | AuthScheme::Oauth2(_))) {
                Ok(format!("Bearer {token}"))
            } else {
                Err(AuthError::Mismatch { accepted: describe(schemes), given: "bearer" })
            }
        }
        Credential::Basic(fields) => {
            let Some(AuthScheme::Basic(t)) = schemes.iter().find(|s| matches!(s, AuthScheme::Basic(_))) else {
                return Err(AuthError::Mismatch { accepted: describe(schemes), given: "basic" });
            };
            let user = fill(&t.username, fields)?;
            let pass = fill(&t.password, fields)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            Ok(format!("Basic {encoded}"))
        }
    }
}

fn describe(schemes: &[AuthScheme]) -> String {
    let names: Vec<&str> = schemes
        .iter()
        .map(|s| match s {
            AuthScheme::Basic(_) => "basic",
            AuthScheme::Bearer => "bearer",
            AuthScheme::Oauth2(_) => "oauth2",
        })
        .collect();
    names.join(" or ")
}

fn fill(template: &str, fields: &BTreeMap<String, String>) -> Result<String, AuthError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &rest[open + 1..open + close];
        out.push_str(fields.get(name).ok_or_else(|| AuthError::MissingField(name.to_string()))?);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `Authorization` header a connection's requests carry, shared by every [`Target`] cloned
/// from one credential manager, and the fence that keeps a token refresh from racing them.
///
/// # Why a fence?
///
/// A platform that rotates refresh tokens (Zendesk) deletes the old access token the moment it
/// answers the refresh. A request that left with the old token a millisecond earlier, or that
/// was built with it and is about to leave, is then refused with a 401: not a failure of the
/// credential, only of timing, but a 401 all the same (resent, counted, logged). So every
/// request holds the fence shared ([`Driver::send`], from reading the header to the end of the
/// response), and a refresh takes it exclusively ([`Authorization::exclusive`]) before it asks
/// for the new pair: it waits for the requests in flight to finish, holds new ones back while
/// the token endpoint answers, and releases them with the new header already in place.
///
/// A [`Authorization::fixed`] header (built from a literal, for a one-off check of
/// credentials not stored yet) has a fence of its own that nothing ever takes exclusively.
#[derive(Clone)]
pub struct Authorization {
    inner: std::sync::Arc<AuthCell>,
}

struct AuthCell {
    value: std::sync::RwLock<std::sync::Arc<str>>,
    fence: tokio::sync::RwLock<()>,
}

/// Held by a refresh while it replaces the header: no request of the connection is in flight.
pub type RefreshFence<'a> = tokio::sync::RwLockWriteGuard<'a, ()>;

impl Authorization {
    /// A header of its own, not shared with any credential manager.
    pub fn fixed(value: impl Into<String>) -> Self {
        let value: String = value.into();
        Self { inner: std::sync::Arc::new(AuthCell { value: std::sync::RwLock::new(value.into()), fence: tokio::sync::RwLock::new(()) }) }
    }

    /// The header value requests go out with now.
    pub fn current(&self) -> std::sync::Arc<str> {
        self.inner.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the header for every target that shares it.
    pub fn set(&self, value: &str) {
        let mut v = self.inner.value.write().unwrap_or_else(|e| e.into_inner());
        if **v != *value {
            *v = value.into();
        }
    }

    /// Whether `other` is this very header (shared), not just an equal value.
    pub fn shares(&self, other: &Authorization) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Wait, at most `within`, until no request holds the header, then hold new ones back until
    /// the returned guard drops. `None` when requests were still in flight at the bound (a
    /// request stuck until its timeout must not stall every other one behind a refresh): the
    /// caller then refreshes unfenced, and such a request's 401 is resent with the new token.
    pub async fn exclusive(&self, within: Duration) -> Option<RefreshFence<'_>> {
        tokio::time::timeout(within, self.inner.fence.write()).await.ok()
    }

    /// Held by one request from reading the header to the end of its response.
    async fn in_use(&self) -> (tokio::sync::RwLockReadGuard<'_, ()>, std::sync::Arc<str>) {
        let guard = self.inner.fence.read().await;
        (guard, self.current())
    }
}

impl From<String> for Authorization {
    fn from(value: String) -> Self {
        Self::fixed(value)
    }
}

impl From<&str> for Authorization {
    fn from(value: &str) -> Self {
        Self::fixed(value)
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Basic dXNlcjpwYXNz` -> `Basic ***`: the scheme helps debugging, the rest is the secret.
        let value = self.current();
        let scheme = value.split_once(' ').map_or("", |(s, _)| s);
        if value.is_empty() {
            f.write_str("\"\"")
        } else if scheme.is_empty() {
            f.write_str("\"***\"")
        } else {
            write!(f, "\"{scheme} ***\"")
        }
    }
}

/// Where and as whom an operation runs. Its `Debug` shows the authorization's scheme only, never
/// the credential.
#[derive(Clone)]
pub struct Target {
    /// The platform's base URL, without a trailing slash (for example `https://acme.zendesk.com`).
    pub base_url: String,
    /// The `Authorization` header (see [`authorization`]); shared with the connection's
    /// credential manager when the target came from it, so a refresh reaches it.
    pub authorization: Authorization,
    /// What the adapter is told about the connection.
    pub connection: Connection,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let authorization = &self.authorization;
        f.debug_struct("Target")
            .field("base_url", &crate::store::redact_url(&self.base_url))
            .field("authorization", &authorization)
            .field("connection", &self.connection)
            .finish()
    }
}

/// A transport failure, classified by whether the request may have been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The request never left (connection refused, DNS, TLS handshake): safe to retry.
    NotSent(String),
    /// The request may have been applied (timeout or reset after sending): read back before retrying.
    Ambiguous(String),
}

/// Why an operation did not produce an outcome or a platform failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveError {
    /// The adapter misbehaved (trap, deadline, memory).
    Adapter(CallError),
    /// The network failed.
    Transport {
        /// Which request (0-based) of the operation.
        step: usize,
        /// What happened.
        error: Transport,
    },
    /// The adapter kept asking for requests.
    TooManySteps,
    /// A hook refused to let the request go (for example, the connection was suspended).
    Refused(String),
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Adapter(e) => e.fmt(f),
            DriveError::Transport { step, error: Transport::NotSent(m) } => {
                write!(f, "request {step} could not be sent: {m}")
            }
            DriveError::Transport { step, error: Transport::Ambiguous(m) } => {
                write!(f, "request {step} may or may not have been applied: {m}")
            }
            DriveError::TooManySteps => write!(f, "the adapter asked for more than {MAX_STEPS} requests in one operation"),
            DriveError::Refused(m) => write!(f, "not sent: {m}"),
        }
    }
}

impl std::error::Error for DriveError {}

/// Policy hooks around each request of an operation.
pub trait StepHooks: Send {
    /// Called before a request is sent; waiting here is back-pressure (budgets). Returning an
    /// error stops the operation without sending.
    fn before_send(&mut self, _request: &HttpRequest) -> impl std::future::Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
    /// Called with every response (including errors), before the adapter interprets it.
    fn after_response(&mut self, _request: &HttpRequest, _response: &HttpResponse) {}
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;
impl StepHooks for NoHooks {}

/// Sends adapters' requests over HTTP(S).
#[derive(Debug, Clone)]
pub struct Driver {
    client: reqwest::Client,
}

/// Timeouts for the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    /// Time to establish a connection (a request that times out here was never sent).
    pub connect_timeout: Duration,
    /// Time for the whole request and response.
    pub request_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(30) }
    }
}

/// The result of a finished operation: an outcome, or the platform's documented failure.
pub type OpResult = Result<Outcome, Failure>;

impl Driver {
    /// A driver with its own connection pool.
    ///
    /// # Errors
    /// When the TLS stack cannot initialize.
    pub fn new(config: DriverConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deskgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Run `op` to completion.
    ///
    /// `idempotency_key` is sent in the header the adapter names, on requests that ask for it.
    ///
    /// # Errors
    /// [`DriveError`] when no outcome could be had; platform failures are `Ok(Err(failure))`.
    pub async fn execute(
        &self,
        adapter: &Adapter,
        target: &Target,
        op: &Operation,
        idempotency_key: Option<&str>,
        hooks: &mut impl StepHooks,
    ) -> Result<OpResult, DriveError> {
        let conn = &target.connection;
        let mut step = adapter.start(conn, op).map_err(DriveError::Adapter)?;
        for n in 0..MAX_STEPS {
            let pending = match step {
                Ok(Step::Done(outcome)) => return Ok(Ok(outcome)),
                Err(failure) => return Ok(Err(failure)),
                Ok(Step::Send(p)) => p,
            };
            hooks.before_send(&pending.request).await.map_err(DriveError::Refused)?;
            let response = self
                .send(target, &pending.request, idempotency_key)
                .await
                .map_err(|error| DriveError::Transport { step: n, error })?;
            hooks.after_response(&pending.request, &response);
            step = adapter.resume(conn, op, &pending.state, &response).map_err(DriveError::Adapter)?;
        }
        Err(DriveError::TooManySteps)
    }

    /// Send one request as the adapter planned it, adding base URL, auth and idempotency key.
    ///
    /// # Errors
    /// [`Transport`] saying whether the request may have been applied.
    pub async fn send(
        &self,
        target: &Target,
        req: &HttpRequest,
        idempotency_key: Option<&str>,
    ) -> Result<HttpResponse, Transport> {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let url = format!("{}{}", target.base_url.trim_end_matches('/'), req.path);
        // The fence is held until the response is read: a refresh waits for this request.
        let (_in_use, authorization) = target.authorization.in_use().await;
        let mut builder = self.client.request(method, &url).header("authorization", &*authorization);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let (Some(name), Some(key)) = (&req.idempotency_header, idempotency_key) {
            builder = builder.header(name, key);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let resp = builder.send().await.map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp.bytes().await.map_err(classify_transport)?.to_vec();
        Ok(HttpResponse { status, headers, body })
    }
}

fn classify_transport(e: reqwest::Error) -> Transport {
    // A connect failure (including a connect timeout) means nothing reached the platform.
    if e.is_connect() || e.is_builder() {
        Transport::NotSent(format!("{e:#}"))
    } else {
        Transport::Ambiguous(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{BasicAuth, Oauth2Auth};

    fn basic(user: &str, pass: &str, fields: &[&str]) -> AuthScheme {
        AuthScheme::Basic(BasicAuth {
            username: user.into(),
            password: pass.into(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn fields(pairs: &[(&str, &str)]) -> Credential {
        Credential::Basic(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn zendesk_api_token_header() {
        let schemes = [basic("{email}/token", "{token}", &["email", "token"])];
        let h = authorization(&schemes, &fields(&[("email", "jdoe@example.com"), ("token", "6wiIBWbG")])).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(h.trim_start_matches("Basic ")).unwrap();
        assert_eq!(decoded, b"jdoe@example.com/token:6wiIBWbG");
    }

    #[test]
    fn freshdesk_key_with_dummy_password() {
        let schemes = [basic("{api_key}", "X", &["api_key"])];
        let h = authorization(&schemes, &fields(&[("api_key", "abc")])).unwrap();
        assert_eq!(h, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("abc:X")));
    }

    #[test]
    fn missing_field_is_named() {
        let schemes = [basic("{email}/token", "{token}", &["email", "token"])];
        let e = authorization(&schemes, &fields(&[("email", "a@b")])).unwrap_err();
        assert_eq!(e, AuthError::MissingField("token".into()));
        assert!(e.to_string().contains("`token`"));
    }

    #[test]
    fn bearer_needs_a_bearer_scheme() {
        let oauth = AuthScheme::Oauth2(Oauth2Auth { token_path: "/oauth/tokens".into(), rotates_refresh_tokens: true, default_lifetime_secs: None });
        assert_eq!(authorization(&[oauth], &Credential::Bearer("t".into())).unwrap(), "Bearer t");
        let e = authorization(&[basic("{api_key}", "X", &["api_key"])], &Credential::Bearer("t".into())).unwrap_err();
        assert!(matches!(e, AuthError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn a_target_never_prints_its_credential() {
        let connection = Connection { id: "acme".into(), plan: "team".into(), agent_id: None, settings: vec![] };
        let t = Target {
            base_url: "https://bot:url-pass@acme.example".into(),
            authorization: "Basic dXNlcjpzZWNyZXQtdG9rZW4=".into(),
            connection: connection.clone(),
        };
        let shown = format!("{t:?} {t:#?}");
        assert!(!shown.contains("dXNlcjpzZWNyZXQtdG9rZW4="), "{shown}");
        assert!(!shown.contains("url-pass"), "{shown}");
        assert!(shown.contains("Basic ***") && shown.contains("acme.example") && shown.contains("acme"), "{shown}");
        let bare = Target { base_url: "https://x".into(), authorization: "opaque-token".into(), connection };
        assert!(!format!("{bare:?}").contains("opaque-token"));
    }

    /// The refresh fence (see [`Authorization`]): a refresh gets it only once no request holds
    /// the header, gives up at its bound while one does, and requests that leave while it is
    /// held wait and go out with the header the refresh put in place.
    #[tokio::test]
    async fn a_refresh_fences_the_requests_of_its_header() {
        let a = Authorization::fixed("Bearer old");
        let shared = a.clone();
        assert!(shared.shares(&a) && !Authorization::fixed("Bearer old").shares(&a));
        let (in_flight, sent) = shared.in_use().await;
        assert_eq!(&*sent, "Bearer old");
        assert!(a.exclusive(Duration::ZERO).await.is_none(), "a request is in flight: the bound is reached");
        drop(in_flight);
        let fence = a.exclusive(Duration::ZERO).await.expect("nothing in flight");
        a.set("Bearer new");
        let leaving = tokio::spawn(async move {
            let (_g, v) = shared.in_use().await;
            v.to_string()
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!leaving.is_finished(), "held while the refresh runs");
        drop(fence);
        assert_eq!(leaving.await.unwrap(), "Bearer new");
        assert_eq!(format!("{a:?}"), "\"Bearer ***\"");
    }

    #[test]
    fn credentials_never_print() {
        let c = fields(&[("api_key", "very-secret")]);
        assert!(!format!("{c:?}").contains("very-secret"));
        assert!(!format!("{:?}", Credential::Bearer("tok-secret".into())).contains("tok-secret"));
    }
}
