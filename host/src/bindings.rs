//! Host-side bindings of `wit/adapter.wit`, generated once here.
//!
//! Everything else in the host names these types through the re-exports below, never through the
//! generated module paths, so a new WIT version only touches this file (add a sibling module, as
//! the WIT changes version).

#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        world: "adapter-component",
        path: "../wit",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub use generated::deskgate::adapter::types::{
    Action, ApplyAction, Assignee, AuthScheme, BasicAuth, BucketDraw, BucketScope, Capability,
    CapabilityResult, CapabilitySpec, Comment, Connection, Descriptor, Failure, ForbiddenDetail,
    HttpRequest, HttpResponse, Identity, Lane, ListChanged, Method, Oauth2Auth, Operation, Outcome,
    PartFailure, PendingRequest, PermissionKind, PlanLimits, ProbeMethod, RateBucket,
    RateLimitedDetail, RateObservation, ReadBackResult, Resolution, SignatureAlgorithm,
    SignatureCheck, Step, Ticket, TicketEvent, TicketPage, TicketStatus, UnauthenticatedDetail,
    Webhook, WebhookSpec, WriteReceipt,
};
pub use generated::{AdapterComponent, AdapterComponentPre};

impl Failure {
    /// The case's name as the contract spells it, for logs, metrics and error codes.
    pub fn case(&self) -> &'static str {
        match self {
            Failure::Unauthenticated(_) => "unauthenticated",
            Failure::Forbidden(_) => "forbidden",
            Failure::RateLimited(_) => "rate-limited",
            Failure::NotFound(_) => "not-found",
            Failure::Invalid(_) => "invalid",
            Failure::Transient(_) => "transient",
            Failure::Permanent(_) => "permanent",
        }
    }
}

/// A person-readable sentence for a failure: what happened and what to do.
pub struct Explained<'a>(&'a Failure);

impl Failure {
    /// A person-readable sentence for the failure (the generated `Display` is a debug dump).
    pub fn explain(&self) -> Explained<'_> {
        Explained(self)
    }
}

impl std::fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Failure::Unauthenticated(d) => {
                write!(f, "unauthenticated ({}): {}; re-authenticate the connection", d.code, d.message)
            }
            Failure::Forbidden(d) => write!(
                f,
                "forbidden: missing {:?} {:?}: {}; fix: {}",
                d.kind, d.missing, d.message, d.remediation
            ),
            Failure::RateLimited(d) => match d.retry_after_ms {
                Some(ms) => write!(f, "rate limited (retry after {ms} ms): {}", d.message),
                None => write!(f, "rate limited: {}", d.message),
            },
            Failure::NotFound(m) => write!(f, "not found: {m}"),
            Failure::Invalid(m) => write!(f, "invalid: {m}"),
            Failure::Transient(m) => write!(f, "transient: {m}"),
            Failure::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

impl Capability {
    /// All capabilities, in the order probes report them.
    pub const ALL: [Capability; 5] = [
        Capability::ReadTickets,
        Capability::PublicReply,
        Capability::SetStatus,
        Capability::AddTags,
        Capability::Assign,
    ];

    /// The capability's name as the contract spells it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::ReadTickets => "read-tickets",
            Capability::PublicReply => "public-reply",
            Capability::SetStatus => "set-status",
            Capability::AddTags => "add-tags",
            Capability::Assign => "assign",
        }
    }
}
