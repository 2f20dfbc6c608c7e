//! Ground truth: what the service itself measured about its special tasks, so a
//! test can compare profcap's async view (tokio-console) and CPU views with it.
//!
//! A tracked task's future is wrapped in [`Tracked`], which times every poll
//! (`busy_ns`), the gaps between polls (`idle_ns`), the spawn-to-first-poll delay,
//! and — through a waker wrapper ([`TrackWaker`]) — wakes, self-wakes and the
//! time from the first wake after a poll to the start of the next poll
//! (`scheduled_ns`). The task body adds the time it spends in each named wait to
//! the same [`TaskStats`].

use std::collections::{HashMap, VecDeque};
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
    /// every spawn, poll start and end, wake and end of every instance, for
    /// the state at any past instant (`GET /truth/at`)
    pub timeline: Timeline,
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
        s.timeline.log(Ev::Wake);
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
    ended: bool,
}

impl<F: Future> Tracked<F> {
    pub fn new(fut: F, stats: Arc<TaskStats>) -> Self {
        let waker = Arc::new(TrackWaker { stats: stats.clone(), inner: Mutex::new(None) });
        let waker_handle = Waker::from(waker.clone());
        Tracked { inner: Box::pin(fut), stats, waker, waker_handle, ended: false }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let s = &this.stats;
        let start = s.timeline.log(Ev::PollStart);
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
        let end = s.timeline.log(Ev::PollEnd);
        let busy = end.saturating_sub(start);
        s.polls.fetch_add(1, Relaxed);
        s.busy_ns.fetch_add(busy, Relaxed);
        s.max_poll_ns.fetch_max(busy, Relaxed);
        s.last_poll_end_mono.store(end, Relaxed);
        if r.is_ready() {
            s.completed_mono.store(end, Relaxed);
            s.timeline.log(Ev::End);
            this.ended = true;
        }
        r
    }
}

impl<F> Drop for Tracked<F> {
    /// An instance dropped before it completed (aborted) ends here.
    fn drop(&mut self) {
        if !self.ended {
            let end = self.stats.timeline.log(Ev::End);
            let _ = self.stats.completed_mono.compare_exchange(0, end, Relaxed, Relaxed);
        }
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
    stats.spawned_mono.store(stats.timeline.log(Ev::Spawn), Relaxed);
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

// ---------------------------------------------------------------------------
// Timeline: the state of a tracked task at any past instant.

/// One event of a tracked task's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    Spawn,
    PollStart,
    PollEnd,
    Wake,
    End,
}

/// Events kept per task (16 bytes each); older ones are folded into a
/// running total, so only instants before the oldest kept event are lost
/// (truth-self-waker, the busiest, logs about 1,300 events a second: 100 s).
const TIMELINE_CAP: usize = 1 << 17;

#[derive(Default)]
pub struct Timeline {
    inner: Mutex<TimelineInner>,
}

#[derive(Default)]
struct TimelineInner {
    events: VecDeque<(u64, Ev)>,
    /// the state after every event already dropped from `events`
    base: At,
}

/// What a task did up to an instant, summed over all its instances.
/// Every nanosecond of an instance's life is in exactly one of busy (in a
/// poll), first_poll_wait (spawned, not yet polled), scheduled (woken, not
/// yet polled again: from the first wake after a poll ended, or from the end
/// of a poll during which it was woken, to the next poll) and idle (the rest).
#[derive(Clone, Copy, Default, Debug)]
pub struct At {
    /// the time of the last event applied (mono ns)
    pub last: u64,
    alive: bool,
    polled: bool,
    in_poll: bool,
    woken_in_poll: bool,
    runnable: bool,
    pub instances: u64,
    pub alive_ns: u64,
    pub busy_ns: u64,
    pub scheduled_ns: u64,
    pub first_poll_wait_ns: u64,
    pub polls: u64,
    pub wakes: u64,
    pub self_wakes: u64,
}

impl At {
    fn advance(&mut self, to: u64) {
        let d = to.saturating_sub(self.last);
        if self.alive {
            self.alive_ns += d;
            if self.in_poll {
                self.busy_ns += d;
            } else if !self.polled {
                self.first_poll_wait_ns += d;
            } else if self.runnable {
                self.scheduled_ns += d;
            }
        }
        self.last = self.last.max(to);
    }

    fn apply(&mut self, t: u64, ev: Ev) {
        self.advance(t);
        match ev {
            Ev::Spawn => {
                self.alive = true;
                self.polled = false;
                self.in_poll = false;
                self.woken_in_poll = false;
                self.runnable = false;
                self.instances += 1;
            }
            Ev::PollStart => {
                self.polled = true;
                self.in_poll = true;
                self.runnable = false;
                self.woken_in_poll = false;
                self.polls += 1;
            }
            Ev::PollEnd => {
                self.in_poll = false;
                self.runnable = self.woken_in_poll;
                self.woken_in_poll = false;
            }
            Ev::Wake => {
                self.wakes += 1;
                if self.in_poll {
                    self.self_wakes += 1;
                    self.woken_in_poll = true;
                } else if self.polled {
                    self.runnable = true;
                }
            }
            Ev::End => {
                self.alive = false;
                self.in_poll = false;
                self.runnable = false;
            }
        }
    }

    pub fn idle_ns(&self) -> u64 {
        self.alive_ns
            .saturating_sub(self.busy_ns)
            .saturating_sub(self.scheduled_ns)
            .saturating_sub(self.first_poll_wait_ns)
    }
}

impl Timeline {
    /// Records ev now and returns its time; the time is taken under the
    /// lock, so the events are in time order.
    pub fn log(&self, ev: Ev) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let t = mono_ns();
        if g.events.len() >= TIMELINE_CAP {
            if let Some((t0, e0)) = g.events.pop_front() {
                g.base.apply(t0, e0);
            }
        }
        g.events.push_back((t, ev));
        t
    }

    /// The state at mono instant t, or None when t is older than the
    /// events kept.
    pub fn at(&self, t: u64) -> Option<At> {
        let g = self.inner.lock().unwrap();
        if t < g.base.last {
            return None;
        }
        let mut a = g.base;
        for &(te, ev) in &g.events {
            if te > t {
                break;
            }
            a.apply(te, ev);
        }
        a.advance(t);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_splits_life() {
        let mut a = At::default();
        // spawned at 10, first poll 30..35 (woken by itself inside it), polled
        // again 40..41, woken at 60, polled 70..72, ended at 80
        for (t, e) in [
            (10, Ev::Spawn),
            (30, Ev::PollStart),
            (33, Ev::Wake),
            (35, Ev::PollEnd),
            (40, Ev::PollStart),
            (41, Ev::PollEnd),
            (60, Ev::Wake),
            (65, Ev::Wake),
            (70, Ev::PollStart),
            (72, Ev::PollEnd),
            (80, Ev::End),
        ] {
            a.apply(t, e);
        }
        a.advance(100);
        assert_eq!(a.alive_ns, 70);
        assert_eq!(a.first_poll_wait_ns, 20);
        assert_eq!(a.busy_ns, 5 + 1 + 2);
        assert_eq!(a.scheduled_ns, 5 + 10);
        assert_eq!(a.idle_ns(), 70 - 20 - 8 - 15);
        assert_eq!((a.polls, a.wakes, a.self_wakes, a.instances), (3, 3, 1, 1));
    }
}
