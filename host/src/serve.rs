//! `deskgate serve`: load and validate the configuration, open the store, load the adapters,
//! bring the configured connections into the store, start one outbox worker per live
//! connection, and serve the API until ctrl-c.
//!
//! # What start-up does with `[connections.<id>]`
//!
//! A configured connection is created if the store lacks it, and its descriptive fields (plan,
//! display name, settings with `base_url`, admin contact) are updated if it exists. Credentials
//! from the config are written when the store has none, or (API keys only) when they differ:
//! OAuth tokens are left alone once stored, since the stored pair may have been rotated by a
//! refresh and the config's copy spent. A connection still `pending_probe` with credentials is
//! probed ([`crate::probe`]) and goes live when the probe passes.
//!
//! A `webhook_secret` (or `webhook_secret_env`) and `allow_unsigned_webhooks` are written to the
//! store, sealed, when they differ from what it holds: webhooks read their secret from the store
//! only, so the file's value wins over one set through the API (`PUT
//! /v1/connections/{id}/webhook-secret`) at every start. A section that names no secret and leaves
//! `allow_unsigned_webhooks` false leaves the stored secret alone, so secrets managed through the
//! API survive restarts.
//!
//! Everything that runs per connection (credential manager, budget gate, outbox worker, timers
//! for refresh, health checks, sweeps and alert delivery) is the supervisor's,
//! [`crate::gateway::Gateway`]; serve builds it, attaches the stored connections, and hands it to
//! the API so connections created, re-credentialed, suspended or resumed there take effect at once.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::api::{self, AppState};
use crate::cli::ServeArgs;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConnectionSettings};
use crate::driver::{Driver, DriverConfig};
use crate::ingest::webhook::StoreRoutes;
use crate::gateway::{Gateway, GatewayConfig, GatewayParts};
use crate::runtime::{Adapter, AdapterRuntime};
use crate::store::{ConnectionPatch, ConnectionState, CredentialSecret, Expect, NewConnection, SharedStore};

/// Run `deskgate serve`.
///
/// # Errors
/// Configuration problems (every one, each naming its key), a store that cannot be opened, an
/// address that cannot be bound.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut rc = match config.runtime_config() {
        Ok(rc) => rc,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    if rc.cache_dir.is_none() {
        rc.cache_dir = std::env::var_os("DESKGATE_CACHE_DIR")
            .map(Into::into)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache").join("deskgate")));
    }
    let mut rt = AdapterRuntime::new(rc)?;
    rt.load_builtin()?;
    if let Some(dir) = &config.adapters_dir {
        for e in rt.load_dir(dir)? {
            eprintln!("warning: adapters_dir: {e}");
        }
    }
    // The loaded adapters, so that each connection's platform and plan are checked against them.
    let platforms: Vec<Arc<Adapter>> = rt.adapters().cloned().collect();
    let validated = match config.validate_with_process_env(&platforms) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.check {
        println!(
            "{}: configuration OK ({} connection(s), listen {}, store {})",
            args.config.display(),
            validated.connections.len(),
            validated.listen,
            crate::store::redact_url(&validated.store)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let adapters: Vec<Arc<Adapter>> = rt.adapters().cloned().collect();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        // One gateway per embedded store: a second `deskgate serve` on the same file would take
        // the first one's claims for a dead run's. Held until the process exits.
        let store_lock = match crate::store::sqlite_path(&validated.store) {
            Some(path) => Some(lock_store_file(&path)?),
            None => None,
        };
        let store = crate::store::open(&validated.store, validated.secret_key.clone()).await?;
        if store_lock.is_some() {
            // The embedded store serves one gateway (several replicas need PostgreSQL, the
            // config refuses otherwise): claims still held in it belong to a previous run of
            // this gateway that died (kill -9, power cut). Release them now instead of waiting
            // out their lease; entries it had sent are read back before anything is resent.
            let released = release_claims_of_previous_runs(&store).await?;
            if released > 0 {
                tracing::warn!(released, "released outbox claims left by a previous run that did not stop cleanly; entries it had sent are read back before any resend");
            }
        }
        // Several replicas (issue #9): budgets shared in Redis, the replica id as lease owner and
        // in readiness and metrics, lease periods from [cluster].
        let shared = crate::budget::shared::from_cluster(&validated.cluster, Some(store.clone()))?;
        let replica_id = validated.cluster.replica_id.clone();
        let driver = Driver::new(DriverConfig::default())?;
        let state = AppState::new(store.clone(), clock.clone(), validated.api_token.clone(), adapters.clone())
            .with_replica(&replica_id, shared.clone());
        for c in &validated.connections {
            sync_connection(&store, c, clock.now_ms()).await.with_context(|| format!("connections.{}", c.id))?;
            sync_webhook_secret(state.webhook_routes(), c, clock.now_ms())
                .await
                .with_context(|| format!("connections.{}.webhook_secret", c.id))?;
        }
        let mut config = GatewayConfig {
            owner: replica_id.clone(),
            budget_targets: validated.connections.iter().map(|c| (c.id.clone(), c.budget_target)).collect(),
            shared_budgets: shared.clone(),
            ..GatewayConfig::default()
        };
        // `[auth]`: when tokens are refreshed and how often other credentials are checked.
        config.auth.refresh_at = validated.auth.refresh_at;
        config.auth.health_interval = validated.auth.health_check;
        // `[sweep]`: how often each connection is reconciled.
        config.sweep_every = (validated.sweep.min, validated.sweep.max);
        if validated.cluster.replicas > 1 {
            // A replica meeting another replica's refresh waits for its pair (see crate::auth).
            config.auth.in_flight_wait = std::time::Duration::from_secs(30);
        }
        if let Some(p) = &validated.push {
            let mut push = crate::ingest::push::PushConfig::new(p.url.clone());
            push.batch = p.batch;
            push.timeout = p.timeout;
            push.connection_id.clone_from(&p.connection);
            push.secret = Some(p.secret.expose().as_bytes().to_vec());
            config.push = Some(push);
        }
        if let Some(lease) = validated.cluster.lease {
            config.timer_lease = lease;
            config.outbox.lease_for = lease;
        }
        let gateway = Gateway::new(GatewayParts {
            store: store.clone(),
            clock: clock.clone(),
            driver,
            adapters: adapters.clone(),
            inbox: state.inbox().clone(),
            metrics: state.ingest_metrics().clone(),
            config,
        })?
        .with_status(state.status().clone());
        // Attach every connection (credential recovery, probes of pending ones), then start
        // the timers: refresh, health checks, sweeps, alert delivery.
        let attached = gateway.sync().await?;
        tracing::info!(connections = attached.len(), "connections running");
        gateway.spawn();
        let state = state.with_control(Arc::new(gateway.clone()));
        let listener = tokio::net::TcpListener::bind(validated.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", validated.listen))?;
        eprintln!("deskgate listening on http://{}", listener.local_addr()?);
        axum::serve(listener, api::edge_ingest::with_edge_token_from_env(api::app(state))?)
            .with_graceful_shutdown(async move {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down: finishing requests, stopping workers");
            })
            .await?;
        gateway.shutdown().await;
        store.close().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Bring one configured connection into the store (see the module docs).
async fn sync_connection(store: &SharedStore, c: &ConnectionSettings, now: crate::clock::Millis) -> anyhow::Result<()> {
    let mut settings: serde_json::Map<String, serde_json::Value> =
        c.settings.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    settings.insert("base_url".into(), c.base_url.clone().into());
    let settings = serde_json::Value::Object(settings);
    match store.get_connection(&c.id).await? {
        None => {
            let new = NewConnection {
                id: c.id.clone(),
                platform: c.platform.clone(),
                display_name: c.display_name.clone(),
                plan: c.plan.clone(),
                settings,
                admin_contact_url: c.admin_contact_url.clone(),
            };
            match store.create_connection(&new, now).await {
                Ok(_) => tracing::info!(connection = %c.id, "connection created from the configuration"),
                // Replicas starting together: another one created it a moment ago.
                Err(crate::store::StoreError::ConnectionExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(existing) => {
            anyhow::ensure!(
                existing.platform == c.platform,
                "the store has this connection on platform `{}`, the config says `{}`: use a new id for a new account",
                existing.platform,
                c.platform
            );
            anyhow::ensure!(
                existing.state != ConnectionState::Deleted,
                "this connection was deleted; deleted ids are kept for the audit trail: use a new id"
            );
            let patch = ConnectionPatch {
                display_name: Some(c.display_name.clone()),
                plan: Some(c.plan.clone()),
                settings: Some(settings),
                admin_contact_url: Some(c.admin_contact_url.clone()),
            };
            store.update_connection(&c.id, &patch, now).await?;
        }
    }
    if let Some(secret) = &c.credentials {
        let stored = store.get_credential(&c.id).await?;
        let write = match (&stored, secret) {
            (None, _) => true,
            (Some(s), CredentialSecret::ApiKey { .. }) => s.secret != *secret,
            (Some(_), CredentialSecret::OAuth { .. }) => false,
        };
        if write {
            store.put_credential(&c.id, secret, None, Expect::Any, now).await?;
            tracing::info!(connection = %c.id, "credentials stored from the configuration");
        }
    }
    Ok(())
}

/// Write a configured connection's webhook secret to the store (see the module docs): the store is
/// the one place webhooks read it from, and the file wins over what the API set at every start. A
/// connection whose section names neither a secret nor `allow_unsigned_webhooks = true` keeps
/// whatever the API stored. Nothing is written when the store already holds the same setup.
async fn sync_webhook_secret(routes: &StoreRoutes, c: &ConnectionSettings, now: crate::clock::Millis) -> anyhow::Result<()> {
    let secret = c.webhook_secret.as_ref().map(|s| s.expose().as_bytes());
    if secret.is_none() && !c.allow_unsigned_webhooks {
        return Ok(());
    }
    // An unreadable stored secret (sealed under a lost key, or a hand-edited row) is replaced.
    let same = routes
        .secret(&c.id)
        .await
        .ok()
        .flatten()
        .is_some_and(|s| (!s.secret.is_empty()).then_some(s.secret.as_slice()) == secret && s.allow_unsigned == c.allow_unsigned_webhooks);
    if !same {
        routes.store_secret(&c.id, secret, c.allow_unsigned_webhooks, now).await?;
        tracing::info!(connection = %c.id, allow_unsigned = c.allow_unsigned_webhooks, "webhook secret stored from the configuration");
    }
    Ok(())
}

/// Release every outbox claim in a store only this process uses (see the caller). Returns how
/// many were released.
async fn release_claims_of_previous_runs(store: &crate::store::SharedStore) -> Result<u64, crate::store::StoreError> {
    let mut by_owner: std::collections::BTreeMap<String, Vec<i64>> = std::collections::BTreeMap::new();
    let mut after = 0;
    loop {
        let q = crate::store::ActionQuery { connection_id: None, ticket_id: None, in_flight_only: true, after_id: after, limit: 1000 };
        let page = store.list_actions(&q).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for e in page {
            if let Some(l) = e.lease {
                by_owner.entry(l.owner).or_default().push(e.id);
            }
        }
    }
    let mut released = 0;
    for (owner, ids) in by_owner {
        released += store.unclaim_actions(&ids, &owner).await?;
    }
    Ok(released)
}

/// Take the embedded store's lock file (`PATH.lock`, an OS advisory lock the kernel drops when
/// the process dies, kill -9 included), or say which store is in use.
fn lock_store_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let lock_path = std::path::PathBuf::from(format!("{}.lock", path.display()));
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening the store's lock file {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another deskgate serve is using the store {} (its lock {} is held). One gateway serves an \
             embedded SQLite store; stop the other one, or run several replicas on PostgreSQL (see \
             \"Running several replicas\" in the README)",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::Error::new(e).context(format!("locking {}", lock_path.display()))),
    }
}
