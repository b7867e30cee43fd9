//! A small, bounded pool for password hashing.
//!
//! bcrypt costs tens of milliseconds of CPU by design. Run on the shared blocking pool, a
//! flood of wrong passwords would take every blocking thread (and every core), and valid logins
//! (and sled and file work) would queue behind it. Here at most `threads` hashes run at once and
//! at most `queue` more wait; past that a login is refused at once (429), which bounds how long
//! any login waits no matter how many guesses arrive.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::AuthError;

#[derive(Debug)]
pub struct HashPool {
    /// One permit per hash allowed to run.
    running: Arc<Semaphore>,
    /// One permit per hash allowed to run or wait.
    admitted: Arc<Semaphore>,
}

impl HashPool {
    pub fn new(threads: usize, queue: usize) -> Self {
        let threads = threads.max(1);
        HashPool {
            running: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(Semaphore::new(threads.saturating_add(queue))),
        }
    }

    /// Runs `work` on a blocking thread once one of the pool's slots is free;
    /// [`AuthError::Busy`] when the queue is full. A caller that goes away while waiting leaves
    /// the queue; one that goes away while its hash runs keeps the slot until the hash ends.
    pub async fn run<T, F>(&self, work: F) -> Result<T, AuthError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)?;
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _slots = (admitted, running);
            work()
        })
        .await
        .map_err(|e| AuthError::Crypto(format!("password check failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_threads_run_and_the_queue_is_bounded() {
        let pool = Arc::new(HashPool::new(2, 3));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // Let the five take their places (two running, three waiting), then one too many.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(matches!(pool.run(|| ()).await, Err(AuthError::Busy)));
        for task in tasks {
            assert!(task.await.unwrap().is_ok());
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        // Once drained, the pool admits again.
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
