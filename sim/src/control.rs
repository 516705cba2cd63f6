//! The control API: create accounts, agents, credentials, tickets; change plans, limits,
//! scopes and privileges; revoke, rotate and expire credentials; set webhook targets and
//! faults; read the request log, the write log and the counters.
//!
//! The admin HTTP API (`/_sim/...`) deserializes into the same spec types and calls these same
//! methods, so the two can never drift apart.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::limits::{self, LimitOverrides, Limits};
use crate::model::*;
use crate::util::basic;
use crate::webhooks::{self, DeliveryRecord, Outbound};
use crate::{FaultConfig, Platform, Sim, SimClock, SimError, SimInner, lock};

/// A new account.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountSpec {
    /// Name (default `acme{id}`).
    pub name: Option<String>,
    /// Plan (default: the platform's first plan, see [`limits::plans`]).
    pub plan: Option<String>,
    /// Zendesk High Volume API add-on.
    pub high_volume: bool,
}

/// A plan change.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanSpec {
    /// Plan name.
    pub plan: String,
    /// Zendesk High Volume API add-on.
    pub high_volume: bool,
}

/// Plan features to add or remove (`api`, `incremental_export`, …).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturePatch {
    /// Features to add.
    pub add: Vec<String>,
    /// Features to remove.
    pub remove: Vec<String>,
}

/// What an account looks like from the control API.
#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Plan.
    pub plan: String,
    /// Zendesk High Volume add-on.
    pub high_volume: bool,
    /// Limits in force.
    pub limits: Limits,
    /// Overrides set.
    pub overrides: LimitOverrides,
    /// Plan features.
    pub features: Vec<String>,
    /// Intercom workspace id (`app.id_code`).
    pub id_code: String,
    /// Agents.
    pub agents: Vec<Agent>,
    /// Groups / teams.
    pub groups: Vec<Group>,
    /// Webhook target.
    pub webhook: Option<WebhookTarget>,
}

/// A new agent.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSpec {
    /// Name.
    pub name: Option<String>,
    /// Email (default `agentN@example.com`).
    pub email: Option<String>,
    /// Role (default `admin`). Zendesk: `admin|agent|restricted-agent|end-user`; Freshdesk:
    /// `account_admin|admin|supervisor|agent|restricted-agent`; Intercom: `admin`.
    pub role: Option<String>,
}

/// A change to an agent's role or privileges.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentPatch {
    /// New role (resets privileges to the role's).
    pub role: Option<String>,
    /// Privileges to add.
    pub add_privileges: Vec<String>,
    /// Privileges to remove (Zendesk: `view_tickets`, `edit_tickets`, `public_comments`,
    /// `create_tickets`, `delete_tickets`, `incremental_export`; Freshdesk: `view_tickets`,
    /// `reply_ticket`, `edit_ticket_properties`, `delete_ticket`, `create_ticket`).
    pub remove_privileges: Vec<String>,
}

/// A new customer.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactSpec {
    /// Name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Intercom `user|lead` (default `user`).
    pub role: Option<String>,
}

/// A new group / team.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSpec {
    /// Name.
    pub name: Option<String>,
}

/// A new OAuth client (Zendesk) or app (Intercom).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthClientSpec {
    /// `client_id` (default generated).
    pub identifier: Option<String>,
    /// `client_secret` (default generated).
    pub secret: Option<String>,
    /// Access-token lifetime in seconds (Zendesk default 1800; `0` = non-expiring legacy
    /// tokens without refresh tokens). Intercom tokens never expire.
    pub access_ttl_secs: Option<u64>,
    /// Refresh-token lifetime in seconds (Zendesk default 30 days).
    pub refresh_ttl_secs: Option<u64>,
    /// Scopes (Zendesk, default `read write`) or permissions (Intercom, default all).
    pub scopes: Option<Vec<String>>,
    /// App name (Intercom).
    pub name: Option<String>,
}

/// What a client looks like from the control API.
#[derive(Debug, Clone, Serialize)]
pub struct OAuthClientInfo {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// Access-token lifetime.
    pub access_ttl_secs: Option<u64>,
    /// Refresh-token lifetime.
    pub refresh_ttl_secs: Option<u64>,
    /// Whether tokens come with refresh tokens.
    pub refresh: bool,
    /// Scopes / permissions.
    pub scopes: Vec<String>,
}

/// An authorization code to mint (stands in for the browser consent step).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthCodeSpec {
    /// Client identifier.
    pub client_id: String,
    /// Agent who consents (default the first admin).
    pub agent_id: Option<u64>,
    /// Scopes (default the client's).
    pub scopes: Option<Vec<String>>,
}

/// A minted code.
#[derive(Debug, Clone, Serialize)]
pub struct AuthCodeInfo {
    /// The code to exchange at the token endpoint.
    pub code: String,
    /// Unix ms.
    pub expires_at_ms: i64,
}

/// A new credential.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialSpec {
    /// Kind (default: Zendesk `api_token`, Freshdesk `api_key`, Intercom `app_token`).
    pub kind: Option<CredKind>,
    /// Agent it acts as (default the first admin).
    pub agent_id: Option<u64>,
    /// Zendesk OAuth scopes / Intercom app permissions (default: all).
    pub scopes: Option<Vec<String>>,
    /// OAuth: access-token lifetime, seconds (`0` = never expires, no refresh token).
    pub access_ttl_secs: Option<u64>,
    /// OAuth: refresh-token lifetime, seconds.
    pub refresh_ttl_secs: Option<u64>,
    /// OAuth client / Intercom app to issue under (default: a new one).
    pub client_id: Option<String>,
    /// Use this secret instead of a generated one.
    pub token: Option<String>,
}

/// What a credential looks like from the control API.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialInfo {
    /// Id within the account.
    pub id: u64,
    /// Account id.
    pub account_id: u64,
    /// Kind.
    pub kind: CredKind,
    /// Agent it acts as.
    pub agent_id: u64,
    /// Agent email (Zendesk `email/token:` user part).
    pub email: String,
    /// The secret (API token, API key or access token).
    pub token: String,
    /// The refresh token, when there is one.
    pub refresh_token: Option<String>,
    /// Ready-made `Authorization` header value.
    pub authorization: String,
    /// Scopes / permissions.
    pub scopes: Vec<String>,
    /// Access-token expiry, unix ms.
    pub expires_at_ms: Option<i64>,
    /// Refresh-token expiry, unix ms.
    pub refresh_expires_at_ms: Option<i64>,
    /// OAuth client / app.
    pub client_id: Option<String>,
    /// OAuth client secret / app client secret (Intercom signs webhooks with it).
    pub client_secret: Option<String>,
    /// Revoked.
    pub revoked: bool,
}

/// Scopes / permissions to add or remove.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScopePatch {
    /// Add.
    pub add: Vec<String>,
    /// Remove.
    pub remove: Vec<String>,
}

/// A new ticket (as if a customer wrote in).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketSpec {
    /// Subject (default "Help needed").
    pub subject: Option<String>,
    /// First message, plain text (default "Hello, I need help.").
    pub body: Option<String>,
    /// Requester (a contact id).
    pub requester_id: Option<u64>,
    /// Requester email (found or created).
    pub requester_email: Option<String>,
    /// Status as the platform writes it: Zendesk `"open"`, Freshdesk `2`, Intercom `"open"`.
    pub status: Option<Value>,
    /// Priority as the platform writes it: Zendesk `"high"`, Freshdesk `3`, Intercom `"high"`.
    pub priority: Option<Value>,
    /// Zendesk/Freshdesk ticket type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Assigned agent.
    pub assignee_id: Option<u64>,
    /// Assigned group / team.
    pub group_id: Option<u64>,
    /// External id.
    pub external_id: Option<String>,
    /// Backdate creation (and last update) to this unix ms.
    pub created_at_ms: Option<i64>,
}

/// A customer comment on a ticket.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommentSpec {
    /// Plain text.
    pub body: String,
    /// Author contact (default the requester).
    pub author_id: Option<u64>,
}

/// Which request-log entries to read.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestFilter {
    /// Only this account.
    pub account_id: Option<u64>,
    /// Only entries with a larger sequence number.
    pub since_seq: Option<u64>,
}

/// What [`Sim::seed_demo`] created.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSeed {
    /// The account.
    pub account: AccountInfo,
    /// Its admin.
    pub admin: Agent,
    /// A customer.
    pub customer: Contact,
    /// Ready-made credentials of the admin.
    pub credentials: Vec<CredentialInfo>,
    /// Ticket ids.
    pub ticket_ids: Vec<u64>,
}

// ------------------------------------------------------------------------------------------
// Platform vocabulary

/// Privileges a role has.
pub(crate) fn role_privileges(
    platform: Platform,
    role: &str,
) -> Result<BTreeSet<String>, SimError> {
    let list: &[&str] = match (platform, role) {
        (Platform::Zendesk, "admin") => &[
            "view_tickets",
            "edit_tickets",
            "public_comments",
            "create_tickets",
            "delete_tickets",
            "incremental_export",
        ],
        (Platform::Zendesk, "agent") => &[
            "view_tickets",
            "edit_tickets",
            "public_comments",
            "create_tickets",
            "delete_tickets",
        ],
        (Platform::Zendesk, "restricted-agent") => &["view_tickets"],
        (Platform::Zendesk, "end-user") => &[],
        (Platform::Freshdesk, "account_admin" | "admin" | "supervisor" | "agent") => &[
            "view_tickets",
            "reply_ticket",
            "edit_ticket_properties",
            "delete_ticket",
            "create_ticket",
        ],
        (Platform::Freshdesk, "restricted-agent") => &["view_tickets"],
        (Platform::Intercom, "admin") => &[],
        _ => {
            let roles = match platform {
                Platform::Zendesk => "admin, agent, restricted-agent, end-user",
                Platform::Freshdesk => "account_admin, admin, supervisor, agent, restricted-agent",
                Platform::Intercom => "admin",
            };
            return Err(SimError::bad(format!(
                "unknown {platform} role {role:?}; use one of: {roles}"
            )));
        }
    };
    Ok(list.iter().map(|s| s.to_string()).collect())
}

fn known_privileges(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Zendesk => &[
            "view_tickets",
            "edit_tickets",
            "public_comments",
            "create_tickets",
            "delete_tickets",
            "incremental_export",
        ],
        Platform::Freshdesk => &[
            "view_tickets",
            "reply_ticket",
            "edit_ticket_properties",
            "delete_ticket",
            "create_ticket",
        ],
        Platform::Intercom => &[],
    }
}

/// Intercom app permissions. The machine names are UNCONFIRMED (platforms.md 3.2 lists the
/// Developer Hub labels, e.g. "Read conversations"); these are snake_case renderings of them.
pub(crate) const INTERCOM_PERMISSIONS: &[&str] = &[
    "read_conversations",
    "write_conversations",
    "read_tags",
    "write_tags",
    "read_admins",
    "read_users",
    "write_users",
];

fn check_scopes(platform: Platform, scopes: &[String]) -> Result<(), SimError> {
    for s in scopes {
        let ok = match platform {
            Platform::Zendesk => {
                let (res, level) = s.split_once(':').unwrap_or((s, ""));
                matches!(level, "" | "read" | "write")
                    && !res.is_empty()
                    && res.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            }
            Platform::Intercom => INTERCOM_PERMISSIONS.contains(&s.as_str()),
            Platform::Freshdesk => false,
        };
        if !ok {
            let hint = match platform {
                Platform::Zendesk => {
                    "use read, write, impersonate or <resource>[:read|:write] such as tickets:write"
                        .to_owned()
                }
                Platform::Intercom => format!("use one of {INTERCOM_PERMISSIONS:?}"),
                Platform::Freshdesk => {
                    "Freshdesk API keys have no scopes; change the agent's privileges instead"
                        .to_owned()
                }
            };
            return Err(SimError::bad(format!("invalid scope {s:?}: {hint}")));
        }
    }
    Ok(())
}

/// Normalizes a status as the platform writes it into the stored token.
pub(crate) fn norm_status(platform: Platform, v: &Value) -> Result<String, String> {
    match platform {
        Platform::Zendesk => match v.as_str() {
            Some(s @ ("new" | "open" | "pending" | "hold" | "solved" | "closed")) => {
                Ok(s.to_owned())
            }
            _ => Err(format!(
                "status {v} is not one of new, open, pending, hold, solved, closed"
            )),
        },
        Platform::Freshdesk => {
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            match n {
                Some(n @ 2..=7) => Ok(n.to_string()),
                _ => Err(format!("status {v} is not one of 2,3,4,5,6,7")),
            }
        }
        Platform::Intercom => match v.as_str() {
            Some(s @ ("open" | "closed" | "snoozed")) => Ok(s.to_owned()),
            _ => Err(format!("state {v} is not one of open, closed, snoozed")),
        },
    }
}

/// Normalizes a priority.
pub(crate) fn norm_priority(platform: Platform, v: &Value) -> Result<Option<String>, String> {
    if v.is_null() {
        return Ok(None);
    }
    match platform {
        Platform::Zendesk => match v.as_str() {
            Some(s @ ("low" | "normal" | "high" | "urgent")) => Ok(Some(s.to_owned())),
            _ => Err(format!(
                "priority {v} is not one of low, normal, high, urgent"
            )),
        },
        Platform::Freshdesk => {
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            match n {
                Some(n @ 1..=4) => Ok(Some(n.to_string())),
                _ => Err(format!("priority {v} is not one of 1,2,3,4")),
            }
        }
        Platform::Intercom => match v.as_str() {
            Some(s @ ("none" | "low" | "medium" | "high" | "urgent")) => Ok(Some(s.to_owned())),
            _ => Err(format!(
                "priority {v} is not one of none, low, medium, high, urgent"
            )),
        },
    }
}

/// Plain text and HTML forms of a body given as text (`html = false`) or HTML.
pub(crate) fn body_forms(input: &str, html: bool) -> (String, String) {
    if html {
        (crate::util::strip_html(input), input.to_owned())
    } else {
        (
            input.to_owned(),
            format!("<p>{}</p>", crate::util::html_escape(input)),
        )
    }
}

impl SimInner {
    /// A deterministic secret: `prefix` + 40 hex chars from the seed and a counter.
    pub(crate) fn secret(&self, prefix: &str) -> String {
        let n = self.next_id();
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(n.to_le_bytes());
        h.update(prefix.as_bytes());
        format!("{prefix}{}", &hex::encode(h.finalize())[..40])
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_comment(
        &self,
        author_id: u64,
        by_agent: bool,
        body: &str,
        html: bool,
        public: bool,
        part_type: &'static str,
        now: i64,
    ) -> Comment {
        let (text, html) = body_forms(body, html);
        Comment {
            id: self.next_id(),
            author_id,
            by_agent,
            text,
            html,
            public,
            created_at: now,
            part_type,
            assigned_to: None,
            audit_id: self.next_id(),
        }
    }

    /// Finds or creates the contact with `email`.
    pub(crate) fn contact_for_email(
        &self,
        acct: &mut Account,
        email: &str,
        name: Option<&str>,
        now: i64,
    ) -> u64 {
        if let Some(c) = acct
            .contacts
            .iter()
            .find(|c| !c.deleted && c.email.as_deref() == Some(email))
        {
            return c.id;
        }
        let id = self.next_id();
        acct.contacts.push(Contact {
            id,
            name: Some(
                name.map(str::to_owned)
                    .unwrap_or_else(|| email.split('@').next().unwrap_or(email).to_owned()),
            ),
            email: Some(email.to_owned()),
            role: if self.platform == Platform::Intercom {
                "user".into()
            } else {
                "end-user".into()
            },
            created_at: now,
            deleted: false,
            external_id: None,
        });
        id
    }

    /// Creates a ticket from a spec; returns its index and the changes to commit.
    pub(crate) fn new_ticket(
        &self,
        acct: &mut Account,
        spec: &TicketSpec,
        now: i64,
        submitter: Option<u64>,
        channel: &'static str,
    ) -> Result<usize, String> {
        let p = self.platform;
        let status = match &spec.status {
            Some(v) => norm_status(p, v)?,
            None => match p {
                Platform::Zendesk if spec.assignee_id.is_some() => "open".to_owned(),
                Platform::Zendesk => "new".to_owned(),
                Platform::Freshdesk => "2".to_owned(),
                Platform::Intercom => "open".to_owned(),
            },
        };
        let priority = match &spec.priority {
            Some(v) => norm_priority(p, v)?,
            None => match p {
                Platform::Zendesk => None,
                Platform::Freshdesk => Some("1".to_owned()),
                Platform::Intercom => Some("none".to_owned()),
            },
        };
        if let Some(a) = spec.assignee_id
            && acct.agent(a).is_none()
        {
            return Err(format!("assignee_id {a} is not an agent of this account"));
        }
        if let Some(g) = spec.group_id
            && acct.group(g).is_none()
        {
            return Err(format!("group_id {g} is not a group of this account"));
        }
        let requester = match (spec.requester_id, &spec.requester_email) {
            (Some(id), _) => {
                if acct.contact(id).is_none() && acct.agent(id).is_none() {
                    return Err(format!(
                        "requester_id {id} is not a contact of this account"
                    ));
                }
                id
            }
            (None, Some(email)) => self.contact_for_email(acct, email, None, now),
            (None, None) => match acct.contacts.iter().find(|c| !c.deleted) {
                Some(c) => c.id,
                None => self.contact_for_email(
                    acct,
                    "customer@example.com",
                    Some("Sample Customer"),
                    now,
                ),
            },
        };
        let created = spec.created_at_ms.unwrap_or(now);
        let body = spec
            .body
            .clone()
            .unwrap_or_else(|| "Hello, I need help.".to_owned());
        let (text, html) = body_forms(&body, false);
        let id = acct.tickets.len() as u64 + 1;
        let mut tags: Vec<String> = Vec::new();
        for t in &spec.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let mut ticket = Ticket {
            id,
            subject: spec
                .subject
                .clone()
                .unwrap_or_else(|| "Help needed".to_owned()),
            description: text,
            description_html: html,
            status,
            priority,
            kind: spec.kind.clone(),
            requester_id: requester,
            submitter_id: submitter.unwrap_or(requester),
            assignee_id: spec.assignee_id,
            group_id: spec.group_id,
            tags: Vec::new(),
            applied_tags: Vec::new(),
            created_at: created,
            updated_at: created,
            snoozed_until: None,
            comments: Vec::new(),
            deleted: false,
            external_id: spec.external_id.clone(),
            channel,
            source: 2,
        };
        if p == Platform::Intercom {
            for name in &tags {
                let tag_id = intercom_tag(self, acct, name);
                ticket.applied_tags.push(AppliedTag {
                    tag_id,
                    applied_at: created,
                    by: submitter.unwrap_or(0),
                });
            }
        } else {
            ticket.tags = tags;
        }
        if p == Platform::Zendesk {
            // Zendesk's description is the first comment.
            let mut c = self.new_comment(requester, false, &body, false, true, "comment", created);
            c.by_agent = acct.agent(requester).is_some();
            ticket.comments.push(c);
        }
        acct.tickets.push(ticket);
        Ok(acct.tickets.len() - 1)
    }

    /// Logs the writes and builds the webhooks for changes to ticket `idx`.
    pub(crate) fn commit(
        &self,
        acct: &mut Account,
        idx: usize,
        changes: &[Change],
        cred: Option<u64>,
        actor: Option<u64>,
        now: i64,
    ) -> Vec<Outbound> {
        if changes.is_empty() {
            return Vec::new();
        }
        acct.log_writes(idx, changes, cred, now);
        webhooks::events(self, acct, idx, changes, actor, now)
    }

    /// Applies a customer comment, with each platform's reopen rule.
    pub(crate) fn customer_comment(
        &self,
        acct: &mut Account,
        idx: usize,
        author: u64,
        body: &str,
        now: i64,
    ) -> Result<Vec<Change>, String> {
        let p = self.platform;
        let t = &acct.tickets[idx];
        if p == Platform::Zendesk && t.status == "closed" {
            return Err("Status closed prevents ticket update".to_owned());
        }
        // Reopen rules: Zendesk reopens pending/solved tickets on an end-user reply; Freshdesk's
        // default automation reopens Pending, Resolved and Waiting on Customer; Intercom reopens
        // closed and snoozed conversations when the user replies.
        let reopen_to = match (p, t.status.as_str()) {
            (Platform::Zendesk, "pending" | "solved") => Some("open"),
            (Platform::Freshdesk, "3" | "4" | "6") => Some("2"),
            (Platform::Intercom, "closed" | "snoozed") => Some("open"),
            _ => None,
        };
        let c = self.new_comment(author, false, body, false, true, "comment", now);
        let t = &mut acct.tickets[idx];
        t.comments.push(c);
        let mut changes = vec![Change::Comment(t.comments.len() - 1)];
        if let Some(to) = reopen_to {
            changes.push(Change::Status {
                from: std::mem::replace(&mut t.status, to.to_owned()),
                to: to.to_owned(),
            });
            t.snoozed_until = None;
        }
        t.updated_at = now;
        Ok(changes)
    }

    fn add_agent(&self, acct: &mut Account, spec: &AgentSpec, now: i64) -> Result<Agent, SimError> {
        let role = spec.role.clone().unwrap_or_else(|| "admin".to_owned());
        let privileges = role_privileges(self.platform, &role)?;
        let id = self.next_id();
        let n = acct.agents.len() + 1;
        let agent = Agent {
            id,
            name: spec.name.clone().unwrap_or_else(|| format!("Agent {n}")),
            email: spec
                .email
                .clone()
                .unwrap_or_else(|| format!("agent{n}@{}.example.com", acct.name)),
            role,
            privileges,
            created_at: now,
        };
        if acct
            .agents
            .iter()
            .any(|a| a.email.eq_ignore_ascii_case(&agent.email))
        {
            return Err(SimError::bad(format!(
                "an agent with email {} already exists in this account",
                agent.email
            )));
        }
        acct.agents.push(agent.clone());
        Ok(agent)
    }

    fn add_client(&self, acct: &mut Account, spec: &OAuthClientSpec) -> Result<usize, SimError> {
        let scopes = match &spec.scopes {
            Some(s) => {
                check_scopes(self.platform, s)?;
                s.iter().cloned().collect()
            }
            None => default_scopes(self.platform),
        };
        let identifier = spec
            .identifier
            .clone()
            .unwrap_or_else(|| self.secret("client_")[..20].to_owned());
        if self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clients
            .contains_key(&identifier)
        {
            return Err(SimError::bad(format!(
                "client_id {identifier:?} already exists; pick another identifier"
            )));
        }
        let (access_ttl, refresh_ttl, refresh) = match self.platform {
            // Intercom tokens do not expire and have no refresh tokens (platforms.md 3.1).
            Platform::Intercom => (None, None, false),
            _ => match spec.access_ttl_secs {
                Some(0) => (None, None, false),
                ttl => (
                    Some(ttl.unwrap_or(1800)),
                    Some(spec.refresh_ttl_secs.unwrap_or(30 * 86_400)),
                    true,
                ),
            },
        };
        let app = self.next_id();
        acct.clients.push(OAuthClient {
            identifier: identifier.clone(),
            secret: spec
                .secret
                .clone()
                .unwrap_or_else(|| self.secret("secret_")),
            access_ttl_secs: access_ttl,
            refresh_ttl_secs: refresh_ttl,
            refresh,
            scopes,
            app,
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| format!("{} app", acct.name)),
        });
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clients
            .insert(identifier, acct.id);
        Ok(acct.clients.len() - 1)
    }

    /// Issues an access credential (plus refresh token when the client has refresh) under
    /// client `ci`. `expires_in` / `refresh_expires_in` override the client's lifetimes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn issue_token(
        &self,
        acct: &mut Account,
        ci: usize,
        agent_id: u64,
        scopes: BTreeSet<String>,
        expires_in: Option<u64>,
        refresh_expires_in: Option<u64>,
        now: i64,
    ) -> u64 {
        let client = acct.clients[ci].clone();
        let kind = if self.platform == Platform::Intercom {
            CredKind::AppToken
        } else {
            CredKind::Oauth
        };
        let access_ttl = expires_in.or(client.access_ttl_secs);
        let refresh = (client.refresh || expires_in.is_some()).then(|| RefreshToken {
            token: self.secret("rt_"),
            expires_at: refresh_expires_in
                .or(client.refresh_ttl_secs)
                .map(|s| now + s as i64 * 1000),
            dead: false,
        });
        let refresh = if kind == CredKind::AppToken {
            None
        } else {
            refresh
        };
        let id = acct.creds.len() as u64 + 1;
        let cred = Credential {
            id,
            kind,
            agent_id,
            secret: self.secret(if kind == CredKind::AppToken {
                "dG9rOm"
            } else {
                "at_"
            }),
            scopes,
            revoked: false,
            revoked_reason: None,
            expires_at: access_ttl.map(|s| now + s as i64 * 1000),
            refresh,
            client: Some(client.identifier.clone()),
            app: client.app,
        };
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.secrets.insert(cred.secret.clone(), (acct.id, id));
        if let Some(r) = &cred.refresh {
            index.refresh.insert(r.token.clone(), (acct.id, id));
        }
        drop(index);
        acct.creds.push(cred);
        id
    }
}

fn default_scopes(platform: Platform) -> BTreeSet<String> {
    match platform {
        Platform::Zendesk => ["read", "write"].iter().map(|s| s.to_string()).collect(),
        Platform::Intercom => INTERCOM_PERMISSIONS.iter().map(|s| s.to_string()).collect(),
        Platform::Freshdesk => BTreeSet::new(),
    }
}

/// Finds or creates an Intercom tag by name.
pub(crate) fn intercom_tag(sim: &SimInner, acct: &mut Account, name: &str) -> u64 {
    if let Some(t) = acct.tags.iter().find(|t| t.name == name) {
        return t.id;
    }
    let id = sim.next_id();
    acct.tags.push(Tag {
        id,
        name: name.to_owned(),
    });
    id
}

fn account_info(a: &Account) -> AccountInfo {
    AccountInfo {
        id: a.id,
        name: a.name.clone(),
        plan: a.plan.to_owned(),
        high_volume: a.high_volume,
        limits: a.limits,
        overrides: a.overrides.clone(),
        features: a.features.iter().cloned().collect(),
        id_code: a.id_code.clone(),
        agents: a.agents.clone(),
        groups: a.groups.clone(),
        webhook: a.webhook.clone(),
    }
}

pub(crate) fn cred_info(platform: Platform, a: &Account, c: &Credential) -> CredentialInfo {
    let email = a
        .agent(c.agent_id)
        .map(|x| x.email.clone())
        .unwrap_or_default();
    let authorization = match c.kind {
        CredKind::ApiToken => basic(&format!("{email}/token"), &c.secret),
        CredKind::ApiKey => basic(&c.secret, "X"),
        CredKind::Oauth | CredKind::AppToken => format!("Bearer {}", c.secret),
    };
    let client = c
        .client
        .as_ref()
        .and_then(|id| a.clients.iter().find(|k| &k.identifier == id));
    let _ = platform;
    CredentialInfo {
        id: c.id,
        account_id: a.id,
        kind: c.kind,
        agent_id: c.agent_id,
        email,
        token: c.secret.clone(),
        refresh_token: c.refresh.as_ref().map(|r| r.token.clone()),
        authorization,
        scopes: c.scopes.iter().cloned().collect(),
        expires_at_ms: c.expires_at,
        refresh_expires_at_ms: c.refresh.as_ref().and_then(|r| r.expires_at),
        client_id: c.client.clone(),
        client_secret: client.map(|k| k.secret.clone()),
        revoked: c.revoked,
    }
}

fn client_info(c: &OAuthClient) -> OAuthClientInfo {
    OAuthClientInfo {
        client_id: c.identifier.clone(),
        client_secret: c.secret.clone(),
        access_ttl_secs: c.access_ttl_secs,
        refresh_ttl_secs: c.refresh_ttl_secs,
        refresh: c.refresh,
        scopes: c.scopes.iter().cloned().collect(),
    }
}

impl Sim {
    fn acct(&self, id: u64) -> Result<Arc<Mutex<Account>>, SimError> {
        self.inner.account(id).ok_or_else(|| {
            SimError::not_found(format!(
                "no account {id}; create one with POST /_sim/accounts"
            ))
        })
    }

    fn with<T>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Account) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let a = self.acct(id)?;
        let mut g = lock(&a);
        f(&mut g)
    }

    /// The platform this sim plays.
    pub fn platform(&self) -> Platform {
        self.inner.platform
    }
    /// The sim clock.
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }
    /// The platform API's base URL.
    pub fn base_url(&self) -> String {
        self.inner.base().to_owned()
    }

    /// Creates an account with the plan's limits and one group/team.
    pub fn create_account(&self, spec: AccountSpec) -> Result<AccountInfo, SimError> {
        let p = self.inner.platform;
        let plan = match &spec.plan {
            Some(pl) => limits::normalize_plan(p, pl).map_err(SimError::bad)?,
            None => limits::plans(p)[0],
        };
        let mut accounts = self
            .inner
            .accounts
            .write()
            .unwrap_or_else(|x| x.into_inner());
        let id = accounts.len() as u64 + 1;
        let name = spec.name.unwrap_or_else(|| format!("acme{id}"));
        let overrides = LimitOverrides::default();
        let acct = Account {
            id,
            plan,
            high_volume: spec.high_volume,
            limits: limits::resolve(p, plan, spec.high_volume, &overrides),
            overrides,
            features: limits::plan_features(p, plan)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            id_code: format!(
                "{}{:06}",
                name.chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(8)
                    .collect::<String>()
                    .to_ascii_lowercase(),
                id
            ),
            name,
            agents: Vec::new(),
            contacts: Vec::new(),
            groups: vec![Group {
                id: self.inner.next_id(),
                name: "Support".into(),
            }],
            tags: Vec::new(),
            creds: Vec::new(),
            clients: Vec::new(),
            codes: Vec::new(),
            tickets: Vec::new(),
            webhook: None,
            writes: Vec::new(),
            idempotency: Default::default(),
            rate: Default::default(),
            stats: Default::default(),
        };
        let info = account_info(&acct);
        accounts.push(Arc::new(Mutex::new(acct)));
        Ok(info)
    }

    /// One account.
    pub fn account_info(&self, id: u64) -> Result<AccountInfo, SimError> {
        self.with(id, |a| Ok(account_info(a)))
    }

    /// All accounts.
    pub fn accounts(&self) -> Vec<AccountInfo> {
        let all: Vec<_> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(|x| x.into_inner())
            .clone();
        all.iter().map(|a| account_info(&lock(a))).collect()
    }

    /// Changes the plan (limits and features follow; overrides stay).
    pub fn set_plan(&self, id: u64, spec: PlanSpec) -> Result<AccountInfo, SimError> {
        let p = self.inner.platform;
        let plan = limits::normalize_plan(p, &spec.plan).map_err(SimError::bad)?;
        self.with(id, |a| {
            a.plan = plan;
            a.high_volume = spec.high_volume;
            a.limits = limits::resolve(p, plan, a.high_volume, &a.overrides);
            a.features = limits::plan_features(p, plan)
                .iter()
                .map(|s| s.to_string())
                .collect();
            Ok(account_info(a))
        })
    }

    /// Sets limit overrides (replaces earlier overrides).
    pub fn set_limits(&self, id: u64, overrides: LimitOverrides) -> Result<AccountInfo, SimError> {
        let p = self.inner.platform;
        self.with(id, |a| {
            a.limits = limits::resolve(p, a.plan, a.high_volume, &overrides);
            a.overrides = overrides;
            a.rate = Default::default();
            Ok(account_info(a))
        })
    }

    /// Adds or removes plan features.
    pub fn set_features(&self, id: u64, patch: FeaturePatch) -> Result<AccountInfo, SimError> {
        self.with(id, |a| {
            for f in patch.add {
                a.features.insert(f);
            }
            for f in patch.remove {
                a.features.remove(&f);
            }
            Ok(account_info(a))
        })
    }

    /// Creates an agent.
    pub fn create_agent(&self, id: u64, spec: AgentSpec) -> Result<Agent, SimError> {
        let now = self.inner.clock.now_ms();
        self.with(id, |a| self.inner.add_agent(a, &spec, now))
    }

    /// Changes an agent's role or privileges.
    pub fn update_agent(
        &self,
        id: u64,
        agent_id: u64,
        patch: AgentPatch,
    ) -> Result<Agent, SimError> {
        let p = self.inner.platform;
        self.with(id, |a| {
            let known = known_privileges(p);
            for pr in patch.add_privileges.iter().chain(&patch.remove_privileges) {
                if !known.contains(&pr.as_str()) {
                    return Err(SimError::bad(format!(
                        "unknown {p} privilege {pr:?}; use one of {known:?}"
                    )));
                }
            }
            let role_privs = match &patch.role {
                Some(r) => Some(role_privileges(p, r)?),
                None => None,
            };
            let agent = a
                .agents
                .iter_mut()
                .find(|x| x.id == agent_id)
                .ok_or_else(|| {
                    SimError::not_found(format!("no agent {agent_id} in account {id}"))
                })?;
            if let (Some(r), Some(privs)) = (&patch.role, role_privs) {
                agent.role = r.clone();
                agent.privileges = privs;
            }
            for pr in patch.add_privileges {
                agent.privileges.insert(pr);
            }
            for pr in &patch.remove_privileges {
                agent.privileges.remove(pr);
            }
            Ok(agent.clone())
        })
    }

    /// Creates a customer.
    pub fn create_contact(&self, id: u64, spec: ContactSpec) -> Result<Contact, SimError> {
        let now = self.inner.clock.now_ms();
        let platform = self.inner.platform;
        self.with(id, |a| {
            let role = spec.role.clone().unwrap_or_else(|| {
                if platform == Platform::Intercom {
                    "user"
                } else {
                    "end-user"
                }
                .into()
            });
            if platform == Platform::Intercom && role != "user" && role != "lead" {
                return Err(SimError::bad(format!(
                    "contact role {role:?} must be user or lead"
                )));
            }
            let c = Contact {
                id: self.inner.next_id(),
                name: spec.name.clone(),
                email: spec.email.clone(),
                role,
                created_at: now,
                deleted: false,
                external_id: None,
            };
            a.contacts.push(c.clone());
            Ok(c)
        })
    }

    /// Creates a group (Zendesk, Freshdesk) or team (Intercom).
    pub fn create_group(&self, id: u64, spec: GroupSpec) -> Result<Group, SimError> {
        self.with(id, |a| {
            let g = Group {
                id: self.inner.next_id(),
                name: spec
                    .name
                    .unwrap_or_else(|| format!("Group {}", a.groups.len() + 1)),
            };
            a.groups.push(g.clone());
            Ok(g)
        })
    }

    /// Creates an OAuth client (Zendesk) or app (Intercom).
    pub fn create_oauth_client(
        &self,
        id: u64,
        spec: OAuthClientSpec,
    ) -> Result<OAuthClientInfo, SimError> {
        if self.inner.platform == Platform::Freshdesk {
            return Err(SimError::bad(
                "Freshdesk has no OAuth for its REST API (platforms.md 2.1); use an api_key credential",
            ));
        }
        self.with(id, |a| {
            let ci = self.inner.add_client(a, &spec)?;
            Ok(client_info(&a.clients[ci]))
        })
    }

    /// Mints an authorization code (the consent screen, skipped).
    pub fn create_auth_code(&self, id: u64, spec: AuthCodeSpec) -> Result<AuthCodeInfo, SimError> {
        let now = self.inner.clock.now_ms();
        self.with(id, |a| {
            let client = a
                .clients
                .iter()
                .find(|c| c.identifier == spec.client_id)
                .ok_or_else(|| {
                    SimError::not_found(format!(
                        "no OAuth client {:?} in account {id}",
                        spec.client_id
                    ))
                })?
                .clone();
            let agent_id = match spec.agent_id {
                Some(x) => x,
                None => first_admin(a)?,
            };
            let scopes = match &spec.scopes {
                Some(s) => {
                    check_scopes(self.inner.platform, s)?;
                    s.iter().cloned().collect()
                }
                None => client.scopes.clone(),
            };
            let code = self.inner.secret("code_");
            // Authorization codes live 10 minutes (the usual OAuth figure; UNCONFIRMED for both platforms).
            let expires_at = now + 600_000;
            a.codes.push(AuthCode {
                code: code.clone(),
                client: client.identifier,
                agent_id,
                scopes,
                used: false,
                expires_at,
            });
            self.inner
                .index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .codes
                .insert(code.clone(), id);
            Ok(AuthCodeInfo {
                code,
                expires_at_ms: expires_at,
            })
        })
    }

    /// Creates a credential.
    pub fn create_credential(
        &self,
        id: u64,
        spec: CredentialSpec,
    ) -> Result<CredentialInfo, SimError> {
        let p = self.inner.platform;
        let now = self.inner.clock.now_ms();
        let kind = spec.kind.unwrap_or(match p {
            Platform::Zendesk => CredKind::ApiToken,
            Platform::Freshdesk => CredKind::ApiKey,
            Platform::Intercom => CredKind::AppToken,
        });
        let allowed = match p {
            Platform::Zendesk => matches!(kind, CredKind::ApiToken | CredKind::Oauth),
            Platform::Freshdesk => kind == CredKind::ApiKey,
            Platform::Intercom => kind == CredKind::AppToken,
        };
        if !allowed {
            let hint = match p {
                Platform::Zendesk => "api_token or oauth",
                Platform::Freshdesk => "api_key",
                Platform::Intercom => "app_token",
            };
            return Err(SimError::bad(format!(
                "{p} has no {kind:?} credentials; use kind {hint}"
            )));
        }
        self.with(id, |a| {
            let agent_id = match spec.agent_id {
                Some(x) if a.agent(x).is_some() => x,
                Some(x) => return Err(SimError::not_found(format!("no agent {x} in account {id}; create one first"))),
                None => first_admin(a)?,
            };
            if let Some(t) = &spec.token
                && self.inner.index.read().unwrap_or_else(|p| p.into_inner()).secrets.contains_key(t) {
                    return Err(SimError::bad("that token is already in use; pick another or omit it"));
                }
            let cid = match kind {
                CredKind::ApiToken | CredKind::ApiKey => {
                    if spec.scopes.is_some() {
                        return Err(SimError::bad(
                            "API tokens and keys have no scopes (they carry the agent's role); drop `scopes` or change the agent's privileges",
                        ));
                    }
                    let cid = a.creds.len() as u64 + 1;
                    let secret = spec.token.clone().unwrap_or_else(|| self.inner.secret(""));
                    self.inner.index.write().unwrap_or_else(|p| p.into_inner()).secrets.insert(secret.clone(), (id, cid));
                    a.creds.push(Credential {
                        id: cid,
                        kind,
                        agent_id,
                        secret,
                        scopes: BTreeSet::new(),
                        revoked: false,
                        revoked_reason: None,
                        expires_at: None,
                        refresh: None,
                        client: None,
                        app: 0,
                    });
                    cid
                }
                CredKind::Oauth | CredKind::AppToken => {
                    let ci = match &spec.client_id {
                        Some(cid) => a
                            .clients
                            .iter()
                            .position(|c| &c.identifier == cid)
                            .ok_or_else(|| SimError::not_found(format!("no OAuth client {cid:?} in account {id}")))?,
                        None => self.inner.add_client(
                            a,
                            &OAuthClientSpec {
                                access_ttl_secs: spec.access_ttl_secs,
                                refresh_ttl_secs: spec.refresh_ttl_secs,
                                scopes: spec.scopes.clone(),
                                ..Default::default()
                            },
                        )?,
                    };
                    let scopes = match &spec.scopes {
                        Some(s) => {
                            check_scopes(p, s)?;
                            s.iter().cloned().collect()
                        }
                        None => a.clients[ci].scopes.clone(),
                    };
                    let (exp, rexp) = match (spec.client_id.is_some(), spec.access_ttl_secs) {
                        (true, Some(0)) => (None, None),
                        (true, ttl) => (ttl, spec.refresh_ttl_secs),
                        (false, _) => (None, None),
                    };
                    let cid = self.inner.issue_token(a, ci, agent_id, scopes, exp, rexp, now);
                    if let Some(t) = &spec.token {
                        let old = std::mem::replace(&mut a.creds[cid as usize - 1].secret, t.clone());
                        let mut idx = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
                        idx.secrets.remove(&old);
                        idx.secrets.insert(t.clone(), (id, cid));
                    }
                    cid
                }
            };
            Ok(cred_info(p, a, &a.creds[cid as usize - 1]))
        })
    }

    fn with_cred<T>(
        &self,
        id: u64,
        cred: u64,
        f: impl FnOnce(&SimInner, &mut Account, usize) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        self.with(id, |a| {
            let i = usize::try_from(cred)
                .ok()
                .and_then(|c| c.checked_sub(1))
                .filter(|i| *i < a.creds.len())
                .ok_or_else(|| {
                    SimError::not_found(format!("no credential {cred} in account {id}"))
                })?;
            f(&self.inner, a, i)
        })
    }

    /// A credential's current state.
    pub fn credential(&self, id: u64, cred: u64) -> Result<CredentialInfo, SimError> {
        let p = self.inner.platform;
        self.with_cred(id, cred, |_, a, i| Ok(cred_info(p, a, &a.creds[i])))
    }

    /// Revokes a credential (and its refresh token).
    pub fn revoke_credential(&self, id: u64, cred: u64) -> Result<CredentialInfo, SimError> {
        let p = self.inner.platform;
        self.with_cred(id, cred, |_, a, i| {
            let c = &mut a.creds[i];
            c.revoked = true;
            c.revoked_reason = Some("revoked");
            if let Some(r) = &mut c.refresh {
                r.dead = true;
            }
            Ok(cred_info(p, a, &a.creds[i]))
        })
    }

    /// Rotates a credential's secret: the old one stops working at once.
    pub fn rotate_credential(&self, id: u64, cred: u64) -> Result<CredentialInfo, SimError> {
        let p = self.inner.platform;
        self.with_cred(id, cred, |inner, a, i| {
            let fresh = inner.secret(match a.creds[i].kind {
                CredKind::Oauth => "at_",
                CredKind::AppToken => "dG9rOm",
                _ => "",
            });
            let old = std::mem::replace(&mut a.creds[i].secret, fresh.clone());
            let mut idx = inner.index.write().unwrap_or_else(|p| p.into_inner());
            idx.secrets.remove(&old);
            idx.secrets.insert(fresh, (id, cred));
            drop(idx);
            Ok(cred_info(p, a, &a.creds[i]))
        })
    }

    /// Expires a credential now (OAuth access tokens; Intercom tokens answer `token_expired`).
    pub fn expire_credential(&self, id: u64, cred: u64) -> Result<CredentialInfo, SimError> {
        let p = self.inner.platform;
        let now = self.inner.clock.now_ms();
        self.with_cred(id, cred, |_, a, i| {
            if matches!(a.creds[i].kind, CredKind::ApiToken | CredKind::ApiKey) {
                return Err(SimError::bad(
                    "API tokens and keys never expire; revoke or rotate them instead",
                ));
            }
            a.creds[i].expires_at = Some(now);
            Ok(cred_info(p, a, &a.creds[i]))
        })
    }

    /// Adds or removes scopes / app permissions on a credential.
    pub fn update_scopes(
        &self,
        id: u64,
        cred: u64,
        patch: ScopePatch,
    ) -> Result<CredentialInfo, SimError> {
        let p = self.inner.platform;
        check_scopes(p, &patch.add)?;
        self.with_cred(id, cred, |_, a, i| {
            if matches!(a.creds[i].kind, CredKind::ApiToken | CredKind::ApiKey) {
                return Err(SimError::bad(
                    "API tokens and keys have no scopes; remove a privilege from the agent instead (PATCH /_sim/accounts/{id}/agents/{agent_id})",
                ));
            }
            let c = &mut a.creds[i];
            for s in patch.add {
                c.scopes.insert(s);
            }
            for s in &patch.remove {
                c.scopes.remove(s);
            }
            Ok(cred_info(p, a, &a.creds[i]))
        })
    }

    /// Expires every expiring access token of an account now; returns how many.
    pub fn expire_tokens(&self, id: u64) -> Result<usize, SimError> {
        let now = self.inner.clock.now_ms();
        self.with(id, |a| {
            let mut n = 0;
            for c in a
                .creds
                .iter_mut()
                .filter(|c| matches!(c.kind, CredKind::Oauth | CredKind::AppToken) && !c.revoked)
            {
                c.expires_at = Some(now);
                n += 1;
            }
            Ok(n)
        })
    }

    /// Creates a ticket as if a customer wrote in (fires the created webhook).
    pub fn create_ticket(&self, id: u64, spec: TicketSpec) -> Result<Value, SimError> {
        let now = self.inner.clock.now_ms();
        let out = self.with(id, |a| {
            let idx = self
                .inner
                .new_ticket(a, &spec, now, None, "web")
                .map_err(SimError::bad)?;
            let hooks = self
                .inner
                .commit(a, idx, &[Change::Created], None, None, now);
            Ok((self.render(a, idx), hooks))
        })?;
        self.inner.hooks.enqueue(&self.inner, out.1);
        Ok(out.0)
    }

    /// Adds a customer comment (may reopen the ticket; fires webhooks).
    pub fn add_customer_comment(
        &self,
        id: u64,
        ticket: u64,
        spec: CommentSpec,
    ) -> Result<Value, SimError> {
        let now = self.inner.clock.now_ms();
        let out = self.with(id, |a| {
            let idx = a.ticket_idx(ticket).ok_or_else(|| {
                SimError::not_found(format!("no ticket {ticket} in account {id}"))
            })?;
            let author = spec.author_id.unwrap_or(a.tickets[idx].requester_id);
            let changes = self
                .inner
                .customer_comment(a, idx, author, &spec.body, now)
                .map_err(SimError::bad)?;
            let hooks = self.inner.commit(a, idx, &changes, None, Some(author), now);
            Ok((self.render(a, idx), hooks))
        })?;
        self.inner.hooks.enqueue(&self.inner, out.1);
        Ok(out.0)
    }

    fn render(&self, a: &Account, idx: usize) -> Value {
        match self.inner.platform {
            Platform::Zendesk => crate::zendesk::ticket_json(self.inner.base(), &a.tickets[idx]),
            Platform::Freshdesk => crate::freshdesk::ticket_json(&a.tickets[idx]),
            Platform::Intercom => crate::intercom::conversation_json(a, &a.tickets[idx], true),
        }
    }

    /// A ticket as the platform's API renders it.
    pub fn ticket(&self, id: u64, ticket: u64) -> Result<Value, SimError> {
        self.with(id, |a| {
            let idx = a.ticket_idx(ticket).ok_or_else(|| {
                SimError::not_found(format!("no ticket {ticket} in account {id}"))
            })?;
            Ok(self.render(a, idx))
        })
    }

    /// Sets (or with `None` clears) the account's webhook target.
    pub fn set_webhook(&self, id: u64, target: Option<WebhookTarget>) -> Result<(), SimError> {
        if let Some(t) = &target {
            let uri: hyper::Uri = t
                .url
                .parse()
                .map_err(|e| SimError::bad(format!("webhook url {:?} is not a URL: {e}", t.url)))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(SimError::bad(format!(
                    "webhook url {:?} must be http://host:port/path (the sim delivers over plain HTTP)",
                    t.url
                )));
            }
        }
        let platform = self.inner.platform;
        self.with(id, |a| {
            let target = match target {
                Some(mut t) if t.secret.is_empty() => {
                    t.secret = match (platform, a.clients.first()) {
                        (Platform::Intercom, Some(app)) => app.secret.clone(),
                        _ => {
                            return Err(SimError::bad(
                                "webhook secret is empty; send {\"url\": ..., \"secret\": \"...\"} (Intercom may omit it once the account has an app: its client secret is used)",
                            ));
                        }
                    };
                    Some(t)
                }
                other => other,
            };
            a.webhook = target;
            Ok(())
        })
    }

    /// Replaces the fault plan (and restarts the seeded streams).
    pub fn set_faults(&self, cfg: FaultConfig) -> Result<(), SimError> {
        self.inner.faults.set(cfg)
    }

    /// The current fault plan.
    pub fn faults(&self) -> FaultConfig {
        self.inner.faults.get()
    }

    /// Request-log entries.
    pub fn requests(&self, filter: RequestFilter) -> Vec<RequestRecord> {
        let log = lock(&self.inner.requests);
        log.records
            .iter()
            .filter(|r| filter.account_id.is_none_or(|a| r.account_id == Some(a)))
            .filter(|r| filter.since_seq.is_none_or(|s| r.seq > s))
            .cloned()
            .collect()
    }

    /// Clears the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.requests).records.clear();
    }

    /// An account's write log, optionally for one ticket.
    pub fn writes(&self, id: u64, ticket: Option<u64>) -> Result<Vec<WriteRecord>, SimError> {
        self.with(id, |a| {
            Ok(a.writes
                .iter()
                .filter(|w| ticket.is_none_or(|t| w.ticket_id == t))
                .cloned()
                .collect())
        })
    }

    /// An account's counters (requests, 429s served).
    pub fn stats(&self, id: u64) -> Result<AccountStats, SimError> {
        self.with(id, |a| Ok(a.stats.clone()))
    }

    /// Total 429s served across all accounts.
    pub fn rate_limited_total(&self) -> u64 {
        let all: Vec<_> = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(|x| x.into_inner())
            .clone();
        all.iter().map(|a| lock(a).stats.rate_limited).sum()
    }

    /// Every webhook delivery attempt so far (and drops).
    pub fn webhook_deliveries(&self) -> Vec<DeliveryRecord> {
        self.inner.hooks.deliveries()
    }

    /// Webhooks queued or held, not yet finished.
    pub fn webhooks_pending(&self) -> usize {
        self.inner.hooks.pending()
    }

    /// Creates the ready-made demo world: one account with an admin, a customer, the
    /// platform's usual credentials and three tickets.
    pub fn seed_demo(&self) -> Result<DemoSeed, SimError> {
        let p = self.inner.platform;
        let account = self.create_account(AccountSpec {
            name: Some("acme".into()),
            ..Default::default()
        })?;
        let id = account.id;
        let admin = self.create_agent(
            id,
            AgentSpec {
                name: Some("Ada Admin".into()),
                email: Some("admin@acme.example.com".into()),
                role: Some("admin".into()),
            },
        )?;
        let role = match p {
            Platform::Intercom => "admin",
            _ => "agent",
        };
        self.create_agent(
            id,
            AgentSpec {
                name: Some("Alan Agent".into()),
                email: Some("agent@acme.example.com".into()),
                role: Some(role.into()),
            },
        )?;
        let customer = self.create_contact(
            id,
            ContactSpec {
                name: Some("Casey Customer".into()),
                email: Some("casey@customer.example.com".into()),
                role: None,
            },
        )?;
        let mut credentials = vec![self.create_credential(id, CredentialSpec::default())?];
        if p == Platform::Zendesk {
            credentials.push(self.create_credential(
                id,
                CredentialSpec {
                    kind: Some(CredKind::Oauth),
                    ..Default::default()
                },
            )?);
        }
        let statuses: [Value; 3] = match p {
            Platform::Zendesk => ["new".into(), "open".into(), "pending".into()],
            Platform::Freshdesk => [2.into(), 2.into(), 3.into()],
            Platform::Intercom => ["open".into(), "open".into(), "closed".into()],
        };
        let subjects = ["Cannot log in", "Refund request", "Shipping address change"];
        let mut ticket_ids = Vec::new();
        for (s, st) in subjects.iter().zip(statuses) {
            let t = self.create_ticket(
                id,
                TicketSpec {
                    subject: Some((*s).into()),
                    body: Some(format!("{s}: please help.")),
                    requester_id: Some(customer.id),
                    status: Some(st),
                    kind: (p != Platform::Intercom).then(|| "question".into()),
                    priority: Some(match p {
                        Platform::Zendesk => "normal".into(),
                        Platform::Freshdesk => 2.into(),
                        Platform::Intercom => "none".into(),
                    }),
                    tags: vec!["demo".into()],
                    ..Default::default()
                },
            )?;
            let tid = t["id"]
                .as_u64()
                .or_else(|| t["id"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_default();
            ticket_ids.push(tid);
        }
        Ok(DemoSeed {
            account: self.account_info(id)?,
            admin,
            customer,
            credentials,
            ticket_ids,
        })
    }
}

fn first_admin(a: &Account) -> Result<u64, SimError> {
    a.agents
        .iter()
        .find(|x| matches!(x.role.as_str(), "admin" | "account_admin"))
        .or_else(|| a.agents.first())
        .map(|x| x.id)
        .ok_or_else(|| {
            SimError::bad(format!(
                "account {} has no agents yet; create one with POST /_sim/accounts/{}/agents",
                a.id, a.id
            ))
        })
}
