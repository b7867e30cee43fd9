//! `max_concurrent_requests`: at most so many requests in flight to one upstream. A request
//! takes a [`Slot`] before it is sent and keeps it until its answer is dropped, so a blob
//! download holds its slot for the whole body. Requests beyond the cap wait their turn (first
//! come, first served) rather than being refused; the wait is part of the request's time
//! budget, and a request that waits it out fails with [`UpstreamError::Busy`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::UpstreamError;

pub struct Slots {
    upstream: String,
    limit: usize,
    /// `None`: no cap.
    semaphore: Option<Arc<Semaphore>>,
}

/// One request's place among the upstream's slots; freed on drop.
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// At most `limit` requests at once to `upstream`; 0 means no cap.
    pub fn new(upstream: &str, limit: usize) -> Self {
        Slots {
            upstream: upstream.to_owned(),
            limit,
            semaphore: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
        }
    }

    /// A slot, waiting up to `patience` for one.
    pub async fn take(&self, patience: Duration) -> Result<Slot, UpstreamError> {
        let Some(semaphore) = &self.semaphore else {
            return Ok(Slot { _permit: None });
        };
        match tokio::time::timeout(patience, Arc::clone(semaphore).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot {
                _permit: Some(permit),
            }),
            // The semaphore is never closed; were it, waiting longer would not help either.
            Ok(Err(_)) | Err(_) => Err(UpstreamError::Busy {
                upstream: self.upstream.clone(),
                limit: self.limit,
                waited: patience,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_second_request_waits_for_the_first_slot_to_be_freed() {
        let slots = Arc::new(Slots::new("u", 1));
        let first = slots.take(LONG).await.unwrap();
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.take(LONG).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second request must wait");
        drop(first);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn waiting_out_the_patience_is_busy_and_names_the_cap() {
        let slots = Slots::new("reg", 2);
        let _held = (
            slots.take(LONG).await.unwrap(),
            slots.take(LONG).await.unwrap(),
        );
        let error = slots.take(Duration::from_millis(20)).await.err().unwrap();
        assert!(matches!(error, UpstreamError::Busy { limit: 2, .. }));
        assert!(error.is_transient());
        assert!(
            error.to_string().contains("max_concurrent_requests"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn no_cap_never_waits() {
        let slots = Slots::new("u", 0);
        let held: Vec<Slot> = futures_util::future::join_all((0..100).map(|_| slots.take(LONG)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(held.len(), 100);
    }
}
