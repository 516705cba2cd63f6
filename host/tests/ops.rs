//! The operator's surface over real HTTP: API contract (auth on every non-public route, errors
//! well-formed), `/metrics` as valid Prometheus text with the per-connection families, the
//! `/v1/status` view (store plus live status registry), and the dashboard's sign-in and content.
//! Connections are made against a Zendesk simulator, so probe reports are the real adapter's.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Gateway, TOKEN};
use deskgate::api::ROUTES;
use serde_json::{Value, json};

/// Routes that do not take the API token: health, the document, webhooks (signed), the
/// dashboard's sign-in, and the edge's ingest route (its own token).
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("POST", "/webhooks/{connection}"),
    ("POST", "/login"),
    ("POST", "/logout"),
    // The edge's route takes the edge's own token (DESKGATE_EDGE_TOKEN), not the API token;
    // without one configured it answers 503. Checked by the edge's own tests.
    ("POST", "/v1/ingest/{connection}"),
];

fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{connection}", "nobody")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_public_route_refuses_requests_without_the_token() {
    let g = Gateway::start().await;
    let mut checked = 0;
    for (method, path) in ROUTES {
        if PUBLIC.contains(&(*method, *path)) {
            continue;
        }
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("{}{}", g.base, concrete(path));
        for auth in [None, Some("Bearer wrong-token"), Some("Basic b3BzOnRlc3Q="), Some(&*format!("Bearer {TOKEN}x"))] {
            let mut rb = g.http.request(m.clone(), &url).json(&json!({}));
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{method} {path} with {auth:?}");
            if *path == "/" {
                // The dashboard answers people: the sign-in form, and no data.
                let text = r.text().await.unwrap();
                assert!(text.contains("action=\"/login\""), "{text}");
                continue;
            }
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}: {body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("token")), "{body}");
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} routes checked");
    // And the public ones really are public (not 401).
    for (method, path) in PUBLIC {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = g.http.request(m, format!("{}{}", g.base, concrete(path))).body("{}").send().await.unwrap();
        assert_ne!(r.status().as_u16(), 401, "{method} {path} should not need the token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_the_new_routes_are_json_with_code_and_message() {
    let g = Gateway::start().await;
    for (status_want, code_want, rb) in [
        (405, "method_not_allowed", g.req(reqwest::Method::POST, "/v1/status")),
        (405, "method_not_allowed", g.req(reqwest::Method::GET, "/login")),
        (404, "route_not_found", g.req(reqwest::Method::GET, "/dashboard")),
    ] {
        let (status, body) = g.send(rb).await;
        assert_eq!((status, body["error"]["code"].as_str()), (status_want, Some(code_want)), "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
}

/// One sample line of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().enumerate().all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
}

/// `name="value",...}` after the `{`: the labels and what follows the `}`.
fn parse_labels(mut body: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    if let Some(r) = body.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = body.find('=').ok_or("label without =")?;
        let lname = &body[..eq];
        if !valid_name(lname) || lname.contains(':') {
            return Err(format!("bad label name {lname:?}"));
        }
        let quoted = body[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut end = None;
        let mut it = quoted.char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '\\' => match it.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if labels.insert(lname.to_owned(), value).is_some() {
            return Err(format!("label {lname} twice"));
        }
        body = &quoted[end..];
        if let Some(r) = body.strip_prefix(',') {
            body = r;
            if let Some(r) = body.strip_prefix('}') {
                return Ok((labels, r));
            }
            continue;
        }
        return body.strip_prefix('}').map(|r| (labels, r)).ok_or_else(|| "labels not closed".to_owned());
    }
}

/// A strict reader of the Prometheus text exposition format 0.0.4: every sample's family was
/// introduced by `# HELP` then `# TYPE` (a known type), names and label names are valid, label
/// values are quoted with only `\\`, `\"` and `\n` escapes, values parse as floats, and no
/// series appears twice. Returns the families' types and the samples.
fn parse_exposition(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut samples = Vec::new();
    let mut seen = BTreeSet::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l)) {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or(format!("line {n}: HELP without text"))?;
            if !valid_name(name) || help.trim().is_empty() || !helped.insert(name.to_owned()) {
                return Err(format!("line {n}: bad or repeated HELP: {line}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("line {n}: TYPE without type"))?;
            if !helped.contains(name) {
                return Err(format!("line {n}: TYPE before HELP for {name}"));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {n}: unknown type {kind}"));
            }
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("line {n}: second TYPE for {name}"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or(format!("line {n}: no value: {line}"))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        if !types.contains_key(name) {
            return Err(format!("line {n}: sample of {name} without HELP/TYPE"));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(body) => parse_labels(body).map_err(|e| format!("line {n}: {e}: {line}"))?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let mut fields = rest.strip_prefix(' ').ok_or(format!("line {n}: no space before the value"))?.split(' ');
        let value = fields.next().unwrap_or("");
        let v: f64 = value.parse().map_err(|_| format!("line {n}: value {value:?} is not a number"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(format!("line {n}: series repeated: {line}"));
        }
        samples.push((name.to_owned(), labels, v));
    }
    Ok((types, samples))
}

#[test]
fn the_exposition_reader_rejects_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"\"} 3\n";
    let (_, s) = parse_exposition(ok).unwrap();
    assert_eq!(s[0].1["x"], "q\"\\\n");
    for bad in [
        "a 1\n",                                                     // no HELP/TYPE
        "# TYPE a gauge\na 1\n",                                     // TYPE before HELP
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} one\n",             // bad value
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",                   // unquoted
        "# HELP a A.\n# TYPE a gauge\na{x=\"a\\tb\"} 1\n",           // bad escape
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n", // repeated series
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\" y=\"2\"} 1\n",       // no comma
        "# HELP a A.\n# TYPE a gaug\na 1\n",                         // unknown type
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad}");
    }
}

fn sample<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_with_every_per_connection_family() {
    let (g, _z) = common::populated().await;
    let r = g.req(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let get = |name: &str, labels: &[(&str, &str)]| {
        sample(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}")).2
    };
    // Budget per connection, bucket and lane (acme's gate is registered; 7 writes drawn).
    let bucket = samples.iter().find(|(n, l, _)| n == "deskgate_budget_limit" && l["connection"] == "acme").expect("budget limit").1["bucket"].clone();
    let b = bucket.as_str();
    assert!(get("deskgate_budget_limit", &[("connection", "acme"), ("bucket", b)]) > 0.0);
    assert_eq!(get("deskgate_budget_lane_used", &[("connection", "acme"), ("bucket", b), ("lane", "write")]), 7.0);
    assert_eq!(get("deskgate_budget_lane_used", &[("connection", "acme"), ("bucket", b), ("lane", "read")]), 0.0);
    let capacity = get("deskgate_budget_lane_capacity", &[("connection", "acme"), ("bucket", b), ("lane", "write")]);
    let lane_util = get("deskgate_budget_lane_utilization", &[("connection", "acme"), ("bucket", b), ("lane", "write")]);
    assert!(capacity > 0.0 && (lane_util - 7.0 / capacity).abs() < 1e-3, "{lane_util} vs 7/{capacity}");
    assert_eq!(get("deskgate_budget_lane_utilization", &[("connection", "acme"), ("bucket", b), ("lane", "read")]), 0.0);
    let util = get("deskgate_budget_utilization", &[("connection", "acme"), ("bucket", b)]);
    let limit = get("deskgate_budget_limit", &[("connection", "acme"), ("bucket", b)]);
    assert!((util - 7.0 / limit).abs() < 1e-3, "{util} vs 7/{limit}");
    assert_eq!(get("deskgate_rate_limited_total", &[("connection", "acme"), ("lane", "read")]), 2.0);
    assert_eq!(get("deskgate_rate_limited_total", &[("connection", "acme"), ("lane", "write")]), 1.0);
    assert_eq!(get("deskgate_gate_waiting", &[("connection", "acme"), ("queue", "write")]), 0.0);
    // Queue depths from the store.
    assert_eq!(get("deskgate_outbox_queue", &[("connection", "acme"), ("state", "pending")]), 1.0);
    assert_eq!(get("deskgate_outbox_in_flight", &[("state", "pending")]), 1.0);
    assert_eq!(get("deskgate_inbox_pending", &[("connection", "acme")]), 0.0);
    // Auth state: one state is 1 per connection.
    assert_eq!(get("deskgate_auth_state", &[("connection", "acme"), ("state", "ok")]), 1.0);
    let ones: f64 = samples.iter().filter(|(n, l, _)| n == "deskgate_auth_state" && l["connection"] == "acme").map(|s| s.2).sum();
    assert_eq!(ones, 1.0);
    // Suspensions, alerts, catches, duplicates.
    assert_eq!(get("deskgate_connection_suspended", &[("connection", "acme-readonly"), ("kind", "rescope")]), 1.0);
    assert_eq!(get("deskgate_connection_suspended", &[("connection", "acme")]), 0.0);
    assert_eq!(get("deskgate_suspensions_total", &[("connection", "acme-readonly")]), 1.0);
    // Alert figures match the store (the probe itself may alert a missing scope too).
    let open = g.state.store().list_alerts(None, false, 1000).await.unwrap();
    let scope_missing = open.iter().filter(|a| a.connection_id.as_deref() == Some("acme-readonly") && a.kind == "scope-missing").count();
    assert!(scope_missing >= 1);
    assert_eq!(get("deskgate_alerts_open_by_kind", &[("connection", "acme-readonly"), ("kind", "scope-missing")]), scope_missing as f64);
    assert_eq!(get("deskgate_alerts_open_by_kind", &[("connection", ""), ("kind", "odd \"kind\"\\with\nnewline")]), 1.0, "label escaped and read back");
    assert_eq!(get("deskgate_alerts_open", &[]), open.len() as f64);
    assert_eq!(get("deskgate_reconciliation_catches_total", &[("connection", "acme")]), 0.0);
    assert_eq!(get("deskgate_duplicates_prevented_total", &[("connection", "acme"), ("how", "submission")]), 1.0);
    assert_eq!(get("deskgate_connections", &[("state", "live")]), 1.0);
    assert_eq!(get("deskgate_connections", &[("state", "suspended")]), 1.0);
    // The families kept from before, with their types.
    for (family, kind) in [
        ("deskgate_adapter_calls_total", "counter"),
        ("deskgate_ingest_webhooks_accepted_total", "counter"),
        ("deskgate_ingest_webhooks_rejected_total", "counter"),
        ("deskgate_budget_utilization", "gauge"),
        ("deskgate_budget_lane_utilization", "gauge"),
        ("deskgate_credential_expires_in_seconds", "gauge"),
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some(kind), "{family}");
    }
    assert!(get("deskgate_adapter_calls_total", &[("adapter", "zendesk")]) > 0.0, "the probes called the adapter");
    // Nothing secret.
    assert!(!text.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_view_puts_suspensions_first_and_joins_store_and_live_figures() {
    let (g, z) = common::populated().await;
    let (status, v) = g.get("/v1/status").await;
    assert_eq!(status, 200, "{v}");
    let conns = v["connections"].as_array().unwrap();
    let ids: Vec<&str> = conns.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme-readonly", "acme"], "suspended first");
    let ro = &conns[0];
    assert_eq!(ro["suspended"]["kind"], "rescope");
    assert!(ro["suspended"]["reason"].as_str().unwrap().contains("write"));
    let missing: Vec<&Value> = ro["probe"]["capabilities"].as_array().unwrap().iter().filter(|c| c["granted"] == false).collect();
    assert!(!missing.is_empty());
    assert!(missing.iter().all(|c| c["remediation"].is_string()), "{missing:?}");
    let open = g.state.store().list_alerts(Some("acme-readonly"), false, 1000).await.unwrap();
    let scope_missing = open.iter().filter(|a| a.kind == "scope-missing").count();
    assert!(scope_missing >= 1);
    assert_eq!(ro["open_alerts"]["scope-missing"], scope_missing);
    assert_eq!(ro["budget"], Value::Null, "no workers registered for it");
    let acme = &conns[1];
    assert_eq!(acme["auth"]["state"], "ok");
    assert_eq!(acme["auth"]["scheme"], "api_key");
    assert_eq!(acme["running"], true);
    assert_eq!(acme["counters"]["rate_limited_read"], 2);
    assert_eq!(acme["queues"]["outbox"]["pending"], 1);
    assert!(acme["budget"]["budget"]["buckets"].as_array().is_some_and(|b| !b.is_empty()));
    assert_eq!(v["alerts"].as_array().unwrap().len(), g.state.store().list_alerts(None, false, 1000).await.unwrap().len());
    let text = v.to_string();
    for secret in [z.full.token.as_str(), z.read_only.token.as_str(), TOKEN] {
        assert!(!text.contains(secret), "a secret leaked into /v1/status");
    }
}

async fn sign_in(g: &Gateway, token: &str) -> reqwest::Response {
    g.http.post(format!("{}/login", g.base)).form(&[("token", token)]).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_with_the_token_and_keeps_only_a_session_cookie() {
    let (g, z) = common::populated().await;
    // No cookie: the form, no data.
    let r = g.http.get(format!("{}/", g.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let html = r.text().await.unwrap();
    assert!(html.contains("<form method=\"post\" action=\"/login\""));
    assert!(!html.contains("acme"), "no data before sign-in");
    // The bearer header is not a session.
    let r = g.req(reqwest::Method::GET, "/").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Wrong and empty tokens.
    let r = sign_in(&g, "not-the-token").await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("not the gateway"));
    let r = g.http.post(format!("{}/login", g.base)).form(&[("other", "x")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // The right token: a cookie that is not the token.
    let r = sign_in(&g, TOKEN).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["deskgate_session=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains(TOKEN), "the cookie must not carry the token");
    let cookie = set.split(';').next().unwrap().to_owned();
    let r = g.http.get(format!("{}/", g.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = r.text().await.unwrap();
    // Suspended first, with its reason, the missing permission's remediation and the fix.
    let suspended_at = html.find("id=\"suspended-acme-readonly\"").expect("suspension banner");
    let table_at = html.find("id=\"connections\"").expect("connections table");
    assert!(suspended_at < table_at, "the suspension comes before everything else");
    assert!(html.contains("Re-authorize the OAuth client with read and write scopes."));
    assert!(html[suspended_at..table_at].contains("class=\"remediation\""), "remediation in the banner");
    assert!(html.contains("deskgate probe acme-readonly"));
    // Live figures and alerts.
    assert!(html.contains("id=\"conn-acme\""));
    assert!(html.contains("class=\"budget\""), "budget gauges for the running connection");
    assert!(html.contains("Grant `write` to acme-readonly"));
    assert!(html.contains("odd &quot;kind&quot;"), "text is escaped");
    for secret in [z.full.token.as_str(), z.read_only.token.as_str(), TOKEN] {
        assert!(!html.contains(secret), "a secret leaked into the dashboard");
    }
    // The cookie opens nothing else.
    let r = g.http.get(format!("{}/v1/status", g.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A tampered cookie is refused; signing out clears it.
    let tampered = cookie.replace("deskgate_session=1", "deskgate_session=2");
    let r = g.http.get(format!("{}/", g.base)).header("cookie", &tampered).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = g.http.post(format!("{}/logout", g.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

#[test]
fn oauth_credentials_are_spelled_as_the_openapi_document_says_and_old_rows_still_read() {
    use deskgate::store::CredentialSecret;
    let doc: Value = serde_json::from_str(deskgate::api::OPENAPI).unwrap();
    let schemes: Vec<&str> = doc["components"]["schemas"]["Credentials"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["properties"]["scheme"]["const"].as_str().unwrap())
        .collect();
    let oauth = CredentialSecret::OAuth { access_token: "a".into(), refresh_token: None, client: None };
    let api_key = CredentialSecret::ApiKey { fields: Default::default() };
    for secret in [&oauth, &api_key] {
        let v = serde_json::to_value(secret).unwrap();
        assert!(schemes.contains(&v["scheme"].as_str().unwrap()), "{v} vs {schemes:?}");
        assert_eq!(v["scheme"], secret.scheme());
    }
    let old: CredentialSecret = serde_json::from_value(json!({"scheme": "o_auth", "access_token": "a", "refresh_token": null})).unwrap();
    assert_eq!(old, oauth, "secrets stored as `o_auth` before the rename still decode");
}

/// The README's `deskgate.toml` example is a configuration the gateway accepts.
#[test]
fn the_readme_configuration_example_validates() {
    const README: &str = include_str!("../../README.md");
    let marker = "<!-- deskgate.toml example -->\n```toml\n";
    let start = README.find(marker).expect("the README marks its deskgate.toml example") + marker.len();
    let example = &README[start..start + README[start..].find("\n```\n").expect("closed block")];
    let config = deskgate::config::Config::parse(example).unwrap_or_else(|e| panic!("{e}"));
    config.runtime_config().unwrap_or_else(|e| panic!("{e}"));
    let env = |k: &str| match k {
        "DESKGATE_SECRET_KEY" => Some("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f".to_owned()),
        "DESKGATE_API_TOKEN" => Some("an-api-token-long-enough".to_owned()),
        k if k.starts_with("ACME_") => Some(format!("value-of-{k}")),
        _ => None,
    };
    // Against the loaded adapters, as serve validates: the example's plans must be declared ones.
    let adapters: Vec<_> = common::runtime().adapters().cloned().collect();
    let v = config.validate(&env, &adapters).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = v.connections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["acme-intercom", "acme-zendesk"]);
    // And without the environment, every variable it names is reported missing.
    let e = config.validate(&|_| None, &deskgate::config::BUILTIN_PLATFORMS).unwrap_err().to_string();
    for var in ["ACME_ZENDESK_TOKEN", "ACME_INTERCOM_CLIENT_SECRET", "DESKGATE_SECRET_KEY"] {
        assert!(e.contains(var), "{var} not named in {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_connection_leaves_the_view_and_its_counters_go_with_it() {
    let (g, _z) = common::populated().await;
    let (status, _) = g.send(g.req(reqwest::Method::DELETE, "/v1/connections/acme")).await;
    assert_eq!(status, 200);
    let (_, v) = g.get("/v1/status").await;
    let ids: Vec<&str> = v["connections"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme-readonly"]);
    assert!(g.status.get("acme").is_none(), "counters forgotten");
    let text = g.req(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("connection=\"acme\""), "{text}");
}

/// Every `tracing` event of this test binary at `deskgate::outbox` debug level, as JSON lines
/// (tests in this file that write nothing add nothing).
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static BUF: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        let buf: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        struct Lines(&'static std::sync::Mutex<Vec<u8>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("deskgate::outbox=debug"))
            .with_writer(move || Lines(buf))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber in this test binary");
        buf
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writes_log_lines_name_its_connection_ticket_and_action() {
    let logs = captured_logs();
    let g = Gateway::start_supervised().await;
    let z = common::ZendeskAccount::start().await;
    let (status, conn) = g
        .post(
            "/v1/connections",
            json!({"id": "acme-logs", "platform": "zendesk", "base_url": z.sim.base_url(), "credentials": z.full_credentials()}),
        )
        .await;
    assert_eq!((status, conn["state"].as_str()), (201, Some("live")), "{conn}");
    let ticket = z.sim.create_ticket(z.full.account_id, deskgate_sim::TicketSpec::default()).unwrap()["id"].as_u64().unwrap().to_string();
    let (status, accepted) = g
        .post("/v1/connections/acme-logs/actions", json!({"ticket_id": ticket, "action": {"type": "reply", "body": "Logged."}}))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_i64().unwrap_or_else(|| panic!("{accepted}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, a) = g.get(&format!("/v1/actions/{id}")).await;
        if a["state"] == "confirmed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not confirmed in 30 s: {a}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l| l["fields"]["action_id"] == id && l["fields"]["connection"] == "acme-logs")
        .collect();
    let messages: Vec<&str> = lines.iter().map(|l| l["fields"]["message"].as_str().unwrap_or("")).collect();
    assert!(messages.contains(&"write sent") && messages.contains(&"write confirmed"), "{messages:?} in:\n{text}");
    for l in &lines {
        assert_eq!(l["fields"]["ticket"], ticket.as_str(), "{l}");
        assert_eq!(l["fields"]["action"], "reply", "{l}");
        assert_eq!(l["level"], "DEBUG", "routine steps log at debug: {l}");
    }
    assert!(!text.contains(z.full.token.as_str()), "no credential in the logs");
}
