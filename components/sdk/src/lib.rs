//! Guest-side SDK for deskgate adapters.
//!
//! An adapter is a WebAssembly component that exports `deskgate:adapter/adapter@0.1.0` and imports
//! nothing that does IO. This crate holds the generated bindings of that contract, so an adapter
//! crate needs no `wit/` folder and no `wit_bindgen::generate!` of its own, plus the helpers every
//! adapter otherwise writes again: building JSON requests, reading headers, carrying state between
//! the steps of a multi-request operation, and the failure constructors.
//!
//! # Layout
//!
//! - [`bindings`]: the generated types and the `Guest` trait (also re-exported in [`prelude`]).
//! - [`http`]: request builders and response readers.
//! - [`fail`]: constructors for each `failure` case.
//! - [`lenient`]: reading loosely typed JSON fields without building `serde_json::Value`s.
//! - [`state`]: [`SavedFailure`](state::SavedFailure), a failure carried between steps.
//! - [`text`]: comparing reply bodies across HTML and plain text; RFC 3339 times.
//! - [`export_adapter!`]: exports a type implementing [`Guest`](prelude::Guest) as the component's
//!   adapter. Call it once, only when building for `wasm32`, so the crate also compiles and tests
//!   natively.
//!
//! # Example
//!
//! ```ignore
//! use deskgate_adapter_sdk::prelude::*;
//! struct MyDesk;
//! impl Guest for MyDesk { /* describe, start, resume, observe, parse_webhook */ }
//! #[cfg(target_arch = "wasm32")]
//! deskgate_adapter_sdk::export_adapter!(MyDesk);
//! ```
//!
//! `docs/writing-an-adapter.md` walks through a complete adapter.

#![deny(missing_docs)]

/// Bindings generated from `wit/adapter.wit`.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "adapter-component",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_adapter_bindings",
        default_bindings_module: "deskgate_adapter_sdk::bindings",
        generate_all,
    });
}

/// The components' allocator (feature `talc`, on by default): faster than dlmalloc on the
/// many small allocations an adapter call makes. Off the wasm target the platform's stays.
#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static TALC: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

pub mod fail;
pub mod http;
pub mod lenient;
pub mod state;
pub mod text;

/// Everything an adapter implementation usually needs, in one `use`.
pub mod prelude {
    pub use crate::bindings::deskgate::adapter::types::{
        Action, ApplyAction, Assignee, AuthScheme, BasicAuth, BucketDraw, BucketScope, Capability,
        CapabilityResult, CapabilitySpec, Comment, Connection, Descriptor, Failure,
        ForbiddenDetail, HttpRequest, HttpResponse, Identity, Lane, ListChanged, Method,
        Oauth2Auth, Operation, Outcome, PartFailure, PendingRequest, PermissionKind, PlanLimits,
        ProbeMethod, RateBucket, RateLimitedDetail, RateObservation, ReadBackResult, Resolution,
        SignatureAlgorithm, SignatureCheck, Step, Ticket, TicketEvent, TicketPage, TicketStatus,
        UnauthenticatedDetail, Webhook, WebhookSpec, WriteReceipt,
    };
    pub use crate::bindings::exports::deskgate::adapter::adapter::Guest;
    pub use crate::fail;
    pub use crate::http::{RequestBuilder, Response, done, header, json_body, parse_json, send};
    pub use crate::text;
}

/// Export `$ty` (which implements [`prelude::Guest`]) as this component's adapter.
///
/// Put it behind `#[cfg(target_arch = "wasm32")]` so the adapter crate still builds natively for
/// its unit tests.
#[macro_export]
macro_rules! export_adapter {
    ($ty:ident) => {
        $crate::bindings::export_adapter_bindings!($ty with_types_in $crate::bindings);
    };
}
