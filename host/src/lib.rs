//! deskgate: a helpdesk integration gateway.
//!
//! Support-automation products read tickets from helpdesks and write resolutions back. deskgate
//! sits between them and makes that hold up at volume. The host (this crate) owns every byte of IO
//! and every policy; helpdesk adapters are WebAssembly components that only translate between
//! normalized operations and each platform's HTTP API.
//!
//! # Layout
//!
//! - [`bindings`]: the host side of `wit/adapter.wit` (the adapter contract).
//! - [`runtime`]: wasmtime engine, pooling allocator, epoch deadlines, memory caps, compile cache,
//!   adapter registry.
//! - [`driver`]: runs an operation's plan / send / resume loop over HTTP, adding base URL, auth and idempotency key.
//! - [`conformance`]: `deskgate adapter check`, the obligations every adapter must meet.
//! - [`builtin`]: the Zendesk, Freshdesk and Intercom adapters compiled into the binary.
//! - [`clock`]: time as a dependency (system or manual, for tests).
//! - [`budget`]: rate budgets per connection: target share of each bucket, read and write lanes,
//!   429 penalties, the write-retry queue, read backoff.
//! - [`store`]: the durable store (SQLite by default, PostgreSQL for replicas): connections,
//!   encrypted credentials, outbox and write log, inbox, alerts, timer leases.
//! - [`ingest`]: tickets in: verified webhooks, jittered reconciliation sweeps, the deduplicating
//!   inbox writer, long-poll and push to the app.
//! - [`outbox`]: the app's actions, durable and idempotent: content keys, the per-connection write
//!   worker (budget, mark-sent-before-send, read-back of ambiguous writes, divergence alerts).
//! - [`auth`]: credentials as monitored state: OAuth refresh at 80% of lifetime (single-flight,
//!   marker before sending, rotated pair stored before use), crash recovery, health checks, the
//!   401/403 policy, clean suspension and resumption.
//! - [`probe`]: the connect-time scope probe; a connection goes live only when every capability passes.
//! - [`alerts`]: alerts raised, stored, logged and delivered to admin contacts until delivered.
//! - [`config`]: `deskgate.toml`: typed, `deny_unknown_fields`, validated with errors that name
//!   the key, the problem and the fix; secrets redacted.
//! - [`api`]: the HTTP API (`app()` factory, bearer auth, one `ApiError`, OpenAPI document,
//!   metrics, health).
//! - [`status`]: the live status registry (budget gates, credential timers, per-connection
//!   counters) the supervisor fills and `/metrics`, `/v1/status` and the dashboard read.
//! - [`edge`]: `deskgate edge`: serves the Spin edge component (`components/edge`) with
//!   `wasmtime-wasi-http`, as Spin would.
//! - [`cli`]: the `deskgate` command line.
//! - [`client`]: a client of a running gateway's API (the CLI's operator verbs use it).
//! - [`serve`]: `deskgate serve`: config, store, adapters, workers, the API, graceful shutdown.
//!
//! # Example
//!
//! ```no_run
//! use deskgate::runtime::{AdapterRuntime, RuntimeConfig};
//! let mut rt = AdapterRuntime::new(RuntimeConfig::default())?;
//! rt.load_builtin()?;
//! let zendesk = rt.get("zendesk").expect("built in");
//! println!("{} buckets on {}", zendesk.descriptor().plans.len(), zendesk.descriptor().name);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![deny(missing_docs)]

pub mod alerts;
pub mod auth;
pub mod api;
pub mod bindings;
pub mod budget;
pub mod builtin;
pub mod cli;
pub mod client;
pub mod clock;
pub mod conformance;
pub mod demo;
pub mod config;
pub mod driver;
pub mod edge;
pub mod gateway;
pub mod outbox;
pub mod probe;
pub mod ingest;
pub mod runtime;
pub mod serve;
pub mod status;
pub mod store;
