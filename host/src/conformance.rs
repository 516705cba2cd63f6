//! The conformance kit behind `deskgate adapter check <component.wasm>`.
//!
//! Third parties ship adapters as components; the host trusts none of them. Before an adapter is
//! used it should meet the obligations below, each of which protects one host policy:
//!
//! | obligation | protects |
//! |---|---|
//! | `descriptor` complete and sane | budgets, auth, probes and webhooks are configured from it |
//! | requests well-formed: relative path, no credentials, declared buckets, right lane | auth injection, budgets, lanes |
//! | 401 is `unauthenticated`, 403 is `forbidden`, 429 is `rate-limited`, 5xx `transient` | the re-auth vs re-scope split, backoff |
//! | deterministic | replays after a crash, and read-back, see the same requests |
//! | garbage in does not trap | a hostile platform response cannot take a call down |
//! | every call inside the limits | the sandbox budget |
//!
//! The kit drives the adapter only through its exports, with canned responses: no network.

use crate::bindings::{
    Action, ApplyAction, Assignee, AuthScheme, Capability, Connection, Descriptor, Failure,
    HttpRequest, HttpResponse, Lane, ListChanged, Operation, Resolution, SignatureAlgorithm, Step,
    TicketStatus,
};
use crate::runtime::Adapter;
use serde::Serialize;
use std::collections::BTreeSet;

/// The result of one obligation.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name of the obligation (stable, for scripts).
    pub obligation: &'static str,
    /// Whether it holds.
    pub passed: bool,
    /// What was checked, or what is broken and how to fix it.
    pub detail: String,
}

/// Everything the kit found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The adapter's id (from its descriptor).
    pub adapter: String,
    /// One entry per check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every obligation holds.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

struct Kit<'a> {
    adapter: &'a Adapter,
    checks: Vec<Check>,
}

impl Kit<'_> {
    fn record(&mut self, obligation: &'static str, result: Result<String, String>) {
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check { obligation, passed, detail });
    }
}

/// Operation kinds an adapter's descriptor may list as idempotent.
const ACTION_KINDS: [&str; 5] = ["reply", "set-status", "add-tags", "assign", "resolve"];

fn action_kind(a: &Action) -> &'static str {
    match a {
        Action::Reply(_) => "reply",
        Action::SetStatus(_) => "set-status",
        Action::AddTags(_) => "add-tags",
        Action::Assign(_) => "assign",
        Action::Resolve(_) => "resolve",
    }
}

/// The connection the kit uses: the default plan, an agent id, no settings.
fn test_connection(d: &Descriptor) -> Connection {
    Connection {
        id: "conformance".into(),
        plan: d.default_plan.clone(),
        agent_id: Some("1001".into()),
        settings: Vec::new(),
    }
}

/// The operations every adapter must plan.
fn sample_operations() -> Vec<(&'static str, Operation)> {
    let apply = |action| Operation::Apply(ApplyAction { ticket_id: "4242".into(), action });
    vec![
        ("get-ticket", Operation::GetTicket("4242".into())),
        ("list-changed", Operation::ListChanged(ListChanged { since: 1_700_000_000_000, cursor: None })),
        ("list-open", Operation::ListOpen(None)),
        ("reply", apply(Action::Reply("Thanks for waiting: this is fixed now.".into()))),
        ("set-status", apply(Action::SetStatus(TicketStatus::Solved))),
        ("add-tags", apply(Action::AddTags(vec!["deskgate".into(), "auto-resolved".into()]))),
        (
            "assign",
            apply(Action::Assign(Assignee { agent_id: Some("1001".into()), group_id: None })),
        ),
        (
            "resolve",
            apply(Action::Resolve(Resolution {
                reply: "Fixed, closing this now.".into(),
                status: TicketStatus::Solved,
                tags: vec!["auto-resolved".into()],
                assignee: None,
            })),
        ),
        ("who-am-i", Operation::WhoAmI),
        ("probe", Operation::Probe(Capability::ALL.to_vec())),
        (
            "read-back",
            Operation::ReadBack(ApplyAction {
                ticket_id: "4242".into(),
                action: Action::Reply("Thanks for waiting: this is fixed now.".into()),
            }),
        ),
    ]
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: body.as_bytes().to_vec(),
    }
}

/// Run every check against a loaded adapter.
pub fn check(adapter: &Adapter) -> Report {
    let mut kit = Kit { adapter, checks: Vec::new() };
    let d = adapter.descriptor().clone();
    kit.record("descriptor", check_descriptor(&d));
    match adapter.describe_again() {
        Ok(again) if again == d => kit.record("deterministic-describe", Ok("describe() is stable".into())),
        Ok(_) => kit.record(
            "deterministic-describe",
            Err("describe() returned a different descriptor on a second call; it must be a constant".into()),
        ),
        Err(e) => kit.record("within-limits", Err(e.to_string())),
    }
    let conn = test_connection(&d);
    for (name, op) in sample_operations() {
        check_operation(&mut kit, &d, &conn, name, &op);
    }
    check_garbage(&mut kit, &conn);
    check_webhooks(&mut kit, &d, &conn);
    Report { adapter: adapter.id().to_string(), checks: kit.checks }
}

fn check_descriptor(d: &Descriptor) -> Result<String, String> {
    let mut problems = Vec::new();
    if d.id.is_empty() || !d.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        problems.push(format!("id {:?} must be non-empty lower-case letters, digits and '-'", d.id));
    }
    if d.name.trim().is_empty() {
        problems.push("name is empty".into());
    }
    if d.version.split('.').count() != 3 || d.version.split('.').any(|p| p.parse::<u64>().is_err()) {
        problems.push(format!("version {:?} is not semver MAJOR.MINOR.PATCH", d.version));
    }
    if d.auth.is_empty() {
        problems.push("no auth scheme: declare basic, bearer or oauth2".into());
    }
    for a in &d.auth {
        match a {
            AuthScheme::Basic(b) => {
                for t in [&b.username, &b.password] {
                    for field in placeholders(t) {
                        if !b.fields.contains(&field) {
                            problems.push(format!(
                                "basic auth template {t:?} uses {{{field}}} which is not in fields {:?}",
                                b.fields
                            ));
                        }
                    }
                }
            }
            AuthScheme::Oauth2(o) => {
                if !o.token_path.starts_with('/') {
                    problems.push(format!("oauth2 token-path {:?} must be a path starting with '/'", o.token_path));
                }
            }
            AuthScheme::Bearer => {}
        }
    }
    if d.plans.is_empty() {
        problems.push("no plans: declare at least one plan with its rate buckets".into());
    }
    if !d.plans.iter().any(|p| p.plan == d.default_plan) {
        problems.push(format!("default-plan {:?} is not one of the declared plans", d.default_plan));
    }
    for p in &d.plans {
        if p.buckets.is_empty() {
            problems.push(format!("plan {:?} has no buckets", p.plan));
        }
        let mut seen = BTreeSet::new();
        for b in &p.buckets {
            if !seen.insert(&b.name) {
                problems.push(format!("plan {:?} declares bucket {:?} twice", p.plan, b.name));
            }
            if b.limit == 0 || b.window_ms == 0 {
                problems.push(format!(
                    "plan {:?} bucket {:?} has limit {} per {} ms; both must be positive",
                    p.plan, b.name, b.limit, b.window_ms
                ));
            }
        }
    }
    for a in &d.idempotent_actions {
        if !ACTION_KINDS.contains(&a.as_str()) {
            problems.push(format!("idempotent-actions lists {a:?}; known kinds are {ACTION_KINDS:?}"));
        }
    }
    for cap in Capability::ALL {
        let n = d.capabilities.iter().filter(|c| c.capability == cap).count();
        if n != 1 {
            problems.push(format!(
                "capability {} is declared {n} times; declare each of the five exactly once with how it is probed",
                cap.name()
            ));
        }
    }
    if d.webhook.signature_header.is_empty() || d.webhook.signature_header != d.webhook.signature_header.to_ascii_lowercase() {
        problems.push(format!(
            "webhook signature-header {:?} must be a non-empty lower-case header name",
            d.webhook.signature_header
        ));
    }
    if problems.is_empty() {
        Ok(format!("{} plans, {} auth schemes, 5 capabilities", d.plans.len(), d.auth.len()))
    } else {
        Err(problems.join("; "))
    }
}

fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        out.push(rest[open + 1..open + close].to_string());
        rest = &rest[open + close + 1..];
    }
    out
}

fn check_request(d: &Descriptor, conn: &Connection, op_name: &str, op: &Operation, req: &HttpRequest) -> Vec<String> {
    let mut problems = Vec::new();
    if !req.path.starts_with('/') || req.path.contains("://") {
        problems.push(format!("path {:?} must be relative to the base URL and start with '/'", req.path));
    }
    for (k, _) in &req.headers {
        let k = k.to_ascii_lowercase();
        if k == "authorization" || k == "cookie" || k.contains("api-key") || k.contains("token") {
            problems.push(format!(
                "sets header {k:?}: credentials are injected by the host, an adapter never sets them"
            ));
        }
    }
    let plan = d.plans.iter().find(|p| p.plan == conn.plan);
    if req.draws.is_empty() {
        problems.push("draws on no bucket: every request must name the buckets it spends".into());
    }
    for draw in &req.draws {
        if let Some(p) = plan
            && !p.buckets.iter().any(|b| b.name == draw.bucket)
        {
            problems.push(format!("draws on bucket {:?} which plan {:?} does not declare", draw.bucket, p.plan));
        }
    }
    let expected = match op {
        Operation::Apply(_) => Some(Lane::Write),
        Operation::GetTicket(_) | Operation::ListChanged(_) | Operation::ListOpen(_) | Operation::ReadBack(_) | Operation::WhoAmI => {
            Some(Lane::Read)
        }
        Operation::Probe(_) => None,
    };
    if let Some(lane) = expected
        && req.lane != lane
    {
        problems.push(format!("{op_name} must travel in the {lane:?} lane, not {:?}", req.lane));
    }
    if let (Some(_), Operation::Apply(a)) = (&req.idempotency_header, op)
        && !d.idempotent_actions.iter().any(|k| k == action_kind(&a.action))
    {
        problems.push(format!(
            "asks for an idempotency header on {op_name} but the descriptor does not list it in idempotent-actions"
        ));
    }
    if let Some(body) = &req.body {
        let json = req.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.contains("json"));
        if json && serde_json::from_slice::<serde_json::Value>(body).is_err() {
            problems.push("declares a JSON content type but the body is not valid JSON".into());
        }
    }
    problems
}

fn check_operation(kit: &mut Kit<'_>, d: &Descriptor, conn: &Connection, name: &'static str, op: &Operation) {
    let first = kit.adapter.start(conn, op);
    let second = kit.adapter.start(conn, op);
    let step = match (&first, &second) {
        (Err(e), _) | (_, Err(e)) => {
            kit.record("within-limits", Err(format!("start({name}): {e}")));
            return;
        }
        (Ok(a), Ok(b)) => {
            if a != b {
                kit.record(
                    "deterministic",
                    Err(format!("start({name}) planned different requests for the same input; adapters must be pure")),
                );
            }
            a.clone()
        }
    };
    let pending = match step {
        Ok(Step::Send(p)) => p,
        Ok(Step::Done(_)) => {
            kit.record("plans-requests", Ok(format!("{name}: answered without a request")));
            return;
        }
        Err(Failure::Invalid(why)) => {
            // Allowed: an adapter may refuse an operation its platform cannot express, as long as
            // it says why.
            let result = if why.trim().is_empty() {
                Err(format!("{name}: refused as invalid with no explanation"))
            } else {
                Ok(format!("{name}: refused ({why})"))
            };
            kit.record("plans-requests", result);
            return;
        }
        Err(other) => {
            kit.record("plans-requests", Err(format!("start({name}) failed before any IO: {other:?}")));
            return;
        }
    };
    let problems = check_request(d, conn, name, op, &pending.request);
    kit.record(
        "well-formed-requests",
        if problems.is_empty() {
            Ok(format!("{name}: {:?} {}", pending.request.method, pending.request.path))
        } else {
            Err(format!("{name}: {}", problems.join("; ")))
        },
    );
    if matches!(op, Operation::Probe(_)) {
        return;
    }
    check_classification(kit, conn, name, op, &pending.state);
}

fn check_classification(kit: &mut Kit<'_>, conn: &Connection, name: &str, op: &Operation, state: &str) {
    // Canonical bodies: what a generic API gateway or the platform would say, in JSON and in text.
    let cases: [(u16, &[(&str, &str)], &str, &str); 8] = [
        (401, &[("content-type", "application/json")], r#"{"error":"invalid_token","message":"Unauthorized"}"#, "unauthenticated"),
        (401, &[("content-type", "text/plain")], "Unauthorized", "unauthenticated"),
        (403, &[("content-type", "application/json")], r#"{"error":"Forbidden","message":"You are not authorized to perform this action."}"#, "forbidden"),
        (403, &[("content-type", "text/html")], "<html><body>403 Forbidden</body></html>", "forbidden"),
        (429, &[("retry-after", "7"), ("content-type", "text/plain")], "Too Many Requests", "rate-limited"),
        (500, &[("content-type", "text/html")], "<html>Internal Server Error</html>", "transient"),
        (502, &[], "", "transient"),
        (503, &[("retry-after", "1")], r#"{"error":"unavailable"}"#, "transient"),
    ];
    let mut problems = Vec::new();
    for (status, headers, body, want) in cases {
        let resp = response(status, headers, body);
        match kit.adapter.resume(conn, op, state, &resp) {
            Err(e) => problems.push(format!("HTTP {status}: {e}")),
            Ok(Err(f)) if f.case() == want => {
                if let (429, Failure::RateLimited(r)) = (status, &f)
                    && r.retry_after_ms.is_some_and(|ms| ms != 7000)
                {
                    problems.push(format!(
                        "HTTP 429 with Retry-After: 7 gave retry-after-ms {:?}; Retry-After is in seconds (7000 ms)",
                        r.retry_after_ms
                    ));
                }
            }
            Ok(Err(f)) => {
                let why = match (status, f.case()) {
                    (403, "unauthenticated") => {
                        " — a 403 means the credential is valid but lacks a permission: classify it forbidden (re-scope), never unauthenticated (re-auth)"
                    }
                    (401, "forbidden") => " — a 401 means the credential was refused: classify it unauthenticated",
                    (s, _) if s >= 500 => " — 5xx are passing faults: classify them transient so the host retries",
                    (429, _) => " — a 429 must be rate-limited so the host's budget backs off",
                    _ => "",
                };
                problems.push(format!("HTTP {status} classified {} instead of {want}{why}", f.case()));
            }
            Ok(Ok(step)) => problems.push(format!(
                "HTTP {status} was treated as success ({}) instead of {want}",
                match step {
                    Step::Send(_) => "planned another request",
                    Step::Done(_) => "finished",
                }
            )),
        }
    }
    problems.dedup();
    kit.record(
        "error-classification",
        if problems.is_empty() {
            Ok(format!("{name}: 401/403/429/5xx classified"))
        } else {
            Err(format!("{name}: {}", problems.join("; ")))
        },
    );
}

fn check_garbage(kit: &mut Kit<'_>, conn: &Connection) {
    let op = Operation::GetTicket("4242".into());
    let mut problems = Vec::new();
    let state = match kit.adapter.start(conn, &op) {
        Ok(Ok(Step::Send(p))) => p.state,
        _ => return,
    };
    let big = format!("{{\"ticket\":{{\"id\":1,\"subject\":\"{}\"}}}}", "x".repeat(256 << 10));
    let bodies: [(&str, Vec<u8>); 5] = [
        ("empty body", Vec::new()),
        ("invalid UTF-8", vec![0xff, 0xfe, 0x00, 0x9f]),
        ("truncated JSON", b"{\"ticket\":{\"id\":".to_vec()),
        ("JSON of the wrong shape", b"[1,2,3]".to_vec()),
        ("a 256 KiB body", big.into_bytes()),
    ];
    for (what, body) in bodies {
        let resp = HttpResponse { status: 200, headers: Vec::new(), body };
        if let Err(e) = kit.adapter.resume(conn, &op, &state, &resp) {
            problems.push(format!("200 with {what}: {e}"));
        }
    }
    let junk = response(200, &[("x-rate-limit", "lots"), ("ratelimit-remaining", "-5"), ("retry-after", "\u{1F600}")], "");
    if let Err(e) = kit.adapter.observe(conn, &junk) {
        problems.push(format!("observe with nonsense rate headers: {e}"));
    }
    if let Err(e) = kit.adapter.resume(conn, &op, "not the state you gave me", &response(200, &[], "{}")) {
        problems.push(format!("resume with a state it did not produce: {e}"));
    }
    kit.record(
        "no-trap-on-garbage",
        if problems.is_empty() {
            Ok("garbage bodies, headers and state give failures, not traps".into())
        } else {
            Err(format!("{}: platform data must never trap the component; return a failure instead", problems.join("; ")))
        },
    );
}

fn check_webhooks(kit: &mut Kit<'_>, d: &Descriptor, conn: &Connection) {
    let mut problems = Vec::new();
    match kit.adapter.parse_webhook(conn, &[], b"") {
        Err(e) => problems.push(format!("empty delivery: {e}")),
        Ok(Ok(w)) if !w.events.is_empty() => problems.push("an empty delivery produced events".into()),
        Ok(_) => {}
    }
    match kit.adapter.parse_webhook(conn, &[("content-type".into(), "application/json".into())], b"{not json") {
        Err(e) => problems.push(format!("malformed JSON: {e}")),
        Ok(Ok(w)) if !w.events.is_empty() => problems.push("malformed JSON produced events".into()),
        Ok(_) => {}
    }
    // An unsigned delivery must not claim a signature out of thin air.
    let body = br#"{"id":"1","ticket":{"id":"1"}}"#;
    if let Ok(Ok(w)) = kit.adapter.parse_webhook(conn, &[("content-type".into(), "application/json".into())], body)
        && let Some(sig) = &w.signature
        && !sig.provided.is_empty()
    {
        problems.push("reported a provided signature for a delivery that carried none".into());
    }
    let timestamped = matches!(d.webhook.algorithm, SignatureAlgorithm::HmacSha256Base64);
    if timestamped && d.webhook.max_age_secs.is_none() {
        problems.push("a timestamped signature scheme needs max-age-secs so the host can refuse replays".into());
    }
    kit.record(
        "webhook-parsing",
        if problems.is_empty() { Ok("bad deliveries refused without traps".into()) } else { Err(problems.join("; ")) },
    );
}

/// A report with one failed check, for a component that did not even load.
pub fn load_failure(source: &str, error: &dyn std::fmt::Display) -> Report {
    Report {
        adapter: source.to_string(),
        checks: vec![Check { obligation: "loads", passed: false, detail: error.to_string() }],
    }
}
