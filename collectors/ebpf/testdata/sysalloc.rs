// The allocation tracer's Rust target with the system allocator (no
// #[global_allocator]: Rust's std allocates through glibc's malloc). Built
// by the tests with
//   rustc -C opt-level=1 -C force-frame-pointers=yes -g sysalloc.rs
// retain_records keeps RATE bytes a second of records (1-8 KiB boxed
// slices); churn_strings formats and drops short strings in between. Every
// 50 ms it prints "stat T CPU KEPT_CALLS KEPT_BYTES CHURN_CALLS" (T:
// CLOCK_REALTIME ns, CPU: the process's CPU ns), as testdata/alloc.c does.
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[inline(never)]
fn retain_records(kept: &mut Vec<Box<[u8]>>, n: usize) {
    kept.push(vec![0x5a_u8; n].into_boxed_slice());
}

#[inline(never)]
fn churn_strings(i: u64) -> usize {
    let s = format!("request {i} of {:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    black_box(s).len()
}

fn cpu_ns() -> u128 {
    // /proc/self/stat utime + stime, in clock ticks of 10 ms.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u128>().ok()).unwrap_or(0);
    (t(11) + t(12)) * 10_000_000
}

fn main() {
    let rate: f64 = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(4e6);
    let mut kept: Vec<Box<[u8]>> = Vec::new();
    let (mut kept_calls, mut kept_bytes, mut churn) = (0u64, 0u64, 0u64);
    let mut rng: u32 = 2463534242;
    let t0 = Instant::now();
    let mut next_print = Duration::ZERO;
    let mut out = std::io::stdout();
    loop {
        for _ in 0..16 {
            churn_strings(churn);
            churn += 1;
        }
        let el = t0.elapsed();
        while (kept_bytes as f64) < rate * el.as_secs_f64() {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let n = 1024 + (rng % 7169) as usize;
            retain_records(&mut kept, n);
            kept_calls += 1;
            kept_bytes += n as u64;
        }
        if el >= next_print {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let _ = writeln!(out, "stat {now} {} {kept_calls} {kept_bytes} {churn}", cpu_ns());
            next_print += Duration::from_millis(50);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
