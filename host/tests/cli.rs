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
        .args(["sim", "--platform", "zendesk", "--seed", "3"])
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
fn sim_with_an_unknown_platform_says_which_exist() {
    let out = deskgate(&["sim", "--platform", "zenddesk"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--platform") && err.contains("zendesk"), "{err}");
}
