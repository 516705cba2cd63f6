//! The content idempotency key of an action: `sha256(connection, ticket, canonical action)`.
//!
//! Why a content key, and not only the app's `Idempotency-Key` header? The app's key protects one
//! HTTP retry of one request; the content key protects the *ticket*: the same reply to the same
//! ticket submitted twice within the dedupe window (a retried webhook handler, a double click, two
//! replicas of the app) is one reply. It is also what the host sends in the platform's idempotency
//! header where the adapter's descriptor says the platform honours one.
//!
//! The encoding is canonical and versioned, so the key of an action never changes between runs,
//! builds or replicas, and two different actions can never share an encoding:
//!
//! - a version tag first (`deskgate/action-key/v1`); a change of encoding gets a new tag;
//! - every field length-prefixed (u32, big endian), so no separator can be forged by content;
//! - optional fields carry a presence byte;
//! - tags are a set on every platform (adding `a` twice is adding `a` once), so they are sorted
//!   and de-duplicated; every other text is hashed exactly as given (a reply with one more space
//!   is another reply).

use crate::bindings::{Action, Assignee, TicketStatus};
use sha2::{Digest, Sha256};

/// The encoding's version tag; part of every key.
pub const KEY_VERSION: &str = "deskgate/action-key/v1";

/// The status's name as the contract spells it.
pub fn status_name(s: TicketStatus) -> &'static str {
    match s {
        TicketStatus::New => "new",
        TicketStatus::Open => "open",
        TicketStatus::Pending => "pending",
        TicketStatus::OnHold => "on-hold",
        TicketStatus::Solved => "solved",
        TicketStatus::Closed => "closed",
    }
}

/// The action's kind as the contract spells it (`reply`, `set-status`, `add-tags`, `assign`,
/// `resolve`); also the names the descriptor's `idempotent-actions` uses.
pub fn action_kind(a: &Action) -> &'static str {
    match a {
        Action::Reply(_) => "reply",
        Action::SetStatus(_) => "set-status",
        Action::AddTags(_) => "add-tags",
        Action::Assign(_) => "assign",
        Action::Resolve(_) => "resolve",
    }
}

struct Enc(Vec<u8>);

impl Enc {
    fn field(&mut self, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.text(v);
            }
        }
    }
    fn tags(&mut self, tags: &[String]) {
        let mut set: Vec<&str> = tags.iter().map(String::as_str).collect();
        set.sort_unstable();
        set.dedup();
        self.field(&u32::try_from(set.len()).unwrap_or(u32::MAX).to_be_bytes());
        for t in set {
            self.text(t);
        }
    }
    fn assignee(&mut self, a: &Assignee) {
        self.opt(a.agent_id.as_deref());
        self.opt(a.group_id.as_deref());
    }
}

/// The canonical bytes the key is computed over (exposed for tests and audits).
pub fn canonical_encoding(connection_id: &str, ticket_id: &str, action: &Action) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(128));
    e.text(KEY_VERSION);
    e.text(connection_id);
    e.text(ticket_id);
    e.text(action_kind(action));
    match action {
        Action::Reply(text) => e.text(text),
        Action::SetStatus(s) => e.text(status_name(*s)),
        Action::AddTags(tags) => e.tags(tags),
        Action::Assign(a) => e.assignee(a),
        Action::Resolve(r) => {
            e.text(&r.reply);
            e.text(status_name(r.status));
            e.tags(&r.tags);
            match &r.assignee {
                None => e.0.push(0),
                Some(a) => {
                    e.0.push(1);
                    e.assignee(a);
                }
            }
        }
    }
    e.0
}

/// The action's idempotency key: lower-case hex SHA-256 over [`canonical_encoding`].
///
/// ```
/// use deskgate::bindings::Action;
/// use deskgate::outbox::idempotency_key;
/// let k = idempotency_key("acme-zd", "42", &Action::Reply("Fixed.".into()));
/// assert_eq!(k.len(), 64);
/// assert_eq!(k, idempotency_key("acme-zd", "42", &Action::Reply("Fixed.".into())));
/// ```
pub fn idempotency_key(connection_id: &str, ticket_id: &str, action: &Action) -> String {
    hex::encode(Sha256::digest(canonical_encoding(connection_id, ticket_id, action)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Resolution;

    fn resolve(reply: &str, status: TicketStatus, tags: &[&str], assignee: Option<Assignee>) -> Action {
        Action::Resolve(Resolution {
            reply: reply.into(),
            status,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            assignee,
        })
    }

    #[test]
    fn key_is_stable_across_runs() {
        // Pinned: a change here changes every stored key, so dedupe across an upgrade breaks.
        // Bump KEY_VERSION instead of editing the encoding in place.
        assert_eq!(
            idempotency_key("acme-zd", "42", &Action::Reply("Thanks, fixed.".into())),
            hex::encode(Sha256::digest(canonical_encoding("acme-zd", "42", &Action::Reply("Thanks, fixed.".into()))))
        );
        let pinned = idempotency_key("c", "1", &Action::SetStatus(TicketStatus::Solved));
        assert_eq!(pinned, idempotency_key("c", "1", &Action::SetStatus(TicketStatus::Solved)));
        assert_eq!(pinned, PINNED_SOLVED);
    }

    /// `idempotency_key("c", "1", SetStatus(Solved))` under v1, computed independently (Python:
    /// sha256 over u32-BE length-prefixed "deskgate/action-key/v1", "c", "1", "set-status", "solved").
    const PINNED_SOLVED: &str = "298792d9cbb7ff2cc8e9c81690bd26892df2340cb4262b4254e96cd24794235f";

    #[test]
    fn key_differs_per_field() {
        let base = idempotency_key("c", "1", &Action::Reply("hi".into()));
        assert_ne!(base, idempotency_key("c2", "1", &Action::Reply("hi".into())), "connection");
        assert_ne!(base, idempotency_key("c", "2", &Action::Reply("hi".into())), "ticket");
        assert_ne!(base, idempotency_key("c", "1", &Action::Reply("hi ".into())), "text as given");
        assert_ne!(base, idempotency_key("c", "1", &Action::AddTags(vec!["hi".into()])), "kind");
        // No field boundary can be forged by content.
        assert_ne!(idempotency_key("ab", "c", &Action::Reply("x".into())), idempotency_key("a", "bc", &Action::Reply("x".into())));
        let r = resolve("done", TicketStatus::Solved, &["a"], None);
        for other in [
            resolve("done.", TicketStatus::Solved, &["a"], None),
            resolve("done", TicketStatus::Closed, &["a"], None),
            resolve("done", TicketStatus::Solved, &["b"], None),
            resolve("done", TicketStatus::Solved, &["a"], Some(Assignee { agent_id: None, group_id: None })),
            resolve("done", TicketStatus::Solved, &["a"], Some(Assignee { agent_id: Some("7".into()), group_id: None })),
        ] {
            assert_ne!(idempotency_key("c", "1", &r), idempotency_key("c", "1", &other), "{other:?}");
        }
        let a = Action::Assign(Assignee { agent_id: Some("7".into()), group_id: None });
        let g = Action::Assign(Assignee { agent_id: None, group_id: Some("7".into()) });
        assert_ne!(idempotency_key("c", "1", &a), idempotency_key("c", "1", &g), "agent vs group");
    }

    #[test]
    fn tags_are_a_set() {
        let k = |tags: &[&str]| idempotency_key("c", "1", &Action::AddTags(tags.iter().map(|s| s.to_string()).collect()));
        assert_eq!(k(&["b", "a"]), k(&["a", "b", "a"]));
        assert_ne!(k(&["a"]), k(&["A"]), "tags are hashed as given, case included");
        assert_eq!(
            idempotency_key("c", "1", &resolve("x", TicketStatus::Solved, &["z", "y", "z"], None)),
            idempotency_key("c", "1", &resolve("x", TicketStatus::Solved, &["y", "z"], None))
        );
    }
}
