//! `deskgate sim --platform zendesk|freshdesk|intercom [--listen 127.0.0.1:0] [--seed N] [--json]`:
//! starts a sim with a ready-made account, prints what it holds (base URL, admin URL, credentials,
//! ticket ids; with `--json` as ONE JSON line) on stdout, then serves until ctrl-c. The host binary
//! calls [`start_demo`] and prints its JSON line or lines for a person; [`run`] is the JSON-only
//! form for other binaries.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::{DemoSeed, Platform, SimConfig, SimHandle};

/// Starts a sim and seeds the demo world; returns the handle and the JSON line [`run`] prints.
///
/// # Errors
///
/// When the address cannot be bound or seeding fails.
pub async fn start_demo(
    platform: Platform,
    listen: SocketAddr,
    seed: u64,
) -> anyhow::Result<(SimHandle, Value)> {
    let sim = crate::start(SimConfig::new(platform).listen(listen).seed(seed)).await?;
    let demo = sim
        .seed_demo()
        .map_err(|e| anyhow::anyhow!("seeding the demo account failed: {e}"))?;
    let line = banner(&sim, platform, seed, &demo);
    Ok((sim, line))
}

fn banner(sim: &SimHandle, platform: Platform, seed: u64, demo: &DemoSeed) -> Value {
    let creds: Vec<Value> = demo
        .credentials
        .iter()
        .map(|c| {
            json!({"id": c.id, "kind": c.kind, "agent_id": c.agent_id, "email": c.email, "token": c.token,
                   "refresh_token": c.refresh_token, "authorization": c.authorization, "scopes": c.scopes,
                   "expires_at_ms": c.expires_at_ms, "client_id": c.client_id, "client_secret": c.client_secret})
        })
        .collect();
    json!({
        "platform": platform, "seed": seed, "base_url": sim.base_url(), "admin_url": sim.admin_url(),
        "account_id": demo.account.id, "plan": demo.account.plan,
        "admin": {"id": demo.admin.id, "email": demo.admin.email, "name": demo.admin.name},
        "customer_id": demo.customer.id, "credentials": creds, "ticket_ids": demo.ticket_ids
    })
}

/// Runs the sim until ctrl-c, after printing the JSON line.
///
/// # Errors
///
/// When the address cannot be bound or the ctrl-c handler cannot be installed.
pub async fn run(platform: Platform, listen: SocketAddr, seed: u64) -> anyhow::Result<()> {
    let (sim, line) = start_demo(platform, listen, seed).await?;
    println!("{line}");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| anyhow::anyhow!("cannot wait for ctrl-c: {e}"))?;
    sim.shutdown().await;
    Ok(())
}
