//! The admin API: JSON over HTTP under `/_sim/...`, a thin layer over [`crate::Sim`]'s control
//! methods (each route deserializes into the same spec type the Rust method takes).
//!
//! Bad input gets a 400 `{"error": "...", "hint": "..."}` saying what was wrong and how to fix it;
//! unknown routes get a 404 listing the routes.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::server::{Reply, Req};
use crate::util::{parse_time, rfc3339};
use crate::{LimitOverrides, RequestFilter, Sim, SimError, SimInner, WebhookTarget};

const ROUTES: &str = "\
GET /_sim | GET /_sim/clock | POST /_sim/clock/advance {seconds|ms} | POST /_sim/clock/set {unix_ms|unix|rfc3339, frozen?} | \
POST /_sim/accounts {name?, plan?, high_volume?} | GET /_sim/accounts | GET /_sim/accounts/{id} | \
PUT /_sim/accounts/{id}/plan {plan, high_volume?} | PUT /_sim/accounts/{id}/limits {...} | PATCH /_sim/accounts/{id}/features {add, remove} | \
POST /_sim/accounts/{id}/agents | PATCH /_sim/accounts/{id}/agents/{agent_id} {role?, add_privileges?, remove_privileges?} | \
POST /_sim/accounts/{id}/contacts | POST /_sim/accounts/{id}/groups | POST /_sim/accounts/{id}/oauth_clients | \
POST /_sim/accounts/{id}/oauth_codes | POST /_sim/accounts/{id}/credentials | GET /_sim/accounts/{id}/credentials/{cred} | \
POST /_sim/accounts/{id}/credentials/{cred}/revoke|rotate|expire | PATCH /_sim/accounts/{id}/credentials/{cred}/scopes {add, remove} | \
POST /_sim/accounts/{id}/expire_tokens | POST /_sim/accounts/{id}/tickets | GET /_sim/accounts/{id}/tickets/{ticket} | \
POST /_sim/accounts/{id}/tickets/{ticket}/comments {body} | PUT|DELETE /_sim/accounts/{id}/webhook {url, secret} | \
GET /_sim/accounts/{id}/writes?ticket_id= | GET /_sim/accounts/{id}/stats | GET|PUT|DELETE /_sim/faults | \
GET|DELETE /_sim/requests?account_id=&since_seq= | GET /_sim/webhooks/deliveries | GET /_sim/stats | POST /_sim/seed_demo";

fn ok<T: Serialize>(status: u16, v: &T) -> Reply {
    Reply::json(status, &serde_json::to_value(v).unwrap_or(Value::Null))
}

fn fail(e: SimError) -> Reply {
    Reply::json(e.status, &json!({"error": e.message}))
}

fn done<T: Serialize>(status: u16, r: Result<T, SimError>) -> Reply {
    match r {
        Ok(v) => ok(status, &v),
        Err(e) => fail(e),
    }
}

fn body<T: DeserializeOwned + Default>(req: &Req) -> Result<T, Reply> {
    if req.body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        Reply::json(
            400,
            &json!({"error": format!("request body does not fit this route: {e}"),
                    "hint": "send a JSON object with the fields listed in the route's documentation (unknown fields are refused)"}),
        )
    })
}

fn num(s: &str, what: &str) -> Result<u64, Reply> {
    s.parse::<u64>()
        .map_err(|_| Reply::json(400, &json!({"error": format!("{what} {s:?} is not a number"), "hint": "ids are positive integers"})))
}

fn clock_json(sim: &Sim) -> Value {
    let now = sim.clock().now_ms();
    json!({"now_ms": now, "now": rfc3339(now), "frozen": sim.clock().is_frozen()})
}

/// Handles one admin request.
pub(crate) async fn handle(inner: &Arc<SimInner>, req: &Req) -> Reply {
    let sim = Sim {
        inner: inner.clone(),
    };
    match route(&sim, req) {
        Ok(r) | Err(r) => r,
    }
}

fn route(sim: &Sim, req: &Req) -> Result<Reply, Reply> {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(2).collect();
    let m = &req.method;
    Ok(match (m, segs.as_slice()) {
        (&Method::GET, []) => Reply::json(
            200,
            &json!({"platform": sim.platform(), "base_url": sim.base_url(), "admin_url": format!("{}/_sim", sim.base_url()),
                    "clock": clock_json(sim), "accounts": sim.accounts().len(), "routes": ROUTES}),
        ),
        (&Method::GET, ["clock"]) => Reply::json(200, &clock_json(sim)),
        (&Method::POST, ["clock", "advance"]) => {
            let b: Value = body(req)?;
            let ms = match (
                b.get("ms").and_then(Value::as_i64),
                b.get("seconds").and_then(Value::as_f64),
            ) {
                (Some(ms), _) if ms >= 0 => ms,
                (None, Some(s)) if s >= 0.0 => (s * 1000.0) as i64,
                _ => {
                    return Err(fail(SimError::bad(
                        "send {\"seconds\": N} or {\"ms\": N} with a non-negative number",
                    )));
                }
            };
            sim.clock().advance(Duration::from_millis(ms as u64));
            Reply::json(200, &clock_json(sim))
        }
        (&Method::POST, ["clock", "set"]) => {
            let b: Value = body(req)?;
            let at = b
                .get("unix_ms")
                .and_then(Value::as_i64)
                .or_else(|| b.get("unix").and_then(Value::as_i64).map(|s| s * 1000))
                .or_else(|| {
                    b.get("rfc3339")
                        .and_then(Value::as_str)
                        .and_then(parse_time)
                });
            if let Some(f) = b.get("frozen").and_then(Value::as_bool) {
                sim.clock().set_frozen(f);
            }
            match at {
                Some(ms) => sim.clock().set(ms),
                None if b.get("frozen").is_some() => {}
                None => {
                    return Err(fail(SimError::bad(
                        "send {\"unix_ms\": N}, {\"unix\": N} or {\"rfc3339\": \"2024-01-01T00:00:00Z\"} (and optionally \"frozen\": true)",
                    )));
                }
            }
            Reply::json(200, &clock_json(sim))
        }
        (&Method::POST, ["accounts"]) => done(201, sim.create_account(body(req)?)),
        (&Method::GET, ["accounts"]) => ok(200, &sim.accounts()),
        (&Method::POST, ["seed_demo"]) => done(201, sim.seed_demo()),
        (&Method::GET, ["faults"]) => ok(200, &sim.faults()),
        (&Method::PUT, ["faults"]) => {
            let cfg = body(req)?;
            done(200, sim.set_faults(cfg).map(|_| sim.faults()))
        }
        (&Method::DELETE, ["faults"]) => done(
            200,
            sim.set_faults(Default::default()).map(|_| sim.faults()),
        ),
        (&Method::GET, ["requests"]) => {
            let f = RequestFilter {
                account_id: req
                    .query
                    .get("account_id")
                    .map(|s| num(s, "account_id"))
                    .transpose()?,
                since_seq: req
                    .query
                    .get("since_seq")
                    .map(|s| num(s, "since_seq"))
                    .transpose()?,
            };
            ok(200, &sim.requests(f))
        }
        (&Method::DELETE, ["requests"]) => {
            sim.clear_requests();
            Reply::json(200, &json!({"cleared": true}))
        }
        (&Method::GET, ["webhooks", "deliveries"]) => ok(200, &sim.webhook_deliveries()),
        (&Method::GET, ["stats"]) => Reply::json(
            200,
            &json!({"rate_limited_total": sim.rate_limited_total(), "webhooks_pending": sim.webhooks_pending()}),
        ),
        (_, ["accounts", id, rest @ ..]) => {
            let id = num(id, "account id")?;
            account_route(sim, req, id, rest)?
        }
        _ => Reply::json(
            404,
            &json!({"error": format!("no admin route {} {}", req.method, req.path), "routes": ROUTES}),
        ),
    })
}

fn account_route(sim: &Sim, req: &Req, id: u64, rest: &[&str]) -> Result<Reply, Reply> {
    let m = &req.method;
    Ok(match (m, rest) {
        (&Method::GET, []) => done(200, sim.account_info(id)),
        (&Method::PUT, ["plan"]) => done(200, sim.set_plan(id, body(req)?)),
        (&Method::PUT, ["limits"]) => done(200, sim.set_limits(id, body::<LimitOverrides>(req)?)),
        (&Method::PATCH, ["features"]) => done(200, sim.set_features(id, body(req)?)),
        (&Method::POST, ["agents"]) => done(201, sim.create_agent(id, body(req)?)),
        (&Method::PATCH, ["agents", agent]) => done(
            200,
            sim.update_agent(id, num(agent, "agent id")?, body(req)?),
        ),
        (&Method::POST, ["contacts"]) => done(201, sim.create_contact(id, body(req)?)),
        (&Method::POST, ["groups"]) => done(201, sim.create_group(id, body(req)?)),
        (&Method::POST, ["oauth_clients"]) => done(201, sim.create_oauth_client(id, body(req)?)),
        (&Method::POST, ["oauth_codes"]) => done(201, sim.create_auth_code(id, body(req)?)),
        (&Method::POST, ["credentials"]) => done(201, sim.create_credential(id, body(req)?)),
        (&Method::GET, ["credentials", c]) => {
            done(200, sim.credential(id, num(c, "credential id")?))
        }
        (&Method::POST, ["credentials", c, action]) => {
            let c = num(c, "credential id")?;
            match *action {
                "revoke" => done(200, sim.revoke_credential(id, c)),
                "rotate" => done(200, sim.rotate_credential(id, c)),
                "expire" => done(200, sim.expire_credential(id, c)),
                other => fail(SimError::not_found(format!(
                    "unknown credential action {other:?}; use revoke, rotate or expire"
                ))),
            }
        }
        (&Method::PATCH, ["credentials", c, "scopes"]) => done(
            200,
            sim.update_scopes(id, num(c, "credential id")?, body(req)?),
        ),
        (&Method::POST, ["expire_tokens"]) => {
            done(200, sim.expire_tokens(id).map(|n| json!({"expired": n})))
        }
        (&Method::POST, ["tickets"]) => done(201, sim.create_ticket(id, body(req)?)),
        (&Method::GET, ["tickets", t]) => done(200, sim.ticket(id, num(t, "ticket id")?)),
        (&Method::POST, ["tickets", t, "comments"]) => done(
            201,
            sim.add_customer_comment(id, num(t, "ticket id")?, body(req)?),
        ),
        (&Method::PUT, ["webhook"]) => {
            let target: WebhookTarget = serde_json::from_slice(&req.body).map_err(|e| {
                fail(SimError::bad(format!(
                    "send {{\"url\": \"http://127.0.0.1:PORT/path\", \"secret\": \"...\"}}: {e}"
                )))
            })?;
            done(
                200,
                sim.set_webhook(id, Some(target))
                    .and_then(|_| sim.account_info(id)),
            )
        }
        (&Method::DELETE, ["webhook"]) => done(
            200,
            sim.set_webhook(id, None).and_then(|_| sim.account_info(id)),
        ),
        (&Method::GET, ["writes"]) => {
            let t = req
                .query
                .get("ticket_id")
                .map(|s| num(s, "ticket_id"))
                .transpose()?;
            done(200, sim.writes(id, t))
        }
        (&Method::GET, ["stats"]) => done(200, sim.stats(id)),
        _ => Reply::json(
            404,
            &json!({"error": format!("no admin route {} {}", req.method, req.path), "routes": ROUTES}),
        ),
    })
}
