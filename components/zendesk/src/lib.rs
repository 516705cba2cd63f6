//! deskgate adapter for Zendesk Support (Ticketing API v2).
//!
//! A sans-IO translator: it plans Zendesk requests for the contract's operations and reads
//! Zendesk's responses, error bodies, rate headers and webhooks back into contract types. The host
//! sends every request and injects the credential (API token as Basic `{email}/token:{token}`, or an
//! OAuth bearer token).
//!
//! - [`describe`]: auth schemes, rate buckets per plan, capabilities, webhook signing.
//! - [`translate`] and [`ops`]: planning and resuming each operation.
//! - [`errors`]: classifying non-2xx responses into failures.
//! - [`rate`]: rate-limit headers.
//! - [`webhook`]: event-subscription deliveries.
//! - [`model`]: the JSON shapes read from Zendesk.

pub mod describe;
pub mod errors;
pub mod model;
pub mod ops;
pub mod rate;
pub mod translate;
pub mod webhook;

use deskgate_adapter_sdk::prelude::*;

/// The Zendesk adapter.
pub struct ZendeskAdapter;

impl Guest for ZendeskAdapter {
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
deskgate_adapter_sdk::export_adapter!(ZendeskAdapter);
