//! The HTTP API over real HTTP (`127.0.0.1:0`) with a temporary SQLite store (issue #7).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deskgate::api::{AppState, OPENAPI, ROUTES, app};
use deskgate::clock::SystemClock;
use deskgate::config::Secret;
use deskgate::ingest::Candidate;
use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
use deskgate::store::{self, NewAlert, NewEvent, SecretKey};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789abcdef";

fn runtime() -> &'static AdapterRuntime {
    static RT: OnceLock<AdapterRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let config = RuntimeConfig {
            cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("api-compile-cache")),
            ..RuntimeConfig::default()
        };
        let mut rt = AdapterRuntime::new(config).expect("runtime");
        rt.load_builtin().expect("built-in adapters");
        rt
    })
}

struct Server {
    base: String,
    state: AppState,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("deskgate-api-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = store::open(dir.join("deskgate.sqlite").to_str().unwrap(), SecretKey::from_bytes([9; 32]))
            .await
            .expect("store");
        let state = AppState::new(store, Arc::new(SystemClock), Secret::new(TOKEN), runtime().adapters().cloned());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = app(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { base, state, http: reqwest::Client::new() }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    async fn create_connection(&self, id: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/connections",
                json!({
                    "id": id,
                    "platform": "zendesk",
                    "base_url": "https://acme.zendesk.com",
                    "plan": "team",
                    "credentials": {"scheme": "api_key", "fields": {"email": "bot@acme.com", "api_token": "s3cret-token"}}
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn assert_error(body: &Value) {
    assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "malformed error: {body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn the_api_requires_the_bearer_token_but_health_and_webhooks_do_not() {
    let s = Server::start().await;
    let url = format!("{}/v1/connections", s.base);
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = r.json().await.unwrap();
    assert_error(&body);
    assert_eq!(code(&body), "unauthorized");
    let body: Value = s.http.get(&url).bearer_auth("test-token-0123456789abcdeX").send().await.unwrap().json().await.unwrap();
    assert_eq!(code(&body), "unauthorized");
    let r = s.http.get(&url).header("authorization", "Basic dGVzdA==").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "metrics name connections: token required");
    assert_eq!(s.get("/v1/connections").await.0, 200);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let r = s.http.get(format!("{}{open}", s.base)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{open}");
    }
    // Webhooks authenticate by signature: no bearer token, and the refusal is the ingest's own.
    let r = s.http.post(format!("{}/webhooks/nobody", s.base)).body("{}").send().await.unwrap();
    assert_ne!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn errors_are_json_with_stable_codes() {
    let s = Server::start().await;
    let (status, body) = s.get("/v1/connections/nope").await;
    assert_eq!((status, code(&body)), (404, "connection_not_found"));
    assert_error(&body);
    let (status, body) = s
        .send(s.req(reqwest::Method::POST, "/v1/connections").header("content-type", "application/json").body("{not json"))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert_error(&body);
    let (status, body) = s.post("/v1/connections", json!({"id": "a", "platform": "zendesk", "base_url": "https://a.b", "colour": 1})).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"), "unknown fields are refused");
    assert!(body["error"]["message"].as_str().unwrap().contains("colour"), "{body}");
    let (status, body) = s.post("/v1/connections", json!({"id": "a", "platform": "zendeks", "base_url": "https://a.b"})).await;
    assert_eq!((status, code(&body)), (400, "unknown_platform"));
    assert!(body["error"]["message"].as_str().unwrap().contains("zendesk"), "{body}");
    let (status, body) = s.post("/v1/connections", json!({"id": "a", "platform": "zendesk", "base_url": "acme"})).await;
    assert_eq!((status, code(&body)), (400, "invalid_connection"));
    // A plan the adapter does not declare would leave the connection without a budget, never
    // running: refused, naming the plans that exist.
    let (status, body) = s.post("/v1/connections", json!({"id": "a", "platform": "zendesk", "base_url": "https://a.b", "plan": "gold"})).await;
    assert_eq!((status, code(&body)), (400, "unknown_plan"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`gold`") && message.contains("team"), "{body}");
    assert_error(&body);
    let (status, _) = s.get("/v1/connections/a").await;
    assert_eq!(status, 404, "a refused connection is not created");
    // URLs in errors hide their password and query values.
    let (status, body) = s
        .post("/v1/connections", json!({"id": "a", "platform": "zendesk", "base_url": "ftp://bot:hunter2@a.b/?token=t0ps3cret"}))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_connection"));
    assert!(!body.to_string().contains("hunter2") && !body.to_string().contains("t0ps3cret"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("bot:***@a.b"), "{body}");
    let (status, body) = s.get("/v1/actions/abc").await;
    assert_eq!((status, code(&body)), (400, "invalid_path"));
    let (status, body) = s.get("/v1/actions/999").await;
    assert_eq!((status, code(&body)), (404, "action_not_found"));
    let (status, body) = s.get("/v1/events?limit=many").await;
    assert_eq!((status, code(&body)), (400, "invalid_query"));
    let (status, body) = s.get("/no/such/route").await;
    assert_eq!((status, code(&body)), (404, "route_not_found"));
    let (status, body) = s.send(s.req(reqwest::Method::PUT, "/v1/connections")).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
    s.create_connection("acme").await;
    let (status, body) = s
        .post("/v1/connections/acme/actions", json!({"ticket_id": "1", "action": {"type": "explode"}}))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    let (status, body) = s
        .post("/v1/connections/acme/actions", json!({"ticket_id": "1", "action": {"type": "assign"}}))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_action"));
    let (status, body) = s
        .post("/v1/connections/ghost/actions", json!({"ticket_id": "1", "action": {"type": "reply", "body": "hi"}}))
        .await;
    assert_eq!((status, code(&body)), (404, "connection_not_found"));
    let (status, body) = s.post("/v1/connections", json!({"id": "acme", "platform": "zendesk", "base_url": "https://a.b"})).await;
    assert_eq!((status, code(&body)), (409, "connection_exists"));
}

#[tokio::test]
async fn connections_store_credentials_but_never_show_them() {
    let s = Server::start().await;
    let created = s.create_connection("acme").await;
    assert_eq!(created["state"], "pending_probe");
    assert_eq!(created["has_credentials"], true);
    assert!(!created.to_string().contains("s3cret-token"));
    let (status, got) = s.get("/v1/connections/acme").await;
    assert_eq!(status, 200);
    assert_eq!(got["credentials"]["scheme"], "api_key");
    assert_eq!(got["credentials"]["version"], 1);
    assert_eq!(got["settings"]["base_url"], "https://acme.zendesk.com");
    assert_eq!(got["inbox_pending"], 0);
    assert!(!got.to_string().contains("s3cret-token"), "{got}");
    let cred = s.state.store().get_credential("acme").await.unwrap().expect("stored");
    assert!(matches!(cred.secret, store::CredentialSecret::ApiKey { .. }));
    let (_, list) = s.get("/v1/connections").await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);
    let (status, deleted) = s.send(s.req(reqwest::Method::DELETE, "/v1/connections/acme")).await;
    assert_eq!((status, deleted["state"].as_str()), (200, Some("deleted")));
    assert!(s.state.store().get_credential("acme").await.unwrap().is_none(), "credentials erased");
    let (status, body) = s.send(s.req(reqwest::Method::DELETE, "/v1/connections/acme")).await;
    assert_eq!((status, code(&body)), (404, "connection_not_found"));
    let (_, list) = s.get("/v1/connections").await;
    assert!(list["connections"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn contact_urls_are_shown_without_their_secrets() {
    let s = Server::start().await;
    let url = "https://ops:hunter2@alerts.example/hooks/deskgate?token=t0ps3cret&team=support";
    let (status, created) = s
        .post(
            "/v1/connections",
            json!({"id": "acme", "platform": "zendesk", "base_url": "https://acme.zendesk.com", "plan": "team", "admin_contact_url": url}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, got) = s.get("/v1/connections/acme").await;
    let (_, list) = s.get("/v1/connections").await;
    for shown in [&created, &got, &list["connections"][0]] {
        assert_eq!(shown["admin_contact_url"], "https://ops:***@alerts.example/hooks/deskgate?token=***&team=***", "{shown}");
        assert!(!shown.to_string().contains("hunter2") && !shown.to_string().contains("t0ps3cret"), "{shown}");
    }
    // Stored as given: alerts still reach the full URL.
    let stored = s.state.store().get_connection("acme").await.unwrap().unwrap();
    assert_eq!(stored.admin_contact_url.as_deref(), Some(url));
}

#[tokio::test]
async fn submitted_actions_are_accepted_readable_and_idempotent() {
    let s = Server::start().await;
    s.create_connection("acme").await;
    let action = json!({"ticket_id": "42", "action": {"type": "resolve", "reply": "Fixed.", "status": "solved", "tags": ["bot"]}});
    let (status, rec) = s.post("/v1/connections/acme/actions", action.clone()).await;
    assert_eq!(status, 202, "{rec}");
    assert_eq!(rec["state"], "pending");
    assert_eq!(rec["duplicate"], false);
    assert_eq!(rec["action"], action["action"].clone().as_object().map(|o| {
        let mut o = o.clone();
        o.insert("assignee".into(), Value::Null);
        Value::Object(o)
    }).unwrap());
    let id = rec["id"].as_i64().unwrap();
    let (status, got) = s.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], id);
    assert_eq!(got["ticket_id"], "42");
    assert_eq!(got["write_log"], json!([]));

    let keyed = |key: &str, body: Value| {
        s.req(reqwest::Method::POST, "/v1/connections/acme/actions").header("Idempotency-Key", key).json(&body)
    };
    let reply = json!({"ticket_id": "7", "action": {"type": "reply", "body": "Hello"}});
    let (status, first) = s.send(keyed("k-1", reply.clone())).await;
    assert_eq!(status, 202);
    assert_eq!(first["app_key"], "k-1");
    let (status, again) = s.send(keyed("k-1", reply.clone())).await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], first["id"], "same key, same record");
    assert_eq!(again["duplicate"], true);
    let other = json!({"ticket_id": "7", "action": {"type": "add_tags", "tags": ["x"]}});
    let (status, body) = s.send(keyed("k-1", other)).await;
    assert_eq!((status, code(&body)), (409, "idempotency_key_reused"));
    let (status, body) = s.send(keyed("", reply)).await;
    assert_eq!((status, code(&body)), (400, "invalid_idempotency_key"));
}

#[tokio::test]
async fn a_long_poll_returns_when_an_event_arrives_and_ack_moves_past_it() {
    let s = Server::start().await;
    s.create_connection("acme").await;
    let (_, empty) = s.get("/v1/events?wait_ms=0").await;
    assert_eq!(empty, json!({"events": [], "next_cursor": 0}));
    let inbox = s.state.inbox().clone();
    let inserter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = Candidate {
            event: NewEvent {
                connection_id: "acme".into(),
                platform: "zendesk".into(),
                ticket_id: "42".into(),
                kind: "ticket.updated".into(),
                ticket: json!({"id": "42"}),
                dedupe_key: "ticket:42@1000".into(),
            },
            version: 1000,
        };
        inbox.insert("acme", &[c], 1000).await.unwrap();
    });
    let started = Instant::now();
    let (status, got) = s.get("/v1/events?after=0&wait_ms=10000").await;
    let waited = started.elapsed();
    inserter.await.unwrap();
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "waited {waited:?}");
    let events = got["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{got}");
    assert_eq!(events[0]["ticket_id"], "42");
    let cursor = got["next_cursor"].as_i64().unwrap();
    assert_eq!(events[0]["id"].as_i64().unwrap(), cursor);
    let (_, conn) = s.get("/v1/connections/acme").await;
    assert_eq!(conn["inbox_pending"], 1);
    let (status, acked) = s.post("/v1/events/ack", json!({"through": cursor})).await;
    assert_eq!((status, acked["acknowledged"].as_u64()), (200, Some(1)));
    let (_, after) = s.get("/v1/events?after=0").await;
    assert_eq!(after["events"], json!([]));
    // A long poll with nothing to find times out empty.
    let started = Instant::now();
    let (_, none) = s.get(&format!("/v1/events?after={cursor}&wait_ms=200")).await;
    assert!(started.elapsed() >= Duration::from_millis(180));
    assert_eq!(none["events"], json!([]));
}

#[tokio::test]
async fn alerts_are_listed_and_acknowledged() {
    let s = Server::start().await;
    s.create_connection("acme").await;
    let alert = s
        .state
        .store()
        .raise_alert(
            &NewAlert {
                connection_id: Some("acme".into()),
                kind: "refresh_failed".into(),
                text: "re-authenticate acme".into(),
                detail: json!({}),
            },
            1000,
        )
        .await
        .unwrap();
    let (status, list) = s.get("/v1/alerts").await;
    assert_eq!(status, 200);
    let alerts = list["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["kind"], "refresh_failed");
    assert_eq!(alerts[0]["acked_at"], Value::Null);
    let (status, acked) = s.post(&format!("/v1/alerts/{}/ack", alert.id), json!({})).await;
    assert_eq!((status, acked["already_acknowledged"].as_bool()), (200, Some(false)));
    let (status, again) = s.post(&format!("/v1/alerts/{}/ack", alert.id), json!({})).await;
    assert_eq!((status, again["already_acknowledged"].as_bool()), (200, Some(true)));
    let (_, list) = s.get("/v1/alerts").await;
    assert!(list["alerts"].as_array().unwrap().is_empty());
    let (_, list) = s.get("/v1/alerts?include_acked=true").await;
    assert_eq!(list["alerts"].as_array().unwrap().len(), 1);
    let (status, body) = s.post("/v1/alerts/999/ack", json!({})).await;
    assert_eq!((status, code(&body)), (404, "alert_not_found"));
}

#[tokio::test]
async fn metrics_expose_connections_outbox_inbox_alerts_and_adapters() {
    let s = Server::start().await;
    s.create_connection("acme").await;
    s.post("/v1/connections/acme/actions", json!({"ticket_id": "1", "action": {"type": "reply", "body": "hi"}})).await;
    let r = s.req(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    for line in [
        "deskgate_connections{state=\"pending_probe\"} 1",
        "deskgate_outbox_in_flight{state=\"pending\"} 1",
        "deskgate_inbox_pending{connection=\"acme\"} 0",
        "deskgate_alerts_open 0",
        "deskgate_adapter_calls_total{adapter=\"zendesk\"}",
        "deskgate_ingest_webhooks_accepted_total 0",
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}

/// The OpenAPI document and the router agree: every documented (method, path) is served (not a
/// 404 `route_not_found` nor a 405), and every route in [`ROUTES`] is documented.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, listed, "openapi.json paths vs api::ROUTES");
    // Every $ref resolves.
    let text = OPENAPI;
    for piece in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {name}");
    }
    let s = Server::start().await;
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "1").replace("{connection}", "nobody");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = s.req(m, &concrete);
        if *method == "POST" {
            rb = rb.json(&json!({}));
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert_ne!(body["error"]["code"], "route_not_found", "{method} {path} is documented but not routed");
    }
    // The other way: `app()` is built from ROUTES alone (it panics on an entry without a handler),
    // and on every routed path each method ROUTES does not list is refused, so the router
    // answers nothing the list, and so the document, leaves out.
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        let concrete = path.replace("{id}", "1").replace("{connection}", "nobody");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if ROUTES.contains(&(method, path)) {
                continue;
            }
            let (status, body) = s.send(s.req(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &concrete)).await;
            assert_eq!((status, code(&body)), (405, "method_not_allowed"), "{method} {path} is answered but not in api::ROUTES");
        }
    }
    let (status, body) = s.get("/v1/not-in-the-document").await;
    assert_eq!((status, code(&body)), (404, "route_not_found"));
    // The document served is the one embedded (and so the one checked above), without a token.
    let r = s.http.get(format!("{}/openapi.json", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{:?}", r.headers());
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, doc, "GET /openapi.json differs from api::OPENAPI");
}

fn deskgate_serve(config: &str, env: &[(&str, &str)], extra: &[&str]) -> std::process::Child {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("deskgate-serve-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("deskgate.toml");
    std::fs::write(&path, config.replace("STORE", dir.join("db.sqlite").to_str().unwrap())).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deskgate"));
    cmd.arg("serve").arg("--config").arg(&path).args(extra);
    cmd.env_remove("DESKGATE_API_TOKEN").env_remove("DESKGATE_SECRET_KEY");
    cmd.env("DESKGATE_CACHE_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("api-compile-cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().expect("run deskgate serve")
}

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[test]
fn serve_refuses_a_bad_config_naming_every_key() {
    let config = "store = \"STORE\"\n[connections.acme]\nplatform = \"zendesk\"\nbase_url = \"nope\"\nbudget_target = 1.5\nplan = \"gold\"\n\
                  [connections.acme.credentials]\ntoken_env = \"ACME_TOKEN\"\n";
    let out = deskgate_serve(config, &[], &["--check"]).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "connections.acme.base_url",
        "connections.acme.budget_target",
        "connections.acme.plan: the zendesk adapter declares no plan `gold`",
        "connections.acme.credentials.token_env",
        "DESKGATE_SECRET_KEY: not set, but credentials are configured",
        "DESKGATE_API_TOKEN",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
}

#[tokio::test]
async fn serve_starts_serves_and_shuts_down_on_ctrl_c() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\nstore = \"STORE\"\n[connections.acme]\nplatform = \"zendesk\"\n\
         base_url = \"https://acme.zendesk.com\"\nwebhook_secret_env = \"ACME_WEBHOOK\"\n"
    );
    let env = [("DESKGATE_API_TOKEN", TOKEN), ("DESKGATE_SECRET_KEY", KEY_HEX), ("ACME_WEBHOOK", "whsec")];
    let check = deskgate_serve(&config, &env, &["--check"]).wait_with_output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("configuration OK"));
    let mut child = deskgate_serve(&config, &env, &[]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list: Value = http.get(format!("{base}/v1/connections")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["connections"][0]["id"], "acme", "configured connections are in the store: {list}");
    let r = http.get(format!("{base}/v1/connections")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "exit after ctrl-c: {s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not shut down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("whsec") && !err.contains(KEY_HEX) && !err.contains(TOKEN), "a secret leaked: {err}");
}
