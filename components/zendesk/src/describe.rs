//! The Zendesk descriptor: auth schemes, rate buckets per plan, capabilities, webhook signing.

use deskgate_adapter_sdk::prelude::*;

/// Account-wide requests per minute (platforms.md 1.3; names lower-case, hyphenated).
pub const PLANS: &[(&str, u32)] = &[
    ("team", 200),
    ("growth", 400),
    ("professional", 400),
    ("enterprise", 700),
    ("enterprise-plus", 2500),
    ("high-volume", 2500),
];

/// The plan assumed when the connection does not name one.
pub const DEFAULT_PLAN: &str = "enterprise";

/// Bucket names.
pub const ACCOUNT: &str = "account";
/// Per user per ticket update cap, keyed by ticket id.
pub const TICKET_UPDATE: &str = "ticket-update";
/// Update Ticket requests per account.
pub const TICKET_UPDATE_ACCOUNT: &str = "ticket-update-account";
/// Incremental exports per account.
pub const INCREMENTAL_EXPORT: &str = "incremental-export";

fn bucket(
    name: &str,
    scope: BucketScope,
    limit: u32,
    window_ms: u64,
    description: &str,
) -> RateBucket {
    RateBucket {
        name: name.to_string(),
        scope,
        limit,
        window_ms,
        description: description.to_string(),
    }
}

fn plan(name: &str, per_minute: u32) -> PlanLimits {
    // The High Volume add-on (and Enterprise Plus, which carries the same API allowance) raises
    // the per-account Update Ticket and incremental export limits too.
    let high = matches!(name, "enterprise-plus" | "high-volume");
    PlanLimits {
        plan: name.to_string(),
        buckets: vec![
            bucket(
                ACCOUNT,
                BucketScope::Account,
                per_minute,
                60_000,
                "Account-wide API requests per minute, shared by every client of the account",
            ),
            bucket(
                TICKET_UPDATE,
                BucketScope::PerObject,
                30,
                600_000,
                "Update Ticket: 30 updates per user per ticket per 10 minutes (keyed by ticket id)",
            ),
            bucket(
                TICKET_UPDATE_ACCOUNT,
                BucketScope::Account,
                if high { 300 } else { 100 },
                60_000,
                "Update Ticket requests per minute per account (agent UI updates count too)",
            ),
            bucket(
                INCREMENTAL_EXPORT,
                BucketScope::Account,
                if high { 30 } else { 10 },
                60_000,
                "Incremental export requests per minute",
            ),
        ],
    }
}

const READ: &str = "OAuth scope tickets:read or read (API tokens carry the user's own access); an \
                    agent role whose ticket access covers the tickets";
const WRITE_NOTE: &str = "The probe creates a private ticket with the agent as requester, exercises \
                          it and deletes it, so the role must also create and delete tickets.";

fn cap(capability: Capability, requires: String) -> CapabilitySpec {
    CapabilitySpec {
        capability,
        method: ProbeMethod::ProbeTicket,
        requires,
    }
}

/// The descriptor.
pub fn descriptor() -> Descriptor {
    Descriptor {
        id: "zendesk".to_string(),
        name: "Zendesk Support".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        auth: vec![
            AuthScheme::Basic(BasicAuth {
                username: "{email}/token".to_string(),
                password: "{token}".to_string(),
                fields: vec!["email".to_string(), "token".to_string()],
            }),
            AuthScheme::Oauth2(Oauth2Auth {
                token_path: "/oauth/tokens".to_string(),
                rotates_refresh_tokens: true,
                default_lifetime_secs: Some(1800),
            }),
        ],
        plans: PLANS
            .iter()
            .map(|(name, limit)| plan(name, *limit))
            .collect(),
        default_plan: DEFAULT_PLAN.to_string(),
        // Zendesk honours Idempotency-Key only on ticket creation, which no action uses (the probe
        // sends it on its POST).
        idempotent_actions: Vec::new(),
        // Token introspection only means something for OAuth tokens (API tokens have no scopes),
        // so every capability is proved on a probe ticket.
        capabilities: vec![
            cap(Capability::ReadTickets, READ.to_string()),
            cap(
                Capability::PublicReply,
                format!(
                    "OAuth scope tickets:write or write; an agent role with 'Comment access' set \
                     to 'Public and private'. {WRITE_NOTE}"
                ),
            ),
            cap(
                Capability::SetStatus,
                format!(
                    "OAuth scope tickets:write or write; an agent role that can edit ticket \
                     properties. {WRITE_NOTE}"
                ),
            ),
            cap(
                Capability::AddTags,
                format!(
                    "OAuth scope tickets:write or write; an agent role with 'Edit ticket tags'. \
                     {WRITE_NOTE}"
                ),
            ),
            cap(
                Capability::Assign,
                format!(
                    "OAuth scope tickets:write or write; an agent role that can edit ticket \
                     properties and assign tickets to any group. {WRITE_NOTE}"
                ),
            ),
        ],
        webhook: WebhookSpec {
            algorithm: SignatureAlgorithm::HmacSha256Base64,
            signature_header: "x-zendesk-webhook-signature".to_string(),
            max_age_secs: Some(300),
        },
        atomic_resolution: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names_every_plan_and_bucket() {
        let d = descriptor();
        assert_eq!(d.id, "zendesk");
        assert_eq!(d.name, "Zendesk Support");
        assert_eq!(d.default_plan, "enterprise");
        assert!(d.atomic_resolution);
        assert!(d.idempotent_actions.is_empty());
        let names: Vec<_> = d.plans.iter().map(|p| p.plan.as_str()).collect();
        assert_eq!(
            names,
            [
                "team",
                "growth",
                "professional",
                "enterprise",
                "enterprise-plus",
                "high-volume"
            ]
        );
        assert!(names.contains(&d.default_plan.as_str()));
        let limit = |plan: &str, bucket: &str| {
            let p = d.plans.iter().find(|p| p.plan == plan).unwrap();
            let b = p.buckets.iter().find(|b| b.name == bucket).unwrap();
            (b.limit, b.window_ms, b.scope)
        };
        assert_eq!(
            limit("team", "account"),
            (200, 60_000, BucketScope::Account)
        );
        assert_eq!(limit("enterprise", "account").0, 700);
        assert_eq!(limit("high-volume", "account").0, 2500);
        assert_eq!(
            limit("growth", "ticket-update"),
            (30, 600_000, BucketScope::PerObject)
        );
        assert_eq!(limit("professional", "ticket-update-account").0, 100);
        assert_eq!(limit("enterprise-plus", "ticket-update-account").0, 300);
        assert_eq!(limit("enterprise", "incremental-export").0, 10);
        assert_eq!(limit("high-volume", "incremental-export").0, 30);
    }

    #[test]
    fn auth_and_webhook() {
        let d = descriptor();
        assert!(matches!(&d.auth[0], AuthScheme::Basic(b)
            if b.username == "{email}/token" && b.password == "{token}" && b.fields == ["email", "token"]));
        assert!(matches!(&d.auth[1], AuthScheme::Oauth2(o)
            if o.token_path == "/oauth/tokens" && o.rotates_refresh_tokens && o.default_lifetime_secs == Some(1800)));
        assert_eq!(d.webhook.algorithm, SignatureAlgorithm::HmacSha256Base64);
        assert_eq!(d.webhook.signature_header, "x-zendesk-webhook-signature");
        assert_eq!(d.webhook.max_age_secs, Some(300));
        assert_eq!(d.capabilities.len(), 5);
        assert!(
            d.capabilities
                .iter()
                .all(|c| c.method == ProbeMethod::ProbeTicket)
        );
        assert!(
            d.capabilities[1]
                .requires
                .contains("tickets:write or write")
        );
        assert!(d.capabilities[0].requires.contains("tickets:read or read"));
    }
}
