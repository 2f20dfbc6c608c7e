//! The service's continuous work: an orchestrator part that claims steps (a
//! database wait), renders them and hands them to a worker part over an mpsc
//! channel; the worker part executes each step in its own task (CPU work,
//! spawn_blocking, a contended std::sync::Mutex) and replies over a oneshot;
//! the orchestrator commits the result under a contended tokio::sync::Mutex
//! held across an await. Around it run the ground-truth tasks (see truth.rs)
//! and the spawn backlog.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::cli::{Args, Role};
use crate::db::{db_query, Db, Lane};
use crate::truth::{self, spawn_named, spawn_tracked, SelfWake, TaskStats};
use crate::work::{self, timed};

/// Work sizes, chosen so one instance uses roughly 20–50% of one core at the
/// default --steps-per-sec (measured figures are in rust/README.md).
pub mod tuning {
    /// hash_payload rounds per hash step (x3 with --sick)
    pub const HASH_ROUNDS: u32 = 16_000;
    /// render_template repeats for a render step (the orchestrator's per-step render uses 1)
    pub const RENDER_REPEAT: usize = 300;
    pub const RENDER_FIELDS: usize = 40;
    /// bytes gzipped by a compress step
    pub const COMPRESS_BYTES: usize = 96 * 1024;
    /// blocking_checksum rounds and its blocking "I/O" wait
    pub const BLOCKING_ROUNDS: u32 = 1_500;
    pub const BLOCKING_IO_MS: u32 = 3;
    /// digests kept (and sorted) by merge_results under the std mutex
    pub const MERGE_WINDOW: usize = 4096;
    /// results-compactor: every COMPACT_EVERY_MS it holds the std mutex for
    /// COMPACT_PASSES passes over the MERGE_WINDOW digests (about 2 ms)
    pub const COMPACT_EVERY_MS: u64 = 25;
    pub const COMPACT_PASSES: u32 = 400;
    /// renders kept alive (heap profile)
    pub const KEEP_RENDERS: usize = 32;
    /// database wait per query
    pub const DB_WAIT_MS: u64 = 20;
    /// ledger writers: hold the tokio mutex across a sleep of HOLD, then rest
    pub const LEDGER_WRITERS: usize = 2;
    pub const LEDGER_HOLD_MS: u64 = 3;
    pub const LEDGER_REST_MS: u64 = 12;
    /// orchestrator commit: hold the ledger across this sleep
    pub const COMMIT_HOLD_MS: u64 = 1;
    /// spawn backlog round every ... (first round after 3 s)
    pub const BACKLOG_EVERY_SECS: u64 = 10;
    /// at most this many steps in flight; the dispatcher skips ticks past it
    pub const MAX_IN_FLIGHT: usize = 256;
}
use tuning::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hash,
    Render,
    Compress,
    Blocking,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Hash, Kind::Render, Kind::Compress, Kind::Blocking];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hash => "hash",
            Kind::Render => "render",
            Kind::Compress => "compress",
            Kind::Blocking => "blocking",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
    fn worker_task(self) -> &'static str {
        match self {
            Kind::Hash => "worker.step.hash",
            Kind::Render => "worker.step.render",
            Kind::Compress => "worker.step.compress",
            Kind::Blocking => "worker.step.blocking",
        }
    }
}

/// Step mix per role: orchestrators render more, workers hash more.
fn mix(role: Role) -> &'static [Kind] {
    use Kind::*;
    match role {
        Role::Orchestration => &[Render, Hash, Compress, Render, Blocking, Hash],
        Role::Worker => &[Hash, Compress, Hash, Blocking, Render, Hash],
    }
}

#[derive(Default)]
pub struct Metrics {
    pub steps_dispatched: AtomicU64,
    pub steps_skipped: AtomicU64,
    pub steps_done: [AtomicU64; 4],
    pub step_latency_ns: [AtomicU64; 4],
    pub in_flight: AtomicUsize,
    pub ledger_locks: AtomicU64,
    pub ledger_wait_ns: AtomicU64,
    pub ledger_hold_ns: AtomicU64,
    pub backlog_rounds: AtomicU64,
    pub backlog_tasks: AtomicU64,
}

#[derive(Default)]
pub struct Ledger {
    pub commits: u64,
    pub last_digest: u64,
}

pub struct TruthTasks {
    pub db_waiter: Arc<TaskStats>,
    pub mutex_waiter: Arc<TaskStats>,
    pub channel_waiter: Arc<TaskStats>,
    pub sleeper: Arc<TaskStats>,
    pub spinner: Arc<TaskStats>,
    pub self_waker: Arc<TaskStats>,
    pub starved: Arc<TaskStats>,
}

impl TruthTasks {
    pub fn all(&self) -> [&Arc<TaskStats>; 7] {
        [
            &self.db_waiter,
            &self.mutex_waiter,
            &self.channel_waiter,
            &self.sleeper,
            &self.spinner,
            &self.self_waker,
            &self.starved,
        ]
    }
}

pub struct App {
    pub args: Args,
    pub db: Db,
    pub ledger: tokio::sync::Mutex<Ledger>,
    pub metrics: Metrics,
    pub truth: TruthTasks,
    pub started_unix_ns: u64,
    pub started: Instant,
    recent_renders: Mutex<VecDeque<String>>,
    starved_handle: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl App {
    pub fn new(args: Args, db: Db) -> Arc<App> {
        Arc::new(App {
            args,
            db,
            ledger: tokio::sync::Mutex::new(Ledger::default()),
            metrics: Metrics::default(),
            truth: TruthTasks {
                db_waiter: TaskStats::new("truth-db-waiter"),
                mutex_waiter: TaskStats::new("truth-mutex-waiter"),
                channel_waiter: TaskStats::new("truth-channel-waiter"),
                sleeper: TaskStats::new("truth-sleeper"),
                spinner: TaskStats::new("truth-spinner"),
                self_waker: TaskStats::new("truth-self-waker"),
                starved: TaskStats::new("truth-starved"),
            },
            started_unix_ns: truth::unix_ns(),
            started: Instant::now(),
            recent_renders: Mutex::new(VecDeque::new()),
            starved_handle: Mutex::new(None),
        })
    }

    fn hash_rounds(&self) -> u32 {
        if self.args.sick {
            HASH_ROUNDS * 3
        } else {
            HASH_ROUNDS
        }
    }

    /// Locks the ledger, measuring the wait; returns the guard.
    async fn lock_ledger(&self) -> (tokio::sync::MutexGuard<'_, Ledger>, Duration) {
        let t = Instant::now();
        let g = self.ledger.lock().await;
        let w = t.elapsed();
        self.metrics.ledger_locks.fetch_add(1, Relaxed);
        self.metrics.ledger_wait_ns.fetch_add(truth::ns(w), Relaxed);
        (g, w)
    }
}

struct StepRequest {
    seq: u64,
    kind: Kind,
    reply: oneshot::Sender<u64>,
}

fn step_fields(seq: u64) -> Vec<(String, String)> {
    (0..RENDER_FIELDS)
        .map(|i| (format!("field_{i}"), format!("value-{}-{}", seq % 1000, i * 31 % 17)))
        .collect()
}

/// Starts every long-lived task.
pub fn start(app: &Arc<App>) {
    work::prefill_results(MERGE_WINDOW);
    work::start_compactor(Duration::from_millis(COMPACT_EVERY_MS), COMPACT_PASSES);
    let (tx, rx) = mpsc::channel::<StepRequest>(64);
    spawn_named("orchestration.dispatcher", dispatcher(app.clone(), tx));
    spawn_named("worker.receiver", worker_receiver(app.clone(), rx));
    for i in 0..LEDGER_WRITERS {
        let name = format!("ledger.writer-{}", i + 1);
        spawn_named(&name, ledger_writer(app.clone()));
    }

    let t = &app.truth;
    spawn_tracked(&t.db_waiter, truth_db_waiter(app.clone(), t.db_waiter.clone()));
    spawn_tracked(&t.mutex_waiter, truth_mutex_waiter(app.clone(), t.mutex_waiter.clone()));
    let (ctx, crx) = mpsc::channel::<u64>(8);
    spawn_named("truth.channel-feeder", channel_feeder(ctx));
    spawn_tracked(&t.channel_waiter, truth_channel_waiter(crx, t.channel_waiter.clone()));
    spawn_tracked(&t.sleeper, truth_sleeper(t.sleeper.clone()));
    spawn_tracked(&t.spinner, truth_spinner(t.spinner.clone(), Duration::from_millis(app.args.spin_ms)));
    spawn_tracked(&t.self_waker, truth_self_waker(t.self_waker.clone()));
    if app.args.spawn_backlog > 0 {
        spawn_named("backlog.coordinator", backlog_coordinator(app.clone()));
    }
    for i in 0..app.args.idle_tasks {
        spawn_named(&idle_task_name(i, app.args.idle_task_name_bytes), std::future::pending::<()>());
    }
}

/// `idle.NNNNNN`, padded with '.' to `bytes` bytes: --idle-tasks spawns these,
/// each polled once and then idle for the life of the process.
pub fn idle_task_name(i: usize, bytes: usize) -> String {
    let mut name = format!("idle.{:06}", i + 1);
    while name.len() < bytes {
        name.push('.');
    }
    name
}

// ---------------------------------------------------------------------------
// orchestrator part

async fn dispatcher(app: Arc<App>, tx: mpsc::Sender<StepRequest>) {
    let period = Duration::from_secs_f64(1.0 / app.args.steps_per_sec.max(0.01));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let kinds = mix(app.args.role);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        if app.metrics.in_flight.load(Relaxed) >= MAX_IN_FLIGHT {
            app.metrics.steps_skipped.fetch_add(1, Relaxed);
            continue;
        }
        seq += 1;
        let kind = kinds[(seq as usize) % kinds.len()];
        app.metrics.steps_dispatched.fetch_add(1, Relaxed);
        app.metrics.in_flight.fetch_add(1, Relaxed);
        spawn_named("orchestration.step", orchestrate_step(app.clone(), tx.clone(), seq, kind));
    }
}

async fn orchestrate_step(app: Arc<App>, tx: mpsc::Sender<StepRequest>, seq: u64, kind: Kind) {
    let t0 = Instant::now();
    // claim the step
    db_query(&app.db, Lane::Pool).await;
    let fields = step_fields(seq);
    let header = timed(&work::RENDER_TEMPLATE, || work::render_template(seq, &fields[..8], 1));
    let (rtx, rrx) = oneshot::channel();
    if tx.send(StepRequest { seq, kind, reply: rtx }).await.is_err() {
        app.metrics.in_flight.fetch_sub(1, Relaxed);
        return;
    }
    let digest = rrx.await.unwrap_or(0) ^ header.len() as u64;
    // commit: the ledger lock is held across an await
    let (mut ledger, _) = app.lock_ledger().await;
    let h = Instant::now();
    ledger.commits += 1;
    ledger.last_digest = digest;
    tokio::time::sleep(Duration::from_millis(COMMIT_HOLD_MS)).await;
    drop(ledger);
    app.metrics.ledger_hold_ns.fetch_add(truth::ns(h.elapsed()), Relaxed);
    app.metrics.steps_done[kind.idx()].fetch_add(1, Relaxed);
    app.metrics.step_latency_ns[kind.idx()].fetch_add(truth::ns(t0.elapsed()), Relaxed);
    app.metrics.in_flight.fetch_sub(1, Relaxed);
}

async fn ledger_writer(app: Arc<App>) {
    loop {
        let (mut ledger, _) = app.lock_ledger().await;
        let h = Instant::now();
        ledger.commits += 1;
        tokio::time::sleep(Duration::from_millis(LEDGER_HOLD_MS)).await;
        drop(ledger);
        app.metrics.ledger_hold_ns.fetch_add(truth::ns(h.elapsed()), Relaxed);
        tokio::time::sleep(Duration::from_millis(LEDGER_REST_MS)).await;
    }
}

// ---------------------------------------------------------------------------
// worker part

async fn worker_receiver(app: Arc<App>, mut rx: mpsc::Receiver<StepRequest>) {
    while let Some(req) = rx.recv().await {
        spawn_named(req.kind.worker_task(), execute_step(app.clone(), req));
    }
}

async fn execute_step(app: Arc<App>, req: StepRequest) {
    let seq = req.seq;
    let digest = match req.kind {
        Kind::Hash => {
            let rounds = app.hash_rounds();
            let d = timed(&work::HASH_PAYLOAD, || work::hash_payload(seq, rounds));
            work::merge_locked(d, MERGE_WINDOW);
            d
        }
        Kind::Render => {
            let fields = step_fields(seq);
            let out = timed(&work::RENDER_TEMPLATE, || work::render_template(seq, &fields, RENDER_REPEAT));
            let d = out.len() as u64 ^ seq;
            {
                let mut keep = app.recent_renders.lock().unwrap();
                keep.push_back(out);
                while keep.len() > KEEP_RENDERS {
                    keep.pop_front();
                }
            }
            work::merge_locked(d, MERGE_WINDOW);
            d
        }
        Kind::Compress => {
            let data = work::generate_result(seq, COMPRESS_BYTES);
            let z = timed(&work::COMPRESS_RESULT, || work::compress_result(&data));
            let d = z.len() as u64 ^ seq.rotate_left(17);
            work::merge_locked(d, MERGE_WINDOW);
            d
        }
        Kind::Blocking => {
            // the merge runs on the blocking thread too, so the std mutex is
            // contended between a blocking-pool thread and the runtime workers
            tokio::task::spawn_blocking(move || {
                let d = timed(&work::BLOCKING_CHECKSUM, || {
                    work::blocking_checksum(seq, BLOCKING_ROUNDS, BLOCKING_IO_MS)
                });
                work::merge_locked(d, MERGE_WINDOW);
                d
            })
            .await
            .unwrap_or(0)
        }
    };
    let _ = req.reply.send(digest);
}

// ---------------------------------------------------------------------------
// ground-truth tasks

async fn truth_db_waiter(app: Arc<App>, s: Arc<TaskStats>) {
    loop {
        let d = db_query(&app.db, Lane::Reserved).await;
        TaskStats::add(&s.db_wait_ns, d);
        s.db_waits.fetch_add(1, Relaxed);
    }
}

async fn truth_mutex_waiter(app: Arc<App>, s: Arc<TaskStats>) {
    loop {
        let (ledger, w) = app.lock_ledger().await;
        TaskStats::add(&s.async_mutex_wait_ns, w);
        s.async_mutex_waits.fetch_add(1, Relaxed);
        let h = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(ledger);
        TaskStats::add(&s.async_mutex_hold_ns, h.elapsed());
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        TaskStats::add(&s.sleep_ns, t.elapsed());
        s.sleeps.fetch_add(1, Relaxed);
    }
}

async fn channel_feeder(tx: mpsc::Sender<u64>) {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        n += 1;
        if tx.send(n).await.is_err() {
            return;
        }
    }
}

async fn truth_channel_waiter(mut rx: mpsc::Receiver<u64>, s: Arc<TaskStats>) {
    loop {
        let t = Instant::now();
        let Some(v) = rx.recv().await else { return };
        TaskStats::add(&s.channel_wait_ns, t.elapsed());
        s.channel_waits.fetch_add(1, Relaxed);
        std::hint::black_box(v);
    }
}

async fn truth_sleeper(s: Arc<TaskStats>) {
    loop {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        TaskStats::add(&s.sleep_ns, t.elapsed());
        s.sleeps.fetch_add(1, Relaxed);
    }
}

/// Two polls of `spin` CPU each (yield_now between), then a 60 ms sleep.
async fn truth_spinner(s: Arc<TaskStats>, spin: Duration) {
    loop {
        for _ in 0..2 {
            let t = Instant::now();
            timed(&work::SPIN_CPU, || work::spin_cpu(spin));
            TaskStats::add(&s.spin_ns, t.elapsed());
            tokio::task::yield_now().await;
            s.yields.fetch_add(1, Relaxed);
        }
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(60)).await;
        TaskStats::add(&s.sleep_ns, t.elapsed());
        s.sleeps.fetch_add(1, Relaxed);
    }
}

/// Polls of a future that wakes itself 3 times per poll (5 polls), then 20 ms asleep.
async fn truth_self_waker(s: Arc<TaskStats>) {
    loop {
        SelfWake { polls_left: 5, wakes_per_poll: 3 }.await;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        TaskStats::add(&s.sleep_ns, t.elapsed());
        s.sleeps.fetch_add(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------
// spawn backlog: every BACKLOG_EVERY_SECS, one `backlog.hog` task per runtime
// worker spins --hog-ms without yielding, so every worker thread is held;
// while they spin, a blocking-pool thread spawns --spawn-backlog `backlog.task`
// tasks and then `truth-starved` into the runtime's queue, where they stay
// scheduled but unpolled until the hogs finish.

struct Round {
    started: AtomicUsize,
}

async fn backlog_coordinator(app: Arc<App>) {
    let workers = app.args.workers;
    tokio::time::sleep(Duration::from_secs(3)).await;
    loop {
        // the previous truth-starved instance ends before a new one starts
        let old = app.starved_handle.lock().unwrap().take();
        if let Some(h) = old {
            h.abort();
            let _ = h.await;
        }
        app.metrics.backlog_rounds.fetch_add(1, Relaxed);
        let round = Arc::new(Round { started: AtomicUsize::new(0) });
        for _ in 0..workers {
            spawn_named("backlog.hog", backlog_hog(app.clone(), round.clone()));
        }
        tokio::time::sleep(Duration::from_secs(BACKLOG_EVERY_SECS)).await;
    }
}

async fn backlog_hog(app: Arc<App>, round: Arc<Round>) {
    let workers = app.args.workers;
    let n = round.started.fetch_add(1, Relaxed) + 1;
    // wait (bounded) until every hog holds its own worker thread
    let t = Instant::now();
    while round.started.load(Relaxed) < workers && t.elapsed() < Duration::from_millis(50) {
        std::hint::spin_loop();
    }
    if n == workers {
        let app2 = app.clone();
        // spawned from a non-worker thread, the tasks go to the runtime's
        // shared queue in order: the backlog first, truth-starved last
        let _ = tokio::task::spawn_blocking(move || spawn_backlog(app2));
    }
    let hog = Duration::from_millis(app.args.hog_ms);
    timed(&work::HOG_WORKER_THREAD, || work::hog_worker_thread(hog));
}

fn spawn_backlog(app: Arc<App>) {
    let n = app.args.spawn_backlog;
    for i in 0..n {
        spawn_named("backlog.task", async move {
            std::hint::black_box(work::hash_payload(i as u64, 200));
        });
    }
    app.metrics.backlog_tasks.fetch_add(n as u64, Relaxed);
    let s = app.truth.starved.clone();
    s.reset_instance();
    s.backlog_ahead.store(n as u64, Relaxed);
    let h = spawn_tracked(&s, truth_starved(s.clone()));
    *app.starved_handle.lock().unwrap() = Some(h);
}

/// Records (through its Tracked wrapper) the delay from spawn to first poll,
/// then sleeps until the next round replaces it.
async fn truth_starved(s: Arc<TaskStats>) {
    loop {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        TaskStats::add(&s.sleep_ns, t.elapsed());
        s.sleeps.fetch_add(1, Relaxed);
    }
}
