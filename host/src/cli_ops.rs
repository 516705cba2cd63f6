//! The operator's verbs: clients of a running gateway's API ([`crate::client`]).
//!
//! Every verb takes `--url` (else `DESKGATE_URL`, else `http://127.0.0.1:8080`), `--token` (else
//! `DESKGATE_API_TOKEN`; prefer the variable: a token on the command line is visible to other
//! users in the process list) and `--json` (print the API's JSON answer instead of text).
//!
//! Exit codes: 0 done; 1 failed (the API's error is printed as `error: CODE (HTTP n): message`,
//! or why the gateway could not be reached); 3 the scope probe ran and a capability is missing
//! (`connect`, `probe`); 2 is clap's, for a bad command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::dashboard::{relative, utc};
use crate::client::{ClientError, DEFAULT_URL, GatewayClient, segment};

/// The exit code for "the probe ran and did not pass".
pub const EXIT_PROBE_FAILED: u8 = 3;

/// Where the gateway is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The gateway's base URL [default: $DESKGATE_URL, else http://127.0.0.1:8080].
    #[arg(long)]
    pub url: Option<String>,
    /// The API token [default: $DESKGATE_API_TOKEN]. Prefer the variable: arguments are visible
    /// in the process list.
    #[arg(long)]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    fn client(&self) -> Result<GatewayClient, ClientError> {
        let url = self
            .url
            .clone()
            .or_else(|| std::env::var("DESKGATE_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = self.token.clone().or_else(|| std::env::var("DESKGATE_API_TOKEN").ok()).unwrap_or_default();
        GatewayClient::new(&url, &token)
    }
}

/// `deskgate connect ...`
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The connection's id (lowercase letters, digits, `-`, `_`); it names the webhook URL.
    pub id: String,
    /// The helpdesk platform (`deskgate adapters list` shows them).
    #[arg(long, required_unless_present_any = EXISTING, conflicts_with_all = EXISTING)]
    pub platform: Option<String>,
    /// The account's API base URL, e.g. `https://acme.zendesk.com`.
    #[arg(long, required_unless_present_any = EXISTING, conflicts_with_all = EXISTING)]
    pub base_url: Option<String>,
    /// The account's plan, as the adapter names it (default: the adapter's default plan).
    #[arg(long, conflicts_with = "update")]
    pub plan: Option<String>,
    /// A name for people.
    #[arg(long, conflicts_with = "update")]
    pub name: Option<String>,
    /// An adapter setting, `KEY=VALUE` (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE", conflicts_with = "update")]
    pub settings: Vec<String>,
    /// Where alerts for this connection are posted.
    #[arg(long, conflicts_with = "update")]
    pub admin_contact_url: Option<String>,
    /// A JSON file with the credentials, as the API takes them (`-` reads standard input):
    /// `{"scheme": "api_key", "fields": {...}}` or `{"scheme": "oauth", "access_token": ..., ...}`.
    #[arg(long, value_name = "FILE", required_if_eq("update", "true"))]
    pub credentials_file: Option<PathBuf>,
    /// Seconds until the OAuth access token in the credentials expires (so it is refreshed in
    /// time); omit for credentials that do not expire.
    #[arg(long, value_name = "SECS")]
    pub expires_in: Option<u64>,
    /// Replace the credentials of an existing connection (validated with who-am-i first; resumes
    /// a connection suspended for its credentials).
    #[arg(long, conflicts_with_all = ["rotate_webhook_secret", "clear_webhook_secret"])]
    pub update: bool,
    /// Read the platform's webhook signing secret from this environment variable (kept off the
    /// command line, where other users could see it in the process list). Stored sealed.
    #[arg(long, value_name = "VAR", conflicts_with = "webhook_secret_file")]
    pub webhook_secret_env: Option<String>,
    /// Read the webhook signing secret from this file (`-` reads standard input); one trailing
    /// newline is dropped.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Accept webhook deliveries that carry no signature at all (a bad signature is refused
    /// either way).
    #[arg(long)]
    pub allow_unsigned_webhooks: bool,
    /// Set or rotate the webhook secret of an existing connection, from --webhook-secret-env or
    /// --webhook-secret-file (in force at once; the old secret no longer verifies).
    #[arg(long, conflicts_with = "clear_webhook_secret")]
    pub rotate_webhook_secret: bool,
    /// Remove the webhook secret of an existing connection: signed deliveries are refused (503
    /// `no-secret`) until one is set again.
    #[arg(long, conflicts_with_all = ["webhook_secret_env", "webhook_secret_file", "allow_unsigned_webhooks"])]
    pub clear_webhook_secret: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// The flags that act on an existing connection instead of creating one.
const EXISTING: [&str; 3] = ["update", "rotate_webhook_secret", "clear_webhook_secret"];

/// `deskgate probe ID`
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The connection.
    pub id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// `deskgate status [ID]`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this connection, in detail.
    pub id: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// `deskgate alerts ...`
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts newest first (unacknowledged ones unless --all).
    List {
        /// Only this connection's.
        #[arg(long)]
        connection: Option<String>,
        /// Include acknowledged alerts.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        #[allow(missing_docs)]
        client: ClientArgs,
    },
    /// Acknowledge an alert.
    Ack {
        /// The alert's id (from `deskgate alerts list`).
        id: i64,
        #[command(flatten)]
        #[allow(missing_docs)]
        client: ClientArgs,
    },
}

/// `deskgate suspend ID --reason ...`
#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// The connection.
    pub id: String,
    /// Why, for the people who will see it on the dashboard and in alerts.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// `deskgate resume ID`
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The connection.
    pub id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// One operator verb.
#[derive(Debug)]
pub enum Verb {
    /// `connect` (boxed: its arguments outweigh every other verb's)
    Connect(Box<ConnectArgs>),
    /// `probe`
    Probe(ProbeArgs),
    /// `status`
    Status(StatusArgs),
    /// `alerts`
    Alerts(AlertsCommand),
    /// `suspend`
    Suspend(SuspendArgs),
    /// `resume`
    Resume(ResumeArgs),
}

/// Run a verb against the gateway; prints its output and returns the exit code.
///
/// # Errors
/// Only when the async runtime cannot start; every API or network failure is printed and
/// returned as exit code 1.
pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(match rt.block_on(dispatch(verb)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn dispatch(verb: Verb) -> Result<ExitCode, ClientError> {
    match verb {
        Verb::Connect(a) => connect(*a).await,
        Verb::Probe(a) => {
            let c = a.client.client()?;
            let v = c.post(&format!("/v1/connections/{}/probe", segment(&a.id)), &json!({})).await?;
            if a.client.json {
                print_json(&v);
            } else {
                println!("scope probe of {}", a.id);
                print_probe(&v["report"]);
            }
            Ok(probe_exit(&v["report"]))
        }
        Verb::Status(a) => status(a).await,
        Verb::Alerts(AlertsCommand::List { connection, all, limit, client }) => {
            let c = client.client()?;
            let mut q = format!("/v1/alerts?limit={limit}&include_acked={all}");
            if let Some(conn) = &connection {
                q.push_str(&format!("&connection_id={}", segment(conn)));
            }
            let v = c.get(&q).await?;
            if client.json {
                print_json(&v);
            } else {
                print_alerts(&v["alerts"], all);
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Alerts(AlertsCommand::Ack { id, client }) => {
            let c = client.client()?;
            let v = c.post(&format!("/v1/alerts/{id}/ack"), &json!({})).await?;
            if client.json {
                print_json(&v);
            } else if v["already_acknowledged"].as_bool() == Some(true) {
                println!("alert {id} was already acknowledged");
            } else {
                println!("alert {id} acknowledged");
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Suspend(a) => {
            if a.reason.trim().is_empty() {
                return Err(ClientError::Usage("--reason is empty: say why, for the people who will see it".into()));
            }
            let c = a.client.client()?;
            let v = c.post(&format!("/v1/connections/{}/suspend", segment(&a.id)), &json!({ "reason": a.reason })).await?;
            if a.client.json {
                print_json(&v);
            } else {
                if v["changed"] == json!(false) {
                    println!("{} was already suspended", a.id);
                }
                println!("{} is {}: {}", a.id, v["state"].as_str().unwrap_or("?"), v["suspended"]["reason"].as_str().unwrap_or(&a.reason));
                println!("resume it with: deskgate resume {}", a.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Resume(a) => {
            let c = a.client.client()?;
            let v = c.post(&format!("/v1/connections/{}/resume", segment(&a.id)), &json!({})).await?;
            if a.client.json {
                print_json(&v);
            } else {
                if v["changed"] == json!(false) {
                    println!("{} was not suspended", a.id);
                }
                println!("{} is {}", a.id, v["state"].as_str().unwrap_or("?"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_credentials(path: &std::path::Path) -> Result<Value, ClientError> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| ClientError::Usage(format!("cannot read credentials from standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ClientError::Usage(format!("cannot read --credentials-file {}: {e}", path.display())))?
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        ClientError::Usage(format!(
            "--credentials-file {} is not JSON ({e}): write e.g. {{\"scheme\": \"api_key\", \"fields\": {{\"email\": \"...\", \"api_token\": \"...\"}}}}",
            path.display()
        ))
    })?;
    if !v.is_object() {
        return Err(ClientError::Usage(format!(
            "--credentials-file {} must hold one JSON object with a `scheme` (`api_key` or `oauth`)",
            path.display()
        )));
    }
    Ok(v)
}

/// The webhook secret named by --webhook-secret-env or --webhook-secret-file, if either is given.
/// Errors name the flag and never echo the secret.
fn read_webhook_secret(a: &ConnectArgs) -> Result<Option<String>, ClientError> {
    let secret = if let Some(var) = &a.webhook_secret_env {
        match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(ClientError::Usage(format!(
                    "--webhook-secret-env {var}: the environment variable {var} is not set: export it with the \
                     platform's webhook signing secret, then run this again"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ClientError::Usage(format!("--webhook-secret-env {var}: the value of {var} is not UTF-8")));
            }
        }
    } else if let Some(path) = &a.webhook_secret_file {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| ClientError::Usage(format!("cannot read the webhook secret from standard input: {e}")))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| ClientError::Usage(format!("cannot read --webhook-secret-file {}: {e}", path.display())))?
        };
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        text.to_owned()
    } else {
        return Ok(None);
    };
    if secret.trim().is_empty() {
        let from = a.webhook_secret_env.as_ref().map_or_else(
            || format!("--webhook-secret-file {}", a.webhook_secret_file.as_deref().unwrap_or(std::path::Path::new("-")).display()),
            |v| format!("--webhook-secret-env {v}"),
        );
        return Err(ClientError::Usage(format!(
            "{from}: the webhook secret is empty: give the signing secret shown in the platform's admin UI"
        )));
    }
    Ok(Some(secret))
}

/// `connect --rotate-webhook-secret` and `--clear-webhook-secret`.
async fn set_webhook_secret(a: &ConnectArgs, secret: Option<String>) -> Result<ExitCode, ClientError> {
    let c = a.client.client()?;
    let path = format!("/v1/connections/{}/webhook-secret", segment(&a.id));
    let v = if a.clear_webhook_secret {
        c.call(reqwest::Method::DELETE, &path, None).await?
    } else {
        let secret = secret.ok_or_else(|| {
            ClientError::Usage(
                "--rotate-webhook-secret needs the new secret: --webhook-secret-env VAR (or --webhook-secret-file FILE)".into(),
            )
        })?;
        c.put(&path, &json!({ "secret": secret, "allow_unsigned": a.allow_unsigned_webhooks })).await?
    };
    if a.client.json {
        print_json(&v);
    } else if a.clear_webhook_secret {
        println!("cleared the webhook secret of {}", a.id);
        println!("  {}", webhooks_line(&v, &a.id));
    } else {
        println!("set the webhook secret of {}: the previous one no longer verifies", a.id);
        println!("  {}", webhooks_line(&v, &a.id));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line on how a connection's webhooks are authenticated, from its API view.
fn webhooks_line(v: &Value, id: &str) -> String {
    match (v["webhook_secret_set"].as_bool(), v["allow_unsigned_webhooks"].as_bool() == Some(true)) {
        (Some(true), false) => "webhooks: signature verified with the stored secret; unsigned deliveries refused".into(),
        (Some(true), true) => "webhooks: signature verified with the stored secret; unsigned deliveries accepted".into(),
        (Some(false), true) => "webhooks: no secret, unsigned deliveries accepted (signed ones are refused 503 no-secret)".into(),
        _ => format!(
            "webhooks: NO SECRET: signed deliveries are refused (503 no-secret). Set one: \
             deskgate connect {id} --rotate-webhook-secret --webhook-secret-env VAR"
        ),
    }
}

async fn connect(a: ConnectArgs) -> Result<ExitCode, ClientError> {
    let webhook_secret = read_webhook_secret(&a)?;
    if a.rotate_webhook_secret || a.clear_webhook_secret {
        return set_webhook_secret(&a, webhook_secret).await;
    }
    if a.update && (webhook_secret.is_some() || a.allow_unsigned_webhooks) {
        return Err(ClientError::Usage(
            "--update replaces credentials only: set the webhook secret of an existing connection with \
             --rotate-webhook-secret --webhook-secret-env VAR"
                .into(),
        ));
    }
    let credentials = a.credentials_file.as_deref().map(read_credentials).transpose()?;
    let c = a.client.client()?;
    let v = if a.update {
        let credentials = credentials.ok_or_else(|| ClientError::Usage("--update needs --credentials-file".into()))?;
        let mut body = json!({ "credentials": credentials });
        if let Some(secs) = a.expires_in {
            body["expires_in"] = json!(secs);
        }
        c.put(&format!("/v1/connections/{}/credentials", segment(&a.id)), &body).await?
    } else {
        let mut settings = serde_json::Map::new();
        for kv in &a.settings {
            let (k, val) = kv
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| ClientError::Usage(format!("--setting {kv:?} is not KEY=VALUE")))?;
            settings.insert(k.trim().to_owned(), Value::String(val.to_owned()));
        }
        let mut body = json!({
            "id": a.id,
            "platform": a.platform,
            "base_url": a.base_url,
            "settings": settings,
        });
        for (k, v) in [("plan", &a.plan), ("display_name", &a.name), ("admin_contact_url", &a.admin_contact_url)] {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        if let Some(cr) = credentials {
            body["credentials"] = cr;
        }
        if let Some(secs) = a.expires_in {
            body["expires_in"] = json!(secs);
        }
        if let Some(secret) = &webhook_secret {
            body["webhook_secret"] = json!(secret);
        }
        if a.allow_unsigned_webhooks {
            body["allow_unsigned_webhooks"] = json!(true);
        }
        c.post("/v1/connections", &body).await?
    };
    // The update answer carries this probe's report as `probe`; the create answer as `probe_report`.
    let report = if v["probe"].is_object() { v["probe"].clone() } else { v["probe_report"].clone() };
    if a.client.json {
        print_json(&v);
    } else {
        let verb = if a.update { "updated the credentials of" } else { "connected" };
        println!("{verb} {} ({}): {}", a.id, v["platform"].as_str().unwrap_or("?"), v["state"].as_str().unwrap_or("?"));
        if let Some(r) = v["suspended"]["reason"].as_str() {
            println!("  suspended: {r}");
        }
        if !a.update {
            println!("  {}", webhooks_line(&v, &a.id));
        }
        match &report {
            Value::Null if v["has_credentials"] == json!(false) => {
                println!("  no credentials yet: add them with deskgate connect {} --update --credentials-file FILE", a.id);
            }
            Value::Null => println!("  the scope probe has not run: deskgate probe {}", a.id),
            report => print_probe(report),
        }
    }
    Ok(if report.is_null() { ExitCode::SUCCESS } else { probe_exit(&report) })
}

fn probe_exit(report: &Value) -> ExitCode {
    if report["passed"].as_bool() == Some(true) { ExitCode::SUCCESS } else { ExitCode::from(EXIT_PROBE_FAILED) }
}

fn print_probe(report: &Value) {
    if let Some(e) = report["error"].as_str() {
        println!("  the probe could not run: {e}");
    }
    let mut last_fix = None;
    for cap in report["capabilities"].as_array().into_iter().flatten() {
        let name = cap["capability"].as_str().unwrap_or("?");
        if cap["granted"].as_bool() == Some(true) {
            println!("  [ok]   {name}");
            continue;
        }
        let what = match (cap["permission_kind"].as_str(), cap["missing"].as_str()) {
            (Some(k), Some(m)) => format!("missing {k} `{m}`"),
            (None, Some(m)) => format!("missing `{m}`"),
            _ => cap["message"].as_str().unwrap_or("not granted").to_owned(),
        };
        println!("  [FAIL] {name}: {what}");
        if let Some(r) = cap["remediation"].as_str() {
            if last_fix == Some(r) {
                println!("         fix: as above");
            } else {
                println!("         fix: {r}");
            }
            last_fix = Some(r);
        }
    }
    match report["passed"].as_bool() {
        Some(true) => println!("  every capability passed: the connection can go live"),
        _ => println!("  the probe did not pass: fix the above, then run deskgate probe again"),
    }
}

fn print_alerts(alerts: &Value, all: bool) {
    let list = alerts.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        println!("{}", if all { "no alerts" } else { "no unacknowledged alerts" });
        return;
    }
    let now = now_ms();
    for a in list {
        let at = a["created_at"].as_i64().unwrap_or(0);
        let acked = if a["acked_at"].is_null() { "" } else { " (acknowledged)" };
        println!(
            "#{} {} [{}] {} ({}){acked}",
            a["id"],
            a["kind"].as_str().unwrap_or("?"),
            a["connection_id"].as_str().unwrap_or("gateway"),
            utc(at),
            relative(at, now)
        );
        println!("    {}", a["text"].as_str().unwrap_or(""));
    }
    if !all {
        println!("acknowledge with: deskgate alerts ack ID");
    }
}

async fn status(a: StatusArgs) -> Result<ExitCode, ClientError> {
    let c = a.client.client()?;
    let mut v = c.get("/v1/status").await?;
    if let Some(id) = &a.id {
        let found = v["connections"].as_array().and_then(|cs| cs.iter().find(|x| x["id"] == json!(id)).cloned());
        let Some(conn) = found else {
            // Let the API say it does not exist, in its own words.
            c.get(&format!("/v1/connections/{}", segment(id))).await?;
            return Err(ClientError::Usage(format!("connection `{id}` is not in the gateway's status")));
        };
        v = conn;
    }
    if a.client.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let now = v["now"].as_i64().unwrap_or_else(now_ms);
    match &a.id {
        Some(_) => print_connection(&v, now_ms(), true),
        None => {
            let conns = v["connections"].as_array().map(Vec::as_slice).unwrap_or_default();
            if conns.is_empty() {
                println!("no connections: add one with deskgate connect");
            }
            for conn in conns {
                print_connection(conn, now, false);
            }
            let open = v["alerts"].as_array().map_or(0, Vec::len);
            println!("{open} unacknowledged alerts{}", if open > 0 { ": deskgate alerts list" } else { "" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_connection(c: &Value, now: i64, detail: bool) {
    let id = c["id"].as_str().unwrap_or("?");
    println!(
        "{id} ({}{}) {}",
        c["platform"].as_str().unwrap_or("?"),
        c["plan"].as_str().map(|p| format!(", plan {p}")).unwrap_or_default(),
        c["state"].as_str().unwrap_or("?").to_uppercase()
    );
    if let Some(reason) = c["suspended"]["reason"].as_str() {
        println!("  SUSPENDED ({}): {reason}", c["suspended"]["kind"].as_str().unwrap_or("?"));
    }
    let auth = &c["auth"];
    let mut line = format!("  auth: {}", auth["state"].as_str().unwrap_or("?"));
    if let Some(s) = auth["scheme"].as_str() {
        line.push_str(&format!(" ({s} v{})", auth["version"]));
    }
    if let Some(exp) = auth["expires_at"].as_i64() {
        line.push_str(&format!(", {} {}", if exp > now { "expires" } else { "expired" }, relative(exp, now)));
    }
    if let Some(next) = auth["next_check_at"].as_i64() {
        let what = if auth["expires_at"].is_null() { "next health check" } else { "next refresh" };
        line.push_str(&format!(", {what} {}", relative(next, now)));
    }
    println!("{line}");
    let q = &c["queues"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    println!(
        "  queues: outbox {} pending / {} sent / {} ambiguous, inbox {} unacknowledged, gate {} retry / {} write / {} read",
        n(&q["outbox"]["pending"]),
        n(&q["outbox"]["sent"]),
        n(&q["outbox"]["ambiguous"]),
        n(&q["inbox_pending"]),
        n(&q["gate_write_retry"]),
        n(&q["gate_write"]),
        n(&q["gate_read"])
    );
    let k = &c["counters"];
    println!(
        "  429s: {} write / {} read; reconciliation catches {}; duplicates prevented {}",
        n(&k["rate_limited_write"]),
        n(&k["rate_limited_read"]),
        n(&k["reconciliation_catches"]),
        n(&k["duplicate_submissions"]) + n(&k["read_back_confirmations"])
    );
    if let Some(alerts) = c["open_alerts"].as_object().filter(|m| !m.is_empty()) {
        let list: Vec<String> = alerts.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        println!("  open alerts: {}", list.join(", "));
    }
    let probe = &c["probe"];
    if probe["passed"] == json!(false) || (detail && !probe.is_null()) {
        println!("  scope probe:");
        let mut last_fix = None;
        for cap in probe["capabilities"].as_array().into_iter().flatten() {
            let name = cap["capability"].as_str().unwrap_or("?");
            if cap["granted"].as_bool() == Some(true) {
                if detail {
                    println!("    [ok]   {name}");
                }
            } else {
                println!("    [FAIL] {name}: missing {}", cap["missing"].as_str().or(cap["message"].as_str()).unwrap_or("?"));
                if let Some(r) = cap["remediation"].as_str() {
                    if last_fix == Some(r) {
                        println!("           fix: as above");
                    } else {
                        println!("           fix: {r}");
                    }
                    last_fix = Some(r);
                }
            }
        }
        if let Some(e) = probe["error"].as_str() {
            println!("    the probe could not run: {e}");
        }
    }
    if detail {
        for b in c["budget"]["budget"]["buckets"].as_array().into_iter().flatten() {
            let lanes = b["lanes"].as_array().map(Vec::as_slice).unwrap_or_default();
            let lane = |i: usize| lanes.get(i).map_or("?".to_owned(), |l| format!("{}/{}", l["used"], l["capacity"]));
            println!(
                "  budget {}: {} of {} spent ({:.0}%), write {}, read {}{}",
                b["bucket"].as_str().unwrap_or("?"),
                b["spent"],
                b["limit"],
                b["utilization"].as_f64().unwrap_or(0.0) * 100.0,
                lane(0),
                lane(1),
                b["blocked_until"].as_i64().map(|t| format!(", 429 block ends {}", relative(t, now))).unwrap_or_default()
            );
        }
    }
}
