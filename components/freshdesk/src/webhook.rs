//! Freshdesk webhook deliveries.
//!
//! Freshdesk has no webhook subscriptions: an admin adds a "Trigger webhook" action to an
//! automation rule (ticket creation or ticket update rules) and types the body out of
//! placeholders. Nothing is signed. deskgate therefore asks the admin to add a custom header,
//! `x-deskgate-webhook-token`, whose value is a secret shared with the connection; the host
//! compares it verbatim (`shared-secret`), so `signed` is empty and there is no timestamp.
//!
//! Two bodies are understood:
//!
//! 1. [`ADMIN_TEMPLATE`], the body our docs tell admins to paste. Placeholders render as strings:
//!    ids as digits, the status as its name ("Open", "Pending", "Resolved", "Closed", custom
//!    names), tags comma-separated, times in whatever format Freshdesk uses (RFC 3339 and the
//!    mail-date form are read; anything else leaves the time unknown).
//! 2. `{"ticket": <ticket object as the REST API returns it>, "event": "..."}`, for senders that
//!    relay the REST shape (Freshdesk's "Trigger API" or middleware).
//!
//! There is no delivery id (`event-id` is none); Freshdesk retries failed deliveries (+5, +30,
//! +60 minutes) and may deliver twice, so the host dedupes on ticket and update time. The kind
//! is guessed from the event text: reply/replied/note → commented, status → status-changed,
//! assign/agent/responder/group → assigned, tag → tagged, delete → deleted, create → created,
//! anything else → updated.

use crate::describe::WEBHOOK_TOKEN_HEADER;
use crate::model::{FdTicket, parse_time_ms, status_from_text};
use deskgate_adapter_sdk::prelude::*;
use serde_json::{Map, Value};

/// The JSON body admins paste into the automation rule's "Trigger webhook" action (content type
/// JSON), with the header `x-deskgate-webhook-token: <secret>` added under custom headers.
pub const ADMIN_TEMPLATE: &str = r#"{"freshdesk_webhook":{"ticket_id":"{{ticket.id}}","ticket_subject":"{{ticket.subject}}","ticket_status":"{{ticket.status}}","ticket_priority":"{{ticket.priority}}","ticket_tags":"{{ticket.tags}}","ticket_requester_id":"{{ticket.requester.id}}","ticket_agent_id":"{{ticket.agent.id}}","ticket_group_id":"{{ticket.group.id}}","ticket_created_at":"{{ticket.created_at}}","ticket_updated_at":"{{ticket.updated_at}}","triggered_event":"{{triggered_event}}"}}"#;

/// Parse a delivery.
///
/// # Errors
///
/// `invalid` when the body is not JSON, or is neither shape, or names no ticket.
pub fn parse(headers: &[(String, String)], body: &[u8]) -> Result<Webhook, Failure> {
    let signature = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(WEBHOOK_TOKEN_HEADER))
        .map(|(_, v)| SignatureCheck {
            algorithm: SignatureAlgorithm::SharedSecret,
            signed: Vec::new(),
            provided: v.clone(),
            timestamp: None,
        });
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| fail::invalid(format!("Freshdesk webhook body is not JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(fail::invalid("Freshdesk webhook body is not a JSON object"));
    };
    let event = if let Some(fw) = obj.get("freshdesk_webhook") {
        let fw = fw.as_object().ok_or_else(|| {
            fail::invalid("Freshdesk webhook: \"freshdesk_webhook\" is not an object")
        })?;
        from_template(fw)?
    } else if let Some(t) = obj.get("ticket") {
        from_ticket(t, obj.get("event").or_else(|| obj.get("triggered_event")))?
    } else {
        return Err(fail::invalid(
            "Freshdesk webhook body has neither \"freshdesk_webhook\" (the documented template) \
             nor \"ticket\"",
        ));
    };
    Ok(Webhook {
        signature,
        events: vec![event],
    })
}

/// A rendered placeholder as text: strings trimmed, numbers as digits; empty strings, nulls and
/// placeholders Freshdesk left unrendered (`{{...}}`) are none.
fn text_of(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!s.is_empty() && !s.contains("{{")).then_some(s)
}

/// An id from a rendered placeholder: digits, tolerating a leading `#`.
fn id_text(v: Option<&Value>) -> Option<String> {
    let s = text_of(v)?;
    let s = s.trim_start_matches('#').to_string();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// The event kind from Freshdesk's event text (`{{triggered_event}}` or `event`).
pub fn kind_of(event: &str) -> &'static str {
    let t = event.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["reply", "replied", "note", "comment", "conversation"]) {
        "commented"
    } else if has(&["status"]) {
        "status-changed"
    } else if has(&["assign", "agent", "responder", "group"]) {
        "assigned"
    } else if has(&["tag"]) {
        "tagged"
    } else if has(&["delet"]) {
        "deleted"
    } else if has(&["creat"]) {
        "created"
    } else {
        "updated"
    }
}

fn tags_from(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|t| text_of(Some(t))).collect(),
        Some(Value::String(s)) if !s.contains("{{") => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn from_template(fw: &Map<String, Value>) -> Result<TicketEvent, Failure> {
    let ticket_id = id_text(fw.get("ticket_id")).ok_or_else(|| {
        fail::invalid("Freshdesk webhook: \"ticket_id\" is missing or not a ticket number")
    })?;
    let raw_status = text_of(fw.get("ticket_status"));
    let created = text_of(fw.get("ticket_created_at")).and_then(|t| parse_time_ms(&t));
    let updated = text_of(fw.get("ticket_updated_at")).and_then(|t| parse_time_ms(&t));
    let event_text = text_of(fw.get("triggered_event")).unwrap_or_default();
    // Build the ticket only when the payload says enough to stand in for a read: a status and
    // both times. Otherwise the host reads the ticket itself.
    let ticket = match (&raw_status, created, updated) {
        (Some(raw), Some(created_at), Some(updated_at)) => Some(Ticket {
            id: ticket_id.clone(),
            subject: text_of(fw.get("ticket_subject")),
            status: status_from_text(raw),
            raw_status: raw.clone(),
            requester_id: id_text(fw.get("ticket_requester_id")),
            assignee_id: id_text(fw.get("ticket_agent_id")),
            group_id: id_text(fw.get("ticket_group_id")),
            tags: tags_from(fw.get("ticket_tags")),
            created_at,
            updated_at,
            comments: Vec::new(),
        }),
        _ => None,
    };
    Ok(TicketEvent {
        event_id: None,
        ticket_id,
        kind: kind_of(&event_text).to_string(),
        occurred_at: updated.or(created).unwrap_or(0),
        ticket,
    })
}

fn from_ticket(t: &Value, event: Option<&Value>) -> Result<TicketEvent, Failure> {
    let mut t = t
        .as_object()
        .cloned()
        .ok_or_else(|| fail::invalid("Freshdesk webhook: \"ticket\" is not an object"))?;
    // Tags relayed through a template arrive as one comma-separated string.
    if let Some(Value::String(_)) = t.get("tags") {
        let tags = tags_from(t.get("tags"));
        t.insert("tags".into(), Value::from(tags));
    }
    let fd: FdTicket = serde_json::from_value(Value::Object(t))
        .map_err(|e| fail::invalid(format!("Freshdesk webhook: unreadable ticket: {e}")))?;
    let ticket = fd
        .to_ticket()
        .map_err(|_| fail::invalid("Freshdesk webhook: the ticket has no id"))?;
    let event_text = match event {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let occurred_at = if ticket.updated_at != 0 {
        ticket.updated_at
    } else {
        ticket.created_at
    };
    Ok(TicketEvent {
        event_id: None,
        ticket_id: ticket.id.clone(),
        kind: kind_of(&event_text).to_string(),
        occurred_at,
        ticket: Some(ticket),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn token() -> Vec<(String, String)> {
        vec![("x-deskgate-webhook-token".into(), "s3cret".into())]
    }

    #[test]
    fn template_is_valid_json_with_every_field() {
        let v: Value = serde_json::from_str(ADMIN_TEMPLATE).unwrap();
        let fw = v["freshdesk_webhook"].as_object().unwrap();
        for k in [
            "ticket_id",
            "ticket_subject",
            "ticket_status",
            "ticket_priority",
            "ticket_tags",
            "ticket_requester_id",
            "ticket_agent_id",
            "ticket_group_id",
            "ticket_created_at",
            "ticket_updated_at",
            "triggered_event",
        ] {
            assert!(fw.contains_key(k), "{k}");
        }
    }

    #[test]
    fn rendered_template() {
        let w = parse(&token(), &fixture("webhook_template.json")).unwrap();
        let sig = w.signature.expect("token header");
        assert_eq!(sig.algorithm, SignatureAlgorithm::SharedSecret);
        assert_eq!(sig.provided, "s3cret");
        assert!(sig.signed.is_empty());
        assert_eq!(sig.timestamp, None);
        assert_eq!(w.events.len(), 1);
        let e = &w.events[0];
        assert_eq!(e.event_id, None);
        assert_eq!(e.ticket_id, "4711");
        assert_eq!(e.kind, "status-changed");
        let updated = text::parse_rfc3339_ms("2024-04-18T08:00:00Z").unwrap();
        assert_eq!(e.occurred_at, updated);
        let t = e.ticket.as_ref().expect("ticket");
        assert_eq!(t.status, TicketStatus::Pending);
        assert_eq!(t.raw_status, "Pending");
        assert_eq!(t.subject.as_deref(), Some("Printer on fire"));
        assert_eq!(t.tags, vec!["hardware".to_string(), "urgent".to_string()]);
        assert_eq!(t.requester_id.as_deref(), Some("80001111"));
        assert_eq!(t.assignee_id.as_deref(), Some("80002222"));
        assert_eq!(t.group_id, None);
        assert_eq!(t.created_at, 1_713_374_290_000);
        assert_eq!(t.updated_at, updated);
    }

    #[test]
    fn template_with_numbers_and_unrendered_placeholders() {
        let body = br#"{"freshdesk_webhook":{"ticket_id":4711,"ticket_status":"{{ticket.status}}","ticket_tags":"{{ticket.tags}}","ticket_agent_id":"","triggered_event":"{{triggered_event}}"}}"#;
        let w = parse(&[], body).unwrap();
        assert!(w.signature.is_none());
        let e = &w.events[0];
        assert_eq!(e.ticket_id, "4711");
        assert_eq!(e.kind, "updated");
        assert_eq!(e.occurred_at, 0);
        assert!(e.ticket.is_none());
    }

    #[test]
    fn plain_ticket_payload() {
        let headers = vec![("X-Deskgate-Webhook-Token".to_string(), "tok".to_string())];
        let w = parse(&headers, &fixture("webhook_plain.json")).unwrap();
        assert_eq!(w.signature.unwrap().provided, "tok");
        let e = &w.events[0];
        assert_eq!(e.ticket_id, "4711");
        assert_eq!(e.kind, "commented");
        assert_eq!(
            e.occurred_at,
            text::parse_rfc3339_ms("2024-04-18T09:00:00Z").unwrap()
        );
        let t = e.ticket.as_ref().unwrap();
        assert_eq!(t.status, TicketStatus::Solved);
        assert_eq!(t.raw_status, "4");
        assert_eq!(t.tags, vec!["hardware".to_string()]);

        let body = br#"{"event":"Ticket created","ticket":{"id":"12","status":"Open","tags":"a, b","created_at":"Mon, 01 Jan 2024 10:00:00 +0000"}}"#;
        let e = &parse(&[], body).unwrap().events[0];
        assert_eq!(e.ticket_id, "12");
        assert_eq!(e.kind, "created");
        assert_eq!(
            e.occurred_at,
            text::parse_rfc3339_ms("2024-01-01T10:00:00Z").unwrap()
        );
        assert_eq!(
            e.ticket.as_ref().unwrap().tags,
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn event_kinds() {
        for (text, kind) in [
            ("{reply_sent:sent}", "commented"),
            ("Note added", "commented"),
            ("{status:{from:Open,to:Resolved}}", "status-changed"),
            ("{responder_id:{from:1,to:2}}", "assigned"),
            ("Agent changed", "assigned"),
            ("tags updated", "tagged"),
            ("ticket deleted", "deleted"),
            ("{ticket_action:created}", "created"),
            ("priority changed", "updated"),
            ("ticket_created", "created"),
            ("customer_replied", "commented"),
            ("agent_replied", "commented"),
            ("note_added", "commented"),
            ("status_changed", "status-changed"),
            ("priority_changed", "updated"),
            ("tags_changed", "tagged"),
            ("agent_assigned", "assigned"),
            ("group_assigned", "assigned"),
            ("subject_changed", "updated"),
            ("ticket_deleted", "deleted"),
            ("", "updated"),
        ] {
            assert_eq!(kind_of(text), kind, "{text}");
        }
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b"not json"[..],
            b"",
            b"[1,2]",
            b"{\"something\":1}",
            b"{\"freshdesk_webhook\":\"x\"}",
            b"{\"freshdesk_webhook\":{\"ticket_subject\":\"no id\"}}",
            b"{\"freshdesk_webhook\":{\"ticket_id\":\"abc\"}}",
            b"{\"ticket\":{\"subject\":\"no id\"}}",
            b"{\"ticket\":[1]}",
            b"{\"ticket\":{\"id\":1,\"conversations\":\"x\"}}",
        ] {
            assert!(
                matches!(parse(&token(), body), Err(Failure::Invalid(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn missing_token_header_means_no_signature() {
        let w = parse(
            &[("x-other".into(), "v".into())],
            &fixture("webhook_template.json"),
        )
        .unwrap();
        assert!(w.signature.is_none());
        assert_eq!(w.events.len(), 1);
    }
}
