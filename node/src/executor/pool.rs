//! The executor's own threads, on which task launches and task clean-ups run (directories,
//! log files, cgroups, the spawn: blocking system calls the runtime's thread must not wait for).
//!
//! Why not tokio's blocking pool with a semaphore in front, as before: there every launch made
//! two threads take turns. The launch gave its permit back on a pool thread, which woke the
//! runtime's thread; that one called `spawn_blocking` for the next queued task, which woke an
//! idle pool thread (the longest idle of up to dozens, its cache cold). In a batch of 10,000
//! `true` tasks that was about 14 context switches per task, a sixth of the busy agent's CPU
//! in `schedule` (`BENCHMARKS.md`, session 23). Here the jobs wait in this pool's queues, so a
//! thread that ends one takes the next without sleeping, and the runtime's thread only hears
//! of each result.
//!
//! At most `max_threads` jobs run at once ([`ExecutorConfig::max_parallel_launches`]); each
//! holds its descriptors (log files, `cgroup.procs`, the pidfd) only while it runs. Clean-ups
//! go before queued launches: each gives a cgroup back as a spare for the next launch and
//! releases its task's reservation, and is a fraction of a launch's work. Threads start when
//! jobs arrive and end after [`KEEP_ALIVE`] without one, so an idle agent has none.
//!
//! [`ExecutorConfig::max_parallel_launches`]: super::ExecutorConfig::max_parallel_launches

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// How long a thread waits for a job before it ends (tokio's blocking pool keeps the same).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Taken before any launch.
    CleanUp,
    Launch,
}

/// A bounded set of threads and their two queues.
#[derive(Debug)]
pub(super) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
    max_threads: usize,
}

#[derive(Default)]
struct Queues {
    clean_ups: VecDeque<Job>,
    launches: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for a job that no push has woken yet.
    idle: usize,
    /// Wake-ups sent and not yet taken by a waiting thread.
    woken: usize,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("clean_ups", &self.clean_ups.len())
            .field("launches", &self.launches.len())
            .field("threads", &self.threads)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Queues {
    fn next(&mut self) -> Option<Job> {
        self.clean_ups
            .pop_front()
            .or_else(|| self.launches.pop_front())
    }
}

impl Pool {
    pub(super) fn new(max_threads: NonZeroUsize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                queues: Mutex::default(),
                ready: Condvar::new(),
                max_threads: max_threads.get(),
            }),
        }
    }

    /// Queues `job`; the receiver yields what it returns. It yields an error instead when the
    /// job never ran (no thread could be started) or panicked.
    pub(super) fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The receiver may be gone (the agent is stopping): the result has no reader.
            let _ = tx.send(job());
        });
        let mut queues = self.shared.lock();
        match lane {
            Lane::CleanUp => queues.clean_ups.push_back(job),
            Lane::Launch => queues.launches.push_back(job),
        }
        if queues.idle > 0 {
            queues.idle -= 1;
            queues.woken += 1;
            self.shared.ready.notify_one();
        } else if queues.threads < self.shared.max_threads {
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("shoal-launch".to_owned())
                .spawn(move || shared.work());
            match started {
                Ok(_) => queues.threads += 1,
                Err(e) if queues.threads == 0 => {
                    // Nothing would ever run them: dropping the jobs drops their senders.
                    tracing::error!(error = %e, "cannot start a launch thread");
                    queues.clean_ups.clear();
                    queues.launches.clear();
                }
                // The threads running take it in turn.
                Err(e) => tracing::warn!(error = %e, "cannot start another launch thread"),
            }
        }
        rx
    }
}

/// A queued job's turn, for a caller that may give up on it (a launch whose task is killed while
/// it waits): whichever moves it first, the thread that takes the job or the caller that drops
/// it, decides whether the job runs. So a job either runs whole or never starts.
#[derive(Debug, Default)]
pub(super) struct Turn(AtomicU8);

impl Turn {
    const QUEUED: u8 = 0;
    const TAKEN: u8 = 1;
    const DROPPED: u8 = 2;

    /// Whether the job may run: true for the thread that takes it while still queued.
    fn take(&self) -> bool {
        self.move_from_queued(Self::TAKEN)
    }

    /// Whether the job was dropped before a thread took it (it will never run); false once
    /// taken.
    pub(super) fn drop_queued(&self) -> bool {
        self.move_from_queued(Self::DROPPED)
    }

    fn move_from_queued(&self, to: u8) -> bool {
        self.0
            .compare_exchange(Self::QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Pool {
    /// [`Pool::run`] for a job the caller may drop while it is queued ([`Turn::drop_queued`]):
    /// the receiver yields `None` for a dropped job, which never ran.
    pub(super) fn run_unless_dropped<T: Send + 'static>(
        &self,
        lane: Lane,
        turn: Arc<Turn>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<Option<T>> {
        self.run(lane, move || turn.take().then(job))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A job runs without the lock held, so a poisoned lock holds consistent queues.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A thread's life: jobs until none came for [`KEEP_ALIVE`].
    fn work(&self) {
        let mut queues = self.lock();
        loop {
            if let Some(job) = queues.next() {
                drop(queues);
                // A panicking job drops its sender (its receiver sees an error); the thread
                // goes on with the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                queues = self.lock();
                continue;
            }
            queues.idle += 1;
            loop {
                let (guard, waited) = self
                    .ready
                    .wait_timeout(queues, KEEP_ALIVE)
                    .unwrap_or_else(PoisonError::into_inner);
                queues = guard;
                if queues.woken > 0 {
                    // Woken by a push (whichever thread was meant: they are all alike), which
                    // took this thread off `idle`.
                    queues.woken -= 1;
                    break;
                }
                if waited.timed_out() {
                    queues.idle -= 1;
                    queues.threads -= 1;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn jobs_run_at_most_max_threads_at_once_and_clean_ups_go_first() {
        let pool = Pool::new(NonZeroUsize::new(2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        // Two jobs hold both threads until released, so what is queued behind them waits.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let mut held = Vec::new();
        for _ in 0..2 {
            let (running, most, release_rx) = (running.clone(), most.clone(), release_rx.clone());
            held.push(pool.run(Lane::Launch, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                release_rx.lock().unwrap().recv().unwrap();
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "both threads started");
            std::thread::yield_now();
        }
        let mut queued = Vec::new();
        for (lane, label) in [
            (Lane::Launch, "launch 1"),
            (Lane::CleanUp, "clean-up"),
            (Lane::Launch, "launch 2"),
        ] {
            let (running, most, order) = (running.clone(), most.clone(), order.clone());
            queued.push(pool.run(lane, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                order.lock().unwrap().push(label);
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for rx in held.into_iter().chain(queued) {
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("every job ran")
                .expect("no job panicked");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never more than two at once"
        );
        assert_eq!(
            *order.lock().unwrap(),
            ["clean-up", "launch 1", "launch 2"],
            "the clean-up went before the launches queued ahead of it"
        );
    }

    #[tokio::test]
    async fn a_job_dropped_while_queued_never_runs_and_one_taken_runs_whole() {
        let pool = Pool::new(NonZeroUsize::MIN);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (began_tx, began_rx) = std::sync::mpsc::channel::<()>();
        let blocker = pool.run(Lane::Launch, move || {
            began_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        began_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // The one thread is busy: this job waits in the queue, and is dropped there.
        let ran = Arc::new(AtomicUsize::new(0));
        let (turn, counted) = (Arc::new(Turn::default()), ran.clone());
        let dropped = pool.run_unless_dropped(Lane::Launch, turn.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert!(turn.drop_queued(), "a queued job can be dropped");
        assert!(!turn.drop_queued(), "and only once");
        release_tx.send(()).unwrap();
        blocker.await.unwrap();
        assert_eq!(
            dropped.await.unwrap(),
            None,
            "the dropped job reports that it never ran"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "its body never ran");
        // A job a thread has taken runs whole: the caller can no longer drop it.
        let (turn, counted) = (Arc::new(Turn::default()), ran.clone());
        let (inside_tx, inside_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let taken = pool.run_unless_dropped(Lane::Launch, turn.clone(), move || {
            inside_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            counted.fetch_add(1, Ordering::SeqCst)
        });
        inside_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!turn.drop_queued(), "a running job cannot be dropped");
        go_tx.send(()).unwrap();
        assert_eq!(taken.await.unwrap(), Some(0), "the taken job ran whole");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_job_reports_an_error_and_the_thread_goes_on() {
        let pool = Pool::new(NonZeroUsize::MIN);
        let failed = pool.run(Lane::Launch, || -> u32 { panic!("a job's bug") });
        assert!(
            failed.await.is_err(),
            "the panic is seen as a job that did not complete"
        );
        let next = pool.run(Lane::Launch, || 7);
        assert_eq!(next.await.unwrap(), 7, "the one thread still runs jobs");
    }
}
