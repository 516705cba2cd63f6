//! Webhook secrets as first-class, sealed connection data (issues #6 and #7), over real HTTP: set
//! through the API (on create, by rotation, cleared), verified on Zendesk's signed deliveries,
//! kept across a restart on the same SQLite file, written from `deskgate.toml` at start (where
//! the file wins over the API), and never shown: not in an API answer, `/metrics`, the
//! dashboard, the store file or the gateway's log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use deskgate::api::{AppState, app};
use deskgate::clock::SystemClock;
use deskgate::config::Secret;
use deskgate::store::{self, SecretKey, SharedStore};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

#[path = "support/serve.rs"]
mod support_serve;
use support_serve::Serve;

const TOKEN: &str = "webhook-secret-test-token-0123456789";
const KEY: [u8; 32] = [0x5a; 32];
const FIRST: &str = "whsec-FIRST-3c1f9a0d7b";
const SECOND: &str = "whsec-SECOND-8e2b64f1c9";

mod common;
use common::runtime;

fn test_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("webhook-secrets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Zendesk's signing, computed as the platform does

/// `2026-05-04T03:02:01Z` for a Unix time in milliseconds.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn zendesk_body(ticket: u64, event_id: &str, at: &str) -> String {
    json!({
        "type": "zen:event-type:ticket.status_changed", "account_id": 1, "id": event_id, "time": at,
        "zendesk_event_version": "2022-11-06", "subject": format!("zen:ticket:{ticket}"),
        "detail": {"id": ticket.to_string(), "status": "OPEN", "subject": "Printer on fire",
                   "created_at": at, "updated_at": at, "requester_id": "7", "tags": []},
        "event": {"current": "OPEN", "previous": "NEW"}
    })
    .to_string()
}

/// Zendesk's `x-zendesk-webhook-signature`: base64 HMAC-SHA256 of timestamp then body.
fn zendesk_sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// POST a Zendesk delivery for `ticket` to `base/webhooks/{connection}`, signed with `secret`
/// (unsigned with `None`); the status and the answer.
async fn deliver(http: &reqwest::Client, base: &str, connection: &str, ticket: u64, secret: Option<&str>) -> (u16, Value) {
    let ts = rfc3339(now_ms());
    let body = zendesk_body(ticket, &format!("evt-{connection}-{ticket}"), &ts);
    let mut rb = http.post(format!("{base}/webhooks/{connection}")).header("content-type", "application/json");
    if let Some(secret) = secret {
        rb = rb
            .header("x-zendesk-webhook-signature", zendesk_sign(secret, &ts, body.as_bytes()))
            .header("x-zendesk-webhook-signature-timestamp", ts);
    }
    let r = rb.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every byte of the SQLite store: the file, its WAL and anything else beside it.
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("deskgate.sqlite") {
            all.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(all.len() > 4096, "the store file is there");
    all
}

// ---------------------------------------------------------------------------------------------
// An in-process gateway on a SQLite file

struct Server {
    base: String,
    store: SharedStore,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(dir: &Path) -> Self {
        let store = store::open(dir.join("deskgate.sqlite").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.expect("store");
        let state = AppState::new(store.clone(), Arc::new(SystemClock), Secret::new(TOKEN), runtime().adapters().cloned());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(state);
        let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { base, store, http: reqwest::Client::new(), task }
    }

    /// Stop serving and close the store: nothing of this process is left in memory.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        self.store.close().await;
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value, String) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    /// The dashboard's HTML, signed in with the token.
    async fn dashboard(&self) -> String {
        let cookie = format!("{}={}", deskgate::api::SESSION_COOKIE, deskgate::api::session_value(TOKEN, now_ms()));
        let r = self.http.get(format!("{}/", self.base)).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    }
}

/// Create through the API with a secret: a correctly signed delivery is accepted, a wrongly
/// signed or unsigned one refused; a rotation makes the old signature fail and the new one pass;
/// a restart on the same file still verifies (the secret comes from the store); the secret shows
/// nowhere: not in answers, `/v1/status`, `/metrics`, the dashboard or the store's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_secret_verifies_rotates_survives_a_restart_and_never_shows() {
    let dir = test_dir("api");
    let s = Server::start(&dir).await;
    let http = s.http.clone();
    let create = json!({"id": "zd", "platform": "zendesk", "base_url": "https://acme.zendesk.com", "webhook_secret": FIRST});
    let (status, body, text) = s.call(reqwest::Method::POST, "/v1/connections", Some(create)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["webhook_secret_set"].as_bool(), body["allow_unsigned_webhooks"].as_bool()), (Some(true), Some(false)));
    assert!(!text.contains(FIRST), "the create answer holds the secret: {text}");
    // A connection created without one says so.
    let (status, body, _) = s
        .call(reqwest::Method::POST, "/v1/connections", Some(json!({"id": "bare", "platform": "zendesk", "base_url": "https://b.zendesk.com"})))
        .await;
    assert_eq!((status, body["webhook_secret_set"].as_bool()), (201, Some(false)), "{body}");

    assert_eq!(deliver(&http, &s.base, "zd", 1, Some(FIRST)).await.0, 200);
    let (status, body) = deliver(&http, &s.base, "zd", 2, Some("not-the-secret")).await;
    assert_eq!((status, code(&body)), (401, "forged-signature"), "{body}");
    let (status, body) = deliver(&http, &s.base, "zd", 3, None).await;
    assert_eq!((status, code(&body)), (401, "missing-signature"), "{body}");
    let (status, body) = deliver(&http, &s.base, "bare", 4, Some(FIRST)).await;
    assert_eq!((status, code(&body)), (503, "no-secret"), "a connection without a secret: {body}");

    // Rotate: in force at once in this process, the old secret refused.
    let (status, body, text) =
        s.call(reqwest::Method::PUT, "/v1/connections/zd/webhook-secret", Some(json!({"secret": SECOND}))).await;
    assert_eq!((status, body["webhook_secret_set"].as_bool()), (200, Some(true)), "{body}");
    assert!(!text.contains(SECOND), "{text}");
    let (status, body) = deliver(&http, &s.base, "zd", 5, Some(FIRST)).await;
    assert_eq!((status, code(&body)), (401, "forged-signature"), "the old secret after a rotation: {body}");
    assert_eq!(deliver(&http, &s.base, "zd", 6, Some(SECOND)).await.0, 200);

    // Nowhere to be seen.
    let mut seen = String::new();
    for path in ["/v1/connections", "/v1/connections/zd", "/v1/status", "/metrics"] {
        let (status, _, text) = s.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {text}");
        seen.push_str(&text);
    }
    let (_, one, _) = s.call(reqwest::Method::GET, "/v1/connections/zd", None).await;
    assert_eq!((one["webhook_secret_set"].as_bool(), one["allow_unsigned_webhooks"].as_bool()), (Some(true), Some(false)), "{one}");
    let html = s.dashboard().await;
    assert!(html.contains("secret set"), "the dashboard says a secret is set");
    assert!(html.contains("no secret"), "and that `bare` has none");
    seen.push_str(&html);
    for secret in [FIRST, SECOND] {
        assert!(!seen.contains(secret), "{secret} shows in an answer, /metrics or the dashboard");
    }
    s.stop().await;
    let bytes = store_bytes(&dir);
    for secret in [FIRST, SECOND] {
        assert!(!contains(&bytes, secret), "{secret} is in the SQLite file in clear");
    }

    // A new gateway on the same file: nothing in memory, the store has the rotated secret.
    let s = Server::start(&dir).await;
    assert_eq!(deliver(&http, &s.base, "zd", 7, Some(SECOND)).await.0, 200, "the stored secret verifies after a restart");
    let (status, body) = deliver(&http, &s.base, "zd", 8, Some(FIRST)).await;
    assert_eq!((status, code(&body)), (401, "forged-signature"), "{body}");

    // Cleared: signed deliveries cannot be verified any more.
    let (status, body, _) = s.call(reqwest::Method::DELETE, "/v1/connections/zd/webhook-secret", None).await;
    assert_eq!((status, body["webhook_secret_set"].as_bool()), (200, Some(false)), "{body}");
    let (status, body) = deliver(&http, &s.base, "zd", 9, Some(SECOND)).await;
    assert_eq!((status, code(&body)), (503, "no-secret"), "{body}");
    // Unsigned only, through the API.
    let (status, body, _) = s
        .call(reqwest::Method::POST, "/v1/connections", Some(json!({"id": "open", "platform": "zendesk", "base_url": "https://o.zendesk.com", "allow_unsigned_webhooks": true})))
        .await;
    assert_eq!((status, body["webhook_secret_set"].as_bool(), body["allow_unsigned_webhooks"].as_bool()), (201, Some(false), Some(true)), "{body}");
    assert_eq!(deliver(&http, &s.base, "open", 10, None).await.0, 200);
    // Deleting the connection erases the secret with the credentials.
    s.call(reqwest::Method::PUT, "/v1/connections/open/webhook-secret", Some(json!({"secret": FIRST}))).await;
    assert!(s.store.get_webhook_secret("open").await.unwrap().is_some());
    assert_eq!(s.call(reqwest::Method::DELETE, "/v1/connections/open", None).await.0, 200);
    assert_eq!(s.store.get_webhook_secret("open").await.unwrap(), None);
    assert_eq!(deliver(&http, &s.base, "open", 11, Some(FIRST)).await.0, 404);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Empty or whitespace secrets are refused with a stable code and a message naming the field and
/// the fix (and nothing is created); unknown connections are 404 like on every other route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_secrets_and_unknown_connections_are_refused() {
    let dir = test_dir("validation");
    let s = Server::start(&dir).await;
    for bad in ["", "   ", "\t\n"] {
        let create = json!({"id": "zd", "platform": "zendesk", "base_url": "https://a.zendesk.com", "webhook_secret": bad});
        let (status, body, _) = s.call(reqwest::Method::POST, "/v1/connections", Some(create)).await;
        assert_eq!((status, code(&body)), (400, "invalid_webhook_secret"), "{bad:?}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("`webhook_secret`") && msg.contains("signing secret"), "{msg}");
    }
    assert_eq!(s.call(reqwest::Method::GET, "/v1/connections/zd", None).await.0, 404, "a refused create creates nothing");
    let long = "x".repeat(2000);
    let (status, body, text) = s
        .call(reqwest::Method::POST, "/v1/connections", Some(json!({"id": "zd", "platform": "zendesk", "base_url": "https://a.zendesk.com", "webhook_secret": long})))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_webhook_secret"), "{body}");
    assert!(!text.contains(&long), "the message never repeats the value");

    let (status, _, _) = s.call(reqwest::Method::POST, "/v1/connections", Some(json!({"id": "zd", "platform": "zendesk", "base_url": "https://a.zendesk.com"}))).await;
    assert_eq!(status, 201);
    for bad in ["", "  "] {
        let (status, body, _) = s.call(reqwest::Method::PUT, "/v1/connections/zd/webhook-secret", Some(json!({"secret": bad}))).await;
        assert_eq!((status, code(&body)), (400, "invalid_webhook_secret"), "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("`secret`") && msg.contains("DELETE /v1/connections/zd/webhook-secret"), "{msg}");
    }
    let (status, body, _) = s.call(reqwest::Method::PUT, "/v1/connections/zd/webhook-secret", Some(json!({"allow_unsigned": true}))).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"), "the secret is required: {body}");
    let (status, body, _) = s.call(reqwest::Method::PUT, "/v1/connections/zd/webhook-secret", Some(json!({"secret": FIRST, "colour": 1}))).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"), "{body}");
    assert!(s.store.get_webhook_secret("zd").await.unwrap().is_none(), "nothing was stored");
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let (status, body, _) = s.call(method.clone(), "/v1/connections/nope/webhook-secret", Some(json!({"secret": FIRST}))).await;
        assert_eq!((status, code(&body)), (404, "connection_not_found"), "{method}: {body}");
    }
    let r = s.http.put(format!("{}/v1/connections/zd/webhook-secret", s.base)).json(&json!({"secret": FIRST})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "the route needs the token");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The secret cache: the process that writes a secret uses it at once; another process sharing
/// the store (a replica) keeps verifying with its cached copy for at most the cache's TTL, then
/// reads the new one. An in-memory override wins until a stored write replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_another_replicas_rotation_within_the_cache_ttl() {
    use deskgate::ingest::webhook::{StoreRoutes, WebhookSecret};
    let dir = test_dir("cache");
    let store = store::open(dir.join("deskgate.sqlite").to_str().unwrap(), SecretKey::from_bytes(KEY)).await.unwrap();
    store.create_connection(&store::NewConnection::new("zd", "zendesk", "zd"), 1).await.unwrap();
    // Long enough that a loaded machine does not outrun it between two reads.
    let ttl = Duration::from_secs(2);
    let here = StoreRoutes::new(store.clone(), std::iter::empty()).with_cache_ttl(ttl);
    let there = StoreRoutes::new(store.clone(), std::iter::empty()).with_cache_ttl(ttl);
    let secret = |r: Option<WebhookSecret>| r.map(|s| String::from_utf8(s.secret).unwrap());

    assert_eq!(secret(there.secret("zd").await.unwrap()), None, "no secret yet (and that is cached too)");
    here.store_secret("zd", Some(FIRST.as_bytes()), false, 2).await.unwrap();
    assert_eq!(secret(here.secret("zd").await.unwrap()).as_deref(), Some(FIRST), "the writer uses it at once");
    let stale = secret(there.secret("zd").await.unwrap());
    assert_eq!(stale, None, "the other replica is within its TTL");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(secret(there.secret("zd").await.unwrap()).as_deref(), Some(FIRST), "and follows once it has passed");
    assert_eq!(secret(here.secret("zd").await.unwrap()).as_deref(), Some(FIRST), "read again, cached afresh");

    there.store_secret("zd", Some(SECOND.as_bytes()), true, 3).await.unwrap();
    assert_eq!(secret(there.secret("zd").await.unwrap()).as_deref(), Some(SECOND));
    assert_eq!(secret(here.secret("zd").await.unwrap()).as_deref(), Some(FIRST), "cached");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let s = here.secret("zd").await.unwrap().unwrap();
    assert_eq!((s.secret.as_slice(), s.allow_unsigned), (SECOND.as_bytes(), true));
    let signing = here.signing("zd").await.unwrap();
    assert!(signing.secret_set && signing.allow_unsigned, "{signing:?}");

    // An in-memory override (tests, the demo) wins until a stored write replaces it.
    here.set_secret("zd", WebhookSecret { secret: b"in-memory".to_vec(), allow_unsigned: false });
    assert_eq!(secret(here.secret("zd").await.unwrap()).as_deref(), Some("in-memory"));
    here.store_secret("zd", Some(FIRST.as_bytes()), false, 4).await.unwrap();
    assert_eq!(secret(here.secret("zd").await.unwrap()).as_deref(), Some(FIRST));
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// `deskgate serve` and `deskgate connect`, the real binary

async fn wait_healthy(http: &reqwest::Client, s: &Serve, dir: &Path) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(s.url("/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        let log = std::fs::read_to_string(dir.join(format!("{}.log", s.id))).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(120), "the gateway did not start; its log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `deskgate connect ARGS` against `s` with `env`.
fn connect(s: &Serve, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deskgate"));
    cmd.arg("connect").args(args).args(["--url", &s.url("")]).env("DESKGATE_API_TOKEN", TOKEN).env_remove("DESKGATE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("deskgate connect")
}

/// A secret in `deskgate.toml` is stored sealed at start and wins over one set through the API at
/// the next start; a connection managed through the API (here with `deskgate connect`, the secret
/// read from the environment) keeps its secret across restarts. No secret reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_secrets_are_stored_at_start_and_win_over_the_api_while_api_secrets_persist() {
    const CONFIGURED: &str = "whsec-CONFIGURED-71d0e5";
    const CLI: &str = "whsec-CLI-ENV-2a94bc";
    let dir = test_dir("serve");
    let http = reqwest::Client::new();
    let config = format!(
        "store = \"sqlite://{}\"\n[connections.cfg]\nplatform = \"zendesk\"\nbase_url = \"http://127.0.0.1:9\"\nwebhook_secret = \"{CONFIGURED}\"\n",
        dir.join("deskgate.sqlite").display()
    );
    let mut first = Serve::start(&dir, "first", &config, TOKEN);
    wait_healthy(&http, &first, &dir).await;
    assert_eq!(deliver(&http, &first.url(""), "cfg", 1, Some(CONFIGURED)).await.0, 200, "the configured secret verifies");

    // The API rotates the configured connection's secret: in force until the next start.
    let r = http
        .put(first.url("/v1/connections/cfg/webhook-secret"))
        .bearer_auth(TOKEN)
        .json(&json!({"secret": SECOND}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(deliver(&http, &first.url(""), "cfg", 2, Some(SECOND)).await.0, 200);
    assert_eq!(deliver(&http, &first.url(""), "cfg", 3, Some(CONFIGURED)).await.0, 401);

    // `deskgate connect` with the secret from the environment, never on the command line.
    let out = connect(
        &first,
        &["api", "--platform", "zendesk", "--base-url", "https://api.zendesk.com", "--webhook-secret-env", "MY_WH_SECRET"],
        &[("MY_WH_SECRET", FIRST)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("connected api") && stdout.contains("signature verified with the stored secret"), "{stdout}");
    assert!(!stdout.contains(FIRST), "{stdout}");
    assert_eq!(deliver(&http, &first.url(""), "api", 4, Some(FIRST)).await.0, 200);
    // A variable that is not set is an error naming the flag and the fix; nothing is sent.
    let out = connect(&first, &["api", "--rotate-webhook-secret", "--webhook-secret-env", "UNSET_WH_SECRET_VAR"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--webhook-secret-env UNSET_WH_SECRET_VAR") && stderr.contains("is not set"), "{stderr}");
    // Rotate with the CLI, --json gives the API's answer.
    let out = connect(&first, &["api", "--rotate-webhook-secret", "--webhook-secret-env", "NEW_WH", "--json"], &[("NEW_WH", CLI)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((answer["id"].as_str(), answer["webhook_secret_set"].as_bool()), (Some("api"), Some(true)), "{answer}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(CLI));
    assert_eq!(deliver(&http, &first.url(""), "api", 5, Some(FIRST)).await.0, 401);
    assert_eq!(deliver(&http, &first.url(""), "api", 6, Some(CLI)).await.0, 200);
    first.kill();

    // Restart on the same file: the file's secret wins for `cfg`, the API's stays for `api`.
    let second = Serve::start(&dir, "second", &config, TOKEN);
    wait_healthy(&http, &second, &dir).await;
    assert_eq!(deliver(&http, &second.url(""), "cfg", 7, Some(CONFIGURED)).await.0, 200, "deskgate.toml wins at start");
    assert_eq!(deliver(&http, &second.url(""), "cfg", 8, Some(SECOND)).await.0, 401);
    assert_eq!(deliver(&http, &second.url(""), "api", 9, Some(CLI)).await.0, 200, "the API's secret survives the restart");

    // Clearing with the CLI: human output says what it means.
    let out = connect(&second, &["api", "--clear-webhook-secret"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("cleared the webhook secret of api") && stdout.contains("NO SECRET"), "{stdout}");
    assert_eq!(deliver(&http, &second.url(""), "api", 10, Some(CLI)).await.0, 503);
    drop(second);

    let bytes = store_bytes(&dir);
    let mut logs = Vec::new();
    for id in ["first", "second"] {
        logs.extend(std::fs::read(dir.join(format!("{id}.log"))).unwrap());
    }
    for secret in [CONFIGURED, SECOND, FIRST, CLI] {
        assert!(!contains(&bytes, secret), "{secret} is in the store in clear");
        assert!(!contains(&logs, secret), "{secret} is in the gateway's log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
