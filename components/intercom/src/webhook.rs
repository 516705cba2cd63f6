//! Intercom webhook notifications.
//!
//! A delivery is one `notification_event`:
//! `{"type":"notification_event","app_id":..,"data":{"type":"notification_event_data","item":{..}},
//!   "id":"notif_..","topic":"conversation.admin.replied",..,"created_at":<secs>}`,
//! signed with `X-Hub-Signature: sha1=<hex>`, the HMAC-SHA1 of the raw body keyed with the app's
//! client secret; there is no signed timestamp. `data.item` is the REST object the topic is about;
//! only conversations become events (tickets, contacts and the `ping` topic give none).

use crate::model::{Conversation, secs_to_ms};
use deskgate_adapter_sdk::prelude::*;
use serde_json::Value;

/// The normalized kind of a conversation topic.
pub fn kind(topic: &str) -> &'static str {
    match topic {
        "conversation_part.tag.created" => "tagged",
        t if t.ends_with(".deleted") => "deleted",
        t if t.starts_with("conversation.") && t.ends_with(".created") => "created",
        "conversation.admin.noted" => "commented",
        t if t.ends_with(".replied") => "commented",
        "conversation.admin.closed"
        | "conversation.admin.opened"
        | "conversation.admin.snoozed"
        | "conversation.admin.unsnoozed" => "status-changed",
        t if t.ends_with(".assigned") => "assigned",
        _ => "updated",
    }
}

/// Parse a delivery. Headers' names are lower-case.
pub fn parse(headers: &[(String, String)], body: &[u8]) -> Result<Webhook, Failure> {
    let signature = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-hub-signature"))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            let provided = match v.get(..5) {
                Some(p) if p.eq_ignore_ascii_case("sha1=") => &v[5..],
                _ => v,
            };
            SignatureCheck {
                algorithm: SignatureAlgorithm::HmacSha1Hex,
                signed: body.to_vec(),
                provided: provided.to_string(),
                timestamp: None,
            }
        });

    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| fail::invalid(format!("the Intercom webhook body is not JSON: {e}")))?;
    let Value::Object(obj) = &payload else {
        return Err(fail::invalid(
            "the Intercom webhook body is not a JSON object",
        ));
    };
    let topic = obj.get("topic").and_then(Value::as_str).ok_or_else(|| {
        fail::invalid("the Intercom webhook body has no topic (not a notification_event?)")
    })?;
    let event_id = obj
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let created_at = obj
        .get("created_at")
        .and_then(Value::as_i64)
        .filter(|s| *s > 0);

    let mut events = Vec::new();
    let item = obj.get("data").and_then(|d| d.get("item"));
    if let Some(item) =
        item.filter(|i| i.get("type").and_then(Value::as_str) == Some("conversation"))
    {
        let c: Conversation = serde_json::from_value(item.clone()).map_err(|e| {
            fail::invalid(format!(
                "the conversation in the Intercom webhook is malformed: {e}"
            ))
        })?;
        let ticket_id = c
            .id
            .clone()
            .ok_or_else(|| fail::invalid("the conversation in the Intercom webhook has no id"))?;
        let kind = kind(topic);
        let occurred_at = created_at.or(c.updated_at).map(secs_to_ms).unwrap_or(0);
        let ticket = if kind != "deleted" && c.is_full() {
            c.into_ticket().ok()
        } else {
            None
        };
        events.push(TicketEvent {
            event_id,
            ticket_id,
            kind: kind.to_string(),
            occurred_at,
            ticket,
        });
    }
    Ok(Webhook { signature, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn h(v: &str) -> Vec<(String, String)> {
        vec![
            ("x-hub-signature".to_string(), v.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ]
    }

    #[test]
    fn admin_replied() {
        let body = fixture("webhook_admin_replied.json");
        let sig = "sha1=0123456789abcdef0123456789abcdef01234567";
        let w = parse(&h(sig), body.as_bytes()).unwrap();
        let s = w.signature.expect("signature");
        assert_eq!(s.algorithm, SignatureAlgorithm::HmacSha1Hex);
        assert_eq!(s.provided, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(s.signed, body.as_bytes());
        assert_eq!(s.timestamp, None);
        assert_eq!(w.events.len(), 1);
        let e = &w.events[0];
        assert_eq!(
            e.event_id.as_deref(),
            Some("notif_7b2c1d9e-3f4a-4b5c-8d6e-7f8a9b0c1d2e")
        );
        assert_eq!(e.ticket_id, "503");
        assert_eq!(e.kind, "commented");
        assert_eq!(e.occurred_at, 1_734_537_601_000);
        let t = e.ticket.as_ref().expect("ticket");
        assert_eq!(t.status, TicketStatus::Open);
        assert_eq!(t.tags, vec!["vip".to_string()]);
        assert_eq!(t.assignee_id.as_deref(), Some("991267715"));
        assert_eq!(t.group_id, None);
        assert_eq!(t.requester_id.as_deref(), Some("6762f1261bb69f9f2193bba7"));
        assert_eq!(t.comments.len(), 1);
    }

    #[test]
    fn missing_signature_is_none_and_prefixless_is_kept() {
        let body = fixture("webhook_admin_replied.json");
        let w = parse(&[], body.as_bytes()).unwrap();
        assert!(w.signature.is_none());
        assert_eq!(w.events.len(), 1);
        let w = parse(&h("  "), body.as_bytes()).unwrap();
        assert!(w.signature.is_none());
        let w = parse(&h("abcdef"), body.as_bytes()).unwrap();
        assert_eq!(w.signature.unwrap().provided, "abcdef");
        let w = parse(&h("SHA1=ABC"), body.as_bytes()).unwrap();
        assert_eq!(w.signature.unwrap().provided, "ABC");
        // Multi-byte garbage must not panic on slicing.
        let w = parse(&h("é€sha1=x"), body.as_bytes()).unwrap();
        assert_eq!(w.signature.unwrap().provided, "é€sha1=x");
    }

    #[test]
    fn malformed_bodies_are_invalid() {
        for body in [
            "",
            "{",
            "[1,2]",
            "\"str\"",
            "{\"type\":\"notification_event\"}",
        ] {
            let r = parse(&h("sha1=00"), body.as_bytes());
            assert!(matches!(r, Err(Failure::Invalid(_))), "{body}: {r:?}");
        }
        let bad_item = r#"{"topic":"conversation.admin.closed","data":{"item":{"type":"conversation","id":"1","created_at":"soon?","state":{}}}}"#;
        assert!(matches!(
            parse(&h("sha1=00"), bad_item.as_bytes()),
            Err(Failure::Invalid(_))
        ));
    }

    #[test]
    fn non_conversation_items_give_no_events() {
        let w = parse(&h("sha1=00"), fixture("webhook_ping.json").as_bytes()).unwrap();
        assert!(w.events.is_empty());
        assert!(w.signature.is_some());
        let ticket = r#"{"type":"notification_event","topic":"ticket.created","id":"notif_1","created_at":1,"data":{"type":"notification_event_data","item":{"type":"ticket","id":"1295"}}}"#;
        assert!(
            parse(&h("sha1=00"), ticket.as_bytes())
                .unwrap()
                .events
                .is_empty()
        );
        let contact = r#"{"type":"notification_event","topic":"contact.user.created","data":{"item":{"type":"contact","id":"abc"}}}"#;
        assert!(
            parse(&h("sha1=00"), contact.as_bytes())
                .unwrap()
                .events
                .is_empty()
        );
    }

    #[test]
    fn deleted_topic_has_no_ticket() {
        let body = r#"{"type":"notification_event","topic":"conversation.deleted","id":"notif_2","created_at":1700000000,"data":{"type":"notification_event_data","item":{"type":"conversation","id":"77"}}}"#;
        let w = parse(&h("sha1=00"), body.as_bytes()).unwrap();
        assert_eq!(w.events.len(), 1);
        assert_eq!(w.events[0].kind, "deleted");
        assert_eq!(w.events[0].ticket_id, "77");
        assert!(w.events[0].ticket.is_none());
        assert_eq!(w.events[0].occurred_at, 1_700_000_000_000);
    }

    #[test]
    fn topics_normalize() {
        for (topic, want) in [
            ("conversation.user.created", "created"),
            ("conversation.admin.single.created", "created"),
            ("conversation.user.replied", "commented"),
            ("conversation.admin.replied", "commented"),
            ("conversation.admin.noted", "commented"),
            ("conversation.admin.closed", "status-changed"),
            ("conversation.admin.opened", "status-changed"),
            ("conversation.admin.snoozed", "status-changed"),
            ("conversation.admin.unsnoozed", "status-changed"),
            ("conversation.admin.assigned", "assigned"),
            ("conversation.admin.open.assigned", "assigned"),
            ("conversation_part.tag.created", "tagged"),
            ("conversation.deleted", "deleted"),
            ("conversation_part.redacted", "updated"),
            ("conversation.rating.added", "updated"),
        ] {
            assert_eq!(kind(topic), want, "{topic}");
        }
    }
}
