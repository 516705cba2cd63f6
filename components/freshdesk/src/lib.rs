//! deskgate adapter for Freshdesk (API v2).
//!
//! A sans-IO translator: it turns deskgate's normalized operations into Freshdesk requests and
//! Freshdesk's answers (error bodies included) into typed results. The host sends everything and
//! injects the credential (HTTP Basic, API key as the user name, `X` as the password).
//!
//! What makes Freshdesk different from the other desks:
//!
//! - No scopes and no OAuth for the v2 REST API: the key can do what its agent's role allows, and
//!   a 403 says only `access_denied`. We name the role privilege from the operation
//!   ([`errors`]) and prove capabilities on a throwaway ticket ([`ops::probe`]).
//! - No idempotency keys and no atomic resolution: a reply is its own endpoint, and `PUT` on the
//!   ticket replaces the whole tag list, so tags are read, merged and written back
//!   ([`ops::write`]); read-back ([`ops::readback`]) checks what landed after an ambiguous outcome.
//! - Page-numbered listing capped at page 300, and a search API capped at 300 results
//!   ([`ops::read`]).
//! - Unsigned, admin-defined webhooks: we document a body template and a shared-secret header
//!   ([`webhook`]).
//!
//! # Layout
//!
//! - [`describe`]: the descriptor (auth, per-plan buckets, capabilities, webhook check).
//! - [`translate`]: `start` / `resume` dispatch and the request builders the operations share.
//! - [`ops`]: the operations, one module per family.
//! - [`errors`]: non-2xx responses into `failure`.
//! - [`rate`]: rate headers into observations.
//! - [`webhook`]: deliveries into events.
//! - [`model`]: Freshdesk's JSON shapes and their conversion to the contract's types.

pub mod describe;
pub mod errors;
pub mod model;
pub mod ops;
pub mod rate;
pub mod translate;
pub mod webhook;

use deskgate_adapter_sdk::prelude::*;

/// The Freshdesk adapter. Public so benchmarks and tests can call it natively through [`Guest`].
pub struct FreshdeskAdapter;

impl Guest for FreshdeskAdapter {
    fn describe() -> Descriptor {
        describe::descriptor()
    }

    fn start(conn: Connection, op: Operation) -> Result<Step, Failure> {
        translate::start(&conn, &op)
    }

    fn resume(
        conn: Connection,
        op: Operation,
        state: String,
        response: HttpResponse,
    ) -> Result<Step, Failure> {
        translate::resume(&conn, &op, &state, &response)
    }

    fn observe(_conn: Connection, response: HttpResponse) -> Vec<RateObservation> {
        rate::observe(&response)
    }

    fn parse_webhook(
        _conn: Connection,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Webhook, Failure> {
        webhook::parse(&headers, &body)
    }
}

#[cfg(target_arch = "wasm32")]
deskgate_adapter_sdk::export_adapter!(FreshdeskAdapter);
