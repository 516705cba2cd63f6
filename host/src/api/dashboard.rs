//! The dashboard at `GET /`: one server-rendered page for the person on call.
//!
//! # What it shows, in order
//!
//! 1. A banner per suspended connection, first: the suspension's reason (as the policy that
//!    suspended it wrote it: what is wrong and what to do), its kind, since when, the scope probe's
//!    missing permissions with the platform's remediation, and the CLI command that fixes it.
//! 2. A warning per live connection without a webhook secret (its webhooks are all refused).
//! 3. Every connection: platform, state, auth state with the time to expiry or to the next
//!    refresh / health check, whether a webhook secret is set, queue depths (outbox, inbox, budget gate), 429s, reconciliation
//!    catches, duplicates prevented, open alerts.
//! 4. Per connection: budget gauges per bucket and lane, and the scope probe's results.
//! 5. Recent unacknowledged alerts.
//!
//! The page refreshes itself every 15 seconds (`<meta http-equiv="refresh">`); no JavaScript.
//!
//! # How it authenticates
//!
//! A browser cannot attach a bearer token to a plain `GET`, and a token in the URL ends up in
//! history and access logs. So the page asks for the API token once, in a form (`POST /login`,
//! checked in constant time), and answers with a session cookie: `HttpOnly` (scripts cannot read
//! it), `SameSite=Strict` (no other site can make the browser send it), `Path=/`, 12 hours. The
//! cookie is not the token: it is `<issued-at>.<HMAC-SHA256(token, issued-at)>`, so it expires
//! on its own, cannot be used as a bearer token against the API, and every session ends when the
//! token is rotated. It opens `GET /` only; the page is read-only (operators act with the CLI),
//! so it needs no CSRF token. `POST /logout` clears it. Without a valid cookie, `GET /` answers
//! 401 with the sign-in form and no data. Behind TLS (as it must be anywhere but localhost), the
//! cookie is marked `Secure` when the request says `X-Forwarded-Proto: https`.
//!
//! The page never holds a secret: credentials appear as scheme, version and expiry only, webhook
//! secrets as set or not.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AppState;
use super::view::{ConnectionView, StatusView};
use crate::clock::Millis;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "deskgate_session";

/// How long a dashboard session lasts.
pub const SESSION_MS: Millis = 12 * 60 * 60 * 1000;

fn session_mac(token: &str, issued: Millis) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"deskgate dashboard session v1:");
    mac.update(issued.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The cookie value for a session issued at `issued` under `token`.
pub fn session_value(token: &str, issued: Millis) -> String {
    format!("{issued}.{}", session_mac(token, issued))
}

/// Whether `value` is a session issued under `token` that has not expired at `now`.
pub fn session_valid(token: &str, value: &str, now: Millis) -> bool {
    let Some((issued, mac)) = value.split_once('.') else { return false };
    let Ok(issued) = issued.parse::<Millis>() else { return false };
    if issued > now + 60_000 || now - issued >= SESSION_MS {
        return false;
    }
    bool::from(mac.as_bytes().ct_eq(session_mac(token, issued).as_bytes()))
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secured(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn redirect_home(set_cookie: String) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/"));
    if let Ok(v) = HeaderValue::from_str(&set_cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /`: the dashboard, or the sign-in form.
pub(crate) async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = &state.inner;
    let now = s.clock.now_ms();
    let signed_in = cookie(&headers, SESSION_COOKIE).is_some_and(|v| session_valid(s.api_token.expose(), v, now));
    if !signed_in {
        return html(StatusCode::UNAUTHORIZED, login_page(None));
    }
    match super::view::build(&s.store, &s.routes, &s.status.snapshot(), now).await {
        Ok(view) => html(StatusCode::OK, render(&view)),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: store unreachable");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                page_shell("deskgate: store unavailable", "<h1>The store is unreachable</h1><p>The gateway cannot read its store; the gateway log has the cause. <code>/readyz</code> reports the same.</p>", false),
            )
        }
    }
}

/// `POST /login` (form `token=...`): a session cookie for the right token.
pub(crate) async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let s = &state.inner;
    let token = url::form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return html(StatusCode::BAD_REQUEST, login_page(Some("Enter the gateway's API token.")));
    };
    let expected = s.api_token.expose().as_bytes();
    if !bool::from(token.trim().as_bytes().ct_eq(expected)) {
        tracing::warn!("dashboard sign-in refused: wrong token");
        return html(
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not the gateway's API token (DESKGATE_API_TOKEN, or api_token in its config).")),
        );
    }
    let now = s.clock.now_ms();
    let secure = if secured(&headers) { "; Secure" } else { "" };
    redirect_home(format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session_value(s.api_token.expose(), now),
        SESSION_MS / 1000
    ))
}

/// `POST /logout`: clear the session cookie.
pub(crate) async fn logout() -> Response {
    redirect_home(format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"))
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Escape text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-29 02:00:00 UTC` for a Unix time in milliseconds.
pub(crate) fn utc(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `in 3h 12m`, `5m ago`, `now`.
pub(crate) fn relative(at: Millis, now: Millis) -> String {
    let d = (at - now) / 1000;
    let a = d.unsigned_abs();
    let span = if a < 60 {
        format!("{a}s")
    } else if a < 3600 {
        format!("{}m {}s", a / 60, a % 60)
    } else if a < 86_400 {
        format!("{}h {}m", a / 3600, a % 3600 / 60)
    } else {
        format!("{}d {}h", a / 86_400, a % 86_400 / 3600)
    };
    match d {
        0 => "now".into(),
        d if d > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2433}
header{background:#1d2433;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header h1{font-size:18px;margin:0}header .sum{flex:1}header form{margin:0}
main{padding:16px 20px;max-width:1400px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7ec;vertical-align:top}
th{background:#eef1f5;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.live,.ok{background:#d9f5e3;color:#11643a}.pending_probe,.refreshing,.refresh_overdue{background:#fff1c7;color:#7a5200}
.suspended,.expired,.invalid,.missing{background:#fde1e1;color:#9b1c1c}
.suspension{background:#fff;border-left:6px solid #c62828;padding:12px 16px;margin:0 0 12px;box-shadow:0 1px 2px #0002}
.warning{background:#fff;border-left:6px solid #d97706;padding:10px 16px;margin:0 0 10px;box-shadow:0 1px 2px #0002}
.suspension h3{margin:0 0 6px;font-size:16px;color:#9b1c1c}.reason{font-size:15px;margin:4px 0 8px}
.fix{background:#f1f3f6;padding:6px 10px;font-family:ui-monospace,monospace;display:inline-block}
.card{background:#fff;padding:10px 14px;margin:0 0 12px;box-shadow:0 1px 2px #0002}
.gauge{width:160px;height:10px;background:#e4e7ec;display:inline-block;vertical-align:middle;position:relative}
.gauge span{display:block;height:100%;background:#2f6fdf}.gauge.hot span{background:#d97706}.gauge.full span{background:#c62828}
.muted{color:#687386}.num{font-variant-numeric:tabular-nums}
ul.caps{margin:4px 0;padding-left:18px}li.no{color:#9b1c1c}li.yes{color:#11643a}
";

fn page_shell(title: &str, body: &str, refresh: bool) -> String {
    let refresh = if refresh { "<meta http-equiv=\"refresh\" content=\"15\">" } else { "" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

fn login_page(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"badge suspended\" id=\"login-error\">{}</p>", esc(e))).unwrap_or_default();
    page_shell(
        "deskgate: sign in",
        &format!(
            "<header><h1>deskgate</h1></header><main><h2>Sign in to the dashboard</h2>{error}\
             <form method=\"post\" action=\"/login\" class=\"card\">\
             <p>Enter the gateway's API token (<code>DESKGATE_API_TOKEN</code>). The browser keeps a 12-hour session cookie, not the token.</p>\
             <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" size=\"40\" required autofocus> \
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form></main>"
        ),
        false,
    )
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", esc(class), esc(text))
}

fn fix_command(c: &ConnectionView, kind: &str) -> String {
    match kind {
        crate::auth::SUSPEND_REAUTH => format!(
            "Set new credentials: deskgate connect {} --update --credentials-file FILE",
            c.id
        ),
        "rescope" => format!("Grant the missing permission on the platform, then: deskgate probe {}", c.id),
        _ => format!("Once the cause is fixed: deskgate resume {}", c.id),
    }
}

fn auth_cell(c: &ConnectionView, now: Millis) -> String {
    let a = &c.auth;
    let mut out = badge(a.state, &a.state.replace('_', " "));
    if let Some(s) = a.scheme {
        let _ = write!(out, " <span class=\"muted\">{} v{}</span>", esc(s), a.version.unwrap_or(0));
    }
    if let Some(exp) = a.expires_at {
        let word = if exp > now { "expires" } else { "expired" };
        let _ = write!(out, "<br>{word} {} <span class=\"muted\">({})</span>", relative(exp, now), utc(exp));
    }
    if let Some(next) = a.next_check_at {
        let what = if a.expires_at.is_some() { "next refresh" } else { "next health check" };
        let _ = write!(out, "<br>{what} {}", relative(next, now));
    }
    out
}

/// The command that sets a connection's webhook secret.
fn webhook_fix(id: &str) -> String {
    format!("deskgate connect {id} --rotate-webhook-secret --webhook-secret-env VAR")
}

/// Whether a webhook secret is set (never the secret itself).
fn webhooks_cell(c: &ConnectionView) -> String {
    match (c.webhooks.secret_set, c.webhooks.allow_unsigned) {
        (true, false) => badge("ok", "secret set"),
        (true, true) => format!("{}<br><span class=\"muted\">unsigned accepted</span>", badge("ok", "secret set")),
        (false, true) => format!(
            "{}<br><span class=\"muted\">no secret: signed deliveries refused</span>",
            badge("refreshing", "unsigned only")
        ),
        (false, false) => format!(
            "{}<br><span class=\"muted\">every delivery refused; set one: <code>{}</code></span>",
            badge("missing", "no secret"),
            esc(&webhook_fix(&c.id))
        ),
    }
}

fn probe_list(c: &ConnectionView, only_missing: bool) -> String {
    let Some(p) = &c.probe else { return "<span class=\"muted\">not probed yet</span>".into() };
    let mut out = String::new();
    if let Some(e) = &p.error {
        let _ = write!(out, "<p class=\"no\">The probe could not run: {}</p>", esc(e));
    }
    out.push_str("<ul class=\"caps\">");
    // Capabilities that fail for the same reason (one missing scope) are one line: one fix.
    let mut groups: Vec<(Vec<&str>, &super::view::CapabilityView)> = Vec::new();
    for cap in p.capabilities.iter().filter(|cap| !only_missing || !cap.granted) {
        let same = |o: &super::view::CapabilityView| {
            o.granted == cap.granted
                && (cap.granted
                    || (&o.permission_kind, &o.missing, &o.remediation, &o.message)
                        == (&cap.permission_kind, &cap.missing, &cap.remediation, &cap.message))
        };
        match groups.iter_mut().find(|(_, first)| same(first)) {
            Some((names, _)) => names.push(&cap.capability),
            None => groups.push((vec![&cap.capability], cap)),
        }
    }
    for (names, cap) in groups {
        let names = esc(&names.join(", "));
        if cap.granted {
            let _ = write!(out, "<li class=\"yes\">&#10003; {names}</li>");
        } else {
            let what = match (&cap.permission_kind, &cap.missing) {
                (Some(k), Some(m)) => format!("missing {} <code>{}</code>", esc(k), esc(m)),
                (None, Some(m)) => format!("missing <code>{}</code>", esc(m)),
                _ => esc(cap.message.as_deref().unwrap_or("not granted")),
            };
            let fix = cap.remediation.as_deref().map(|r| format!(" &mdash; <span class=\"remediation\">{}</span>", esc(r))).unwrap_or_default();
            let _ = write!(out, "<li class=\"no\">&#10007; {names}: {what}{fix}</li>");
        }
    }
    out.push_str("</ul>");
    if let Some(at) = p.at {
        let _ = write!(out, "<span class=\"muted\">probed {}</span>", utc(at));
    }
    out
}

fn gauge(used: u64, of: u64) -> String {
    let pct = if of == 0 { 0.0 } else { (used as f64 / of as f64 * 100.0).min(100.0) };
    let class = if pct >= 99.5 { "gauge full" } else if pct >= 80.0 { "gauge hot" } else { "gauge" };
    format!("<span class=\"{class}\" title=\"{used} of {of}\"><span style=\"width:{pct:.0}%\"></span></span> <span class=\"num\">{used}/{of}</span>")
}

/// The dashboard's HTML.
pub(crate) fn render(v: &StatusView) -> String {
    let now = v.now;
    let count = |s: &str| v.connections.iter().filter(|c| c.state == s).count();
    let mut b = String::new();
    let _ = write!(
        b,
        "<header><h1>deskgate</h1><div class=\"sum\">{} connections: {} suspended, {} waiting for a probe, {} live &middot; {} open alerts &middot; {}</div>\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form></header><main>",
        v.connections.len(),
        count("suspended"),
        count("pending_probe"),
        count("live"),
        v.alerts.len(),
        utc(now)
    );

    // 1. Suspensions first.
    let suspended: Vec<&ConnectionView> = v.connections.iter().filter(|c| c.suspended.is_some()).collect();
    if !suspended.is_empty() {
        b.push_str("<section id=\"suspended\"><h2>Suspended: needs a person</h2>");
        for c in suspended {
            let s = c.suspended.as_ref().expect("filtered");
            let _ = write!(
                b,
                "<div class=\"suspension\" id=\"suspended-{id}\"><h3>{name} ({platform}) is suspended <span class=\"muted\">since {since}, {ago}; kind {kind}</span></h3>\
                 <div class=\"reason\">{reason}</div>",
                id = esc(&c.id),
                name = esc(&c.display_name),
                platform = esc(&c.platform),
                since = utc(s.since),
                ago = relative(s.since, now),
                kind = esc(&s.kind),
                reason = esc(&s.reason),
            );
            if c.probe.as_ref().is_some_and(|p| !p.passed) {
                let _ = write!(b, "<div>Scope probe: {}</div>", probe_list(c, true));
            }
            let queued = c.queues.outbox.values().sum::<u64>();
            let _ = write!(
                b,
                "<div>Work kept while suspended: {queued} outbox entries, {} inbox events.</div><div class=\"fix\">{}</div></div>",
                c.queues.inbox_pending,
                esc(&fix_command(c, &s.kind))
            );
        }
        b.push_str("</section>");
    }

    // 1b. Live connections whose webhooks cannot be verified: every delivery is refused, and only
    // the reconciliation sweep brings their tickets in, minutes late.
    let unverified: Vec<&ConnectionView> =
        v.connections.iter().filter(|c| c.state == "live" && !c.webhooks.secret_set && !c.webhooks.allow_unsigned).collect();
    if !unverified.is_empty() {
        b.push_str("<section id=\"webhook-warnings\"><h2>Webhooks refused: no secret</h2>");
        for c in unverified {
            let _ = write!(
                b,
                "<div class=\"warning\" id=\"no-webhook-secret-{id}\"><b>{name}</b> ({platform}) has no webhook secret: its webhooks \
                 are refused (503 <code>no-secret</code>), so tickets arrive only with the reconciliation sweep. \
                 <div class=\"fix\">{fix}</div></div>",
                id = esc(&c.id),
                name = esc(&c.display_name),
                platform = esc(&c.platform),
                fix = esc(&webhook_fix(&c.id)),
            );
        }
        b.push_str("</section>");
    }

    // 2. Every connection.
    b.push_str("<section id=\"connections\"><h2>Connections</h2>");
    if v.connections.is_empty() {
        b.push_str("<p class=\"muted\">No connections yet: <code>deskgate connect</code> adds one.</p>");
    } else {
        b.push_str(
            "<table><thead><tr><th>connection</th><th>platform</th><th>state</th><th>auth</th><th>webhooks</th><th>outbox (pending/sent/ambiguous)</th>\
             <th>inbox</th><th>gate waiting (retry/write/read)</th><th>429s (write/read)</th><th>catches</th><th>duplicates prevented</th><th>open alerts</th></tr></thead><tbody>",
        );
        for c in &v.connections {
            let ob = |k: &str| c.queues.outbox.get(k).copied().unwrap_or(0);
            let gate = if c.budget.is_some() {
                format!("{}/{}/{}", c.queues.gate_write_retry, c.queues.gate_write, c.queues.gate_read)
            } else {
                "<span class=\"muted\">not running here</span>".into()
            };
            let alerts: Vec<String> = c.open_alerts.iter().map(|(k, n)| format!("{} &times;{n}", esc(k))).collect();
            let _ = write!(
                b,
                "<tr id=\"conn-{id}\"><td><b>{name}</b><br><span class=\"muted\">{id}{plan}</span></td><td>{platform}</td><td>{state}</td><td>{auth}</td><td>{webhooks}</td>\
                 <td class=\"num\">{}/{}/{}</td><td class=\"num\">{}</td><td class=\"num\">{gate}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                ob("pending"),
                ob("sent"),
                ob("ambiguous"),
                c.queues.inbox_pending,
                c.counters.rate_limited_write,
                c.counters.rate_limited_read,
                c.counters.reconciliation_catches,
                c.counters.duplicates_prevented(),
                if alerts.is_empty() { "<span class=\"muted\">none</span>".into() } else { alerts.join("<br>") },
                id = esc(&c.id),
                name = esc(&c.display_name),
                plan = c.plan.as_deref().map(|p| format!(" &middot; plan {}", esc(p))).unwrap_or_default(),
                platform = esc(&c.platform),
                state = badge(c.state, &c.state.replace('_', " ")),
                auth = auth_cell(c, now),
                webhooks = webhooks_cell(c),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");

    // 3. Budgets and probes per connection.
    for c in &v.connections {
        let _ = write!(b, "<section class=\"card\" id=\"detail-{}\"><h2>{} <span class=\"muted\">({})</span></h2>", esc(&c.id), esc(&c.display_name), esc(&c.platform));
        match &c.budget {
            None => b.push_str("<p class=\"muted\">Budget: the connection's workers do not run in this process.</p>"),
            Some(g) => {
                let _ = write!(b, "<table class=\"budget\"><thead><tr><th>bucket (plan {})</th><th>limit</th><th>spent in window (ours + others)</th><th>write lane</th><th>read lane</th><th>state</th></tr></thead><tbody>", esc(&g.budget.plan));
                for bk in &g.budget.buckets {
                    let w = bk.lane(crate::bindings::Lane::Write);
                    let r = bk.lane(crate::bindings::Lane::Read);
                    let state = match bk.blocked_until {
                        Some(t) => format!("<span class=\"badge suspended\">429: blocked until {}</span>", relative(t, now)),
                        None => format!("{:.0}% used, target {}", bk.utilization * 100.0, bk.target),
                    };
                    let _ = write!(
                        b,
                        "<tr><td>{}</td><td class=\"num\">{} / {}s</td><td>{} <span class=\"muted\">others {}</span></td><td>{}</td><td>{}</td><td>{state}</td></tr>",
                        esc(&bk.bucket),
                        bk.limit,
                        bk.window_ms / 1000,
                        gauge(bk.spent, bk.limit.into()),
                        bk.others,
                        gauge(w.used, w.capacity),
                        gauge(r.used, r.capacity),
                    );
                }
                b.push_str("</tbody></table>");
            }
        }
        if let Some(at) = c.next_sweep {
            let _ = write!(b, "<p>Next reconciliation sweep {}.</p>", relative(at, now));
        }
        let _ = write!(b, "<div class=\"probe\"><b>Scope probe</b> {}</div></section>", probe_list(c, false));
    }

    // 4. Alerts.
    b.push_str("<section id=\"alerts\"><h2>Recent alerts (unacknowledged)</h2>");
    if v.alerts.is_empty() {
        b.push_str("<p class=\"muted\">None.</p>");
    } else {
        b.push_str("<table><thead><tr><th>#</th><th>when</th><th>connection</th><th>kind</th><th>what to do</th><th>delivered</th></tr></thead><tbody>");
        for a in &v.alerts {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}<br><span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.id,
                relative(a.created_at, now),
                utc(a.created_at),
                esc(a.connection_id.as_deref().unwrap_or("gateway")),
                esc(&a.kind),
                esc(&a.text),
                a.delivered_at.map_or_else(|| "<span class=\"badge pending_probe\">not yet</span>".to_string(), |d| relative(d, now)),
            );
        }
        b.push_str("</tbody></table><p class=\"muted\">Acknowledge with <code>deskgate alerts ack ID</code>.</p>");
    }
    b.push_str("</section></main>");
    page_shell("deskgate", &b, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let v = session_value("tok", 1_000);
        assert!(session_valid("tok", &v, 1_000));
        assert!(session_valid("tok", &v, 1_000 + SESSION_MS - 1));
        assert!(!session_valid("tok", &v, 1_000 + SESSION_MS), "expired");
        assert!(!session_valid("other", &v, 1_000), "a rotated token ends every session");
        assert!(!session_valid("tok", "tok", 1_000), "the token itself is not a session");
        assert!(!session_valid("tok", &v.replace("1000.", "999999999."), 1_000), "issued-at is signed");
        assert!(!session_valid("tok", "", 1_000));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<script>\"a\"&'b'</script>"), "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;");
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_004_000_000), "2026-11-30 02:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(relative(10_000, 0), "in 10s");
        assert_eq!(relative(0, 3_723_000), "1h 2m ago");
        assert_eq!(relative(5, 5), "now");
        assert_eq!(relative(90_061_000, 0), "in 1d 1h");
    }
}
