//! Zendesk event-subscription webhooks (platforms.md 1.6): one event per delivery.
//!
//! Signature: `X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(secret, TIMESTAMP + BODY)), where
//! TIMESTAMP is the `X-Zendesk-Webhook-Signature-Timestamp` header (RFC 3339) exactly as sent,
//! concatenated with no separator. The host holds the secret and checks; the adapter hands it the
//! signed bytes, the provided signature and the timestamp.
//!
//! Events: `type` "zen:event-type:ticket.X" is normalized into a kind; the ticket id comes from
//! `detail.id` (string or number) or `subject` "zen:ticket:{id}"; `id` is the event id for
//! deduplication; `time` is when it happened. Non-ticket events (user.*, organization.*) carry no
//! ticket event. Trigger/automation webhooks (admin-written bodies without `type`) are not
//! understood and are refused as invalid.

use crate::model::{EventPayload, ZTicket, id_of};
use deskgate_adapter_sdk::prelude::*;
use serde_json::Value;

/// The signature header.
pub const SIGNATURE: &str = "x-zendesk-webhook-signature";
/// The signed timestamp header.
pub const TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";

const TICKET_PREFIX: &str = "zen:event-type:ticket.";

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Normalize the part after "zen:event-type:ticket.".
pub fn kind(event: &str) -> &'static str {
    match event {
        "created" => "created",
        "comment_added" => "commented",
        "status_changed" => "status-changed",
        "agent_assignment_changed" | "group_assignment_changed" => "assigned",
        "tags_changed" => "tagged",
        "soft_deleted" | "permanently_deleted" => "deleted",
        _ => "updated",
    }
}

fn signature(headers: &[(String, String)], body: &[u8]) -> Result<Option<SignatureCheck>, Failure> {
    let Some(provided) = header(headers, SIGNATURE)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let ts = header(headers, TIMESTAMP).ok_or_else(|| {
        fail::invalid(
            "the Zendesk webhook carries X-Zendesk-Webhook-Signature but no \
             X-Zendesk-Webhook-Signature-Timestamp, which the signature covers",
        )
    })?;
    let ms = text::parse_rfc3339_ms(ts).ok_or_else(|| {
        fail::invalid(format!(
            "X-Zendesk-Webhook-Signature-Timestamp \"{ts}\" is not an RFC 3339 time"
        ))
    })?;
    let mut signed = Vec::with_capacity(ts.len() + body.len());
    signed.extend_from_slice(ts.as_bytes());
    signed.extend_from_slice(body);
    Ok(Some(SignatureCheck {
        algorithm: SignatureAlgorithm::HmacSha256Base64,
        signed,
        provided: provided.to_string(),
        timestamp: Some(ms),
    }))
}

/// Parse a delivery.
pub fn parse(headers: &[(String, String)], body: &[u8]) -> Result<Webhook, Failure> {
    let signature = signature(headers, body)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| fail::invalid(format!("the Zendesk webhook body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(fail::invalid(
            "the Zendesk webhook body is not a JSON object",
        ));
    }
    let payload: EventPayload = serde_json::from_value(value)
        .map_err(|e| fail::invalid(format!("the Zendesk webhook body is unreadable: {e}")))?;
    let Some(event_type) = payload.kind.as_deref() else {
        return Err(fail::invalid(
            "the Zendesk webhook body has no \"type\": only event-subscription webhooks \
             (zen:event-type:...) are understood, not trigger or automation bodies",
        ));
    };
    let Some(ticket_event) = event_type.strip_prefix(TICKET_PREFIX) else {
        return Ok(Webhook {
            signature,
            events: Vec::new(),
        });
    };
    let detail: Option<ZTicket> = if payload.detail.is_object() {
        serde_json::from_value(payload.detail.clone()).ok()
    } else {
        None
    };
    let ticket_id = payload
        .detail
        .get("id")
        .and_then(id_of)
        .or_else(|| {
            payload
                .subject
                .as_deref()
                .and_then(|s| s.strip_prefix("zen:ticket:"))
                .and_then(|id| {
                    let id = id.trim();
                    (!id.is_empty()).then(|| id.to_string())
                })
        })
        .ok_or_else(|| {
            fail::invalid(format!(
                "the Zendesk {event_type} webhook names no ticket (no detail.id, no \
                 zen:ticket: subject)"
            ))
        })?;
    let occurred_at = payload
        .time
        .as_deref()
        .and_then(text::parse_rfc3339_ms)
        .or_else(|| {
            detail
                .as_ref()
                .and_then(|d| d.updated_at.as_deref())
                .and_then(text::parse_rfc3339_ms)
        })
        .or_else(|| signature.as_ref().and_then(|s| s.timestamp))
        .ok_or_else(|| {
            fail::invalid(format!(
                "the Zendesk {event_type} webhook has no readable \"time\""
            ))
        })?;
    let ticket = detail.and_then(|d| d.to_event_ticket(&ticket_id, occurred_at));
    Ok(Webhook {
        signature,
        events: vec![TicketEvent {
            event_id: payload.id,
            ticket_id,
            kind: kind(ticket_event).to_string(),
            occurred_at,
            ticket,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).expect("fixture")
    }

    fn signed_headers() -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("user-agent".into(), "Zendesk Webhook".into()),
            (
                "x-zendesk-webhook-id".into(),
                "01GK8E6BKWMJZD2T8Y5AXJQMG5".into(),
            ),
            (
                SIGNATURE.into(),
                "wxL5Lkx5pktp+TKZyXluPgN3pSKWX2eaP1zhMfh+J6c=".into(),
            ),
            (TIMESTAMP.into(), "2024-04-17T17:18:10Z".into()),
        ]
    }

    #[test]
    fn ticket_created_as_delivered() {
        let body = fixture("webhook_ticket_created.json");
        let w = parse(&signed_headers(), &body).unwrap();
        let sig = w.signature.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::HmacSha256Base64);
        assert_eq!(sig.provided, "wxL5Lkx5pktp+TKZyXluPgN3pSKWX2eaP1zhMfh+J6c=");
        assert_eq!(sig.timestamp, Some(1_713_374_290_000));
        let mut expected = b"2024-04-17T17:18:10Z".to_vec();
        expected.extend_from_slice(&body);
        assert_eq!(sig.signed, expected);
        assert_eq!(w.events.len(), 1);
        let e = &w.events[0];
        assert_eq!(e.event_id.as_deref(), Some("01HNXXXX-CTEXAMPLE"));
        assert_eq!(e.ticket_id, "35436");
        assert_eq!(e.kind, "created");
        assert_eq!(e.occurred_at, 1_713_374_290_000);
        let t = e.ticket.as_ref().unwrap();
        assert_eq!(t.status, TicketStatus::Open);
        assert_eq!(t.raw_status, "Open");
        // "..." times fall back to the event time.
        assert_eq!(
            (t.created_at, t.updated_at),
            (1_713_374_290_000, 1_713_374_290_000)
        );
    }

    #[test]
    fn comment_added_with_full_detail() {
        let w = parse(
            &signed_headers(),
            &fixture("webhook_ticket_comment_added.json"),
        )
        .unwrap();
        let e = &w.events[0];
        assert_eq!(e.kind, "commented");
        assert_eq!(e.ticket_id, "35436");
        let t = e.ticket.as_ref().unwrap();
        assert_eq!(t.status, TicketStatus::Open);
        assert_eq!(t.raw_status, "OPEN");
        assert_eq!(t.requester_id.as_deref(), Some("20014192"));
        assert_eq!(t.assignee_id.as_deref(), Some("20014182"));
        assert_eq!(t.group_id.as_deref(), Some("20001662"));
        assert_eq!(t.tags, ["vip", "printer"]);
        assert_eq!(t.subject.as_deref(), Some("Printer on fire"));
        assert_eq!(
            t.created_at,
            text::parse_rfc3339_ms("2024-04-17T17:18:10Z").unwrap()
        );
        assert_eq!(
            t.updated_at,
            text::parse_rfc3339_ms("2024-04-17T17:20:04Z").unwrap()
        );
    }

    #[test]
    fn event_kinds() {
        for (t, k) in [
            ("created", "created"),
            ("comment_added", "commented"),
            ("status_changed", "status-changed"),
            ("agent_assignment_changed", "assigned"),
            ("group_assignment_changed", "assigned"),
            ("tags_changed", "tagged"),
            ("soft_deleted", "deleted"),
            ("permanently_deleted", "deleted"),
            ("priority_changed", "updated"),
            ("brand_changed", "updated"),
        ] {
            let body = format!(
                r#"{{"type":"zen:event-type:ticket.{t}","id":"e1","time":"2024-04-17T17:18:10Z","subject":"zen:ticket:9","detail":{{"id":9}}}}"#
            );
            let w = parse(&[], body.as_bytes()).unwrap();
            assert_eq!(w.events[0].kind, k, "{t}");
            assert_eq!(w.events[0].ticket_id, "9");
            assert!(w.events[0].ticket.is_none(), "no status, no ticket");
        }
    }

    #[test]
    fn non_ticket_events_carry_nothing() {
        let w = parse(
            &signed_headers(),
            &fixture("webhook_user_active_changed.json"),
        )
        .unwrap();
        assert!(w.signature.is_some());
        assert!(w.events.is_empty());
    }

    #[test]
    fn missing_signature_is_none() {
        let w = parse(&[], &fixture("webhook_ticket_created.json")).unwrap();
        assert!(w.signature.is_none());
        assert_eq!(w.events.len(), 1);
        let empty = vec![(SIGNATURE.to_string(), " ".to_string())];
        assert!(
            parse(&empty, &fixture("webhook_ticket_created.json"))
                .unwrap()
                .signature
                .is_none()
        );
    }

    #[test]
    fn signature_without_timestamp_is_invalid() {
        let headers = vec![(SIGNATURE.to_string(), "abc=".to_string())];
        assert!(matches!(
            parse(&headers, &fixture("webhook_ticket_created.json")),
            Err(Failure::Invalid(m)) if m.contains("Timestamp")
        ));
        let headers = vec![
            (
                "X-Zendesk-Webhook-Signature".to_string(),
                "abc=".to_string(),
            ),
            (
                "X-Zendesk-Webhook-Signature-Timestamp".to_string(),
                "yesterday".to_string(),
            ),
        ];
        assert!(matches!(
            parse(&headers, &fixture("webhook_ticket_created.json")),
            Err(Failure::Invalid(m)) if m.contains("yesterday")
        ));
    }

    #[test]
    fn malformed_bodies_are_invalid() {
        for body in [
            &b""[..],
            b"{",
            b"not json",
            b"[1,2]",
            b"\"x\"",
            b"\xff\xfe",
            br#"{"ticket_id":"{{ticket.id}}"}"#,
        ] {
            assert!(
                matches!(parse(&signed_headers(), body), Err(Failure::Invalid(_))),
                "{body:?}"
            );
        }
        // A ticket event that names no ticket.
        let body = br#"{"type":"zen:event-type:ticket.created","time":"2024-04-17T17:18:10Z","detail":"x"}"#;
        assert!(
            matches!(parse(&[], body), Err(Failure::Invalid(m)) if m.contains("names no ticket"))
        );
        // No time anywhere.
        let body = br#"{"type":"zen:event-type:ticket.created","subject":"zen:ticket:5"}"#;
        assert!(matches!(parse(&[], body), Err(Failure::Invalid(_))));
        // ... but the signed timestamp stands in.
        let w = parse(&signed_headers(), body).unwrap();
        assert_eq!(w.events[0].occurred_at, 1_713_374_290_000);
        assert_eq!(w.events[0].event_id, None);
    }

    #[test]
    fn numeric_detail_id_and_unknown_status() {
        let body = br#"{"type":"zen:event-type:ticket.status_changed","id":"e","time":"2024-04-17T17:18:10Z","detail":{"id":77,"status":"weird"}}"#;
        let w = parse(&[], body).unwrap();
        assert_eq!(w.events[0].ticket_id, "77");
        assert!(w.events[0].ticket.is_none());
        let body = br#"{"type":"zen:event-type:ticket.status_changed","time":"2024-04-17T17:18:10Z","detail":{"id":77,"status":"hold"}}"#;
        let t = parse(&[], body).unwrap().events[0].ticket.clone().unwrap();
        assert_eq!(t.status, TicketStatus::OnHold);
    }
}
