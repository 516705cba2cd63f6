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
//! # Not done yet
//!
//! - Workers start only for connections live at start-up; one that goes live later (created
//!   through the API and probed) gets its worker at the next start. The credential manager
//!   (`crate::auth::CredentialManager`: refresh, health checks, suspension) is not wired here
//!   yet; workers run without an auth hook, so a 401/403 settles the action as failed.
//! - Reconciliation sweeps and alert delivery are not scheduled here yet.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::api::{self, AppState, ProbeOnConnect};
use crate::budget::{BudgetConfig, BudgetLayer};
use crate::cli::ServeArgs;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConnectionSettings};
use crate::driver::{Driver, DriverConfig};
use crate::ingest::webhook::WebhookSecret;
use crate::outbox::{OutboxConfig, OutboxWorker, WorkerParts};
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
    let platforms: Vec<String> = rt.adapters().map(|a| a.id().to_owned()).collect();
    let platforms: Vec<&str> = platforms.iter().map(String::as_str).collect();
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
        let store = crate::store::open(&validated.store, validated.secret_key.clone()).await?;
        // Several replicas: budgets shared in Redis (issue #9), the replica id in readiness and metrics.
        let shared = crate::budget::shared::from_cluster(&validated.cluster, Some(store.clone()))?;
        let replica_id = validated.cluster.replica_id.clone();
        let driver = Driver::new(DriverConfig::default())?;
        let hook = Arc::new(ProbeOnConnect::new(driver.clone(), adapters.clone()));
        let state = AppState::new(store.clone(), clock.clone(), validated.api_token.clone(), adapters.clone())
            .with_connect_hook(hook.clone())
            .with_replica(&replica_id, shared.clone());
        for c in &validated.connections {
            sync_connection(&store, c, clock.now_ms()).await.with_context(|| format!("connections.{}", c.id))?;
            if let Some(secret) = &c.webhook_secret {
                state.webhook_routes().set_secret(
                    c.id.clone(),
                    WebhookSecret { secret: secret.expose().as_bytes().to_vec(), allow_unsigned: c.allow_unsigned_webhooks },
                );
            } else if c.allow_unsigned_webhooks {
                state
                    .webhook_routes()
                    .set_secret(c.id.clone(), WebhookSecret { secret: Vec::new(), allow_unsigned: true });
            }
            let conn = store.get_connection(&c.id).await?.expect("just synced");
            if conn.state == ConnectionState::PendingProbe && c.credentials.is_some() {
                use crate::api::ConnectHook as _;
                match hook.connected(&store, &conn, clock.now_ms()).await {
                    Ok(report) => tracing::info!(connection = %c.id, report = %report.unwrap_or_default(), "scope probe at start"),
                    Err(e) => tracing::warn!(connection = %c.id, error = %e, "scope probe at start failed"),
                }
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let budgets = BudgetLayer::new(clock.clone(), BudgetConfig::default());
        let budgets = match &shared {
            Some(s) => budgets.with_shared(s.clone()),
            None => budgets,
        };
        let mut workers = Vec::new();
        for conn in store.list_connections(false).await? {
            if conn.state != ConnectionState::Live {
                continue;
            }
            let Some(adapter) = adapters.iter().find(|a| a.id() == conn.platform).cloned() else {
                tracing::warn!(connection = %conn.id, platform = %conn.platform, "no adapter loaded: no outbox worker");
                continue;
            };
            let Some(cred) = store.get_credential(&conn.id).await? else {
                tracing::warn!(connection = %conn.id, "no credentials: no outbox worker");
                continue;
            };
            let target = match api::target_for(&adapter, &conn, &cred.secret) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(connection = %conn.id, error = %e, "no outbox worker");
                    continue;
                }
            };
            let share = validated.connections.iter().find(|c| c.id == conn.id).map(|c| c.budget_target);
            let budget = share.map(|s| BudgetConfig::default().with_target(s));
            let gate = match budgets.connect(&target.connection, adapter.descriptor(), budget) {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(connection = %conn.id, error = %e, "no outbox worker");
                    continue;
                }
            };
            let worker = OutboxWorker::new(WorkerParts {
                store: store.clone(),
                clock: clock.clone(),
                driver: driver.clone(),
                adapter,
                target,
                gate,
                owner: format!("{replica_id}-{}", conn.id),
                config: OutboxConfig::default(),
                events: None,
                auth_hook: None,
            });
            let rx = stop_rx.clone();
            tracing::info!(connection = %conn.id, "outbox worker started");
            workers.push(tokio::spawn(async move { worker.run(rx).await }));
        }
        let listener = tokio::net::TcpListener::bind(validated.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", validated.listen))?;
        eprintln!("deskgate listening on http://{}", listener.local_addr()?);
        axum::serve(listener, api::app(state))
            .with_graceful_shutdown(async move {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down: finishing requests, stopping workers");
                let _ = stop_tx.send(true);
            })
            .await?;
        for w in workers {
            let _ = w.await;
        }
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
            store.create_connection(&new, now).await?;
            tracing::info!(connection = %c.id, "connection created from the configuration");
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
