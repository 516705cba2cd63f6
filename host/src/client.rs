//! A client of a running gateway's HTTP API: what the operator's CLI verbs (`deskgate connect`,
//! `probe`, `status`, `alerts`, `suspend`, `resume`) are built on.
//!
//! Every call sends the bearer token, and every failure becomes a [`ClientError`] that says what
//! to do: the API's own `{"error": {"code", "message"}}` is kept as it is (code and message), an
//! unreachable gateway names the URL and where the URL comes from.

use std::time::Duration;

use serde_json::Value;

/// Where the CLI finds the gateway when neither `--url` nor `DESKGATE_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway answered with an API error.
    #[error("{code} (HTTP {status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's stable error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The gateway could not be reached.
    #[error("cannot reach the gateway at {url}: {detail}. Is `deskgate serve` running there? Set --url or DESKGATE_URL")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// The gateway answered something that is not the API's JSON.
    #[error("unexpected answer from {url} (HTTP {status}): {detail}. Is --url pointing at a deskgate gateway?")]
    BadResponse {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The client was configured wrongly (no token, a bad URL).
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The API's error code, if the gateway answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client bound to one gateway and token.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl GatewayClient {
    /// A client for the gateway at `url` (`http(s)://host:port`), authenticating with `token`.
    ///
    /// # Errors
    /// [`ClientError::Usage`] for an empty token or a URL that is not http(s).
    pub fn new(url: &str, token: &str) -> Result<Self, ClientError> {
        if token.trim().is_empty() {
            return Err(ClientError::Usage(
                "no API token: set DESKGATE_API_TOKEN (or pass --token) to the gateway's API token".into(),
            ));
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| ClientError::Usage(format!("--url {url:?} is not a URL ({e}): use e.g. {DEFAULT_URL}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ClientError::Usage(format!("--url {url:?} must be an http(s) URL with a host, e.g. {DEFAULT_URL}")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { base: url.trim_end_matches('/').to_owned(), token: token.trim().to_owned(), http })
    }

    /// The gateway's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Call `method path` with an optional JSON body; the answer's JSON on success.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        })?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| ClientError::BadResponse { url: url.clone(), status, detail: e.to_string() })?;
        let v: Value = serde_json::from_str(&text).map_err(|_| ClientError::BadResponse {
            url: url.clone(),
            status,
            detail: format!("not JSON: {}", text.chars().take(120).collect::<String>()),
        })?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        match (v["error"]["code"].as_str(), v["error"]["message"].as_str()) {
            (Some(code), Some(message)) => Err(ClientError::Api { status, code: code.to_owned(), message: message.to_owned() }),
            _ => Err(ClientError::BadResponse { url, status, detail: format!("an error without code and message: {v}") }),
        }
    }

    /// `GET path`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with `body`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// Percent-encode one path segment (a connection id from the command line).
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}
