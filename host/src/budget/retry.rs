//! [`WriteRetryQueue`]: where a connection's writes wait after meeting a 429.
//!
//! Why a queue per connection, and not a generic retry pool? A write is a change to one ticket,
//! and changes to one ticket must land in the order they were asked for: a reply then "solved" is
//! not "solved" then a reply. A pool that retries whatever is due would reorder them. So the queue
//! keeps one FIFO line per ticket, lets only the head of each line out, and keeps a line closed
//! while its head is out (sent and not yet finished): if that retry meets another 429 it goes back
//! to the *front* of its line. Across tickets the write that failed first goes first. The queue
//! honours `Retry-After` per item (`not_before`), and the caller runs what it pops at
//! [`crate::budget::Priority::WriteRetry`], ahead of new writes, so the queue is flushed first as
//! soon as the budget has room again.
//!
//! The queue is pure (the caller passes `now`) and generic over what it holds (the outbox's action).

use std::collections::{HashMap, VecDeque};

use crate::clock::Millis;

#[derive(Debug)]
struct Entry<T> {
    seq: u64,
    not_before: Millis,
    attempts: u32,
    item: T,
}

#[derive(Debug)]
struct Line<T> {
    entries: VecDeque<Entry<T>>,
    /// The head is out: sent, not yet finished or requeued.
    out: bool,
}

/// A write popped from the queue to be sent again. Hand it back with
/// [`WriteRetryQueue::finish`] (it landed, or failed for good) or [`WriteRetryQueue::requeue`]
/// (another 429).
#[derive(Debug)]
#[must_use = "hand the retry back with finish() or requeue(), or its ticket stays closed"]
pub struct Retry<T> {
    /// The ticket it changes.
    pub ticket: String,
    /// The write.
    pub item: T,
    /// Times it met a 429 so far (1 on the first retry).
    pub attempts: u32,
    seq: u64,
}

/// The write-retry queue of one connection. See the module doc.
#[derive(Debug)]
pub struct WriteRetryQueue<T> {
    lines: HashMap<String, Line<T>>,
    next_seq: u64,
    len: usize,
}

impl<T> Default for WriteRetryQueue<T> {
    fn default() -> Self {
        Self { lines: HashMap::new(), next_seq: 0, len: 0 }
    }
}

impl<T> WriteRetryQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue a write that met a 429, at the back of its ticket's line, not to be sent before
    /// `not_before` (now + `Retry-After`, or the bucket's reset).
    pub fn push(&mut self, ticket: impl Into<String>, item: T, not_before: Millis) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let line = self.lines.entry(ticket.into()).or_insert_with(|| Line { entries: VecDeque::new(), out: false });
        line.entries.push_back(Entry { seq, not_before, attempts: 1, item });
        self.len += 1;
    }

    /// The next write due at `now`: among the heads of lines that are not out and whose
    /// `not_before` has passed, the one queued first. Its line stays closed until it is handed back.
    pub fn pop_ready(&mut self, now: Millis) -> Option<Retry<T>> {
        let ticket = self
            .lines
            .iter()
            .filter(|(_, l)| !l.out)
            .filter_map(|(t, l)| l.entries.front().filter(|e| e.not_before <= now).map(|e| (e.seq, t)))
            .min()
            .map(|(_, t)| t.clone())?;
        let line = self.lines.get_mut(&ticket).expect("just found");
        let e = line.entries.pop_front().expect("has a head");
        line.out = true;
        self.len -= 1;
        Some(Retry { ticket, item: e.item, attempts: e.attempts, seq: e.seq })
    }

    /// The retry met another 429: back to the front of its line (it keeps its place across
    /// tickets too), not before `not_before`.
    pub fn requeue(&mut self, retry: Retry<T>, not_before: Millis) {
        let line = self.lines.entry(retry.ticket).or_insert_with(|| Line { entries: VecDeque::new(), out: false });
        line.out = false;
        line.entries.push_front(Entry { seq: retry.seq, not_before, attempts: retry.attempts + 1, item: retry.item });
        self.len += 1;
    }

    /// The retry is done (landed, or failed for a reason retrying cannot fix): its ticket's line
    /// opens for the next write. Returns the item.
    pub fn finish(&mut self, retry: Retry<T>) -> T {
        if let Some(line) = self.lines.get_mut(&retry.ticket) {
            line.out = false;
            if line.entries.is_empty() {
                self.lines.remove(&retry.ticket);
            }
        }
        retry.item
    }

    /// Whether `ticket` has writes waiting or out here. New writes for such a ticket must wait
    /// until it is no longer held, never overtake them.
    pub fn holds(&self, ticket: &str) -> bool {
        self.lines.contains_key(ticket)
    }

    /// When the next write is due (`None` when nothing is waiting or every line is out).
    pub fn next_ready_at(&self) -> Option<Millis> {
        self.lines.values().filter(|l| !l.out).filter_map(|l| l.entries.front()).map(|e| e.not_before).min()
    }

    /// Writes waiting (not counting those out).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no write is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn write_retry_queue_keeps_per_ticket_order() {
        let mut q = WriteRetryQueue::new();
        q.push("42", "reply", 1_000);
        q.push("7", "tag", 1_000);
        q.push("42", "solve", 0);
        assert_eq!(q.next_ready_at(), Some(1_000));
        // "solve" is due at 0 but waits behind "reply" on its ticket.
        assert!(q.pop_ready(999).is_none());
        let a = q.pop_ready(1_000).unwrap();
        assert_eq!((a.ticket.as_str(), a.item), ("42", "reply"));
        // Ticket 42 is closed while its head is out; ticket 7 may go.
        let b = q.pop_ready(1_000).unwrap();
        assert_eq!(b.item, "tag");
        assert!(q.pop_ready(5_000).is_none());
        // The reply meets another 429: it goes back to the front, before "solve".
        q.requeue(a, 3_000);
        assert!(q.pop_ready(2_999).is_none());
        let a = q.pop_ready(3_000).unwrap();
        assert_eq!((a.item, a.attempts), ("reply", 2));
        assert_eq!(q.finish(a), "reply");
        assert_eq!(q.pop_ready(3_000).unwrap().item, "solve");
        assert_eq!(q.finish(b), "tag");
        assert!(!q.holds("7"));
        assert!(q.holds("42"), "solve is still out");
    }

    #[test]
    fn the_write_that_failed_first_goes_first_across_tickets() {
        let mut q = WriteRetryQueue::new();
        q.push("b", 1, 0);
        q.push("a", 2, 0);
        q.push("c", 3, 0);
        let order: Vec<_> = std::iter::from_fn(|| q.pop_ready(0)).map(|r| r.item).collect();
        assert_eq!(order, vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    proptest! {
        /// Whatever the pushes, pops, 429s and times, each ticket's writes come out in the order
        /// they went in, and never two of one ticket at once.
        #[test]
        fn per_ticket_order_holds_under_any_schedule(
            ops in prop::collection::vec((0u8..4, 0u8..3, 0i64..50), 1..200)
        ) {
            let mut q: WriteRetryQueue<(u8, u32)> = WriteRetryQueue::new();
            let mut pushed = [0u32; 3];
            let mut next_out = [0u32; 3];
            let mut out: Vec<Retry<(u8, u32)>> = Vec::new();
            let mut now = 0;
            for (op, t, dt) in ops {
                now += dt;
                match op {
                    0 => {
                        q.push(t.to_string(), (t, pushed[t as usize]), now + dt);
                        pushed[t as usize] += 1;
                    }
                    1 => {
                        if let Some(r) = q.pop_ready(now) {
                            let (t, n) = r.item;
                            prop_assert!(!out.iter().any(|o| o.item.0 == t), "two out for one ticket");
                            prop_assert_eq!(n, next_out[t as usize], "ticket {} out of order", t);
                            out.push(r);
                        }
                    }
                    2 if !out.is_empty() => {
                        let r = out.remove(0);
                        next_out[r.item.0 as usize] += 1;
                        q.finish(r);
                    }
                    3 if !out.is_empty() => {
                        let r = out.remove(0);
                        q.requeue(r, now + dt);
                    }
                    _ => {}
                }
            }
        }
    }
}
