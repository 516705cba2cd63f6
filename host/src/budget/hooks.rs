//! Budget hooks for one driven operation outside the outbox (a sweep's listing, a read, a bench's
//! flood): every request waits for its permit in the gate, in the lane and on the buckets the
//! adapter named for it, and every response's rate headers correct the gate. The outbox worker has
//! its own hooks, which also mark entries sent and choose the write queue.

use super::{BudgetGate, Permit};
use crate::bindings::{BucketDraw, HttpRequest, HttpResponse};
use crate::driver::{StepHooks, Target};
use crate::runtime::Adapter;

/// [`StepHooks`] that send each request of an operation through a connection's [`BudgetGate`].
///
/// ```ignore
/// let mut hooks = GateHooks::new(&gate, &adapter, &target);
/// let outcome = driver.execute(&adapter, &target, &Operation::GetTicket("42".into()), None, &mut hooks).await?;
/// if let Ok(Err(Failure::RateLimited(detail))) = &outcome {
///     gate.rate_limited(hooks.last_draws(), detail);
/// }
/// ```
pub struct GateHooks<'a> {
    gate: &'a BudgetGate,
    adapter: &'a Adapter,
    target: &'a Target,
    permit: Option<Permit>,
    draws: Vec<BucketDraw>,
}

impl<'a> GateHooks<'a> {
    /// Hooks for one operation against `target` through `gate`.
    pub fn new(gate: &'a BudgetGate, adapter: &'a Adapter, target: &'a Target) -> Self {
        Self { gate, adapter, target, permit: None, draws: Vec::new() }
    }

    /// The permit of the last request sent, if any was.
    pub fn permit(&self) -> Option<&Permit> {
        self.permit.as_ref()
    }

    /// The buckets the last request drew on (what a 429 on it blocks).
    pub fn last_draws(&self) -> &[BucketDraw] {
        &self.draws
    }
}

impl StepHooks for GateHooks<'_> {
    fn before_send(&mut self, request: &HttpRequest) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let wait = self.gate.acquire_request(request);
        self.draws = request.draws.clone();
        async move {
            self.permit = Some(wait.await.map_err(|e| e.to_string())?);
            Ok(())
        }
    }

    fn after_response(&mut self, request: &HttpRequest, response: &HttpResponse) {
        self.gate.record_response(request.lane, response.status);
        let Ok(observations) = self.adapter.observe(&self.target.connection, response) else { return };
        match &self.permit {
            Some(p) => self.gate.observe_after(p, &observations),
            None => self.gate.observe(&observations),
        }
    }
}
