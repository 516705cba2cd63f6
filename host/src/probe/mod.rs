//! The scope probe: a connection goes live only once every capability it needs is proved.
//!
//! # Why probe at connect time, and not find out at the first write?
//!
//! A token without the scope to change a ticket's status works for weeks of reads and replies,
//! then leaves every "solved" ticket open. Finding that out from the first failed write means a
//! customer found it first. So at connect time (and on demand, and after credentials change) the
//! adapter proves each capability (read, public reply, status, tags, assign) without touching real
//! customers ([`Operation::Probe`]), and the connection stays `pending_probe` until all pass. The
//! stored report names, for each failure, the missing scope or role privilege and the platform's
//! own remediation text, so the person fixing it knows which checkbox to tick.

use serde::Serialize;
use serde_json::Value;

use crate::bindings::{Capability, Failure, Operation, Outcome, PermissionKind};
use crate::clock::Millis;
use crate::driver::{DriveError, Driver, NoHooks, Target};
use crate::runtime::Adapter;
use crate::store::{ConnectionState, SharedStore, StoreError};

/// One capability's result, as stored and shown to people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeEntry {
    /// The capability (`read-tickets`, `set-status`, ...).
    pub capability: String,
    /// Whether it was proved.
    pub granted: bool,
    /// The failure's case (`forbidden`, `unauthenticated`, ...), when not granted.
    pub failure: Option<String>,
    /// `scope`, `role` or `plan`, for a forbidden capability.
    pub permission_kind: Option<String>,
    /// The missing scope or privilege as the platform names it.
    pub missing: Option<String>,
    /// How to grant it on this platform.
    pub remediation: Option<String>,
    /// The platform's message, or what else went wrong.
    pub message: Option<String>,
}

/// A probe's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// When it ran.
    pub at: Millis,
    /// Whether every required capability passed.
    pub passed: bool,
    /// Per capability, in the contract's order.
    pub capabilities: Vec<ProbeEntry>,
}

impl ProbeReport {
    /// The entries that did not pass.
    pub fn missing(&self) -> impl Iterator<Item = &ProbeEntry> {
        self.capabilities.iter().filter(|e| !e.granted)
    }

    /// One line per failure, for people: "set-status: missing role `edit_tickets` (fix: ...)".
    pub fn explain(&self) -> String {
        let lines: Vec<String> = self
            .missing()
            .map(|e| match (&e.missing, &e.remediation) {
                (Some(m), Some(r)) => format!(
                    "{}: missing {} `{m}`; {r}",
                    e.capability,
                    e.permission_kind.as_deref().unwrap_or("permission")
                ),
                _ => format!("{}: {}", e.capability, e.message.as_deref().unwrap_or("not granted")),
            })
            .collect();
        if lines.is_empty() { "every capability passed".into() } else { lines.join("\n") }
    }
}

/// Why a probe could not run (a platform refusal is a report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation could not be driven (adapter fault, network).
    #[error("the probe could not run: {0}")]
    Drive(#[from] DriveError),
}

fn kind_name(k: PermissionKind) -> &'static str {
    match k {
        PermissionKind::Scope => "scope",
        PermissionKind::Role => "role",
        PermissionKind::Plan => "plan",
    }
}

fn entry(capability: Capability, granted: bool, failure: Option<&Failure>) -> ProbeEntry {
    let mut e = ProbeEntry {
        capability: capability.name().into(),
        granted,
        failure: None,
        permission_kind: None,
        missing: None,
        remediation: None,
        message: None,
    };
    if let Some(f) = failure {
        e.failure = Some(f.case().into());
        match f {
            Failure::Forbidden(d) => {
                e.permission_kind = Some(kind_name(d.kind).into());
                e.missing = Some(d.missing.clone());
                e.remediation = Some(d.remediation.clone());
                e.message = Some(d.message.clone());
            }
            other => e.message = Some(other.explain().to_string()),
        }
    } else if !granted {
        e.message = Some("not granted".into());
    }
    e
}

/// The capabilities a connection needs: those the adapter's descriptor lists, else all five.
pub fn required(adapter: &Adapter) -> Vec<Capability> {
    let caps: Vec<Capability> = adapter.descriptor().capabilities.iter().map(|c| c.capability).collect();
    if caps.is_empty() { Capability::ALL.to_vec() } else { caps }
}

/// How many times [`run`] probes when a probe meets transient failures.
pub const PROBE_ATTEMPTS: u32 = 3;
/// Pause before the second probe (doubled before the third): real time, a network retry.
const PROBE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Run the probe and build its report (nothing stored).
///
/// # Errors
/// [`ProbeError::Drive`] when the probe could not run at all.
pub async fn run(driver: &Driver, adapter: &Adapter, target: &Target, now: Millis) -> Result<ProbeReport, ProbeError> {
    let caps = required(adapter);
    let op = Operation::Probe(caps.clone());
    // A probe decides whether a connection may work, so one dropped connection or 5xx must not
    // decide it: a request that failed in transit (it may or may not have landed: the probe's
    // writes go to its own ticket, so sending them again is harmless), a transient failure or a
    // 429 runs the probe again, up to `PROBE_ATTEMPTS` times, a moment apart. Only a verdict the
    // platform gave on purpose (granted, forbidden, ...) is reported.
    let mut attempt = 1;
    let result = loop {
        let r = driver.execute(adapter, target, &op, None, &mut NoHooks).await;
        let passing = |f: &Failure| matches!(f, Failure::Transient(_) | Failure::RateLimited(_));
        let again = match &r {
            Err(DriveError::Transport { .. }) => true,
            Ok(Err(f)) => passing(f),
            Ok(Ok(Outcome::Probed(results))) => results.iter().any(|p| p.failure.as_ref().is_some_and(passing)),
            _ => false,
        };
        if !again || attempt >= PROBE_ATTEMPTS {
            break r?;
        }
        tracing::info!(connection = %target.connection.id, attempt, "the scope probe met a transient failure; probing again");
        tokio::time::sleep(PROBE_RETRY_PAUSE * attempt).await;
        attempt += 1;
    };
    let capabilities: Vec<ProbeEntry> = match result {
        Ok(Outcome::Probed(results)) => caps
            .iter()
            .map(|c| match results.iter().find(|r| r.capability == *c) {
                Some(r) => entry(*c, r.granted, r.failure.as_ref()),
                None => ProbeEntry { message: Some("the adapter did not report this capability".into()), ..entry(*c, false, None) },
            })
            .collect(),
        Ok(other) => caps
            .iter()
            .map(|c| ProbeEntry { message: Some(format!("unexpected outcome {other:?}")), ..entry(*c, false, None) })
            .collect(),
        Err(failure) => caps.iter().map(|c| entry(*c, false, Some(&failure))).collect(),
    };
    let passed = capabilities.iter().all(|e| e.granted);
    Ok(ProbeReport { at: now, passed, capabilities })
}

/// Probe a connection, store the report, and move it from `pending_probe` to `live` if every
/// required capability passed. A connection in another state keeps it (resuming a suspended one is
/// the credential policy's decision, see [`crate::auth`]).
///
/// # Errors
/// [`ProbeError`].
pub async fn probe_connection(
    store: &SharedStore,
    driver: &Driver,
    adapter: &Adapter,
    target: &Target,
    now: Millis,
) -> Result<ProbeReport, ProbeError> {
    let report = run(driver, adapter, target, now).await?;
    let id = &target.connection.id;
    let value: Value = serde_json::to_value(&report).expect("reports serialize");
    let conn = store.set_probe_report(id, &value, now).await?;
    if report.passed && conn.state == ConnectionState::PendingProbe {
        store.set_connection_state(id, &ConnectionState::Live, now).await?;
    }
    if !report.passed {
        tracing::warn!(connection = %id, "scope probe failed; the connection stays {}:\n{}", conn.state.name(), report.explain());
        // People must hear of it: a connection that never goes live is as silent a failure as
        // a write that is refused.
        let missing: Vec<&ProbeEntry> = report.capabilities.iter().filter(|e| !e.granted).collect();
        let text = format!(
            "Connection {id}: re-scope needed. The scope probe found {} capabilit{} missing:\n{}\nThe connection stays {}: nothing is written for it until the probe passes. Fix the permissions, then probe again (POST /v1/connections/{id}/probe or `deskgate probe {id}`).",
            missing.len(),
            if missing.len() == 1 { "y" } else { "ies" },
            report.explain(),
            conn.state.name(),
        );
        let detail = serde_json::json!({ "probe": value, "during": "probe" });
        crate::alerts::raise(store, now, Some(id), crate::alerts::SCOPE_MISSING, text, detail).await?;
    }
    Ok(report)
}
