//! deskgate adapter for Intercom (REST API 2.16, `https://api.intercom.io` and the EU / AU hosts).
//!
//! A sans-IO translator: it turns deskgate's normalized operations into Intercom requests and
//! Intercom's answers (including its `error.list` bodies) into typed results. The host sends every
//! request, adds the bearer token and enforces the rate buckets.
//!
//! # What a ticket is
//!
//! Intercom **conversations** are the ticket object: a ticket id is a conversation id. Intercom's
//! separate *tickets* object (`/tickets`) is **not supported** in this version.
//!
//! # Requests
//!
//! Every request carries `Intercom-Version: 2.16` and `Accept: application/json` and draws one unit
//! from the "app" and the "workspace" buckets.
//!
//! | operation | requests |
//! |---|---|
//! | get-ticket | `GET /conversations/{id}` |
//! | list-changed | `POST /conversations/search` on `updated_at > since-1s`, 150 a page, cursor = `starting_after` |
//! | list-open | `POST /conversations/search` on `open = true` (open and snoozed) |
//! | reply | `POST /conversations/{id}/reply` (admin comment, HTML) |
//! | set-status | `POST /conversations/{id}/parts` close / open; pending and on-hold are refused (a snooze needs a time) |
//! | add-tags | per tag `POST /tags` then `POST /conversations/{id}/tags` |
//! | assign | `POST /conversations/{id}/parts` assignment, per admin and team |
//! | resolve | one close part carrying the reply, then tags, then assignment |
//! | who-am-i | `GET /me` |
//! | probe | a throwaway lead and conversation, exercised then deleted (see [`ops::probe`]) |
//! | read-back | `GET /conversations/{id}` |
//!
//! Writes name the acting admin (`admin_id`): the connection's agent id, learnt from who-am-i.

pub mod describe;
pub mod errors;
pub mod model;
pub mod ops;
pub mod rate;
pub mod translate;
pub mod webhook;

#[cfg(test)]
mod testutil;

use deskgate_adapter_sdk::prelude::*;

/// The Intercom adapter.
pub struct IntercomAdapter;

impl Guest for IntercomAdapter {
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
deskgate_adapter_sdk::export_adapter!(IntercomAdapter);
