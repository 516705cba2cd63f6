//! A test adapter that misbehaves on request, for the host's sandbox tests.
//!
//! It is a well-formed adapter (id `misbehaving`, a sane descriptor, a cheap `describe`), and its
//! `start` does what the ticket id asks:
//!
//! - `get-ticket("loop")` spins forever, so the host's epoch deadline must interrupt it;
//! - `get-ticket("trap")` panics with [`PANIC_MESSAGE`], so the host must report a trap carrying
//!   the message the component wrote to stderr;
//! - `get-ticket("hog")` allocates 1 MiB blocks without bound, so the host's memory cap must stop
//!   it;
//! - `get-ticket("ok-<n>")` plans `GET /tickets/<n>` like any adapter (any other plain id plans
//!   `GET /tickets/<id>`), and `resume` turns a 200 into a ticket and classifies the rest, so tests
//!   can check the adapter still works after each failure.
//!
//! Other operations are refused as `invalid`; only the three words above misbehave.

use deskgate_adapter_sdk::prelude::*;
use std::hint::black_box;

/// What `get-ticket("trap")` panics with; the sandbox tests look for it in the trap's message.
pub const PANIC_MESSAGE: &str = "misbehaving adapter panicked on purpose (get-ticket \"trap\")";

/// The only bucket.
const ACCOUNT: &str = "account";

/// The adapter.
pub struct Misbehaving;

impl Guest for Misbehaving {
    fn describe() -> Descriptor {
        Descriptor {
            id: "misbehaving".to_string(),
            name: "Misbehaving test adapter".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            auth: vec![AuthScheme::Bearer],
            plans: vec![PlanLimits {
                plan: "standard".to_string(),
                buckets: vec![RateBucket {
                    name: ACCOUNT.to_string(),
                    scope: BucketScope::Account,
                    limit: 600,
                    window_ms: 60_000,
                    description: "Requests per minute for the whole account".to_string(),
                }],
            }],
            default_plan: "standard".to_string(),
            idempotent_actions: Vec::new(),
            capabilities: [
                Capability::ReadTickets,
                Capability::PublicReply,
                Capability::SetStatus,
                Capability::AddTags,
                Capability::Assign,
            ]
            .into_iter()
            .map(|capability| CapabilitySpec {
                capability,
                method: ProbeMethod::TokenIntrospection,
                requires: "nothing: this is a test adapter".to_string(),
            })
            .collect(),
            webhook: WebhookSpec {
                algorithm: SignatureAlgorithm::HmacSha256Hex,
                signature_header: "x-signature".to_string(),
                max_age_secs: None,
            },
            atomic_resolution: false,
        }
    }

    fn start(_conn: Connection, op: Operation) -> Result<Step, Failure> {
        let Operation::GetTicket(id) = op else {
            return Err(fail::invalid(
                "the misbehaving test adapter only answers get-ticket",
            ));
        };
        match id.as_str() {
            "loop" => spin(),
            "trap" => panic!("{PANIC_MESSAGE}"),
            "hog" => hog(),
            other => {
                let n = other.strip_prefix("ok-").unwrap_or(other);
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(fail::invalid(format!("{other:?} is not a ticket id")));
                }
                let req = RequestBuilder::new(Method::Get, format!("/tickets/{n}"))
                    .lane(Lane::Read)
                    .draw(ACCOUNT)
                    .build();
                send(req, &other)
            }
        }
    }

    fn resume(
        _conn: Connection,
        _op: Operation,
        state: String,
        response: HttpResponse,
    ) -> Result<Step, Failure> {
        let message = format!("the test platform answered HTTP {}", response.status);
        match response.status {
            200..=299 => {}
            401 => return Err(fail::unauthenticated("invalid_token", &message)),
            403 => {
                let remediation = "grant the test token what it lacks";
                return Err(fail::forbidden(
                    PermissionKind::Scope,
                    "unknown",
                    remediation,
                    &message,
                ));
            }
            429 => {
                let wait = Response::new(&response).retry_after_ms();
                return Err(fail::rate_limited(wait, Some(ACCOUNT), &message));
            }
            status => return Err(fail::by_status(status, message)),
        }
        let id: String = id_from_state(&state)?;
        done(Outcome::Ticket(Ticket {
            id,
            subject: Some("A ticket from the misbehaving adapter".to_string()),
            status: TicketStatus::Open,
            raw_status: "open".to_string(),
            requester_id: None,
            assignee_id: None,
            group_id: None,
            tags: Vec::new(),
            created_at: 0,
            updated_at: 0,
            comments: Vec::new(),
        }))
    }

    fn observe(_conn: Connection, _response: HttpResponse) -> Vec<RateObservation> {
        Vec::new()
    }

    fn parse_webhook(
        _conn: Connection,
        _headers: Vec<(String, String)>,
        _body: Vec<u8>,
    ) -> Result<Webhook, Failure> {
        Err(fail::invalid(
            "the misbehaving test adapter takes no webhooks",
        ))
    }
}

/// The state is the JSON string `send` wrote (the ticket id, plain alphanumerics after an optional
/// `ok-`); read it back without a serde dependency.
fn id_from_state(state: &str) -> Result<String, Failure> {
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    state
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|s| !s.is_empty() && plain(s))
        .map(str::to_string)
        .ok_or_else(|| fail::permanent(format!("unexpected state {state:?}")))
}

/// Loop forever. The counter goes through `black_box`, so the optimizer can neither prove the
/// loop has no effect nor fold it away.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Keep allocating 1 MiB blocks, touching every page so none is left lazily unbacked, and keep
/// them all alive, until the host's memory cap ends the call.
fn hog() -> ! {
    const BLOCK: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; BLOCK];
        let mark = (hoard.len() as u8).wrapping_add(1);
        for i in (0..BLOCK).step_by(4096) {
            block[i] = mark;
        }
        hoard.push(black_box(block));
    }
}

#[cfg(target_arch = "wasm32")]
deskgate_adapter_sdk::export_adapter!(Misbehaving);
