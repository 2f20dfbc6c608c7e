//! Ground truth: what the service itself measured about its special tasks, so a
//! test can compare profcap's async view (tokio-console) and CPU views with it.
//!
//! A tracked task's future is wrapped in [`Tracked`], which times every poll
//! (`busy_ns`), the gaps between polls (`idle_ns`), the spawn-to-first-poll delay,
//! and — through a waker wrapper ([`TrackWaker`]) — wakes, self-wakes and the
//! time from the first wake after a poll to the start of the next poll
//! (`scheduled_ns`). The task body adds the time it spends in each named wait to
//! the same [`TaskStats`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Process-wide monotonic epoch: all relative times are ns since this + 1
/// (so 0 can mean "unset").
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Monotonic ns since the process epoch, never 0.
pub fn mono_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Counters for one tracked task. Every field is cumulative; the `*_wait_ns`
/// and `sleep_ns` fields are added by the task body around its awaits.
#[derive(Default)]
pub struct TaskStats {
    pub name: String,
    /// tokio task id of the newest instance
    pub task_id: Mutex<String>,
    pub spawned_at_unix_ns: AtomicU64,
    pub spawned_mono: AtomicU64,
    pub first_poll_mono: AtomicU64,
    pub completed_mono: AtomicU64,
    pub polls: AtomicU64,
    pub busy_ns: AtomicU64,
    pub idle_ns: AtomicU64,
    pub scheduled_ns: AtomicU64,
    pub wakes: AtomicU64,
    pub self_wakes: AtomicU64,
    pub last_poll_end_mono: AtomicU64,
    pub woken_mono: AtomicU64,
    pub in_poll: AtomicBool,
    pub max_poll_ns: AtomicU64,
    // named waits, added by the body
    pub db_wait_ns: AtomicU64,
    pub db_waits: AtomicU64,
    pub async_mutex_wait_ns: AtomicU64,
    pub async_mutex_waits: AtomicU64,
    pub async_mutex_hold_ns: AtomicU64,
    pub channel_wait_ns: AtomicU64,
    pub channel_waits: AtomicU64,
    pub sleep_ns: AtomicU64,
    pub sleeps: AtomicU64,
    pub spin_ns: AtomicU64,
    pub yields: AtomicU64,
    /// for truth-starved: how many instances were spawned so far
    pub instances: AtomicU64,
    pub max_first_poll_delay_ns: AtomicU64,
    pub backlog_ahead: AtomicU64,
}

impl TaskStats {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(TaskStats { name: name.to_string(), ..Default::default() })
    }

    pub fn add(field: &AtomicU64, d: Duration) {
        field.fetch_add(ns(d), Relaxed);
    }

    /// Resets the per-instance counters before a new task instance starts
    /// under the same name (used by truth-starved).
    pub fn reset_instance(&self) {
        for f in [
            &self.first_poll_mono,
            &self.completed_mono,
            &self.polls,
            &self.busy_ns,
            &self.idle_ns,
            &self.scheduled_ns,
            &self.wakes,
            &self.self_wakes,
            &self.last_poll_end_mono,
            &self.woken_mono,
            &self.max_poll_ns,
            &self.sleep_ns,
            &self.sleeps,
        ] {
            f.store(0, Relaxed);
        }
    }

    pub fn first_poll_delay_ns(&self) -> Option<u64> {
        let f = self.first_poll_mono.load(Relaxed);
        let s = self.spawned_mono.load(Relaxed);
        (f != 0 && s != 0).then(|| f.saturating_sub(s))
    }
}

/// Forwards wakes to the task's real waker after recording them.
struct TrackWaker {
    stats: Arc<TaskStats>,
    inner: Mutex<Option<Waker>>,
}

impl TrackWaker {
    fn record(&self) {
        let s = &self.stats;
        s.wakes.fetch_add(1, Relaxed);
        if s.in_poll.load(Relaxed) {
            s.self_wakes.fetch_add(1, Relaxed);
        }
        // only the first wake since the last poll started counts for scheduled_ns
        let _ = s.woken_mono.compare_exchange(0, mono_ns(), Relaxed, Relaxed);
    }
}

impl Wake for TrackWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.record();
        let w = self.inner.lock().unwrap().clone();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Future wrapper measuring polls; see the module docs.
pub struct Tracked<F> {
    inner: Pin<Box<F>>,
    stats: Arc<TaskStats>,
    waker: Arc<TrackWaker>,
    waker_handle: Waker,
}

impl<F: Future> Tracked<F> {
    pub fn new(fut: F, stats: Arc<TaskStats>) -> Self {
        let waker = Arc::new(TrackWaker { stats: stats.clone(), inner: Mutex::new(None) });
        let waker_handle = Waker::from(waker.clone());
        Tracked { inner: Box::pin(fut), stats, waker, waker_handle }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let s = &this.stats;
        let start = mono_ns();
        if s.first_poll_mono.load(Relaxed) == 0 {
            s.first_poll_mono.store(start, Relaxed);
            if let Some(d) = s.first_poll_delay_ns() {
                s.max_first_poll_delay_ns.fetch_max(d, Relaxed);
            }
        }
        let last_end = s.last_poll_end_mono.load(Relaxed);
        if last_end != 0 {
            s.idle_ns.fetch_add(start.saturating_sub(last_end), Relaxed);
        }
        let woken = s.woken_mono.swap(0, Relaxed);
        if woken != 0 {
            s.scheduled_ns.fetch_add(start.saturating_sub(woken), Relaxed);
        }
        {
            let mut inner = this.waker.inner.lock().unwrap();
            match inner.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *inner = Some(cx.waker().clone()),
            }
        }
        s.in_poll.store(true, Relaxed);
        let mut cx2 = Context::from_waker(&this.waker_handle);
        let r = this.inner.as_mut().poll(&mut cx2);
        s.in_poll.store(false, Relaxed);
        let end = mono_ns();
        let busy = end.saturating_sub(start);
        s.polls.fetch_add(1, Relaxed);
        s.busy_ns.fetch_add(busy, Relaxed);
        s.max_poll_ns.fetch_max(busy, Relaxed);
        s.last_poll_end_mono.store(end, Relaxed);
        if r.is_ready() {
            s.completed_mono.store(end, Relaxed);
        }
        r
    }
}

// ---------------------------------------------------------------------------
// Task names, for the task dump (tokio's dump knows only ids).

fn names() -> &'static Mutex<HashMap<String, String>> {
    static NAMES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

pub fn task_name(id: &str) -> Option<String> {
    names().lock().unwrap().get(id).cloned()
}

/// Removes the task's name from the registry when the task's future is
/// dropped (completion or abort); tokio sets the task id while dropping it.
struct NameGuard;

impl Drop for NameGuard {
    fn drop(&mut self) {
        if let Some(id) = tokio::task::try_id() {
            names().lock().unwrap().remove(&id.to_string());
        }
    }
}

pub static TASKS_SPAWNED: AtomicU64 = AtomicU64::new(0);

/// Wraps every named task's future: removes the name when dropped, and its
/// `#[inline(never)]` poll gives the task's outermost async fn a frame of its
/// own (otherwise it is inlined into tokio's task-dump root frame, which the
/// dump leaves out).
struct Named<F> {
    inner: Pin<Box<F>>,
    _guard: NameGuard,
}

impl<F: Future> Future for Named<F> {
    type Output = F::Output;
    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// Spawns a named task (visible under this name in tokio-console and in
/// /debug/tokio/dump).
pub fn spawn_named<F>(name: &str, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let wrapped = Named { inner: Box::pin(fut), _guard: NameGuard };
    let h = tokio::task::Builder::new().name(name).spawn(wrapped).expect("spawn task");
    TASKS_SPAWNED.fetch_add(1, Relaxed);
    if !h.is_finished() {
        names().lock().unwrap().insert(h.id().to_string(), name.to_string());
    }
    h
}

/// Spawns a named task whose polls are measured into `stats`.
pub fn spawn_tracked<F>(stats: &Arc<TaskStats>, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    stats.spawned_at_unix_ns.store(unix_ns(), Relaxed);
    stats.spawned_mono.store(mono_ns(), Relaxed);
    stats.instances.fetch_add(1, Relaxed);
    let h = spawn_named(&stats.name.clone(), Tracked::new(fut, stats.clone()));
    *stats.task_id.lock().unwrap() = h.id().to_string();
    h
}

/// A future that wakes itself: each poll calls `cx.waker().wake_by_ref()`
/// `wakes_per_poll` times and returns `Pending`, until it has been polled
/// `polls` times; then it is `Ready`.
pub struct SelfWake {
    pub polls_left: u32,
    pub wakes_per_poll: u32,
}

impl Future for SelfWake {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polls_left == 0 {
            return Poll::Ready(());
        }
        self.polls_left -= 1;
        for _ in 0..self.wakes_per_poll {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}
