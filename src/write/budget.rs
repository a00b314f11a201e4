//! A process-wide budget of write-body bytes in memory, so a burst of large writes
//! (128 concurrent 30 MB bodies is 4 GB) cannot grow the proxy past what its container
//! allows. A write takes its bytes before it reads them: all of its `Content-Length` at
//! once, or chunk by chunk as a body without one streams in, and then its decompressed
//! size. It gives them back when it is done, teed included.
//!
//! Past the budget a write waits up to `inflight_wait_ms` for bytes to free up, then
//! gets 503 with `Retry-After`, as InfluxDB itself answers when it is overloaded.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::http::error::ProxyError;

/// The shared budget.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    wait: Duration,
    refused: IntCounterVec,
    in_use: IntGauge,
}

/// Bytes a write holds; they return to the budget when this is dropped.
pub struct BudgetPermit {
    permit: Option<OwnedSemaphorePermit>,
    in_use: IntGauge,
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            self.in_use.sub(permit.num_permits() as i64);
        }
    }
}

impl BudgetPermit {
    fn add(&mut self, more: OwnedSemaphorePermit) {
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl BodyBudget {
    pub fn new(total: usize, wait: Duration, registry: &Registry) -> BodyBudget {
        let refused = IntCounterVec::new(
            Opts::new(
                "influx_tee_write_budget_refused_total",
                "Writes answered 503 because write bodies in memory were at max_inflight_bytes",
            ),
            &["endpoint"],
        )
        .expect("static metric definition");
        let in_use = IntGauge::new(
            "influx_tee_write_budget_bytes",
            "Bytes of write bodies in memory, counted against max_inflight_bytes",
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(refused.clone()));
        let _ = registry.register(Box::new(in_use.clone()));
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            wait,
            refused,
            in_use,
        }
    }

    /// An empty permit, and the deadline every take of this write shares.
    pub fn start(&self) -> (BudgetPermit, Instant) {
        (
            BudgetPermit {
                permit: None,
                in_use: self.in_use.clone(),
            },
            Instant::now() + self.wait,
        )
    }

    /// Adds `bytes` to `permit`, waiting until `deadline` at most.
    pub async fn take(
        &self,
        permit: &mut BudgetPermit,
        bytes: usize,
        deadline: Instant,
        endpoint: &'static str,
    ) -> Result<(), ProxyError> {
        if bytes == 0 {
            return Ok(());
        }
        let refusal = || {
            self.refused.with_label_values(&[endpoint]).inc();
            ProxyError::Busy(format!(
                "the proxy has {} bytes of writes in memory, its limit; retry later",
                self.total
            ))
        };
        let Ok(count) = u32::try_from(bytes) else {
            return Err(refusal());
        };
        if bytes + permit.bytes() > self.total {
            return Err(refusal());
        }
        let acquire = self.bytes.clone().acquire_many_owned(count);
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(more)) => {
                self.in_use.add(bytes as i64);
                permit.add(more);
                Ok(())
            }
            _ => Err(refusal()),
        }
    }
}

/// One write's account with the budget, while its body is read.
pub struct BodyAccount<'b> {
    pub budget: &'b BodyBudget,
    pub permit: BudgetPermit,
    pub deadline: Instant,
    pub endpoint: &'static str,
}

impl<'b> BodyAccount<'b> {
    pub fn open(budget: &'b BodyBudget, endpoint: &'static str) -> BodyAccount<'b> {
        let (permit, deadline) = budget.start();
        BodyAccount {
            budget,
            permit,
            deadline,
            endpoint,
        }
    }

    /// Makes sure `bytes` in all are held, taking what is missing.
    pub async fn hold(&mut self, bytes: usize) -> Result<(), ProxyError> {
        let missing = bytes.saturating_sub(self.permit.bytes());
        self.budget
            .take(&mut self.permit, missing, self.deadline, self.endpoint)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_past_the_budget_waits_then_is_refused() {
        let budget = BodyBudget::new(100, Duration::from_millis(50), &Registry::new());
        let (mut first, deadline) = budget.start();
        budget.take(&mut first, 80, deadline, "v1").await.unwrap();
        let (mut second, deadline) = budget.start();
        let refused = budget.take(&mut second, 30, deadline, "v1").await;
        assert!(matches!(refused, Err(ProxyError::Busy(_))));
        assert_eq!(budget.refused.with_label_values(&["v1"]).get(), 1);
        // Freed bytes let the next write in.
        drop(first);
        let (mut third, deadline) = budget.start();
        budget.take(&mut third, 100, deadline, "v1").await.unwrap();
        assert_eq!(budget.in_use.get(), 100);
        drop(third);
        assert_eq!(budget.in_use.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_write_gets_in_when_bytes_free_up() {
        let budget = Arc::new(BodyBudget::new(
            100,
            Duration::from_secs(5),
            &Registry::new(),
        ));
        let (mut first, deadline) = budget.start();
        budget.take(&mut first, 100, deadline, "v2").await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let (mut second, deadline) = budget.start();
                budget
                    .take(&mut second, 60, deadline, "v2")
                    .await
                    .map(|_| second.bytes())
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        assert_eq!(waiter.await.unwrap().unwrap(), 60);
    }
}
