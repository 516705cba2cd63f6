//! Serde models of the Intercom JSON this adapter reads, and their mapping to contract types.
//!
//! Every struct tolerates unknown keys and missing ones (`#[serde(default)]`). Intercom is loose
//! about id types: the 2.16 spec declares `conversation_part.id`, `admin_assignee_id` and
//! `team_assignee_id` as strings or integers in different places and its own examples mix both, so
//! ids and times go through [`flex_id`] and [`flex_i64`], which accept strings, numbers and null.

use deskgate_adapter_sdk::lenient::Scalar;
use deskgate_adapter_sdk::prelude::*;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An id that may arrive as a string, an integer or null. Empty strings count as absent.
pub fn flex_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Scalar::deserialize(d)? {
        Scalar::Str(s) if !s.is_empty() => Some(s),
        Scalar::Num(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A time in seconds (or any integer) that may arrive as a number, a numeric string or null.
pub fn flex_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Scalar::deserialize(d)? {
        Scalar::Num(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Scalar::Str(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The id a JSON value denotes, if it is a non-empty string or a number.
pub fn value_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Intercom's `conversation` (also `conversation_list_item` in search results and the `item` of
/// conversation webhooks).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Conversation {
    /// Always "conversation".
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
    pub title: Option<String>,
    #[serde(deserialize_with = "flex_i64")]
    pub created_at: Option<i64>,
    #[serde(deserialize_with = "flex_i64")]
    pub updated_at: Option<i64>,
    pub open: Option<bool>,
    /// "open", "closed" or "snoozed".
    pub state: Option<String>,
    /// 0 or absent when unassigned.
    #[serde(deserialize_with = "flex_id")]
    pub admin_assignee_id: Option<String>,
    /// 0 or absent when unassigned.
    #[serde(deserialize_with = "flex_id")]
    pub team_assignee_id: Option<String>,
    /// `{"type":"tag.list","tags":[...]}`; kept loose (see [`tag_names`]).
    pub tags: Value,
    pub source: Option<Source>,
    pub contacts: Option<ContactList>,
    pub conversation_parts: Option<PartList>,
}

/// `conversation.source`: the message that started the conversation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Source {
    pub subject: Option<String>,
    pub body: Option<String>,
    pub author: Option<Author>,
}

/// The author of a source message or conversation part.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Author {
    /// "admin", "user", "lead", "contact", "bot", "team".
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// `conversation.contacts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContactList {
    pub contacts: Vec<ContactRef>,
}

/// A contact reference or a contact (the create-contact response).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContactRef {
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
}

/// `conversation.conversation_parts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PartList {
    pub conversation_parts: Vec<Part>,
}

/// A `conversation_part`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Part {
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
    /// "comment", "note", "close", "open", "assignment", "snoozed", ...
    pub part_type: Option<String>,
    pub body: Option<String>,
    #[serde(deserialize_with = "flex_i64")]
    pub created_at: Option<i64>,
    pub author: Option<Author>,
}

impl Part {
    /// Whether an admin (a teammate, not the customer, a bot or a team) wrote it.
    pub fn by_admin(&self) -> bool {
        self.author.as_ref().and_then(|a| a.kind.as_deref()) == Some("admin")
    }

    /// The contract comment, when an admin wrote the part and its body shows text. Notes are
    /// private.
    pub fn into_comment(self) -> Option<Comment> {
        if !self.by_admin() || self.visible_body().is_none() {
            return None;
        }
        Some(Comment {
            id: self.id.unwrap_or_default(),
            author_id: self.author.and_then(|a| a.id),
            public: self.part_type.as_deref() != Some("note"),
            created_at: secs_to_ms(self.created_at.unwrap_or(0)),
            body: self.body?,
        })
    }

    /// The body, when it has visible content.
    pub fn visible_body(&self) -> Option<&str> {
        self.body
            .as_deref()
            .filter(|b| text::has_visible_text(b))
    }
}

/// The search response (`conversation_list`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConversationList {
    pub conversations: Vec<Conversation>,
    /// `cursor_pages`; `next` is `{"starting_after": ...}` (kept loose, see [`next_cursor`]).
    pub pages: Value,
}

impl ConversationList {
    /// `pages.next.starting_after`, when there is a next page.
    pub fn next_cursor(&self) -> Option<String> {
        self.pages
            .get("next")
            .and_then(|n| n.get("starting_after"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// `admin_with_app` from `GET /me`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Admin {
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// A `tag` (from `POST /tags` and `POST /conversations/{id}/tags`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Tag {
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
    pub name: Option<String>,
}

/// The `message` returned by `POST /conversations`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Message {
    #[serde(deserialize_with = "flex_id")]
    pub id: Option<String>,
    #[serde(deserialize_with = "flex_id")]
    pub conversation_id: Option<String>,
}

/// One entry of an `error.list`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorItem {
    pub code: Option<String>,
    pub message: Option<String>,
    pub field: Option<String>,
    pub data: Value,
}

/// Intercom's `error` (`{"type":"error.list","request_id":..,"errors":[..]}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorList {
    pub request_id: Option<String>,
    pub errors: Vec<ErrorItem>,
}

/// Tag names from a conversation's `tags`, accepting `{"tags":[...]}` and a bare array.
pub fn tag_names(tags: &Value) -> Vec<String> {
    let list = match tags {
        Value::Array(a) => Some(a),
        Value::Object(o) => o.get("tags").and_then(Value::as_array),
        _ => None,
    };
    list.map(|l| {
        l.iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// An Intercom id that means "nobody" ("0") becomes none.
fn assigned(id: Option<String>) -> Option<String> {
    id.filter(|s| s != "0")
}

/// Seconds to milliseconds without overflow.
pub fn secs_to_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

/// Normalize Intercom's conversation state ("open", "snoozed", "closed"), falling back on the
/// `open` flag for states this adapter does not know.
pub fn normalize_state(state: Option<&str>, open: Option<bool>) -> TicketStatus {
    match state {
        Some("open") => TicketStatus::Open,
        Some("snoozed") => TicketStatus::Pending,
        Some("closed") => TicketStatus::Solved,
        _ => match open {
            Some(false) => TicketStatus::Solved,
            _ => TicketStatus::Open,
        },
    }
}

impl Conversation {
    /// `state`, or a state derived from `open` when the payload omits it.
    pub fn raw_state(&self) -> String {
        match (&self.state, self.open) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(false)) => "closed".to_string(),
            (_, Some(true)) => "open".to_string(),
            _ => String::new(),
        }
    }

    /// Whether the payload carries enough to build a ticket (deleted-topic webhooks carry only ids).
    pub fn is_full(&self) -> bool {
        self.created_at.is_some() && (self.state.is_some() || self.open.is_some())
    }

    /// The parts, oldest first (as Intercom returns them).
    pub fn parts(&self) -> &[Part] {
        self.conversation_parts
            .as_ref()
            .map(|p| p.conversation_parts.as_slice())
            .unwrap_or(&[])
    }

    /// Tag names on the conversation.
    pub fn tag_names(&self) -> Vec<String> {
        tag_names(&self.tags)
    }

    /// Tag names, plus the probe's tag on the probe's own conversation even before the probe
    /// attached it: its `conversation.user.created` webhook is sent before any tag exists, and the
    /// host recognises probe tickets by that tag ([`crate::ops::probe::PROBE_TAG`]). The probe
    /// conversation is the one whose source message, from a contact (the probe's lead), is exactly
    /// [`crate::ops::probe::PROBE_TEXT`].
    pub fn tags_with_probe_mark(&self) -> Vec<String> {
        use crate::ops::probe::{PROBE_TAG, PROBE_TEXT};
        let mut tags = self.tag_names();
        // Tags turn into spaces and only punctuation entities are decoded, so the visible text
        // can hold a word only if the raw body holds it literally: test that before building it.
        let is_probe = self.source.as_ref().is_some_and(|s| {
            s.author.as_ref().is_some_and(|a| matches!(a.kind.as_deref(), Some("lead" | "user" | "contact")))
                && s.body.as_deref().is_some_and(|b| {
                    PROBE_TEXT.split_whitespace().all(|w| b.contains(w)) && text::visible_text(b).trim() == PROBE_TEXT
                })
        });
        if is_probe && !tags.iter().any(|t| t == PROBE_TAG) {
            tags.push(PROBE_TAG.to_string());
        }
        tags
    }

    /// The customer: the source message's author when a contact wrote it, otherwise the first
    /// contact of the conversation.
    pub fn requester(&self) -> Option<String> {
        let from_source = self
            .source
            .as_ref()
            .and_then(|s| s.author.as_ref())
            .and_then(|a| match a.kind.as_deref() {
                Some("user" | "lead" | "contact") => a.id.clone(),
                _ => None,
            });
        from_source.or_else(|| {
            self.contacts
                .as_ref()
                .and_then(|c| c.contacts.iter().find_map(|c| c.id.clone()))
        })
    }

    /// The id of the newest part, if the response carried parts.
    pub fn last_part_id(&self) -> Option<String> {
        self.parts().last().and_then(|p| p.id.clone())
    }

    /// The contract ticket, with the conversation's strings moved into it. Fails (permanent)
    /// when the conversation has no id.
    pub fn into_ticket(self) -> Result<Ticket, Failure> {
        let status = normalize_state(self.state.as_deref(), self.open);
        let raw_status = self.raw_state();
        let requester_id = self.requester();
        let tags = self.tags_with_probe_mark();
        let Conversation { id, title, created_at, updated_at, admin_assignee_id, team_assignee_id, source, conversation_parts, .. } = self;
        let id = id.ok_or_else(|| {
            fail::permanent("Intercom returned a conversation without an id".to_string())
        })?;
        let subject = title
            .filter(|t| !t.trim().is_empty())
            .or_else(|| source.and_then(|s| s.subject))
            .filter(|t| !t.trim().is_empty());
        let comments = conversation_parts
            .map(|l| l.conversation_parts.into_iter().filter_map(Part::into_comment).collect())
            .unwrap_or_default();
        Ok(Ticket {
            id,
            subject,
            status,
            raw_status,
            requester_id,
            assignee_id: assigned(admin_assignee_id),
            group_id: assigned(team_assignee_id),
            tags,
            created_at: secs_to_ms(created_at.unwrap_or(0)),
            updated_at: secs_to_ms(updated_at.or(created_at).unwrap_or(0)),
            comments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONVERSATION: &str = include_str!("../tests/fixtures/conversation.json");

    #[test]
    fn conversation_maps_to_ticket() {
        let c: Conversation = serde_json::from_str(CONVERSATION).unwrap();
        let t = c.into_ticket().unwrap();
        assert_eq!(t.id, "503");
        assert_eq!(t.status, TicketStatus::Solved);
        assert_eq!(t.raw_status, "closed");
        assert_eq!(t.assignee_id.as_deref(), Some("991267715"));
        assert_eq!(t.group_id.as_deref(), Some("5017691"));
        assert_eq!(t.tags, vec!["Test tag".to_string()]);
        assert_eq!(t.created_at, 1_734_537_511_000);
        assert_eq!(t.requester_id.as_deref(), Some("6762f1261bb69f9f2193bba7"));
        assert_eq!(t.subject, None);
        // One admin comment with a body; the custom-action parts have no body.
        assert_eq!(t.comments.len(), 1);
        assert_eq!(t.comments[0].id, "1");
        assert_eq!(t.comments[0].body, "<p>Okay!</p>");
        assert!(t.comments[0].public);
        assert_eq!(t.comments[0].author_id.as_deref(), Some("274"));
        assert_eq!(t.comments[0].created_at, 1_663_597_223_000);
    }

    #[test]
    fn states_normalize() {
        assert_eq!(
            normalize_state(Some("open"), Some(true)),
            TicketStatus::Open
        );
        assert_eq!(
            normalize_state(Some("snoozed"), Some(true)),
            TicketStatus::Pending
        );
        assert_eq!(
            normalize_state(Some("closed"), Some(false)),
            TicketStatus::Solved
        );
        assert_eq!(
            normalize_state(Some("weird"), Some(false)),
            TicketStatus::Solved
        );
        assert_eq!(normalize_state(None, None), TicketStatus::Open);
    }

    #[test]
    fn the_probe_conversation_carries_the_probe_tag_before_it_is_tagged() {
        let conv = |body: &str, author: &str| -> Conversation {
            serde_json::from_value(serde_json::json!({
                "id": "77", "created_at": 1700000000, "open": true, "state": "open",
                "source": {"body": body, "author": {"type": author, "id": "lead-9"}},
            }))
            .unwrap()
        };
        let probe = conv("<p>deskgate permission probe</p>", "lead");
        assert_eq!(probe.into_ticket().unwrap().tags, vec!["deskgate-probe".to_string()]);
        assert_eq!(conv("deskgate permission probe", "user").into_ticket().unwrap().tags.len(), 1);
        // A customer's conversation, or an admin quoting the text: untouched.
        assert!(conv("<p>my order is late</p>", "lead").into_ticket().unwrap().tags.is_empty());
        assert!(conv("deskgate permission probe", "admin").into_ticket().unwrap().tags.is_empty());
        // Whitespace is collapsed; a word broken by an entity is not the probe's.
        assert_eq!(conv("deskgate  permission\nprobe", "user").into_ticket().unwrap().tags.len(), 1);
        assert!(conv("deskgate <b>permission</b> pro&amp;be", "lead").into_ticket().unwrap().tags.is_empty());
    }

    #[test]
    fn loose_shapes_are_tolerated() {
        let c: Conversation = serde_json::from_value(serde_json::json!({
            "id": 42, "created_at": "1700000000", "updated_at": null, "open": true,
            "admin_assignee_id": 0, "team_assignee_id": null, "tags": [{"name": "a"}],
            "source": {"author": {"type": "lead", "id": "lead-1"}},
            "conversation_parts": {"conversation_parts": [
                {"id": "9", "part_type": "note", "body": "<p>internal</p>",
                 "author": {"type": "admin", "id": 7}},
                {"id": "10", "part_type": "comment", "body": "<p>from customer</p>",
                 "author": {"type": "user", "id": "u"}},
                {"id": "11", "part_type": "comment", "body": "<p> </p>",
                 "author": {"type": "admin", "id": "7"}}
            ]},
            "brand_new_key": {"x": 1}
        }))
        .unwrap();
        let t = c.clone().into_ticket().unwrap();
        assert_eq!(t.id, "42");
        assert_eq!(t.raw_status, "open");
        assert_eq!(t.assignee_id, None);
        assert_eq!(t.group_id, None);
        assert_eq!(t.tags, vec!["a".to_string()]);
        assert_eq!(t.requester_id.as_deref(), Some("lead-1"));
        assert_eq!(t.updated_at, 1_700_000_000_000);
        assert_eq!(t.comments.len(), 1);
        assert!(!t.comments[0].public);
        assert_eq!(t.comments[0].author_id.as_deref(), Some("7"));
        assert_eq!(c.last_part_id().as_deref(), Some("11"));
    }

    #[test]
    fn conversation_without_id_is_a_failure() {
        let c: Conversation = serde_json::from_str("{}").unwrap();
        assert!(matches!(c.into_ticket(), Err(Failure::Permanent(_))));
    }

    #[test]
    fn next_cursor_reads_starting_after() {
        let l: ConversationList = serde_json::from_value(serde_json::json!({
            "conversations": [], "pages": {"next": {"starting_after": "abc"}}
        }))
        .unwrap();
        assert_eq!(l.next_cursor().as_deref(), Some("abc"));
        let l: ConversationList =
            serde_json::from_value(serde_json::json!({"pages": {"page": 1}})).unwrap();
        assert_eq!(l.next_cursor(), None);
        let l: ConversationList =
            serde_json::from_value(serde_json::json!({"pages": null})).unwrap();
        assert_eq!(l.next_cursor(), None);
    }
}
