/* C ABI of libworker_core.so (rust/worker-core). */
#ifndef WORKER_CORE_H
#define WORKER_CORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CPU-heavy: `iterations` rounds of worker_core::compute::checksum_block over a
 * 4 KiB block derived from `input`; returns the checksum. */
uint64_t worker_core_process_step(uint64_t input, uint32_t iterations);

/* Blocks the calling thread for `ms` ms in worker_core::io::wait_for_io. */
void worker_core_blocking_wait(uint32_t ms);

/* Static NUL-terminated version string; do not free. */
const char *worker_core_version(void);

#ifdef __cplusplus
}
#endif

#endif
