//! Real clients of the platforms work against the simulators unchanged apart from the base URL.
//! Intercom's official Python SDK (`python-intercom`) and node-zendesk (both installed by `.ci/run`) read,
//! reply and search through the simulators; each reply lands in the write log exactly once.

use deskgate_sim::{Platform, WriteKind};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercoms_official_python_sdk_works_unchanged() {
    let probe = Command::new("python3").args(["-c", "import intercom"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "Intercom's official SDK is missing: run `pip install python-intercom==5.0.1` (.ci/run does)"
    );
    let (sim, line) = deskgate_sim::cli::start_demo(Platform::Intercom, "127.0.0.1:0".parse().unwrap(), 5).await.unwrap();
    let file = std::env::temp_dir().join(format!("deskgate-sim-intercom-{}.json", std::process::id()));
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/intercom_python.py");
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(&file).output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "the SDK failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = line["ticket_ids"][0].to_string().trim_matches('"').to_string();
    assert_eq!(seen["found"], first.as_str());
    assert_eq!(seen["admin_id"], line["admin"]["id"].to_string().as_str());
    assert!(seen["open"].as_array().unwrap().iter().any(|id| id == first.as_str()));
    let account = line["account_id"].as_u64().unwrap();
    let replies = sim
        .writes(account, Some(first.parse().unwrap()))
        .unwrap()
        .into_iter()
        .filter(|w| matches!(&w.kind, WriteKind::Reply { body } if body.contains("Fixed, thanks!")))
        .count();
    assert_eq!(replies, 1, "the SDK's reply is in the write log exactly once");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_zendesk_works_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    assert!(
        std::path::Path::new(dir).join("node_modules/node-zendesk").exists(),
        "node-zendesk is missing: run `npm ci --prefix sim/tests/clients` (.ci/run does)"
    );
    let (sim, line) = deskgate_sim::cli::start_demo(Platform::Zendesk, "127.0.0.1:0".parse().unwrap(), 5).await.unwrap();
    let file = std::env::temp_dir().join(format!("deskgate-sim-zendesk-{}.json", std::process::id()));
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let script = format!("{dir}/zendesk_node.js");
    let out = tokio::task::spawn_blocking(move || Command::new("node").arg(script).arg(&file).output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "node-zendesk failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["me"], line["admin"]["id"]);
    assert_eq!(seen["ticket"], line["ticket_ids"][0]);
    assert_eq!(seen["status"], "solved");
    let account = line["account_id"].as_u64().unwrap();
    let writes = sim.writes(account, line["ticket_ids"][0].as_u64()).unwrap();
    let replies = writes.iter().filter(|w| matches!(&w.kind, WriteKind::Reply { body } if body == "Fixed, thanks!")).count();
    assert_eq!(replies, 1, "the client's reply is in the write log exactly once");
    sim.shutdown().await;
}
