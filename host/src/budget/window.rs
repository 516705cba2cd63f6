//! One fixed-window counter, the unit of state of the budget algorithm.
//!
//! This file is the part a Redis script mirrors for budgets shared across replicas (issue #9):
//! seven integers per counter and four operations ([`Window::roll`], [`Window::room`],
//! [`Window::take`], [`Window::observe`]), all integer arithmetic, no allocation, no clock of its
//! own. The module doc of [`crate::budget`] states the algorithm in prose.

use crate::bindings::Lane;
use crate::clock::Millis;

/// "No time": a window that never opened, a penalty never set.
pub(crate) const NEVER: Millis = Millis::MIN;

/// A fixed-window counter for one bucket (or one key of a per-object bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// When the current window opened.
    pub(crate) start: Millis,
    /// When it closes (`start + len`); at or after it the counts are stale.
    pub(crate) end: Millis,
    /// Units our read lane spent in this window.
    pub(crate) read: u64,
    /// Units our write lane spent in this window.
    pub(crate) write: u64,
    /// Units the platform counted in this window beyond ours: the account's other clients.
    pub(crate) others: u64,
    /// Whether the window's phase came from the platform (a reset reading) rather than from our
    /// first draw; anchored windows roll on the platform's boundaries.
    pub(crate) anchored: bool,
    /// Blocked until then after a 429 on this key ([`NEVER`]: not blocked).
    pub(crate) penalty: Millis,
}

impl Default for Window {
    fn default() -> Self {
        Self { start: NEVER, end: NEVER, read: 0, write: 0, others: 0, anchored: false, penalty: NEVER }
    }
}

impl Window {
    /// Whether the platform reports others spending in this window: more than half the reserve.
    /// Less is what a reading taken while our own requests cross the window's boundary shows
    /// (Intercom's 10-second windows with sixteen reads in flight: the flood's share fell from
    /// 97.5% to 83.6% of the target when any count turned the release off); another client that
    /// spends so little cannot take the platform past its limit with us at our target.
    pub(crate) fn others_spend(&self, reserve: u64) -> bool {
        self.others.saturating_mul(2) > reserve
    }

    /// Whether a window is open at `now`.
    pub(crate) fn is_open(&self, now: Millis) -> bool {
        now < self.end
    }

    /// Our own spend in the window.
    pub(crate) fn ours(&self) -> u64 {
        self.read.saturating_add(self.write)
    }

    /// Ours plus the others' spend: what the platform's counter should read.
    pub(crate) fn spent(&self) -> u64 {
        self.ours().saturating_add(self.others)
    }

    /// Whether the counter carries nothing a fresh one would not: window over and no penalty.
    pub(crate) fn idle(&self, now: Millis) -> bool {
        !self.is_open(now) && now >= self.penalty
    }

    /// Open the window that contains `now` if the current one is over. An anchored window keeps
    /// the platform's phase (the next boundary is a whole number of windows after the last); an
    /// unanchored one opens at `now`, on the first draw, as a counter with a TTL does.
    pub(crate) fn roll(&mut self, now: Millis, len: Millis) {
        if self.is_open(now) {
            return;
        }
        self.start = if self.anchored && self.end != NEVER {
            let skipped = now.saturating_sub(self.end) / len;
            self.end.saturating_add(skipped.saturating_mul(len))
        } else {
            now
        };
        self.end = self.start.saturating_add(len);
        self.read = 0;
        self.write = 0;
        self.others = 0;
    }

    /// The part of the write reserve still kept from reads at `now`: on a window aligned to the
    /// platform's, the reserve for the rest of the window, `ceil(reserve · (end − now) / len)`;
    /// the whole reserve when the window opens, released to reads in proportion to elapsed time,
    /// at least one unit until the window ends (while there is a reserve). A write rate within the
    /// reserve always finds room, and a reserve the writes did not need is spent by reads before
    /// the window closes instead of lapsing with it.
    ///
    /// On a window whose phase is our own guess (no reset reading yet) the whole reserve is kept:
    /// there the platform's `remaining` readings fold our previous window's tail into `others`
    /// and our own count outlives the platform's, so the spend we see can jump after the reads
    /// took the released part, and the writes would be left with nothing until our window ends
    /// (measured: `bench/src/bin/write_path.rs`, Zendesk single-ticket reads, write p99 2.9 s).
    ///
    /// Nor is anything released while the platform reports other clients spending in the window
    /// (more than half the reserve, see [`Window::others_spend`]): their pace is unknown, and the
    /// held reserve is the margin that keeps their next burst from becoming our 429 (the demo's
    /// 429 storms met write-lane 429s with the release).
    pub(crate) fn kept(&self, reserve: u64, now: Millis, len: Millis) -> u64 {
        if reserve == 0 || len <= 0 || !self.anchored || self.others_spend(reserve) {
            return reserve;
        }
        let left = self.end.saturating_sub(now).clamp(0, len) as u64;
        reserve.saturating_mul(left).div_ceil(len as u64)
    }

    /// Units `lane` may still draw in the window (roll first) at `now`, with `target` per window,
    /// `reserve` of it kept for writes and windows `len` long. Writes may spend up to the target.
    /// Reads may spend what is left once the writes' share is set aside:
    /// `target − (read + others + max(write, min(reserve, write + kept)))`, with `kept` from
    /// [`Window::kept`]. So writes spend their reserve before they narrow the reads' share; the
    /// reserve the writes have not used is released to reads as the window runs out, while the
    /// writes keep room for the rest of it; and others' spend (which we cannot steer) narrows the
    /// reads' share first, never the writes'.
    pub(crate) fn room(&self, lane: Lane, target: u64, reserve: u64, now: Millis, len: Millis) -> u64 {
        let held = match lane {
            Lane::Write => self.spent(),
            Lane::Read => {
                let writes = self.write.max(reserve.min(self.write.saturating_add(self.kept(reserve, now, len))));
                self.read.saturating_add(self.others).saturating_add(writes)
            }
        };
        target.saturating_sub(held)
    }

    /// Whether `cost` more fits for `lane` at `now` (see [`Window::room`]).
    pub(crate) fn fits(&self, lane: Lane, cost: u64, target: u64, reserve: u64, now: Millis, len: Millis) -> bool {
        cost <= self.room(lane, target, reserve, now, len)
    }

    /// The earliest time in this window at which `cost` more fits for `lane`, or the window's
    /// end if only a new window can hold it. Only reads on an aligned window can fit later in the
    /// same window: the kept reserve shrinks with time. A read needs `write + kept ≤ target − read − others − cost`,
    /// and `kept(t) ≤ k` holds from `t = end − ⌊k · len / reserve⌋` on.
    pub(crate) fn fits_at(&self, lane: Lane, cost: u64, target: u64, reserve: u64, now: Millis, len: Millis) -> Millis {
        if self.fits(lane, cost, target, reserve, now, len) {
            return now;
        }
        let free = target.saturating_sub(self.read.saturating_add(self.others).saturating_add(cost));
        if lane == Lane::Write || reserve == 0 || len <= 0 || !self.anchored || self.others_spend(reserve) || free <= self.write {
            return self.end;
        }
        let k = free - self.write;
        let back = k.saturating_mul(len as u64) / reserve;
        self.end.saturating_sub(Millis::try_from(back).unwrap_or(Millis::MAX)).max(now)
    }

    /// Count `cost` units for `lane` (roll first).
    pub(crate) fn take(&mut self, lane: Lane, cost: u64) {
        match lane {
            Lane::Read => self.read = self.read.saturating_add(cost),
            Lane::Write => self.write = self.write.saturating_add(cost),
        }
    }

    /// Give back units that were never sent, if the window they were drawn in is still current.
    pub(crate) fn give_back(&mut self, lane: Lane, cost: u64, drawn_in: Millis, now: Millis) {
        if self.start != drawn_in || !self.is_open(now) {
            return;
        }
        match lane {
            Lane::Read => self.read = self.read.saturating_sub(cost),
            Lane::Write => self.write = self.write.saturating_sub(cost),
        }
    }

    /// Apply a reading from the platform: `remaining` of `limit` left in its window, which resets
    /// at `reset` (absolute). `sent_in` is the start of the window the request whose response
    /// carried the reading was counted in, when known.
    ///
    /// - A reset at or before `now` describes a window the platform has closed: nothing to learn.
    /// - A reset in the future re-anchors the window to `[reset - len, reset)` (a reset more than
    ///   one window away is clamped to one window: clock skew or a header in other units). If the
    ///   reading describes a later window than ours (ours is over, or the reset is at least half a
    ///   window past our end), our counts belong to a window the platform has closed: they start
    ///   again from zero. Otherwise the reading corrects the phase of the same window and our
    ///   counts stay (the conservative choice).
    /// - Without a reset the window only rolls (opening one at `now` if none is open), and if the
    ///   request was counted in an earlier window than the current one (its response crossed our
    ///   boundary), `remaining` may describe the closed window and is not applied.
    /// - `remaining` then sets the others' spend to what the platform counted beyond ours:
    ///   `others = max(0, (limit - remaining) - ours)`, so `spent = limit - remaining` whenever the
    ///   platform has counted at least our own draws. Our allowance left is then
    ///   `target - spent = remaining - (limit - target)`: what remains minus the share left to
    ///   other clients.
    pub(crate) fn observe(
        &mut self,
        now: Millis,
        len: Millis,
        limit: u64,
        remaining: Option<u64>,
        reset: Option<Millis>,
        sent_in: Option<Millis>,
    ) {
        let current = match reset.map(|t| t.min(now.saturating_add(len))) {
            Some(t) if t <= now => return,
            Some(t) => {
                let later_window = !self.is_open(now) || t >= self.end.saturating_add(len / 2);
                self.start = t.saturating_sub(len);
                self.end = t;
                self.anchored = true;
                if later_window {
                    self.read = 0;
                    self.write = 0;
                    self.others = 0;
                }
                true
            }
            None => {
                self.roll(now, len);
                sent_in.is_none_or(|s| s == self.start)
            }
        };
        if let (true, Some(remaining)) = (current, remaining) {
            let counted = limit.saturating_sub(remaining.min(limit));
            self.others = counted.saturating_sub(self.ours());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_window_opens_on_first_draw() {
        let mut w = Window::default();
        assert!(!w.is_open(5_000));
        w.roll(5_000, 60_000);
        assert_eq!((w.start, w.end, w.anchored), (5_000, 65_000, false));
        w.take(Lane::Read, 3);
        w.roll(64_999, 60_000);
        assert_eq!(w.read, 3);
        w.roll(90_000, 60_000);
        assert_eq!((w.start, w.end, w.read), (90_000, 150_000, 0));
    }

    #[test]
    fn anchored_window_keeps_the_platform_phase() {
        let mut w = Window::default();
        w.observe(1_000, 10_000, 100, Some(100), Some(4_000), None);
        assert_eq!((w.start, w.end, w.anchored), (-6_000, 4_000, true));
        w.take(Lane::Write, 1);
        // 3.5 windows later: the boundary is still on the platform's 4_000 + k * 10_000 grid.
        w.roll(39_000, 10_000);
        assert_eq!((w.start, w.end, w.write), (34_000, 44_000, 0));
    }

    #[test]
    fn remaining_sets_the_others_spend() {
        let mut w = Window::default();
        w.roll(0, 60_000);
        w.take(Lane::Read, 10);
        w.observe(1_000, 60_000, 200, Some(150), None, None);
        assert_eq!(w.others, 40);
        assert_eq!(w.spent(), 50);
        // The platform counted fewer than ours (draws still in flight): no negative others.
        w.observe(2_000, 60_000, 200, Some(195), None, None);
        assert_eq!(w.others, 0);
        assert_eq!(w.spent(), 10);
    }

    #[test]
    fn a_reset_in_a_later_window_drops_our_stale_counts() {
        let mut w = Window::default();
        w.roll(0, 60_000);
        w.take(Lane::Write, 30);
        // Same window, phase corrected by 5 s: counts kept.
        w.observe(10_000, 60_000, 200, None, Some(55_000), None);
        assert_eq!((w.end, w.write), (55_000, 30));
        // A reset a whole window past ours: the platform has moved on.
        w.observe(50_000, 60_000, 200, Some(195), Some(110_000), None);
        assert_eq!((w.start, w.end, w.write, w.others), (50_000, 110_000, 0, 5));
    }

    #[test]
    fn readings_about_a_closed_window_are_ignored() {
        let mut w = Window::default();
        w.roll(0, 60_000);
        w.take(Lane::Read, 5);
        // Its reset has passed: it counted a window the platform already closed.
        w.observe(10_000, 60_000, 200, Some(0), Some(9_000), None);
        assert_eq!((w.start, w.others, w.anchored), (0, 0, false));
        // No reset, but the request went out in the window before ours.
        w.roll(60_000, 60_000);
        w.observe(60_500, 60_000, 200, Some(10), None, Some(0));
        assert_eq!((w.start, w.others), (60_000, 0));
        // The same reading for a request of this window applies.
        w.observe(60_500, 60_000, 200, Some(10), None, Some(60_000));
        assert_eq!(w.others, 190);
    }

    #[test]
    fn a_reset_too_far_away_is_clamped_to_one_window() {
        let mut w = Window::default();
        w.observe(10_000, 60_000, 200, Some(200), Some(10_000_000), None);
        assert_eq!((w.end, w.anchored), (70_000, true));
    }

    #[test]
    fn writes_spend_their_reserve_before_narrowing_the_reads_share() {
        let mut w = Window::default();
        w.roll(0, 60_000);
        // target 150, reserve 45: reads may have 105 at the window's start.
        let room = |w: &Window, lane| w.room(lane, 150, 45, 0, 60_000);
        assert_eq!((room(&w, Lane::Read), room(&w, Lane::Write)), (105, 150));
        w.take(Lane::Write, 30);
        assert_eq!((room(&w, Lane::Read), room(&w, Lane::Write)), (105, 120));
        w.take(Lane::Write, 30);
        assert_eq!(room(&w, Lane::Read), 90);
        // Others' spend narrows the reads' share; the writes' room is what is left of the target.
        w.others = 50;
        assert_eq!((room(&w, Lane::Read), room(&w, Lane::Write)), (40, 40));
        w.take(Lane::Read, 40);
        assert_eq!((room(&w, Lane::Read), room(&w, Lane::Write)), (0, 0));
    }

    #[test]
    fn the_unused_reserve_is_released_to_reads_as_the_window_runs_out() {
        let mut w = Window { anchored: true, ..Window::default() };
        w.roll(0, 60_000);
        let room = |w: &Window, lane, now| w.room(lane, 150, 45, now, 60_000);
        assert_eq!(w.kept(45, 0, 60_000), 45);
        // Two thirds of the way through, a third of the reserve is still kept.
        assert_eq!(w.kept(45, 40_000, 60_000), 15);
        assert_eq!(room(&w, Lane::Read, 40_000), 135);
        // Reads took all they could; the writes still have the kept part.
        w.take(Lane::Read, 135);
        assert_eq!((room(&w, Lane::Read, 40_000), room(&w, Lane::Write, 40_000)), (0, 15));
        // Writes spend it; the reads' share does not move while the write reserve is unused...
        w.take(Lane::Write, 10);
        assert_eq!((room(&w, Lane::Read, 40_000), room(&w, Lane::Write, 40_000)), (0, 5));
        // ...and grows as the window runs out, but a unit stays for writes until the end.
        assert_eq!(w.kept(45, 59_999, 60_000), 1);
        assert_eq!((room(&w, Lane::Read, 59_999), room(&w, Lane::Write, 59_999)), (4, 5));
        // Writes beyond the reserve narrow the reads' share as before.
        w.take(Lane::Write, 40);
        assert_eq!(room(&w, Lane::Read, 59_999), 0);
        // No reserve, nothing kept.
        assert_eq!(w.kept(0, 10, 60_000), 0);
    }

    #[test]
    fn a_refused_read_learns_when_the_reserve_makes_room_for_it() {
        let mut w = Window { anchored: true, ..Window::default() };
        w.roll(0, 60_000);
        w.take(Lane::Read, 105);
        // target 150, reserve 45: the next read fits once the kept reserve is 44, i.e. at
        // 60 s − ⌊44 · 60 s / 45⌋ = 1,334 ms.
        let at = w.fits_at(Lane::Read, 1, 150, 45, 0, 60_000);
        assert_eq!(at, 60_000 - 44 * 60_000 / 45);
        assert!(!w.fits(Lane::Read, 1, 150, 45, at - 1, 60_000));
        assert!(w.fits(Lane::Read, 1, 150, 45, at, 60_000));
        // Writes never wait for a release: only a new window helps a write that does not fit.
        w.take(Lane::Write, 45);
        assert_eq!(w.fits_at(Lane::Write, 1, 150, 45, 10, 60_000), 60_000);
        // A read that cannot fit even with the reserve gone waits for the next window.
        assert_eq!(w.fits_at(Lane::Read, 1, 150, 45, 10, 60_000), 60_000);
        // What fits now fits now.
        let fresh = Window { start: 0, end: 60_000, ..Window::default() };
        assert_eq!(fresh.fits_at(Lane::Read, 1, 150, 45, 5, 60_000), 5);
        // Nor while others spend in the window (more than half the reserve; less is noise).
        let mut shared = Window { anchored: true, ..Window::default() };
        shared.roll(0, 60_000);
        shared.others = 22;
        assert_eq!(shared.kept(45, 59_000, 60_000), 1);
        shared.others = 23;
        assert_eq!(shared.kept(45, 59_000, 60_000), 45);
        // A window on our own phase keeps the whole reserve: nothing to wait for.
        let mut own = Window::default();
        own.roll(0, 60_000);
        own.take(Lane::Read, 105);
        assert_eq!(own.kept(45, 59_000, 60_000), 45);
        assert_eq!(own.fits_at(Lane::Read, 1, 150, 45, 0, 60_000), 60_000);
    }

    #[test]
    fn give_back_only_in_the_same_window() {
        let mut w = Window::default();
        w.roll(0, 1_000);
        w.take(Lane::Read, 2);
        w.give_back(Lane::Read, 1, 0, 10);
        assert_eq!(w.read, 1);
        w.give_back(Lane::Read, 1, -5, 10);
        assert_eq!(w.read, 1);
    }
}
