//! Single flight for small answers: concurrent callers with the same key share one run of the
//! work (one upstream manifest GET, one tag revalidation) and all get its result.
//!
//! Blobs have their own, streaming, version of this in [`super::fill`]; this one is for
//! answers that are small enough to hand out whole.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::future::{FutureExt, Shared};

type SharedRun<V> = Shared<Pin<Box<dyn Future<Output = V> + Send>>>;

pub struct Flights<K, V: Clone> {
    running: Arc<Mutex<HashMap<K, SharedRun<V>>>>,
}

impl<K, V> Default for Flights<K, V>
where
    V: Clone,
{
    fn default() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` unless a run for `key` is already under way, in which case its result is
    /// awaited instead. Returns the result and whether this call joined another's run.
    pub async fn run<F>(&self, key: K, work: F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (shared, joined) = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match running.get(&key) {
                Some(existing) => (existing.clone(), true),
                None => {
                    let registry = Arc::clone(&self.running);
                    let done_key = key.clone();
                    let run: Pin<Box<dyn Future<Output = V> + Send>> = Box::pin(async move {
                        let value = work.await;
                        // Later callers start a fresh run rather than reuse this answer.
                        registry
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&done_key);
                        value
                    });
                    let shared = run.shared();
                    running.insert(key, shared.clone());
                    (shared, false)
                }
            }
        };
        (shared.await, joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<Flights<&'static str, usize>> = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let flights = Arc::clone(&flights);
            let runs = Arc::clone(&runs);
            tokio::spawn(async move {
                flights
                    .run("k", async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 41
                    })
                    .await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let joined = results.iter().filter(|r| r.as_ref().unwrap().1).count();
        assert!(results.iter().all(|r| r.as_ref().unwrap().0 == 41));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 7);
        // Once finished, the next call runs again.
        let (value, joined) = flights.run("k", async { 7 }).await;
        assert_eq!((value, joined), (7, false));
    }
}
