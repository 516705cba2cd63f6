//! Rate limits: the published per-plan numbers for each platform, per-account overrides for
//! tests, and the fixed-window counters that enforce them.
//!
//! Why fixed windows that open on the first request (rather than windows aligned to the wall
//! minute)? The platforms report a reset countdown (`ratelimit-reset`, `X-RateLimit-Reset`,
//! `Retry-After`) that fits a fixed window, and a window that opens on first use means a test
//! that sends 201 requests in a burst never straddles a boundary by accident.
//!
//! Every bucket is per *account* (Zendesk account, Freshdesk account, Intercom workspace and
//! app), so all credentials of an account draw from the same counters, as on the platforms.

use serde::{Deserialize, Serialize};

use crate::Platform;

/// One fixed window counter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    start_ms: i64,
    used: u32,
    open: bool,
}

impl Window {
    /// Starts a new window if the current one has run out.
    pub fn roll(&mut self, now: i64, window_ms: i64) {
        if !self.open || now >= self.start_ms + window_ms || now < self.start_ms {
            self.start_ms = now;
            self.used = 0;
            self.open = true;
        }
    }
    /// Whether `cost` more fits under `limit` (call [`Window::roll`] first).
    pub fn fits(&self, limit: u32, cost: u32) -> bool {
        self.used.saturating_add(cost) <= limit
    }
    /// Counts `cost` requests.
    pub fn take(&mut self, cost: u32) {
        self.used = self.used.saturating_add(cost);
    }
    /// Requests left under `limit`.
    pub fn remaining(&self, limit: u32) -> u32 {
        limit.saturating_sub(self.used)
    }
    /// Unix ms at which the window resets.
    pub fn reset_ms(&self, window_ms: i64) -> i64 {
        self.start_ms + window_ms
    }
}

/// Per-account overrides of the plan's limits (all optional; `null`/absent keeps the plan's
/// number). Set with `PUT /_sim/accounts/{id}/limits` or [`crate::Sim::set_limits`].
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Zendesk / Freshdesk: account-wide requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    /// Zendesk: account-wide Update Ticket requests per minute (100; 300 with High Volume).
    /// Freshdesk: the Ticket Update cap per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_update_per_minute: Option<u32>,
    /// Zendesk: updates one user may make to one ticket per window (30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_ticket_updates: Option<u32>,
    /// Zendesk: that window in seconds (600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_ticket_window_secs: Option<u32>,
    /// Zendesk: incremental export requests per minute (10; 30 with High Volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_export_per_minute: Option<u32>,
    /// Freshdesk: Ticket Create cap per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_create_per_minute: Option<u32>,
    /// Freshdesk: Tickets List cap per minute (list and search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tickets_list_per_minute: Option<u32>,
    /// Intercom: requests per minute per app (10,000), enforced as a sixth per 10 s window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_per_minute: Option<u32>,
    /// Intercom: requests per minute per workspace (25,000), a sixth per 10 s window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_per_minute: Option<u32>,
}

/// The limits in force for an account: plan numbers with overrides applied.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Limits {
    /// Account-wide per minute (Zendesk, Freshdesk).
    pub per_minute: u32,
    /// Zendesk Update Ticket per minute / Freshdesk Ticket Update cap.
    pub ticket_update_per_minute: u32,
    /// Zendesk per-user-per-ticket updates per window.
    pub single_ticket_updates: u32,
    /// That window, seconds.
    pub single_ticket_window_secs: u32,
    /// Zendesk incremental exports per minute.
    pub incremental_export_per_minute: u32,
    /// Freshdesk Ticket Create cap.
    pub ticket_create_per_minute: u32,
    /// Freshdesk Tickets List cap.
    pub tickets_list_per_minute: u32,
    /// Intercom per app per minute.
    pub app_per_minute: u32,
    /// Intercom per workspace per minute.
    pub workspace_per_minute: u32,
}

/// Plan names each platform accepts (first is the default).
pub fn plans(platform: Platform) -> &'static [&'static str] {
    match platform {
        // Suite and Support plans with the same numbers share a name; `suite_`/`support_`
        // prefixes are accepted and ignored.
        Platform::Zendesk => &[
            "professional",
            "essential",
            "team",
            "growth",
            "enterprise",
            "enterprise_plus",
        ],
        Platform::Freshdesk => &["pro", "free", "growth", "enterprise", "trial"],
        // Intercom's REST limits do not depend on the plan (platforms.md 3.3).
        Platform::Intercom => &["advanced", "essential", "expert"],
    }
}

/// Normalizes a plan name, or says which names are accepted.
pub fn normalize_plan(platform: Platform, plan: &str) -> Result<&'static str, String> {
    let p = plan.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    let p = p
        .strip_prefix("suite_")
        .or_else(|| p.strip_prefix("support_"))
        .unwrap_or(&p);
    plans(platform)
        .iter()
        .find(|n| **n == p)
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown {platform} plan {plan:?}; use one of {:?}",
                plans(platform)
            )
        })
}

/// Plan features (what a plan 403 checks). `api` gates the whole REST API.
pub fn plan_features(platform: Platform, plan: &str) -> &'static [&'static str] {
    match (platform, plan) {
        // Freshdesk Free has 0 API calls per minute (platforms.md 2.3): modelled as no API feature.
        (Platform::Freshdesk, "free") => &[],
        (Platform::Zendesk, _) => &["api", "incremental_export"],
        _ => &["api"],
    }
}

/// Resolves the limits for a plan plus overrides.
pub fn resolve(platform: Platform, plan: &str, high_volume: bool, o: &LimitOverrides) -> Limits {
    let (per_minute, update, create, list) = match platform {
        Platform::Zendesk => {
            let pm = match plan {
                "essential" => 10,
                "team" => 200,
                "growth" | "professional" => 400,
                "enterprise" => 700,
                _ => 2500, // enterprise_plus
            };
            // The High Volume add-on raises the limit to 2500 (it does not add 2500).
            let pm = if high_volume { pm.max(2500) } else { pm };
            (pm, if high_volume { 300 } else { 100 }, 0, 0)
        }
        Platform::Freshdesk => match plan {
            "free" => (0, 0, 0, 0),
            "growth" => (200, 80, 80, 20),
            "enterprise" => (700, 280, 280, 200),
            // Trial: only the overall number is published; the caps follow it.
            "trial" => (50, 50, 50, 50),
            _ => (400, 160, 160, 100), // pro
        },
        Platform::Intercom => (0, 0, 0, 0),
    };
    Limits {
        per_minute: o.per_minute.unwrap_or(per_minute),
        ticket_update_per_minute: o.ticket_update_per_minute.unwrap_or(update),
        single_ticket_updates: o.single_ticket_updates.unwrap_or(30),
        single_ticket_window_secs: o.single_ticket_window_secs.unwrap_or(600),
        incremental_export_per_minute: o.incremental_export_per_minute.unwrap_or(if high_volume {
            30
        } else {
            10
        }),
        ticket_create_per_minute: o.ticket_create_per_minute.unwrap_or(create),
        tickets_list_per_minute: o.tickets_list_per_minute.unwrap_or(list),
        app_per_minute: o.app_per_minute.unwrap_or(10_000),
        workspace_per_minute: o.workspace_per_minute.unwrap_or(25_000),
    }
}

/// Intercom spreads a per-minute limit evenly over six 10-second windows (rounded down, at
/// least 1): "1000/min becomes about 166 per 10 s".
pub fn per_ten_seconds(per_minute: u32) -> u32 {
    (per_minute / 6).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_reset() {
        let mut w = Window::default();
        w.roll(1000, 60_000);
        assert!(w.fits(2, 1));
        w.take(1);
        w.take(1);
        assert!(!w.fits(2, 1));
        assert_eq!(w.reset_ms(60_000), 61_000);
        w.roll(61_000, 60_000);
        assert!(w.fits(2, 1));
    }

    #[test]
    fn plan_names() {
        assert_eq!(
            normalize_plan(Platform::Zendesk, "Suite Enterprise"),
            Ok("enterprise")
        );
        assert!(
            normalize_plan(Platform::Freshdesk, "gold")
                .unwrap_err()
                .contains("pro")
        );
        let l = resolve(Platform::Zendesk, "team", true, &LimitOverrides::default());
        assert_eq!(
            (
                l.per_minute,
                l.ticket_update_per_minute,
                l.incremental_export_per_minute
            ),
            (2500, 300, 30)
        );
    }
}
