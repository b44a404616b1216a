//! The executor's own threads, on which task launches and task clean-ups run (directories,
//! log files, cgroups, the spawn: blocking system calls the runtime's thread must not wait for).
//!
//! Why not tokio's blocking pool with a semaphore in front, as before: there every launch made
//! two threads take turns. The launch gave its permit back on a pool thread, which woke the
//! runtime's thread; that one called `spawn_blocking` for the next queued task, which woke an
//! idle pool thread (the longest idle of up to dozens, its cache cold). In a batch of 10,000
//! `true` tasks that was about 13 context switches per task, a sixth of the busy agent's CPU
//! in `schedule` (`BENCHMARKS.md`, session 23). Here the jobs wait in this pool's queues, so a
//! thread that ends one takes the next without sleeping, and the runtime's thread only hears
//! of each result.
//!
//! At most `max_launches` launches run at once ([`ExecutorConfig::max_parallel_launches`]);
//! each holds its descriptors (log files, `cgroup.procs`, the pidfd) only while it runs.
//! Clean-ups go before queued launches (each gives a cgroup back as a spare for the next launch
//! and releases its task's reservation). While any thread is busy, a clean-up only waits in its
//! queue for that thread to take it: no thread is woken for it, which is what makes a batch
//! cheap (the first version woke a thread of its own for every clean-up and gave back most of
//! the gain: 12.5 context switches per task instead of 9.5). A clean-up that has not started
//! within [`CLEAN_UP_WAIT`] is [`Pool::nudge`]d onto a thread of its own, up to as many threads
//! again as launches, so launches stuck in the kernel (a hung `execve` on a network file
//! system) cannot hold back the ends of other tasks, nor clean-ups whose kill rounds take their
//! 2 s hold back every launch.
//! Threads start when jobs arrive and end after [`KEEP_ALIVE`] without one, so an idle agent
//! has none. A caller that stops waiting drops its queued job ([`Turn`]).
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

/// How long a clean-up waits for a busy thread before the caller nudges the pool to give it a
/// thread of its own. A launch takes about a millisecond.
pub(super) const CLEAN_UP_WAIT: Duration = Duration::from_millis(100);

type Job = Box<dyn FnOnce() + Send>;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Taken before any launch, and not counted against the launches' limit.
    CleanUp,
    Launch,
}

/// A bounded set of threads and their two queues.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
    /// Signalled when a launch ends, for [`Pool::close`].
    launch_ended: Condvar,
    /// Launches running at once, at most.
    max_launches: usize,
    /// Threads, at most: the launches' and as many again for clean-ups.
    max_threads: usize,
}

#[derive(Default)]
struct Queues {
    clean_ups: VecDeque<Job>,
    launches: VecDeque<Job>,
    /// Launches a thread runs now.
    launches_running: usize,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for a job that no push has woken yet.
    idle: usize,
    /// Wake-ups sent and not yet taken by a waiting thread.
    woken: usize,
    /// No launch starts any more ([`Pool::close`]).
    closed: bool,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("clean_ups", &self.clean_ups.len())
            .field("launches", &self.launches.len())
            .field("launches_running", &self.launches_running)
            .field("threads", &self.threads)
            .field("idle", &self.idle)
            .field("woken", &self.woken)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Queues {
    /// Threads running a job (or woken for one).
    fn busy(&self) -> usize {
        self.threads - self.idle
    }

    /// The next job a free thread may run: a clean-up, else a launch while fewer than
    /// `max_launches` run.
    fn next(&mut self, max_launches: usize) -> Option<(Job, Lane)> {
        if let Some(job) = self.clean_ups.pop_front() {
            return Some((job, Lane::CleanUp));
        }
        if self.launches_running < max_launches {
            let job = self.launches.pop_front()?;
            self.launches_running += 1;
            return Some((job, Lane::Launch));
        }
        None
    }
}

impl Pool {
    pub(super) fn new(max_launches: NonZeroUsize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                queues: Mutex::default(),
                ready: Condvar::new(),
                launch_ended: Condvar::new(),
                max_launches: max_launches.get(),
                max_threads: max_launches.get().saturating_mul(2),
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
        if lane == Lane::Launch && queues.closed {
            // Dropping the job drops its sender: the receiver sees a launch that never ran.
            return rx;
        }
        // Whether to wake or start a thread for it: a launch beyond the limit waits for a
        // running launch's thread, and a clean-up for any busy thread, which takes it when done.
        let wake = match lane {
            Lane::CleanUp => queues.busy() == 0,
            Lane::Launch => {
                queues.launches_running + queues.launches.len() < self.shared.max_launches
            }
        };
        match lane {
            Lane::CleanUp => queues.clean_ups.push_back(job),
            Lane::Launch => queues.launches.push_back(job),
        }
        if wake {
            self.shared.wake_or_start(queues);
        }
        rx
    }

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

    /// Starts no launch any more: queued launches are dropped (their receivers see jobs that
    /// never ran, as do launches queued later), and this waits up to `wait` for the launches
    /// that run to end. Returns whether none runs.
    ///
    /// The agent calls it when it stops, after its executor's shutdown (which leaves a launch
    /// under way only if it timed out): the pool's threads are not joined at process exit, so a launch cut there could leave a process
    /// started with no pid record (nothing would then find it but the watchdog's sweep of the
    /// task cgroups). Clean-ups keep running: they only end what already ran.
    pub(super) fn close(&self, wait: Duration) -> bool {
        let mut queues = self.shared.lock();
        queues.closed = true;
        let dropped = std::mem::take(&mut queues.launches);
        let (queues, _) = self
            .shared
            .launch_ended
            .wait_timeout_while(queues, wait, |q| q.launches_running > 0)
            .unwrap_or_else(PoisonError::into_inner);
        let quiet = queues.launches_running == 0;
        drop(queues);
        // Dropped without the lock held: a job's drop wakes its receiver's task.
        drop(dropped);
        quiet
    }

    /// Gives a clean-up that is still queued a thread: wakes an idle one or starts one, within
    /// the limit (called when one waited [`CLEAN_UP_WAIT`] for the busy threads).
    pub(super) fn nudge(&self) {
        let queues = self.shared.lock();
        if !queues.clean_ups.is_empty() {
            self.shared.wake_or_start(queues);
        }
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

impl Shared {
    /// Wakes an idle thread, or starts one when none is idle and there is room.
    fn wake_or_start(self: &Arc<Self>, mut queues: MutexGuard<'_, Queues>) {
        if queues.idle > 0 {
            queues.idle -= 1;
            queues.woken += 1;
            self.ready.notify_one();
            return;
        }
        if queues.threads >= self.max_threads {
            // Every thread is busy: one takes it when it is done.
            return;
        }
        // Counted before the lock is let go, so two pushes cannot both start the last thread.
        queues.threads += 1;
        drop(queues);
        let shared = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("shoal-launch".to_owned())
            .spawn(move || shared.work());
        if let Err(e) = started {
            let mut queues = self.lock();
            queues.threads -= 1;
            if queues.threads == 0 {
                // Nothing would ever run them: dropping the jobs drops their senders.
                tracing::error!(error = %e, "cannot start a launch thread");
                queues.clean_ups.clear();
                queues.launches.clear();
            } else {
                // The threads running take it in turn.
                tracing::warn!(error = %e, "cannot start another launch thread");
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A job runs without the lock held, so a poisoned lock holds consistent queues.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A thread's life: jobs until none came for [`KEEP_ALIVE`].
    fn work(&self) {
        let mut queues = self.lock();
        loop {
            if let Some((job, lane)) = queues.next(self.max_launches) {
                drop(queues);
                // A panicking job drops its sender (its receiver sees an error); the thread
                // goes on with the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                queues = self.lock();
                if lane == Lane::Launch {
                    queues.launches_running -= 1;
                    if queues.closed {
                        // Only `close` waits for it; no wake-up on a launch's hot path.
                        self.launch_ended.notify_all();
                    }
                }
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
    async fn launches_run_at_most_max_at_once_and_a_nudged_clean_up_does_not_wait_for_them() {
        let pool = Pool::new(NonZeroUsize::new(2).unwrap());
        let launching = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let launch =
            |label: &'static str, hold: Option<Arc<Mutex<std::sync::mpsc::Receiver<()>>>>| {
                let (launching, most, order) = (launching.clone(), most.clone(), order.clone());
                pool.run(Lane::Launch, move || {
                    // The label first: once `launching` counts a launch, its label is in order.
                    order.lock().unwrap().push(label);
                    let now = launching.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if let Some(hold) = hold {
                        hold.lock().unwrap().recv().unwrap();
                    }
                    launching.fetch_sub(1, Ordering::SeqCst);
                })
            };
        // Two launches hold both launch places until released.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let held = [
            launch("held 1", Some(release_rx.clone())),
            launch("held 2", Some(release_rx)),
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while launching.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "both launches started"
            );
            std::thread::yield_now();
        }
        let queued = [launch("launch 1", None), launch("launch 2", None)];
        // A clean-up queued behind them waits for a busy thread; nudged (as `finish` does when
        // it waited too long), it runs on a thread of its own while both launches still hold.
        let clean_up = {
            let order = order.clone();
            pool.run(Lane::CleanUp, move || {
                order.lock().unwrap().push("clean-up")
            })
        };
        pool.nudge();
        tokio::time::timeout(Duration::from_secs(10), clean_up)
            .await
            .expect("the nudged clean-up ran while both launches held their places")
            .expect("it did not panic");
        assert_eq!(launching.load(Ordering::SeqCst), 2, "both still hold");
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for rx in held.into_iter().chain(queued) {
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("every launch ran")
                .expect("no launch panicked");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never more than two launches at once"
        );
        let order = order.lock().unwrap();
        assert_eq!(
            order[2], "clean-up",
            "the clean-up ran before the queued launches"
        );
        let mut queued_ran = order[3..].to_vec();
        queued_ran.sort_unstable();
        // Two threads take them, so either may write its label first.
        assert_eq!(
            queued_ran,
            ["launch 1", "launch 2"],
            "both queued launches ran after"
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
    async fn a_closed_pool_waits_for_running_launches_and_starts_no_other() {
        let pool = Pool::new(NonZeroUsize::MIN);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (began_tx, began_rx) = std::sync::mpsc::channel::<()>();
        let ended = Arc::new(AtomicUsize::new(0));
        let counted = ended.clone();
        let running = pool.run(Lane::Launch, move || {
            began_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
        });
        began_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        let queued = pool.run(Lane::Launch, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Held past the wait: close reports a launch still running.
        assert!(
            !pool.close(Duration::from_millis(20)),
            "a held launch outlasts a short wait"
        );
        // Released while a second close waits: that one returns once it has ended.
        let closer = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.close(Duration::from_secs(10)))
        };
        release_tx.send(()).unwrap();
        assert!(closer.join().unwrap(), "no launch runs once close returns");
        assert_eq!(
            ended.load(Ordering::SeqCst),
            1,
            "the running launch ended whole"
        );
        running.await.unwrap();
        assert!(queued.await.is_err(), "the queued launch was dropped");
        let counted = ran.clone();
        let late = pool.run(Lane::Launch, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        assert!(late.await.is_err(), "a launch after close never runs");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        // Clean-ups still run: they end what already ran.
        assert_eq!(pool.run(Lane::CleanUp, || 7).await.unwrap(), 7);
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
