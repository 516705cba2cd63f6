//! The `deskgate` binary's adapter commands, run as a user would.

use std::process::Command;

fn deskgate(args: &[&str]) -> std::process::Output {
    let cache = std::env::temp_dir().join(format!("deskgate-cli-test-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_deskgate"))
        .args(args)
        .env("DESKGATE_CACHE_DIR", cache)
        .output()
        .expect("run deskgate")
}

#[test]
fn adapters_list_json_names_the_three_builtin_adapters() {
    let out = deskgate(&["adapters", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["descriptor"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["freshdesk", "intercom", "zendesk"]);
    for a in list.as_array().unwrap() {
        assert!(a["source"].as_str().unwrap().starts_with("builtin:"));
        assert!(!a["descriptor"]["plans"].as_array().unwrap().is_empty());
    }
}

#[test]
fn adapters_list_human_shows_plans_and_capabilities() {
    let out = deskgate(&["adapters", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["zendesk (Zendesk Support", "plan enterprise (default)", "capabilities:", "webhooks:"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn adapter_check_on_a_missing_file_fails_and_says_why() {
    let out = deskgate(&["adapter", "check", "/nonexistent/adapter.wasm"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cannot read /nonexistent/adapter.wasm"), "{text}");
}

#[test]
fn adapter_check_on_a_non_component_fails_with_the_fix() {
    let path = std::env::temp_dir().join(format!("not-a-component-{}.wasm", std::process::id()));
    std::fs::write(&path, b"definitely not wasm").unwrap();
    let out = deskgate(&["adapter", "check", path.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["obligation"], "loads");
    assert!(report["checks"][0]["detail"].as_str().unwrap().contains("wasm32-wasip2"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn adapters_list_reports_a_bad_file_in_the_directory_but_lists_the_rest() {
    let dir = std::env::temp_dir().join(format!("deskgate-adapters-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.wasm"), b"\0asm garbage").unwrap();
    let out = deskgate(&["adapters", "list", "--dir", dir.to_str().unwrap(), "--json"]);
    assert!(!out.status.success(), "a bad adapter file must fail the command");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3, "the built-in adapters are still listed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.wasm"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sim_prints_one_json_line_with_a_working_base_url_and_credentials() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_deskgate"))
        .args(["sim", "--platform", "zendesk", "--seed", "3", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start deskgate sim");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let base = info["base_url"].as_str().unwrap().trim_start_matches("http://").to_string();
    let auth = info["credentials"][0]["authorization"].as_str().unwrap().to_string();
    // A plain HTTP request, as any client of the platform would make it.
    let mut stream = std::net::TcpStream::connect(&base).unwrap();
    write!(stream, "GET /api/v2/users/me.json HTTP/1.1\r\nHost: {base}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    child.kill().ok();
    child.wait().ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"role\":\"admin\""), "{response}");
}

#[test]
fn sim_prints_lines_for_a_person_by_default() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_deskgate"))
        .args(["sim", "--platform", "freshdesk", "--seed", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start deskgate sim");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let last = line.starts_with("ctrl-c");
        text.push(line);
        if last {
            break;
        }
    }
    child.kill().ok();
    child.wait().ok();
    let first = &text[0];
    assert!(first.starts_with("freshdesk simulator (seed 3) listening on http://127.0.0.1:"), "{text:?}");
    assert!(serde_json::from_str::<serde_json::Value>(first).is_err(), "not JSON without --json: {first}");
    assert!(text.iter().any(|l| l.contains("Authorization: Basic ")), "{text:?}");
    assert!(text.iter().any(|l| l.starts_with("  tickets: ")), "{text:?}");
}

#[test]
fn adapters_alone_lists_them() {
    let alone = deskgate(&["adapters"]);
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
    let list = deskgate(&["adapters", "list"]);
    assert_eq!(alone.stdout, list.stdout);
    let text = String::from_utf8_lossy(&alone.stdout);
    for id in ["zendesk", "freshdesk", "intercom"] {
        assert!(text.lines().any(|l| l.starts_with(&format!("{id} ("))), "{id} not listed:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_slice(&deskgate(&["adapters", "--json"]).stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
}

#[test]
fn sim_with_an_unknown_platform_says_which_exist() {
    let out = deskgate(&["sim", "--platform", "zenddesk"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--platform") && err.contains("zendesk"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The operator verbs against an in-process gateway (real HTTP on 127.0.0.1, a Zendesk simulator
// behind it for the scope probe).

mod common;

use common::{Gateway, TOKEN, ZendeskAccount};
use serde_json::{Value, json};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Run `deskgate ARGS` as a user would, with DESKGATE_URL / DESKGATE_API_TOKEN from `env`,
/// off the async runtime so the in-process gateway keeps serving.
async fn verb(env: &[(&str, &str)], args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deskgate"));
        cmd.args(&args).env_remove("DESKGATE_URL").env_remove("DESKGATE_API_TOKEN");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run deskgate");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn write_temp(name: &str, v: &Value) -> String {
    let path = std::env::temp_dir().join(format!("deskgate-cli-{}-{name}.json", std::process::id()));
    std::fs::write(&path, v.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_probes_and_status_shows_suspensions_first() {
    let g = Gateway::start().await;
    let z = ZendeskAccount::start().await;
    let env = [("DESKGATE_URL", g.base.as_str()), ("DESKGATE_API_TOKEN", TOKEN)];
    let base = z.sim.base_url();
    let full = write_temp("full", &z.full_credentials());
    let read_only = write_temp("ro", &z.read_only_credentials());

    let ok = verb(&env, &["connect", "acme", "--platform", "zendesk", "--base-url", &base, "--name", "Acme Support", "--credentials-file", &full]).await;
    assert_eq!(ok.code, Some(0), "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("connected acme (zendesk): live"), "{}", ok.stdout);
    assert!(ok.stdout.contains("[ok]   set-status"), "{}", ok.stdout);
    assert!(!ok.stdout.contains(&z.full.token), "no secret in the output");

    // A token without write scope: the probe fails, the exit code says so, the fix is printed.
    let ro = verb(&env, &["connect", "acme-ro", "--platform", "zendesk", "--base-url", &base, "--credentials-file", &read_only]).await;
    assert_eq!(ro.code, Some(3), "{}{}", ro.stdout, ro.stderr);
    assert!(ro.stdout.contains("pending_probe"), "{}", ro.stdout);
    assert!(ro.stdout.contains("[FAIL] set-status") && ro.stdout.contains("fix: "), "{}", ro.stdout);

    // --json is the API's answer.
    let cred = write_temp("stdin", &z.full_credentials());
    let j = verb(&env, &["connect", "acme-2", "--platform", "zendesk", "--base-url", &base, "--credentials-file", &cred, "--json"]).await;
    assert_eq!(j.code, Some(0), "{}", j.stderr);
    assert_eq!(j.json()["state"], "live");
    assert_eq!(j.json()["probe_report"]["passed"], true);

    // API errors keep their code and message, and fail the command.
    let dup = verb(&env, &["connect", "acme", "--platform", "zendesk", "--base-url", &base]).await;
    assert_eq!(dup.code, Some(1));
    assert!(dup.stderr.contains("error: connection_exists (HTTP 409)"), "{}", dup.stderr);
    let bad = verb(&env, &["connect", "x", "--platform", "zendeks", "--base-url", &base]).await;
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("unknown_platform") && bad.stderr.contains("zendesk"), "{}", bad.stderr);

    // Status: the suspended connection first, with its reason and the missing permission.
    g.state
        .store()
        .set_connection_state(
            "acme-ro",
            &deskgate::store::ConnectionState::Suspended { reason: "write scope missing: re-authorize".into(), kind: "rescope".into() },
            1,
        )
        .await
        .unwrap();
    let st = verb(&env, &["status"]).await;
    assert_eq!(st.code, Some(0), "{}", st.stderr);
    let first = st.stdout.lines().next().unwrap_or("");
    assert!(first.starts_with("acme-ro (zendesk) SUSPENDED"), "{}", st.stdout);
    assert!(st.stdout.contains("SUSPENDED (rescope): write scope missing: re-authorize"), "{}", st.stdout);
    assert!(st.stdout.contains("[FAIL] set-status") && st.stdout.contains("fix: "), "{}", st.stdout);
    assert!(st.stdout.contains("acme (zendesk) LIVE"), "{}", st.stdout);
    let one = verb(&env, &["status", "acme", "--json"]).await;
    assert_eq!(one.code, Some(0));
    assert_eq!(one.json()["id"], "acme");
    assert_eq!(one.json()["auth"]["state"], "ok");
    let detail = verb(&env, &["status", "acme"]).await;
    assert!(detail.stdout.contains("[ok]   read-tickets"), "{}", detail.stdout);
    let ghost = verb(&env, &["status", "ghost"]).await;
    assert_eq!(ghost.code, Some(1));
    assert!(ghost.stderr.contains("connection_not_found (HTTP 404)"), "{}", ghost.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_and_acknowledged_from_the_cli() {
    let g = Gateway::start().await;
    let store = g.state.store().clone();
    let a = deskgate::alerts::raise(&store, 1_000, None, "refresh-failed", "Re-authenticate acme".into(), json!({})).await.unwrap();
    let env = [("DESKGATE_URL", g.base.as_str()), ("DESKGATE_API_TOKEN", TOKEN)];
    let list = verb(&env, &["alerts", "list"]).await;
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    assert!(list.stdout.contains(&format!("#{} refresh-failed [gateway]", a.id)), "{}", list.stdout);
    assert!(list.stdout.contains("Re-authenticate acme"));
    let id = a.id.to_string();
    let ack = verb(&env, &["alerts", "ack", &id]).await;
    assert_eq!((ack.code, ack.stdout.trim()), (Some(0), format!("alert {id} acknowledged").as_str()));
    let again = verb(&env, &["alerts", "ack", &id, "--json"]).await;
    assert_eq!(again.json()["already_acknowledged"], true);
    let none = verb(&env, &["alerts", "list"]).await;
    assert!(none.stdout.contains("no unacknowledged alerts"), "{}", none.stdout);
    let all = verb(&env, &["alerts", "list", "--all", "--json"]).await;
    assert_eq!(all.json()["alerts"].as_array().unwrap().len(), 1);
    let missing = verb(&env, &["alerts", "ack", "999"]).await;
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("alert_not_found (HTTP 404)"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verbs_say_what_is_wrong_with_the_token_url_and_credentials_file() {
    let g = Gateway::start().await;
    let no_token = verb(&[("DESKGATE_URL", g.base.as_str())], &["status"]).await;
    assert_eq!(no_token.code, Some(1));
    assert!(no_token.stderr.contains("DESKGATE_API_TOKEN"), "{}", no_token.stderr);
    let wrong = verb(&[("DESKGATE_URL", g.base.as_str()), ("DESKGATE_API_TOKEN", "nope")], &["status"]).await;
    assert_eq!(wrong.code, Some(1));
    assert!(wrong.stderr.contains("unauthorized (HTTP 401)"), "{}", wrong.stderr);
    // --url and --token override the environment.
    let flags = verb(&[("DESKGATE_URL", "http://127.0.0.1:9"), ("DESKGATE_API_TOKEN", "nope")], &["status", "--url", &g.base, "--token", TOKEN]).await;
    assert_eq!(flags.code, Some(0), "{}", flags.stderr);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = verb(&[("DESKGATE_URL", closed.as_str()), ("DESKGATE_API_TOKEN", TOKEN)], &["alerts", "list"]).await;
    assert_eq!(down.code, Some(1));
    assert!(down.stderr.contains("cannot reach the gateway") && down.stderr.contains("DESKGATE_URL"), "{}", down.stderr);
    let bad_url = verb(&[("DESKGATE_API_TOKEN", TOKEN)], &["status", "--url", "ftp://x"]).await;
    assert_eq!(bad_url.code, Some(1));
    assert!(bad_url.stderr.contains("must be an http(s) URL"), "{}", bad_url.stderr);
    let env = [("DESKGATE_URL", g.base.as_str()), ("DESKGATE_API_TOKEN", TOKEN)];
    let not_json = write_temp("garbage", &Value::String("x".into())).replace(".json", ".txt");
    std::fs::write(&not_json, "email=a token=b").unwrap();
    let r = verb(&env, &["connect", "a", "--platform", "zendesk", "--base-url", "https://a.example", "--credentials-file", &not_json]).await;
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is not JSON") && r.stderr.contains("\"scheme\""), "{}", r.stderr);
    let r = verb(&env, &["connect", "a", "--update"]).await;
    assert_eq!(r.code, Some(2), "clap refuses --update without --credentials-file: {}", r.stderr);
    let r = verb(&env, &["connect", "a", "--platform", "zendesk", "--base-url", "https://a.example", "--setting", "novalue"]).await;
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is not KEY=VALUE"), "{}", r.stderr);
    let r = verb(&env, &["suspend", "a", "--reason", " "]).await;
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("--reason is empty"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_suspend_resume_and_new_credentials_act_on_a_running_connection() {
    let g = Gateway::start_supervised().await;
    let z = ZendeskAccount::start().await;
    let env = [("DESKGATE_URL", g.base.as_str()), ("DESKGATE_API_TOKEN", TOKEN)];
    let base = z.sim.base_url();
    let read_only = write_temp("sup-ro", &z.read_only_credentials());
    let full = write_temp("sup-full", &z.full_credentials());

    // Connected with a read-only token: the probe names what is missing, exit 3.
    let c = verb(&env, &["connect", "acme", "--platform", "zendesk", "--base-url", &base, "--credentials-file", &read_only]).await;
    assert_eq!(c.code, Some(3), "{}{}", c.stdout, c.stderr);
    let p = verb(&env, &["probe", "acme"]).await;
    assert_eq!(p.code, Some(3), "{}{}", p.stdout, p.stderr);
    assert!(p.stdout.contains("[ok]   read-tickets") && p.stdout.contains("[FAIL] set-status"), "{}", p.stdout);
    assert!(p.stdout.contains("fix: as above"), "one fix printed once: {}", p.stdout);
    let pj = verb(&env, &["probe", "acme", "--json"]).await;
    assert_eq!(pj.json()["report"]["passed"], false);

    // The operator fixes the credentials: the probe passes and the connection goes live.
    let u = verb(&env, &["connect", "acme", "--update", "--credentials-file", &full]).await;
    assert_eq!(u.code, Some(0), "{}{}", u.stdout, u.stderr);
    assert!(u.stdout.contains("updated the credentials of acme"), "{}", u.stdout);
    assert!(u.stdout.contains("every capability passed"), "{}", u.stdout);
    let p = verb(&env, &["probe", "acme"]).await;
    assert_eq!(p.code, Some(0), "{}{}", p.stdout, p.stderr);

    // Suspend and resume by hand.
    let s = verb(&env, &["suspend", "acme", "--reason", "maintenance window on the helpdesk"]).await;
    assert_eq!(s.code, Some(0), "{}{}", s.stdout, s.stderr);
    assert!(s.stdout.contains("acme is suspended: maintenance window on the helpdesk"), "{}", s.stdout);
    let again = verb(&env, &["suspend", "acme", "--reason", "again"]).await;
    assert!(again.stdout.contains("acme was already suspended"), "{}", again.stdout);
    let st = verb(&env, &["status", "acme", "--json"]).await;
    assert_eq!(st.json()["suspended"]["kind"], "operator");
    let r = verb(&env, &["resume", "acme"]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("acme is live"), "{}", r.stdout);
    let r = verb(&env, &["resume", "acme"]).await;
    assert!(r.stdout.contains("acme was not suspended"), "{}", r.stdout);

    // Refused credentials change nothing and say why.
    let bad = write_temp("sup-bad", &json!({"scheme": "api_key", "fields": {"email": z.full.email, "token": "not-a-real-token"}}));
    let u = verb(&env, &["connect", "acme", "--update", "--credentials-file", &bad]).await;
    assert_eq!(u.code, Some(1), "{}{}", u.stdout, u.stderr);
    assert!(u.stderr.starts_with("error: "), "{}", u.stderr);
    let ghost = verb(&env, &["probe", "ghost"]).await;
    assert_eq!(ghost.code, Some(1));
    assert!(ghost.stderr.contains("(HTTP 404)"), "{}", ghost.stderr);
}
