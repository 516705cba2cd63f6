//! Crash recovery around an OAuth refresh (issue #5), with the real binary: `deskgate serve` on
//! its embedded SQLite store holds a Zendesk OAuth connection whose refresh tokens rotate (the
//! simulator deletes the old pair the moment it issues a new one), and is killed with SIGKILL at
//! the two instants that matter:
//!
//! - right after the rotated pair is persisted: after the restart the connection works with the
//!   new pair, and the write caught on the wire is read back, not resent;
//! - between the platform's token answer and the durable write: at the restart the interrupted
//!   refresh is found, the dead token is detected on the first request, a `credential-invalid`
//!   ("re-authenticate") alert is raised and the connection suspended; nothing received before
//!   the kill is lost, and re-authenticating through the API resumes it and drains everything
//!   exactly once.
//!
//! The kill instants are made deterministic by simulator faults, not by timing: the token
//! endpoint withholds its answer after rotating (`token_hold_next`), or the first write sent with
//! the new pair is applied and then held on the wire (`timeout_next`). Since the credential
//! manager writes a new pair durably before anything uses it, a request carrying the new token is
//! proof that the pair is on disk. The test polls the simulator's request log and the gateway's
//! API for those states; nothing sleeps for policy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use deskgate_sim::{
    AccountSpec, AgentSpec, CredKind, CredentialInfo, CredentialSpec, FaultConfig, Outcome, Platform, RequestFilter,
    RequestRecord, SimConfig, SimHandle, TicketSpec, TimeoutMode, WebhookTarget, WriteKind,
};
use serde_json::{Value, json};

#[path = "support/serve.rs"]
mod support_serve;
use support_serve::Serve;

const TOKEN: &str = "auth-crash-api-token-0123456789abcdef";
const WEBHOOK_SECRET: &str = "auth-crash-zendesk-webhook-secret";

struct Rig {
    dir: PathBuf,
    sim: SimHandle,
    account: u64,
    agent: u64,
    cred: CredentialInfo,
    config: String,
    http: reqwest::Client,
}

impl Rig {
    async fn new(name: &str) -> Rig {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("auth-crash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sim = deskgate_sim::start(SimConfig::new(Platform::Zendesk).seed(55)).await.unwrap();
        let account = sim.create_account(AccountSpec::default()).unwrap().id;
        let agent = sim.create_agent(account, AgentSpec { name: Some("Ada Admin".into()), ..Default::default() }).unwrap().id;
        let cred = sim.create_credential(account, oauth(agent)).unwrap();
        let config = format!(
            "store = \"sqlite://{}\"\n\
             [connections.acme]\nplatform = \"zendesk\"\nbase_url = \"{}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n\
             [connections.acme.credentials]\nscheme = \"oauth\"\naccess_token = \"{}\"\nrefresh_token = \"{}\"\n\
             client_id = \"{}\"\nclient_secret = \"{}\"\n",
            dir.join("deskgate.db").display(),
            sim.base_url(),
            cred.token,
            cred.refresh_token.as_deref().unwrap(),
            cred.client_id.as_deref().unwrap(),
            cred.client_secret.as_deref().unwrap(),
        );
        Rig { dir, sim, account, agent, cred, config, http: reqwest::Client::new() }
    }

    fn start(&self, id: &str) -> Serve {
        Serve::start(&self.dir, id, &self.config, TOKEN)
    }

    fn log(&self, s: &Serve) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", s.id))).unwrap_or_default()
    }

    /// Wait (up to 120 s: a first start compiles the adapters) until the connection is in
    /// `state` ("live", "suspended").
    async fn wait_state(&self, s: &Serve, state: &str) -> Value {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.http.get(s.url("/v1/connections/acme")).bearer_auth(TOKEN).send().await
                && r.status().is_success()
            {
                let conn: Value = r.json().await.unwrap_or_default();
                if conn["state"] == state {
                    return conn;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(120), "the connection never became {state}; the gateway's log:\n{}", self.log(s));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, s: &Serve, path: &str) -> Value {
        self.http.get(s.url(path)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap()
    }

    async fn submit(&self, s: &Serve, ticket: u64, body: &str) -> i64 {
        let r = self
            .http
            .post(s.url("/v1/connections/acme/actions"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", format!("auth-crash-{ticket}-{body}"))
            .json(&json!({ "ticket_id": ticket.to_string(), "action": { "type": "reply", "body": body } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// Wait until every action in `ids` is confirmed.
    async fn wait_confirmed(&self, s: &Serve, ids: &[i64]) -> Vec<Value> {
        let start = Instant::now();
        let mut done = Vec::new();
        for id in ids {
            loop {
                let a = self.get(s, &format!("/v1/actions/{id}")).await;
                match a["state"].as_str() {
                    Some("confirmed") => {
                        done.push(a);
                        break;
                    }
                    Some("pending" | "sent" | "ambiguous") => {}
                    _ => panic!("action {id} did not complete: {a}\n{}", self.log(s)),
                }
                assert!(start.elapsed() < Duration::from_secs(60), "action {id} still in flight: {a}\n{}", self.log(s));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        done
    }

    fn ticket(&self, subject: &str) -> u64 {
        self.sim.create_ticket(self.account, TicketSpec { subject: Some(subject.into()), ..Default::default() }).unwrap()["id"]
            .as_u64()
            .unwrap()
    }

    fn replies(&self, ticket: u64) -> Vec<String> {
        self.sim
            .writes(self.account, Some(ticket))
            .unwrap()
            .iter()
            .filter_map(|w| match &w.kind {
                WriteKind::Reply { body } => Some(body.clone()),
                _ => None,
            })
            .collect()
    }

    fn requests_since(&self, seq: u64) -> Vec<RequestRecord> {
        self.sim.requests(RequestFilter { account_id: None, since_seq: Some(seq) })
    }

    fn last_seq(&self) -> u64 {
        self.sim.requests(RequestFilter::default()).last().map_or(0, |r| r.seq)
    }

    /// Poll the simulator's request log until `pred` matches a request (up to 60 s).
    async fn wait_request(&self, s: &Serve, what: &str, pred: impl Fn(&RequestRecord) -> bool) -> RequestRecord {
        let start = Instant::now();
        loop {
            if let Some(r) = self.sim.requests(RequestFilter::default()).into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "never saw {what}; the gateway's log:\n{}", self.log(s));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every event the app can pull for the connection now.
    async fn events(&self, s: &Serve) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(s, &format!("/v1/events?connection_id=acme&after={after}&limit=1000")).await;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return all;
            }
            after = page["next_cursor"].as_i64().unwrap();
            all.extend(events);
        }
    }

    /// Wait until the app can pull at least one event for each of `tickets`.
    async fn wait_events_for(&self, s: &Serve, tickets: &[u64]) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.events(s).await;
            if tickets.iter().all(|t| events.iter().any(|e| e["ticket_id"] == t.to_string())) {
                return events;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no event for some of {tickets:?}: {events:?}\n{}", self.log(s));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn oauth(agent: u64) -> CredentialSpec {
    CredentialSpec {
        kind: Some(CredKind::Oauth),
        agent_id: Some(agent),
        access_ttl_secs: Some(2 * 3600),
        refresh_ttl_secs: Some(30 * 86_400),
        ..Default::default()
    }
}

fn is_token_request(r: &RequestRecord) -> bool {
    r.method == "POST" && r.path.starts_with("/oauth/tokens")
}

/// kill -9 right after the rotated pair is persisted: the restarted gateway uses the new pair
/// (the old one is dead on the platform), reads back the write that was on the wire instead of
/// resending it, and takes new work. No alert, no suspension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_the_rotated_pair_is_persisted_works_with_the_new_pair() {
    let rig = Rig::new("persisted").await;
    let mut first = rig.start("first");
    rig.wait_state(&first, "live").await;
    let ticket = rig.ticket("Where is my parcel?");

    // The pair in deskgate.toml carries no expiry, so the gateway refreshes it once (the
    // simulator rotates it) to learn its lifetime, and stores the new pair before using it; and
    // the file's access token dies early here, so a write sent before that refresh meets a 401
    // and gets the same single refresh. Either way the write goes out with the new pair, is
    // applied and then held on the wire: the kill lands there.
    rig.sim
        .set_faults(FaultConfig { timeout_next: 1, timeout_mode: TimeoutMode::Hold, timeout_hold_ms: 20_000, ..Default::default() })
        .unwrap();
    rig.sim.expire_credential(rig.account, rig.cred.id).unwrap();
    let id = rig.submit(&first, ticket, "It left the warehouse today.").await;
    let held = rig.wait_request(&first, "the resend held on the wire", |r| r.outcome == Outcome::TimedOutAfterApply).await;
    let token = rig.wait_request(&first, "the refresh", |r| is_token_request(r) && r.status == 200).await;
    let new_cred = token.credential_id.expect("the token endpoint names the pair it issued");
    assert_ne!(new_cred, rig.cred.id);
    assert_eq!(held.credential_id, Some(new_cred), "the held write went out with the new pair, so it was stored first");
    first.kill();
    let at_kill = rig.last_seq();
    assert_eq!(rig.replies(ticket), vec!["It left the warehouse today."], "the write landed before the kill");
    let refreshes_before = rig.sim.requests(RequestFilter::default()).iter().filter(|r| is_token_request(r)).count();
    assert_eq!(refreshes_before, 1, "one refresh");

    // The old pair is dead on the platform; the config still names it (OAuth pairs in the store
    // win over the file's). The restarted gateway must use the stored new pair.
    rig.sim.set_faults(FaultConfig::default()).unwrap();
    let second = rig.start("second");
    rig.wait_state(&second, "live").await;
    let done = rig.wait_confirmed(&second, &[id]).await;
    assert!(done[0]["result"]["confirmed_by"].as_str().is_some_and(|s| s.contains("read-back")), "read back, not resent: {}", done[0]);
    let later = rig.submit(&second, ticket, "And it arrives tomorrow.").await;
    rig.wait_confirmed(&second, &[later]).await;
    assert_eq!(rig.replies(ticket), vec!["It left the warehouse today.", "And it arrives tomorrow."], "each reply once");

    let after: Vec<RequestRecord> = rig.requests_since(at_kill);
    assert!(!after.is_empty());
    for r in &after {
        assert_eq!(r.credential_id, Some(new_cred), "every request after the restart uses the new pair: {r:?}");
        assert!(r.status < 400, "nothing refused after the restart: {r:?}");
        assert!(!is_token_request(r), "no refresh needed after the restart: {r:?}");
    }
    let alerts = rig.get(&second, "/v1/alerts?connection_id=acme").await;
    assert_eq!(alerts["alerts"], json!([]), "no alert");
    println!(
        "killed after the rotated pair was stored: after the restart {} requests, all with the new pair; the held write confirmed by {}",
        after.len(),
        done[0]["result"]["confirmed_by"]
    );
}

/// kill -9 between the platform's token answer and the durable write: the simulator rotates the
/// pair and withholds the answer, and the gateway dies waiting for it. At the restart the
/// interrupted refresh is found and the stored (now dead) token is checked on the first request:
/// `credential-invalid` alert, suspension, `connection.suspended`. The replies submitted and the
/// webhooks delivered before the kill (and those delivered while suspended) are all kept;
/// re-authenticating through the API resumes the connection, and every reply lands once and every
/// ticket's event reaches the app once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_token_answer_and_its_write_suspends_and_reauth_drains_once() {
    let rig = Rig::new("lost-answer").await;
    let mut first = rig.start("first");
    rig.wait_state(&first, "live").await;
    rig.sim.set_webhook(rig.account, Some(WebhookTarget { url: first.url("/webhooks/acme"), secret: WEBHOOK_SECRET.into() })).unwrap();

    // Received before the kill: three new tickets by webhook, and a reply to each.
    let mut tickets: Vec<u64> = (0..3).map(|i| rig.ticket(&format!("Order {i}"))).collect();
    rig.wait_events_for(&first, &tickets).await;
    // The pair came from deskgate.toml without its expiry, so the gateway refreshed it once at
    // start to learn its lifetime; the platform issued it under a new credential id. Expire that
    // one, the token the gateway now holds.
    let learned = rig.wait_request(&first, "the refresh that learns the token's lifetime", |r| is_token_request(r) && r.status == 200).await;
    rig.sim.set_faults(FaultConfig { token_hold_next: 1, timeout_hold_ms: 20_000, ..Default::default() }).unwrap();
    let learned_id = learned.credential_id.expect("the token answer names its credential");
    let stored_refresh = rig.sim.credential(rig.account, learned_id).unwrap().refresh_token;
    rig.sim.expire_credential(rig.account, learned_id).unwrap();
    let mut ids = Vec::new();
    for (i, t) in tickets.iter().enumerate() {
        ids.push(rig.submit(&first, *t, &format!("Order {i} ships today.")).await);
    }
    // A write meets the 401; the refresh is sent; the platform rotates the pair (the old one is
    // deleted) and holds the answer.
    let held = rig.wait_request(&first, "the withheld token answer", |r| is_token_request(r) && r.outcome == Outcome::TimedOutAfterApply).await;
    // One more ticket arrives by webhook while the refresh hangs.
    let late = rig.ticket("Order 3");
    tickets.push(late);
    rig.wait_events_for(&first, &tickets).await;
    first.kill();
    for t in &tickets {
        assert!(rig.replies(*t).is_empty(), "ticket {t}: nothing was written with the expired token");
    }
    let spent = deskgate::auth::refresh::refresh(
        &reqwest::Client::new(),
        &rig.sim.base_url(),
        "/oauth/tokens",
        &deskgate::auth::OAuthClient { client_id: rig.cred.client_id.clone().unwrap(), client_secret: rig.cred.client_secret.clone().unwrap() },
        stored_refresh.as_deref().expect("the learned pair has a refresh token"),
    )
    .await;
    assert!(spent.is_err_and(|e| e.is_definitive()), "the platform rotated: the stored refresh token is spent");
    let at_kill = rig.last_seq();

    // Restart: the marker says a refresh was in flight; the stored token is dead.
    rig.sim.set_faults(FaultConfig::default()).unwrap();
    let second = rig.start("second");
    rig.sim.set_webhook(rig.account, Some(WebhookTarget { url: second.url("/webhooks/acme"), secret: WEBHOOK_SECRET.into() })).unwrap();
    let conn = rig.wait_state(&second, "suspended").await;
    assert_eq!(conn["suspended"]["kind"], "reauth", "{conn}");
    let after = rig.requests_since(at_kill);
    let first_request = after.first().expect("the restarted gateway checked the token");
    assert!(
        // Zendesk answers a dead token on `/users/me` as the anonymous user (200): the request
        // log records it as unauthorized, and so does the adapter.
        first_request.method == "GET" && first_request.path.contains("/users/me") && first_request.outcome == Outcome::Unauthorized,
        "the dead token is detected on the first request: {first_request:?}"
    );
    assert!(after.iter().all(|r| r.method == "GET"), "nothing written or refreshed with the dead pair: {after:?}");
    let alerts = rig.get(&second, "/v1/alerts?connection_id=acme").await;
    let alerts = alerts["alerts"].as_array().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "credential-invalid");
    assert!(alerts[0]["text"].as_str().unwrap().contains("Re-authenticate"), "{}", alerts[0]);
    assert_eq!(alerts[0]["detail"]["interrupted_refresh"], true, "{}", alerts[0]);
    for id in &ids {
        let a = rig.get(&second, &format!("/v1/actions/{id}")).await;
        assert_eq!(a["state"], "pending", "kept, not sent, not failed: {a}");
    }
    // A webhook while suspended is taken and held.
    let during = rig.ticket("Order 4, while suspended");
    tickets.push(during);
    let start = Instant::now();
    while !rig.sim.webhook_deliveries().iter().any(|d| d.status == Some(200) && d.ticket_id == during) {
        assert!(start.elapsed() < Duration::from_secs(30), "the webhook for {during} was not taken while suspended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Re-authenticate through the API with a fresh grant.
    let fresh = rig.sim.create_credential(rig.account, oauth(rig.agent)).unwrap();
    let r = rig
        .http
        .put(second.url("/v1/connections/acme/credentials"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "credentials": {
                "scheme": "oauth",
                "access_token": fresh.token,
                "refresh_token": fresh.refresh_token,
                "client": { "client_id": fresh.client_id, "client_secret": fresh.client_secret },
            },
            "expires_in": 7200,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    rig.wait_state(&second, "live").await;
    rig.wait_confirmed(&second, &ids).await;
    for (i, t) in tickets.iter().take(3).enumerate() {
        assert_eq!(rig.replies(*t), vec![format!("Order {i} ships today.")], "ticket {t}: once");
    }
    let events = rig.wait_events_for(&second, &tickets).await;
    let mut keys: Vec<&str> = events.iter().map(|e| e["dedupe_key"].as_str().unwrap()).collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "no event twice: {events:?}");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"connection.suspended") && kinds.contains(&"connection.resumed"), "{kinds:?}");
    println!(
        "killed with the rotated pair withheld (token request seq {}): detected on the first request after the restart, \
         suspended with one alert; re-auth drained {} replies once and {} events for {} tickets",
        held.seq,
        ids.len(),
        events.len(),
        tickets.len()
    );
}
