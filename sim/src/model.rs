//! The simulated world: accounts and what lives in them (agents, contacts, groups, tags,
//! credentials, OAuth clients, tickets with their comments), plus the records tests read back
//! (the write log and the request log).
//!
//! One [`Account`] sits behind one mutex; a request locks its account once, briefly, and never
//! across an await. Tickets are shared by the three platforms: the status and priority are kept
//! as each platform's own token (`"open"`, `"2"`, `"snoozed"`), and each platform module renders
//! the JSON its API returns.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::limits::{LimitOverrides, Limits, Window};

/// An agent / admin / teammate of an account.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// Platform user id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Login email (Zendesk API tokens are `email/token:…`).
    pub email: String,
    /// Role: Zendesk `admin|agent|restricted-agent|end-user`; Freshdesk
    /// `account_admin|admin|supervisor|agent|restricted-agent`; Intercom `admin`.
    pub role: String,
    /// Privileges the role grants, minus any removed through the admin API.
    pub privileges: BTreeSet<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// A customer: Zendesk end-user, Freshdesk contact, Intercom contact (user or lead).
#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    /// Platform id (Intercom renders it as a 24-hex-digit string).
    pub id: u64,
    /// Name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Intercom `user|lead`; `end-user` elsewhere.
    pub role: String,
    /// Unix ms.
    pub created_at: i64,
    /// Deleted through the API.
    pub deleted: bool,
    /// External id.
    pub external_id: Option<String>,
}

/// A Zendesk/Freshdesk group or an Intercom team.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
}

/// An Intercom tag (workspace-wide, created with `POST /tags`).
#[derive(Debug, Clone, Serialize)]
pub struct Tag {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
}

/// A tag applied to an Intercom conversation.
#[derive(Debug, Clone)]
pub struct AppliedTag {
    /// Tag id.
    pub tag_id: u64,
    /// Unix ms.
    pub applied_at: i64,
    /// Admin id.
    pub by: u64,
}

/// Kinds of credential.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredKind {
    /// Zendesk API token, sent as Basic `email/token:TOKEN`.
    ApiToken,
    /// Freshdesk API key, sent as Basic `KEY:X`.
    ApiKey,
    /// Zendesk OAuth access token (Bearer), optionally with a refresh token.
    Oauth,
    /// Intercom access token (Bearer) of an app.
    AppToken,
}

/// A refresh token paired with an OAuth access token.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    /// The token string.
    pub token: String,
    /// Unix ms, `None` = never.
    pub expires_at: Option<i64>,
    /// Used (rotated away) or revoked.
    pub dead: bool,
}

/// One credential of an account.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Id within the account (1-based).
    pub id: u64,
    /// Kind.
    pub kind: CredKind,
    /// The agent/admin it acts as.
    pub agent_id: u64,
    /// The secret sent on the wire.
    pub secret: String,
    /// OAuth scopes (Zendesk OAuth) or app permissions (Intercom). Empty for API tokens/keys.
    pub scopes: BTreeSet<String>,
    /// Revoked (or rotated away by a refresh).
    pub revoked: bool,
    /// Why it stopped working, for the log.
    pub revoked_reason: Option<&'static str>,
    /// Unix ms, `None` = never expires.
    pub expires_at: Option<i64>,
    /// The refresh token, for Zendesk OAuth pairs.
    pub refresh: Option<RefreshToken>,
    /// OAuth client identifier / Intercom app client id.
    pub client: Option<String>,
    /// Intercom rate bucket (one per app).
    pub app: u64,
}

/// The calling credential as a request handler needs it: copied out of the account (no
/// allocation) so the account stays mutably borrowable while the request is served.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Credential id.
    pub id: u64,
    /// Kind.
    pub kind: CredKind,
    /// Agent it acts as.
    pub agent_id: u64,
    /// Intercom rate bucket.
    pub app: u64,
}

impl Credential {
    /// The [`Caller`] view.
    pub fn caller(&self) -> Caller {
        Caller {
            id: self.id,
            kind: self.kind,
            agent_id: self.agent_id,
            app: self.app,
        }
    }
}

/// A Zendesk OAuth client or an Intercom app.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    /// `client_id`.
    pub identifier: String,
    /// `client_secret` (Intercom signs webhooks with it).
    pub secret: String,
    /// Access-token lifetime, `None` = non-expiring (legacy Zendesk clients, Intercom).
    pub access_ttl_secs: Option<u64>,
    /// Refresh-token lifetime; `None` with `refresh = true` means non-expiring refresh tokens.
    pub refresh_ttl_secs: Option<u64>,
    /// Whether tokens come with refresh tokens.
    pub refresh: bool,
    /// Scopes / permissions its tokens get.
    pub scopes: BTreeSet<String>,
    /// Intercom rate bucket.
    pub app: u64,
    /// App name (Intercom `/me` app.name).
    pub name: String,
}

/// An authorization code waiting to be exchanged.
#[derive(Debug, Clone)]
pub struct AuthCode {
    /// The code.
    pub code: String,
    /// Client identifier it was issued to.
    pub client: String,
    /// Agent who authorized.
    pub agent_id: u64,
    /// Scopes granted.
    pub scopes: BTreeSet<String>,
    /// Already exchanged.
    pub used: bool,
    /// Unix ms.
    pub expires_at: i64,
}

/// One comment / conversation / conversation part.
#[derive(Debug, Clone)]
pub struct Comment {
    /// Id.
    pub id: u64,
    /// Author (agent or contact id).
    pub author_id: u64,
    /// Whether the author is an agent.
    pub by_agent: bool,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: String,
    /// Visible to the customer.
    pub public: bool,
    /// Unix ms.
    pub created_at: i64,
    /// Intercom `part_type`: `comment`, `note`, `close`, `open`, `snoozed`, `assignment`.
    pub part_type: &'static str,
    /// Intercom assignment target `(is_team, id)`.
    pub assigned_to: Option<(bool, u64)>,
    /// Zendesk audit id.
    pub audit_id: u64,
}

/// A ticket / conversation.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// Id (per account, from 1).
    pub id: u64,
    /// Subject / title.
    pub subject: String,
    /// First message, plain text.
    pub description: String,
    /// First message, HTML.
    pub description_html: String,
    /// Platform token: Zendesk `new…closed`; Freshdesk `"2"…"7"`; Intercom `open|closed|snoozed`.
    pub status: String,
    /// Platform token: Zendesk `low|normal|high|urgent`; Freshdesk `"1"…"4"`; Intercom `none|priority`.
    pub priority: Option<String>,
    /// Zendesk/Freshdesk ticket type.
    pub kind: Option<String>,
    /// Requester (contact id).
    pub requester_id: u64,
    /// Submitter (user id).
    pub submitter_id: u64,
    /// Assigned agent.
    pub assignee_id: Option<u64>,
    /// Assigned group / team.
    pub group_id: Option<u64>,
    /// Tag names (Zendesk, Freshdesk).
    pub tags: Vec<String>,
    /// Applied tags (Intercom).
    pub applied_tags: Vec<AppliedTag>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Intercom snooze, unix ms.
    pub snoozed_until: Option<i64>,
    /// Comments / conversations / parts, oldest first.
    pub comments: Vec<Comment>,
    /// Deleted through the API.
    pub deleted: bool,
    /// External id.
    pub external_id: Option<String>,
    /// Zendesk `via.channel`.
    pub channel: &'static str,
    /// Freshdesk `source`.
    pub source: i64,
}

/// What one write changed; drives both the write log and the webhooks.
#[derive(Debug, Clone)]
pub enum Change {
    /// Ticket created.
    Created,
    /// A comment was added (index into `Ticket::comments`).
    Comment(usize),
    /// Status changed.
    Status {
        /// Before.
        from: String,
        /// After.
        to: String,
    },
    /// Priority changed.
    Priority {
        /// Before.
        from: Option<String>,
        /// After.
        to: Option<String>,
    },
    /// Tags changed.
    Tags {
        /// Added.
        added: Vec<String>,
        /// Removed.
        removed: Vec<String>,
    },
    /// Agent assignment changed.
    Assignee {
        /// Before.
        from: Option<u64>,
        /// After.
        to: Option<u64>,
    },
    /// Group / team assignment changed.
    Group {
        /// Before.
        from: Option<u64>,
        /// After.
        to: Option<u64>,
    },
    /// Subject changed.
    Subject,
    /// Ticket deleted.
    Deleted,
}

/// One write a ticket received, as the write log shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WriteKind {
    /// Ticket created.
    Created {
        /// Subject.
        subject: String,
    },
    /// Public agent reply.
    Reply {
        /// Plain text.
        body: String,
    },
    /// Private note.
    Note {
        /// Plain text.
        body: String,
    },
    /// Customer comment.
    CustomerComment {
        /// Plain text.
        body: String,
    },
    /// Status change (platform tokens).
    Status {
        /// Before.
        from: String,
        /// After.
        to: String,
    },
    /// Priority change.
    Priority {
        /// Before.
        from: Option<String>,
        /// After.
        to: Option<String>,
    },
    /// Tags added.
    TagsAdded {
        /// Tags.
        tags: Vec<String>,
    },
    /// Tags removed.
    TagsRemoved {
        /// Tags.
        tags: Vec<String>,
    },
    /// Agent assignment.
    Assigned {
        /// Before.
        from: Option<u64>,
        /// After.
        to: Option<u64>,
    },
    /// Group / team assignment.
    GroupAssigned {
        /// Before.
        from: Option<u64>,
        /// After.
        to: Option<u64>,
    },
    /// Subject change.
    Subject {
        /// After.
        to: String,
    },
    /// Ticket deleted.
    Deleted,
}

/// An entry of an account's write log.
#[derive(Debug, Clone, Serialize)]
pub struct WriteRecord {
    /// Sequence within the account.
    pub seq: u64,
    /// Sim time, unix ms.
    pub at_ms: i64,
    /// Ticket id.
    pub ticket_id: u64,
    /// Credential that made it (`None` = admin API / library).
    pub credential_id: Option<u64>,
    /// What changed.
    #[serde(flatten)]
    pub kind: WriteKind,
}

/// How a request ended, for the request log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// 401 (or the Zendesk anonymous `/users/me`).
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 400 / 409 / 422.
    Invalid,
    /// 429.
    RateLimited,
    /// Injected 5xx.
    InjectedError,
    /// Write applied, then the answer was withheld (timeout fault).
    TimedOutAfterApply,
}

/// One entry of the request log.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Global sequence.
    pub seq: u64,
    /// Sim time, unix ms.
    pub at_ms: i64,
    /// Account, when the credential resolved to one.
    pub account_id: Option<u64>,
    /// Credential id within the account.
    pub credential_id: Option<u64>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status sent (or that would have been sent, for timeouts).
    pub status: u16,
    /// Outcome.
    pub outcome: Outcome,
}

/// A stored idempotent response (Zendesk ticket create).
#[derive(Debug, Clone)]
pub struct IdemEntry {
    /// sha256 of the canonical request body.
    pub fingerprint: [u8; 32],
    /// Status of the original answer.
    pub status: u16,
    /// Body of the original answer.
    pub body: Bytes,
    /// Location header of the original answer.
    pub location: Option<String>,
    /// Unix ms.
    pub expires_at: i64,
}

/// Rate counters of one account.
#[derive(Debug, Default)]
pub struct RateState {
    /// Account-wide per minute (Zendesk, Freshdesk) / workspace per 10 s (Intercom).
    pub account: Window,
    /// Zendesk Update Ticket / Freshdesk Ticket Update.
    pub update: Window,
    /// Zendesk incremental exports.
    pub incremental: Window,
    /// Freshdesk Ticket Create.
    pub create: Window,
    /// Freshdesk Tickets List.
    pub list: Window,
    /// Zendesk (user, ticket) update windows.
    pub per_ticket: HashMap<(u64, u64), Window>,
    /// Intercom per-app 10 s windows.
    pub apps: HashMap<u64, Window>,
}

/// Counters of one account.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AccountStats {
    /// Requests that resolved to this account.
    pub requests: u64,
    /// 429s served.
    pub rate_limited: u64,
    /// 429s served, by bucket name.
    pub rate_limited_by_bucket: std::collections::BTreeMap<String, u64>,
    /// Injected errors and timeouts on this account's requests.
    pub faults: u64,
}

/// Where an account's webhooks go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// Receiver URL (`http://…`).
    pub url: String,
    /// Signing secret (Zendesk), client secret (Intercom) or the custom-header token (Freshdesk).
    /// Intercom signs with the app's client secret: left empty, the account's first app's
    /// client secret is used.
    #[serde(default)]
    pub secret: String,
}

/// One account (a Zendesk account, a Freshdesk helpdesk, an Intercom workspace).
#[derive(Debug)]
pub struct Account {
    /// Id.
    pub id: u64,
    /// Name (also the Zendesk subdomain / Freshdesk domain / Intercom app name).
    pub name: String,
    /// Normalized plan.
    pub plan: &'static str,
    /// Zendesk High Volume API add-on.
    pub high_volume: bool,
    /// Overrides set for tests.
    pub overrides: LimitOverrides,
    /// Limits in force.
    pub limits: Limits,
    /// Plan features in force.
    pub features: BTreeSet<String>,
    /// Intercom workspace id (`app.id_code`).
    pub id_code: String,
    /// Agents.
    pub agents: Vec<Agent>,
    /// Customers.
    pub contacts: Vec<Contact>,
    /// Groups / teams.
    pub groups: Vec<Group>,
    /// Intercom tags.
    pub tags: Vec<Tag>,
    /// Credentials, index = id - 1.
    pub creds: Vec<Credential>,
    /// OAuth clients / Intercom apps.
    pub clients: Vec<OAuthClient>,
    /// Authorization codes.
    pub codes: Vec<AuthCode>,
    /// Tickets, index = id - 1.
    pub tickets: Vec<Ticket>,
    /// Webhook target.
    pub webhook: Option<WebhookTarget>,
    /// Write log.
    pub writes: Vec<WriteRecord>,
    /// Idempotency keys (Zendesk).
    pub idempotency: HashMap<String, IdemEntry>,
    /// Rate counters.
    pub rate: RateState,
    /// Counters.
    pub stats: AccountStats,
}

impl Account {
    /// The credential behind a caller.
    pub fn cred(&self, c: &Caller) -> &Credential {
        &self.creds[c.id as usize - 1]
    }
    /// Agent by id.
    pub fn agent(&self, id: u64) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }
    /// Contact by id.
    pub fn contact(&self, id: u64) -> Option<&Contact> {
        self.contacts.iter().find(|c| c.id == id && !c.deleted)
    }
    /// Live (not deleted) ticket index by id.
    pub fn ticket_idx(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.tickets.len() && !self.tickets[i].deleted).then_some(i)
    }
    /// Group by id.
    pub fn group(&self, id: u64) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }
    /// Name of a person (agent or contact).
    pub fn person_name(&self, id: u64) -> Option<String> {
        self.agent(id).map(|a| a.name.clone()).or_else(|| {
            self.contacts
                .iter()
                .find(|c| c.id == id)
                .and_then(|c| c.name.clone())
        })
    }
    /// Email of a person (agent or contact).
    pub fn person_email(&self, id: u64) -> Option<String> {
        self.agent(id).map(|a| a.email.clone()).or_else(|| {
            self.contacts
                .iter()
                .find(|c| c.id == id)
                .and_then(|c| c.email.clone())
        })
    }

    /// Appends the write-log entries for `changes` on ticket `idx`.
    pub fn log_writes(&mut self, idx: usize, changes: &[Change], cred: Option<u64>, now: i64) {
        let t = &self.tickets[idx];
        let ticket_id = t.id;
        let kinds: Vec<WriteKind> = changes
            .iter()
            .map(|c| match c {
                Change::Created => WriteKind::Created {
                    subject: t.subject.clone(),
                },
                Change::Comment(i) => {
                    let cm = &t.comments[*i];
                    let body = cm.text.clone();
                    if !cm.by_agent {
                        WriteKind::CustomerComment { body }
                    } else if cm.public {
                        WriteKind::Reply { body }
                    } else {
                        WriteKind::Note { body }
                    }
                }
                Change::Status { from, to } => WriteKind::Status {
                    from: from.clone(),
                    to: to.clone(),
                },
                Change::Priority { from, to } => WriteKind::Priority {
                    from: from.clone(),
                    to: to.clone(),
                },
                Change::Tags { added, removed } if removed.is_empty() => WriteKind::TagsAdded {
                    tags: added.clone(),
                },
                Change::Tags { added, removed } if added.is_empty() => WriteKind::TagsRemoved {
                    tags: removed.clone(),
                },
                Change::Tags { added, .. } => WriteKind::TagsAdded {
                    tags: added.clone(),
                },
                Change::Assignee { from, to } => WriteKind::Assigned {
                    from: *from,
                    to: *to,
                },
                Change::Group { from, to } => WriteKind::GroupAssigned {
                    from: *from,
                    to: *to,
                },
                Change::Subject => WriteKind::Subject {
                    to: t.subject.clone(),
                },
                Change::Deleted => WriteKind::Deleted,
            })
            .collect();
        // A replace that both adds and removes logs two entries.
        let extra: Vec<WriteKind> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Tags { added, removed } if !added.is_empty() && !removed.is_empty() => {
                    Some(WriteKind::TagsRemoved {
                        tags: removed.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        for kind in kinds.into_iter().chain(extra) {
            let seq = self.writes.len() as u64 + 1;
            self.writes.push(WriteRecord {
                seq,
                at_ms: now,
                ticket_id,
                credential_id: cred,
                kind,
            });
        }
    }
}
