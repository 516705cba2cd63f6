//! The Freshdesk descriptor: auth, per-plan rate buckets, capabilities and webhook checking.
//!
//! Rate limits are per minute and account-wide, by plan (support article 225439, 2024-03-14):
//! every call spends the account counter, and ticket creation, ticket updates and ticket listing
//! also spend their own per-endpoint counters. The trial plan only states the account limit; we
//! cap its per-endpoint buckets at the same 50 so no draw names a missing bucket.

use deskgate_adapter_sdk::prelude::*;

/// Bucket every request draws on.
pub const ACCOUNT: &str = "account";
/// `POST /api/v2/tickets`.
pub const TICKET_CREATE: &str = "ticket-create";
/// `PUT /api/v2/tickets/{id}`.
pub const TICKET_UPDATE: &str = "ticket-update";
/// `GET /api/v2/tickets` and, to be safe, the search API (not single-ticket reads).
pub const TICKETS_LIST: &str = "tickets-list";

const WINDOW_MS: u64 = 60_000;

/// Header the admin adds to the automation rule's "Trigger webhook" action, with a secret value.
pub const WEBHOOK_TOKEN_HEADER: &str = "x-deskgate-webhook-token";

fn plan(name: &str, account: u32, create: u32, update: u32, list: u32) -> PlanLimits {
    let bucket = |n: &str, limit: u32, what: &str| RateBucket {
        name: n.to_string(),
        scope: BucketScope::Account,
        limit,
        window_ms: WINDOW_MS,
        description: what.to_string(),
    };
    PlanLimits {
        plan: name.to_string(),
        buckets: vec![
            bucket(
                ACCOUNT,
                account,
                "every API call of the account, per minute",
            ),
            bucket(
                TICKET_CREATE,
                create,
                "ticket creation (POST /api/v2/tickets), per minute",
            ),
            bucket(
                TICKET_UPDATE,
                update,
                "ticket updates (PUT /api/v2/tickets/{id}), per minute",
            ),
            bucket(
                TICKETS_LIST,
                list,
                "ticket listing (GET /api/v2/tickets), per minute",
            ),
        ],
    }
}

fn cap(capability: Capability, requires: &str) -> CapabilitySpec {
    CapabilitySpec {
        capability,
        method: ProbeMethod::ProbeTicket,
        requires: requires.to_string(),
    }
}

/// The descriptor.
pub fn descriptor() -> Descriptor {
    // Role privilege names below are the labels of Freshdesk's role editor as we know them:
    // UNCONFIRMED (platforms.md 2.2).
    const PROBE_NOTE: &str = " (the probe also creates and deletes a ticket: 'Create a ticket', 'Delete a ticket'; \
         privilege names UNCONFIRMED)";
    Descriptor {
        id: "freshdesk".to_string(),
        name: "Freshdesk".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        // API key as the Basic user name, any password ("X" by convention). No OAuth: no public
        // OAuth 2 flow exists for the Freshdesk v2 REST API (only for Freshservice and for
        // marketplace apps), so there is nothing to refresh.
        auth: vec![AuthScheme::Basic(BasicAuth {
            username: "{api_key}".to_string(),
            password: "X".to_string(),
            fields: vec!["api_key".to_string()],
        })],
        plans: vec![
            plan("growth", 200, 80, 80, 20),
            plan("pro", 400, 160, 160, 100),
            plan("enterprise", 700, 280, 280, 200),
            plan("trial", 50, 50, 50, 50),
        ],
        default_plan: "pro".to_string(),
        // Freshdesk honours no idempotency header (platforms.md 2.7).
        idempotent_actions: Vec::new(),
        capabilities: vec![
            cap(
                Capability::ReadTickets,
                &format!(
                    "agent role that can view tickets, with a ticket scope (Global, Group or \
                     Restricted access) covering them{PROBE_NOTE}"
                ),
            ),
            cap(
                Capability::PublicReply,
                &format!("agent role with 'Reply to a ticket'{PROBE_NOTE}"),
            ),
            cap(
                Capability::SetStatus,
                &format!("agent role with 'Edit ticket properties'{PROBE_NOTE}"),
            ),
            cap(
                Capability::AddTags,
                &format!(
                    "agent role with 'Edit ticket properties' (new tag names may also need tag \
                     creation rights){PROBE_NOTE}"
                ),
            ),
            cap(
                Capability::Assign,
                &format!("agent role with 'Edit ticket properties'{PROBE_NOTE}"),
            ),
        ],
        // Freshdesk does not sign webhooks. The admin adds a custom header with a secret value to
        // the automation rule's "Trigger webhook" action; the host compares it verbatim.
        webhook: WebhookSpec {
            algorithm: SignatureAlgorithm::SharedSecret,
            signature_header: WEBHOOK_TOKEN_HEADER.to_string(),
            max_age_secs: None,
        },
        // The reply is its own endpoint; status, tags and assignee are one PUT after it.
        atomic_resolution: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_and_buckets() {
        let d = descriptor();
        assert_eq!(d.id, "freshdesk");
        assert_eq!(d.name, "Freshdesk");
        assert_eq!(d.default_plan, "pro");
        let table: Vec<(String, Vec<(String, u32)>)> = d
            .plans
            .iter()
            .map(|p| {
                assert!(
                    p.buckets
                        .iter()
                        .all(|b| b.window_ms == 60_000 && b.scope == BucketScope::Account)
                );
                (
                    p.plan.clone(),
                    p.buckets
                        .iter()
                        .map(|b| (b.name.clone(), b.limit))
                        .collect(),
                )
            })
            .collect();
        let row = |p: &str, a, c, u, l| {
            (
                p.to_string(),
                vec![
                    ("account".to_string(), a),
                    ("ticket-create".to_string(), c),
                    ("ticket-update".to_string(), u),
                    ("tickets-list".to_string(), l),
                ],
            )
        };
        assert_eq!(
            table,
            vec![
                row("growth", 200, 80, 80, 20),
                row("pro", 400, 160, 160, 100),
                row("enterprise", 700, 280, 280, 200),
                row("trial", 50, 50, 50, 50),
            ]
        );
    }

    #[test]
    fn auth_webhook_and_capabilities() {
        let d = descriptor();
        assert_eq!(d.auth.len(), 1);
        match &d.auth[0] {
            AuthScheme::Basic(b) => {
                assert_eq!(b.username, "{api_key}");
                assert_eq!(b.password, "X");
                assert_eq!(b.fields, vec!["api_key".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(d.idempotent_actions.is_empty());
        assert!(!d.atomic_resolution);
        assert_eq!(d.webhook.algorithm, SignatureAlgorithm::SharedSecret);
        assert_eq!(d.webhook.signature_header, "x-deskgate-webhook-token");
        assert_eq!(d.webhook.max_age_secs, None);
        assert_eq!(d.capabilities.len(), 5);
        assert!(
            d.capabilities
                .iter()
                .all(|c| c.method == ProbeMethod::ProbeTicket)
        );
        assert!(d.capabilities[1].requires.contains("'Reply to a ticket'"));
    }
}
