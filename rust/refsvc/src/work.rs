//! The CPU work of a step. Every function a profile should show is
//! `#[inline(never)]` and does real computation; each call site goes through
//! [`timed`], which adds the call's thread CPU time and wall time to that
//! function's counters (reported in /truth and /metrics).

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use worker_core::{compute, BLOCK_WORDS};

pub struct FnCounter {
    pub name: &'static str,
    pub calls: AtomicU64,
    pub cpu_ns: AtomicU64,
    pub wall_ns: AtomicU64,
}

impl FnCounter {
    const fn new(name: &'static str) -> Self {
        FnCounter { name, calls: AtomicU64::new(0), cpu_ns: AtomicU64::new(0), wall_ns: AtomicU64::new(0) }
    }
}

pub static HASH_PAYLOAD: FnCounter = FnCounter::new("hash_payload");
pub static RENDER_TEMPLATE: FnCounter = FnCounter::new("render_template");
pub static COMPRESS_RESULT: FnCounter = FnCounter::new("compress_result");
pub static MERGE_RESULTS: FnCounter = FnCounter::new("merge_results");
pub static BLOCKING_CHECKSUM: FnCounter = FnCounter::new("blocking_checksum");
pub static SPIN_CPU: FnCounter = FnCounter::new("spin_cpu");
pub static HOG_WORKER_THREAD: FnCounter = FnCounter::new("hog_worker_thread");
pub static COMPACT_RESULTS: FnCounter = FnCounter::new("compact_results");

pub static ALL: [&FnCounter; 8] = [
    &HASH_PAYLOAD,
    &RENDER_TEMPLATE,
    &COMPRESS_RESULT,
    &MERGE_RESULTS,
    &BLOCKING_CHECKSUM,
    &SPIN_CPU,
    &HOG_WORKER_THREAD,
    &COMPACT_RESULTS,
];

/// Time the step tasks (runtime worker threads and the blocking pool) spent
/// blocked on the contended std::sync::Mutex RESULTS, before merge_results.
pub static STD_MUTEX_WAIT_NS: AtomicU64 = AtomicU64::new(0);
pub static STD_MUTEX_LOCKS: AtomicU64 = AtomicU64::new(0);

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Runs `f`, adding its thread CPU time and wall time to `c`.
#[inline(always)]
pub fn timed<R>(c: &FnCounter, f: impl FnOnce() -> R) -> R {
    let c0 = thread_cpu_ns();
    let w0 = Instant::now();
    let r = f();
    let wall = w0.elapsed().as_nanos() as u64;
    let cpu = thread_cpu_ns().saturating_sub(c0);
    c.calls.fetch_add(1, Relaxed);
    c.cpu_ns.fetch_add(cpu, Relaxed);
    c.wall_ns.fetch_add(wall, Relaxed);
    r
}

/// Hashes a step's payload: `rounds` rounds of worker_core's checksum_block
/// over a 4 KiB block derived from `seed`.
#[inline(never)]
pub fn hash_payload(seed: u64, rounds: u32) -> u64 {
    let mut block = [0u64; BLOCK_WORDS];
    compute::fill_block(seed, &mut block);
    let mut acc = seed;
    for i in 0..rounds as usize {
        acc = compute::checksum_block(acc, &block);
        block[(i * 7) % BLOCK_WORDS] ^= acc;
    }
    black_box(acc)
}

/// Renders a step's template: substitutes `{{name}}` placeholders from a field
/// list, `repeat` times over, into a new String (allocates, so it also shows
/// in the heap profile when results are kept).
#[inline(never)]
pub fn render_template(step_id: u64, fields: &[(String, String)], repeat: usize) -> String {
    let mut template = String::with_capacity(fields.len() * 24);
    for (k, _) in fields {
        template.push_str("<td class=\"f\">{{");
        template.push_str(k);
        template.push_str("}}</td>");
    }
    let mut out = String::with_capacity(template.len() * repeat * 2);
    for r in 0..repeat {
        let mut rest = template.as_str();
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after.find("}}").unwrap_or(after.len());
            let key = &after[..close];
            match fields.iter().find(|(k, _)| k == key) {
                Some((_, v)) => {
                    out.push_str(v);
                    let _ = std::fmt::Write::write_fmt(&mut out, format_args!("-{}", step_id.wrapping_add(r as u64) % 97));
                }
                None => out.push_str("?"),
            }
            rest = &after[(close + 2).min(after.len())..];
        }
        out.push_str(rest);
    }
    black_box(out)
}

/// Builds `len` bytes of text-like, compressible data for a step's result.
#[inline(never)]
pub fn generate_result(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "step", "workflow", "task", "queued", "complete", "retry", "orchestr", "worker", "payload",
        "result", "handler", "namespace", "ready", "error", "pending", "state",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut s = seed | 1;
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(WORDS[(s % 16) as usize].as_bytes());
        out.push(if s & 0x30 == 0 { b'\n' } else { b' ' });
        if s & 0x300 == 0 {
            out.extend_from_slice((s % 10_000).to_string().as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Compresses a step's result with gzip (flate2, level 6).
#[inline(never)]
pub fn compress_result(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), flate2::Compression::new(6));
    enc.write_all(data).expect("gzip to memory");
    black_box(enc.finish().expect("gzip to memory"))
}

/// The shared result store behind the contended std::sync::Mutex.
pub struct ResultStore {
    pub digests: Vec<u64>,
    pub merged: u64,
    pub summary: u64,
}

pub static RESULTS: Mutex<ResultStore> = Mutex::new(ResultStore { digests: Vec::new(), merged: 0, summary: 0 });

/// Merges a step's digest into the store: keeps a sorted window of the last
/// `window` digests and recomputes a summary over it, all while the caller
/// holds the std::sync::Mutex (so other threads block on it).
#[inline(never)]
pub fn merge_results(store: &mut ResultStore, digest: u64, window: usize) {
    store.digests.push(digest);
    if store.digests.len() > window {
        let excess = store.digests.len() - window;
        store.digests.drain(..excess);
    }
    let mut sorted = store.digests.clone();
    sorted.sort_unstable();
    let mut acc = store.summary;
    for (i, d) in sorted.iter().enumerate() {
        acc = acc.rotate_left(5) ^ d.wrapping_mul(i as u64 | 1);
    }
    store.summary = black_box(acc);
    store.merged += 1;
}

/// Locks RESULTS (measuring the wait) and merges under the lock.
pub fn merge_locked(digest: u64, window: usize) {
    let t = Instant::now();
    let mut g = RESULTS.lock().unwrap_or_else(|p| p.into_inner());
    STD_MUTEX_WAIT_NS.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
    STD_MUTEX_LOCKS.fetch_add(1, Relaxed);
    timed(&MERGE_RESULTS, || merge_results(&mut g, digest, window));
}

/// Recomputes the store's summary from scratch (`passes` hash passes over
/// every digest) while the caller holds RESULTS.
#[inline(never)]
pub fn compact_results(store: &mut ResultStore, passes: u32) {
    let mut acc = 0u64;
    for p in 0..passes {
        for d in &store.digests {
            acc = (acc ^ d).wrapping_mul(0x100_0000_01b3).rotate_left(p % 63 + 1);
        }
    }
    store.summary ^= black_box(acc);
}

/// Fills the store's window with `n` seed digests, so that the service is
/// in its steady state from the start: the compactor's hold (its passes
/// over a full window, about 2 ms) contends at once instead of after the
/// steps have filled the window (about 100 s at the default step rate).
pub fn prefill_results(n: usize) {
    let mut g = RESULTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.digests.extend((0..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }));
}

/// The `results-compactor` thread (a plain std::thread, not a task): every
/// `every`, holds RESULTS for a compaction (about 2 ms), so step tasks that
/// merge meanwhile block their thread on the std::sync::Mutex.
pub fn start_compactor(every: Duration, passes: u32) {
    std::thread::Builder::new()
        .name("results-compactor".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let mut g = RESULTS.lock().unwrap_or_else(|p| p.into_inner());
            timed(&COMPACT_RESULTS, || compact_results(&mut g, passes));
        })
        .expect("results-compactor thread");
}

/// Runs on the blocking pool (spawn_blocking): checksums a result and then
/// blocks the thread like a synchronous file write would.
#[inline(never)]
pub fn blocking_checksum(seed: u64, rounds: u32, io_ms: u32) -> u64 {
    let h = hash_payload(seed, rounds);
    worker_core::io::wait_for_io(io_ms);
    h
}

/// Spins on the CPU for `d` without yielding.
#[inline(never)]
pub fn spin_cpu(d: Duration) -> u64 {
    spin_until(Instant::now() + d, 4)
}

/// Holds a runtime worker thread for `d` without yielding (the spawn backlog).
#[inline(never)]
pub fn hog_worker_thread(d: Duration) -> u64 {
    spin_until(Instant::now() + d, 8)
}

// The two spinners get different `per_check` constants so that their machine
// code differs: LLVM merges identical functions, and perf would then show one
// name for both.
#[inline(always)]
fn spin_until(deadline: Instant, per_check: u32) -> u64 {
    let mut block = [0u64; BLOCK_WORDS];
    compute::fill_block(u64::from(per_check), &mut block);
    let mut acc = 1u64;
    while Instant::now() < deadline {
        for _ in 0..per_check {
            acc = compute::checksum_block(acc, &block);
        }
    }
    black_box(acc)
}
