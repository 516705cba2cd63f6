//! The Intercom descriptor: auth, rate buckets, capabilities, webhook signing.

use deskgate_adapter_sdk::prelude::*;

/// Bucket for the per-app limit (10,000 calls a minute, spread over 10-second windows).
pub const BUCKET_APP: &str = "app";
/// Bucket for the per-workspace limit (25,000 calls a minute, spread over 10-second windows).
pub const BUCKET_WORKSPACE: &str = "workspace";

/// The descriptor.
pub fn descriptor() -> Descriptor {
    let window_ms = 10_000;
    Descriptor {
        id: "intercom".to_string(),
        name: "Intercom".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        // Access tokens (private apps) and OAuth tokens (public apps) are both bearer tokens that
        // do not expire; there is no refresh grant.
        auth: vec![AuthScheme::Bearer],
        plans: vec![PlanLimits {
            plan: "standard".to_string(),
            buckets: vec![
                RateBucket {
                    name: BUCKET_APP.to_string(),
                    scope: BucketScope::Account,
                    limit: 1666,
                    window_ms,
                    description: "Per app: 10,000 calls per minute, enforced as ~1,666 per \
                                  10-second window (X-RateLimit-* headers)"
                        .to_string(),
                },
                RateBucket {
                    name: BUCKET_WORKSPACE.to_string(),
                    scope: BucketScope::Account,
                    limit: 4166,
                    window_ms,
                    description: "Per workspace, shared by every app installed on it: 25,000 \
                                  calls per minute, enforced as ~4,166 per 10-second window"
                        .to_string(),
                },
            ],
        }],
        default_plan: "standard".to_string(),
        idempotent_actions: Vec::new(),
        capabilities: vec![
            cap(Capability::ReadTickets, "Read conversations"),
            cap(Capability::PublicReply, "Write conversations"),
            cap(Capability::SetStatus, "Write conversations"),
            cap(Capability::AddTags, "Write tags, Read tags"),
            cap(Capability::Assign, "Write conversations, Read admins"),
        ],
        webhook: WebhookSpec {
            algorithm: SignatureAlgorithm::HmacSha1Hex,
            signature_header: "x-hub-signature".to_string(),
            max_age_secs: None,
        },
        // A close part carries the reply body: reply + close land in one request.
        atomic_resolution: true,
    }
}

fn cap(capability: Capability, requires: &str) -> CapabilitySpec {
    CapabilitySpec {
        capability,
        method: ProbeMethod::ProbeTicket,
        requires: requires.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_is_consistent() {
        let d = descriptor();
        assert_eq!(d.id, "intercom");
        assert_eq!(d.name, "Intercom");
        assert!(matches!(d.auth.as_slice(), [AuthScheme::Bearer]));
        assert_eq!(d.default_plan, "standard");
        assert_eq!(d.plans.len(), 1);
        let b = &d.plans[0].buckets;
        assert_eq!(
            (b[0].name.as_str(), b[0].limit, b[0].window_ms),
            ("app", 1666, 10_000)
        );
        assert_eq!(
            (b[1].name.as_str(), b[1].limit, b[1].window_ms),
            ("workspace", 4166, 10_000)
        );
        assert!(b.iter().all(|b| b.scope == BucketScope::Account));
        assert!(d.idempotent_actions.is_empty());
        assert!(d.atomic_resolution);
        assert_eq!(d.capabilities.len(), 5);
        assert!(
            d.capabilities
                .iter()
                .all(|c| c.method == ProbeMethod::ProbeTicket)
        );
        assert_eq!(d.webhook.algorithm, SignatureAlgorithm::HmacSha1Hex);
        assert_eq!(d.webhook.signature_header, "x-hub-signature");
        assert_eq!(d.webhook.max_age_secs, None);
    }
}
