//! Serde shapes of Freshdesk's JSON, and their conversion into the contract's types.
//!
//! Every field is optional and unknown keys are ignored: Freshdesk adds fields over time, search
//! results carry a different set of keys than `GET /tickets/{id}` (`description_html`,
//! `status_name`, ...), and webhook payloads are whatever the admin typed. Ids are read as JSON
//! values because they are numbers in the REST API but strings once rendered through a webhook
//! placeholder. A ticket without an id is the one thing we refuse to guess.

use deskgate_adapter_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// A ticket as `GET /api/v2/tickets/{id}`, `GET /api/v2/tickets` and the search API return it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdTicket {
    /// Numeric id.
    pub id: Value,
    /// Subject line.
    pub subject: Option<String>,
    /// 2 Open, 3 Pending, 4 Resolved, 5 Closed, 6+ custom statuses.
    pub status: Value,
    /// The customer who raised it.
    pub requester_id: Value,
    /// The assigned agent.
    pub responder_id: Value,
    /// The assigned group.
    pub group_id: Value,
    /// Tags; PUT replaces the whole list.
    pub tags: Option<Vec<Value>>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// RFC 3339.
    pub updated_at: Option<String>,
    /// Present with `?include=conversations` only.
    pub conversations: Option<Vec<FdConversation>>,
}

/// A conversation (reply, note, forward or incoming customer message) on a ticket; also the
/// body of `POST /api/v2/tickets/{id}/reply`'s 201.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdConversation {
    /// Numeric id.
    pub id: Value,
    /// HTML body.
    pub body: Option<String>,
    /// Plain-text body.
    pub body_text: Option<String>,
    /// True when it came from the customer.
    pub incoming: Option<bool>,
    /// True for private notes.
    pub private: Option<bool>,
    /// Author's user id.
    pub user_id: Value,
    /// RFC 3339.
    pub created_at: Option<String>,
}

/// `GET /api/v2/agents/me`. The shape is UNCONFIRMED for `/me`; it is assumed to be the agent
/// object of `GET /api/v2/agents/{id}` (`id`, `contact{name,email}`, `type`, `role_ids`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdAgent {
    /// The agent's user id.
    pub id: Value,
    /// Name and email live on the agent's contact.
    pub contact: Option<FdContact>,
    /// Agent type, e.g. "support_agent".
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Role ids (names need another call).
    pub role_ids: Option<Vec<Value>>,
}

/// The contact part of an agent.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdContact {
    /// Display name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
}

/// `GET /api/v2/search/tickets`: `{"results":[...],"total":N}` (shape UNCONFIRMED in our notes,
/// corroborated by client-library fixtures).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdSearch {
    /// At most 30 tickets.
    pub results: Option<Vec<FdTicket>>,
    /// Total matches (the API serves at most 300 of them).
    pub total: Option<Value>,
}

/// Freshdesk's error envelopes: `{"code","message"}` for auth errors and
/// `{"description","errors":[{"field","message","code"}]}` for validation.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdError {
    /// Top-level code (`invalid_credentials`, `access_denied`, `require_feature`, ...).
    pub code: Option<String>,
    /// Top-level message.
    pub message: Option<String>,
    /// "Validation failed".
    pub description: Option<String>,
    /// Per-field errors.
    pub errors: Option<Vec<FdFieldError>>,
}

/// One entry of `errors[]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FdFieldError {
    /// The field at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub message: Option<String>,
    /// Machine code (`invalid_value`, `missing_field`, `require_feature`, ...).
    pub code: Option<String>,
}

/// An id from a number or a non-empty string; `null`, `""` and anything else mean none.
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(u.to_string())
            } else if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else {
                // 12.0 from a sloppy template; anything fractional is not an id.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.is_finite())
                    .map(|f| format!("{f:.0}"))
            }
        }
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        _ => None,
    }
}

/// A status code from a number or a numeric string.
pub fn status_code_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The status number Freshdesk stores for a normalized status.
///
/// `new` has no Freshdesk equivalent and is written as Open. `on-hold` is written as 7, the
/// default custom status "Waiting on Third Party" that Freshdesk accounts are created with
/// (UNCONFIRMED: the id of that default custom status is from memory; an account that deleted or
/// renumbered it will answer 400 `invalid_value` on `status`).
pub fn status_to_code(s: TicketStatus) -> u8 {
    match s {
        TicketStatus::New | TicketStatus::Open => 2,
        TicketStatus::Pending => 3,
        TicketStatus::OnHold => 7,
        TicketStatus::Solved => 4,
        TicketStatus::Closed => 5,
    }
}

/// The normalized status of a Freshdesk status number. 6 is the default custom status "Waiting
/// on Customer" (pending) and 7 "Waiting on Third Party" (on hold), both UNCONFIRMED; any other
/// custom status is an open ticket as far as the gateway is concerned.
pub fn code_to_status(code: i64) -> TicketStatus {
    match code {
        3 | 6 => TicketStatus::Pending,
        4 => TicketStatus::Solved,
        5 => TicketStatus::Closed,
        7 => TicketStatus::OnHold,
        _ => TicketStatus::Open,
    }
}

/// The normalized status of a status as a webhook placeholder renders it: a name ("Open",
/// "Pending", "Resolved", "Closed", "Waiting on Customer", ...) or a number.
pub fn status_from_text(s: &str) -> TicketStatus {
    let t = s.trim().to_ascii_lowercase();
    if let Ok(n) = t.parse::<i64>() {
        return code_to_status(n);
    }
    match t.as_str() {
        "pending" | "waiting on customer" => TicketStatus::Pending,
        "resolved" | "solved" => TicketStatus::Solved,
        "closed" => TicketStatus::Closed,
        "waiting on third party" | "on hold" | "on-hold" => TicketStatus::OnHold,
        _ => TicketStatus::Open,
    }
}

/// The tags of a ticket, strings only, in the platform's order.
pub fn tags_of(tags: &Option<Vec<Value>>) -> Vec<String> {
    tags.iter()
        .flatten()
        .filter_map(|t| match t {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// Milliseconds since the epoch of a Freshdesk time, 0 when absent or unreadable.
pub fn ms_of(t: &Option<String>) -> i64 {
    t.as_deref().and_then(parse_time_ms).unwrap_or(0)
}

/// RFC 3339, or the mail-style form Freshdesk's placeholders may render
/// ("Mon, 01 Jan 2024 10:00:00 +0000"); see [`parse_mail_date_ms`].
pub fn parse_time_ms(s: &str) -> Option<i64> {
    text::parse_rfc3339_ms(s).or_else(|| parse_mail_date_ms(s))
}

/// Parse "[Mon, ]01 Jan 2024 10:00[:00] [+0000|UTC|GMT|Z]" (RFC 2822-ish, commas optional,
/// an optional "at" before the time, an optional AM/PM) into milliseconds since the epoch.
///
/// How Freshdesk renders `{{ticket.created_at}}` in a webhook body is UNCONFIRMED; this covers the
/// mail-date family cheaply and returns `None` for anything else so the caller can skip the time.
pub fn parse_mail_date_ms(s: &str) -> Option<i64> {
    let cleaned = s.replace(',', " ");
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    // Drop a leading weekday.
    if words
        .first()
        .is_some_and(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
    {
        words.remove(0);
    }
    words.retain(|w| !w.eq_ignore_ascii_case("at"));
    let day: i64 = words.first()?.parse().ok()?;
    let month = month_number(words.get(1)?)?;
    let year: i64 = words.get(2)?.parse().ok()?;
    let time = words.get(3)?;
    let mut hms = time.split(':');
    let mut hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let second: i64 = match hms.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    let mut rest = &words[4..];
    if let Some(ampm) = rest.first() {
        if ampm.eq_ignore_ascii_case("pm") && hour < 12 {
            hour += 12;
            rest = &rest[1..];
        } else if ampm.eq_ignore_ascii_case("am") {
            if hour == 12 {
                hour = 0;
            }
            rest = &rest[1..];
        }
    }
    let offset_secs = match rest.first() {
        None => 0,
        Some(z) => zone_offset_secs(z)?,
    };
    if !(1..=9999).contains(&year)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1000)
}

fn month_number(w: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let w = w.to_ascii_lowercase();
    let prefix = w.get(..3)?;
    MONTHS
        .iter()
        .position(|m| *m == prefix)
        .map(|i| i as i64 + 1)
}

fn zone_offset_secs(z: &str) -> Option<i64> {
    if ["z", "utc", "gmt", "ut"]
        .iter()
        .any(|n| z.eq_ignore_ascii_case(n))
    {
        return Some(0);
    }
    let (sign, digits) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl FdConversation {
    /// The contract's comment.
    pub fn to_comment(&self) -> Comment {
        Comment {
            id: id_of(&self.id).unwrap_or_default(),
            author_id: id_of(&self.user_id),
            body: self
                .body
                .clone()
                .or_else(|| self.body_text.clone())
                .unwrap_or_default(),
            public: self.private != Some(true),
            created_at: ms_of(&self.created_at),
        }
    }
}

impl FdTicket {
    /// The contract's ticket.
    ///
    /// # Errors
    ///
    /// `permanent` when the ticket has no id.
    pub fn to_ticket(&self) -> Result<Ticket, Failure> {
        let id = id_of(&self.id).ok_or_else(|| {
            fail::permanent("Freshdesk returned a ticket without an id".to_string())
        })?;
        let (status, raw_status) = match &self.status {
            Value::String(s) => (status_from_text(s), s.clone()),
            v => match status_code_of(v) {
                Some(n) => (code_to_status(n), n.to_string()),
                None => (TicketStatus::Open, String::new()),
            },
        };
        Ok(Ticket {
            id,
            subject: self.subject.clone(),
            status,
            raw_status,
            requester_id: id_of(&self.requester_id),
            assignee_id: id_of(&self.responder_id),
            group_id: id_of(&self.group_id),
            tags: tags_of(&self.tags),
            created_at: ms_of(&self.created_at),
            updated_at: ms_of(&self.updated_at),
            comments: self
                .conversations
                .iter()
                .flatten()
                .map(FdConversation::to_comment)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_from_numbers_and_strings() {
        assert_eq!(id_of(&json!(42)), Some("42".into()));
        assert_eq!(id_of(&json!(" 42 ")), Some("42".into()));
        assert_eq!(id_of(&json!(80_000_123_456u64)), Some("80000123456".into()));
        assert_eq!(id_of(&json!(12.0)), Some("12".into()));
        assert_eq!(id_of(&json!("")), None);
        assert_eq!(id_of(&json!(null)), None);
        assert_eq!(id_of(&json!(1.5)), None);
        assert_eq!(id_of(&json!([1])), None);
    }

    #[test]
    fn status_numbers_round_trip() {
        for (s, n) in [
            (TicketStatus::Open, 2),
            (TicketStatus::Pending, 3),
            (TicketStatus::OnHold, 7),
            (TicketStatus::Solved, 4),
            (TicketStatus::Closed, 5),
        ] {
            assert_eq!(status_to_code(s), n);
            assert_eq!(code_to_status(i64::from(n)), s);
        }
        assert_eq!(status_to_code(TicketStatus::New), 2);
        assert_eq!(code_to_status(6), TicketStatus::Pending);
        assert_eq!(code_to_status(12), TicketStatus::Open);
    }

    #[test]
    fn status_names_from_placeholders() {
        assert_eq!(status_from_text("Open"), TicketStatus::Open);
        assert_eq!(status_from_text("Pending"), TicketStatus::Pending);
        assert_eq!(status_from_text("Resolved"), TicketStatus::Solved);
        assert_eq!(status_from_text("Closed"), TicketStatus::Closed);
        assert_eq!(
            status_from_text("Waiting on Customer"),
            TicketStatus::Pending
        );
        assert_eq!(
            status_from_text("Waiting on Third Party"),
            TicketStatus::OnHold
        );
        assert_eq!(status_from_text("4"), TicketStatus::Solved);
        assert_eq!(status_from_text("Escalated to L2"), TicketStatus::Open);
    }

    #[test]
    fn mail_dates() {
        let want = text::parse_rfc3339_ms("2024-01-01T10:00:00Z");
        assert_eq!(parse_time_ms("Mon, 01 Jan 2024 10:00:00 +0000"), want);
        assert_eq!(parse_time_ms("Mon, 01 Jan 2024 15:30:00 +0530"), want);
        assert_eq!(parse_time_ms("01 Jan 2024 10:00 UTC"), want);
        assert_eq!(parse_time_ms("Mon, 1 January, 2024 at 10:00 AM"), want);
        assert_eq!(
            parse_time_ms("Mon, 1 Jan, 2024 at 10:00 PM"),
            want.map(|m| m + 12 * 3_600_000)
        );
        assert_eq!(parse_time_ms("2024-01-01T10:00:00Z"), want);
        assert_eq!(
            parse_time_ms("2024-02-29T00:00:00Z"),
            parse_mail_date_ms("29 Feb 2024 00:00:00 Z")
        );
        assert_eq!(parse_time_ms("{{ticket.created_at}}"), None);
        assert_eq!(parse_time_ms(""), None);
        assert_eq!(parse_time_ms("Mon, 01 Foo 2024 10:00:00 +0000"), None);
        assert_eq!(parse_time_ms("01 Jan 2024 10:00:00 +05"), None);
        assert_eq!(
            parse_time_ms("01 Jan 99999999999999999 10:00:00 +0000"),
            None
        );
        assert_eq!(
            parse_time_ms("99999999999 Jan 2024 99999999999:00:00 +0000"),
            None
        );
    }

    #[test]
    fn ticket_without_id_is_a_failure() {
        let t: FdTicket = serde_json::from_value(json!({"subject": "x"})).unwrap();
        assert!(matches!(t.to_ticket(), Err(Failure::Permanent(_))));
    }

    #[test]
    fn nulls_and_unknown_keys_are_tolerated() {
        let t: FdTicket = serde_json::from_value(json!({
            "id": 9, "subject": null, "status": 2, "tags": null, "group_id": null,
            "responder_id": null, "custom_fields": {"cf_x": 1}, "created_at": null
        }))
        .unwrap();
        let t = t.to_ticket().unwrap();
        assert_eq!(t.id, "9");
        assert!(t.tags.is_empty());
        assert_eq!(t.assignee_id, None);
        assert_eq!(t.created_at, 0);
    }
}
