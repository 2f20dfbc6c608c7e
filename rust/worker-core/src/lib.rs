//! `worker_core`: the Rust core the FFI workers (Python, Ruby, TypeScript) embed.
//!
//! C ABI (see `include/worker_core.h`):
//!
//! * `uint64_t worker_core_process_step(uint64_t input, uint32_t iterations)` —
//!   CPU-heavy; runs `iterations` rounds of [`compute::checksum_block`] over a
//!   4 KiB block derived from `input` and returns the checksum.
//! * `void worker_core_blocking_wait(uint32_t ms)` — blocks the calling thread in
//!   [`io::wait_for_io`] (`std::thread::sleep`), like a worker waiting on a socket.
//! * `const char *worker_core_version(void)` — a static NUL-terminated string.
//!
//! Every function that should show in a profile is `#[inline(never)]`, so its
//! frame stays in perf/pprof stacks in optimised builds.
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::c_char;

/// Words in one block handed to [`compute::checksum_block`] (4 KiB).
pub const BLOCK_WORDS: usize = 512;

pub mod compute {
    use super::BLOCK_WORDS;
    use std::hint::black_box;

    /// One 64-bit mixing step (the finaliser of splitmix64).
    #[inline(always)]
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `block` with a deterministic pseudo-random sequence from `seed`.
    #[inline(never)]
    pub fn fill_block(seed: u64, block: &mut [u64; BLOCK_WORDS]) {
        let mut s = seed;
        for w in block.iter_mut() {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *w = mix(s);
        }
    }

    /// Checksums one block, chained on `state`: four interleaved lanes of
    /// multiply-rotate-xor mixing (the shape of a non-cryptographic hash such
    /// as xxHash), so the work is real and cannot be folded away.
    #[inline(never)]
    pub fn checksum_block(state: u64, block: &[u64; BLOCK_WORDS]) -> u64 {
        const P1: u64 = 0x9e37_79b1_85eb_ca87;
        const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
        let mut lanes = [
            state.wrapping_add(P1).wrapping_add(P2),
            state.wrapping_add(P2),
            state,
            state.wrapping_sub(P1),
        ];
        for chunk in block.chunks_exact(4) {
            for (lane, &w) in lanes.iter_mut().zip(chunk) {
                *lane = lane.wrapping_add(w.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1);
            }
        }
        let mut h = lanes[0].rotate_left(1)
            ^ lanes[1].rotate_left(7)
            ^ lanes[2].rotate_left(12)
            ^ lanes[3].rotate_left(18);
        h = mix(h ^ state);
        black_box(h)
    }

    /// `iterations` rounds of [`checksum_block`], feeding each result back into
    /// the block so no round can be skipped.
    #[inline(never)]
    pub fn process_step(input: u64, iterations: u32) -> u64 {
        let mut block = [0u64; BLOCK_WORDS];
        fill_block(input, &mut block);
        let mut acc = input;
        for i in 0..iterations as usize {
            acc = checksum_block(acc, &block);
            block[i % BLOCK_WORDS] ^= acc;
        }
        acc
    }
}

pub mod io {
    use std::time::Duration;

    /// Blocks the calling thread for `ms` milliseconds (`std::thread::sleep`):
    /// the stand-in for a worker blocked on I/O. In an off-CPU profile the
    /// thread shows as blocked in `clock_nanosleep` under this function.
    #[inline(never)]
    pub fn wait_for_io(ms: u32) {
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        std::hint::black_box(ms);
    }
}

static VERSION: &[u8] = concat!("worker_core ", env!("CARGO_PKG_VERSION"), "\0").as_bytes();

/// CPU-heavy step: `iterations` rounds of `compute::checksum_block` over a
/// 4 KiB block derived from `input`. About 0.3 µs per iteration on a current x86-64.
#[no_mangle]
pub extern "C" fn worker_core_process_step(input: u64, iterations: u32) -> u64 {
    compute::process_step(input, iterations)
}

/// Blocks the calling thread for `ms` milliseconds in `io::wait_for_io`.
#[no_mangle]
pub extern "C" fn worker_core_blocking_wait(ms: u32) {
    io::wait_for_io(ms)
}

/// Static, NUL-terminated version string (never free it).
#[no_mangle]
pub extern "C" fn worker_core_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_step_is_deterministic_and_depends_on_input() {
        assert_eq!(worker_core_process_step(1, 10), worker_core_process_step(1, 10));
        assert_ne!(worker_core_process_step(1, 10), worker_core_process_step(2, 10));
        assert_ne!(worker_core_process_step(1, 10), worker_core_process_step(1, 11));
    }

    #[test]
    fn version_is_nul_terminated() {
        let s = unsafe { std::ffi::CStr::from_ptr(worker_core_version()) };
        assert!(s.to_str().unwrap().starts_with("worker_core "));
    }

    #[test]
    fn blocking_wait_blocks() {
        let t = std::time::Instant::now();
        worker_core_blocking_wait(20);
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
    }
}
