// TypeScript FFI worker on Bun: a loop of steps, each calling the Rust
// worker core through bun:ffi.
//
// Started by workers/run.sh as `bun worker.ts` with BUN_JSC_useJITDump=1 and
// BUN_JSC_jitDumpDirectory set: JavaScriptCore then writes a jitdump
// (jit-*-PID.dump) naming every JIT-compiled function, from which profcap
// names the JS frames perf samples (Bun has no /tmp/perf-PID.map option).
// Each step, handle_step:
//
//   preparePayload  JS CPU work (the runtime's half of the stack)
//   process_step    worker_core_process_step through bun:ffi: CPU in
//                   worker_core::compute::checksum_block (the Rust half)
//   wait_for_io     worker_core_blocking_wait: blocks the JS thread in
//                   worker_core::io::wait_for_io
//
// Between steps the event loop waits (setTimeout): the runtime's idle.
// GET /health on the REST port answers "ok"; GET /stats gives counters.
//
// Environment: WORKER_NAME, WORKER_PORT (8400), WORKER_CORE_LIB,
// WORKER_STEPS_PER_SEC (20), WORKER_ITERATIONS (20000), WORKER_PAYLOAD
// (400000), WORKER_BLOCK_MS (5).
import { dlopen, FFIType } from "bun:ffi";
import { homedir } from "node:os";
import { join } from "node:path";

const env = process.env;
const NAME = env.WORKER_NAME ?? "worker-ts-1";
const PORT = Number(env.WORKER_PORT ?? "8400");
const STEPS_PER_SEC = Number(env.WORKER_STEPS_PER_SEC ?? "20");
const ITERATIONS = Number(env.WORKER_ITERATIONS ?? "20000");
const PAYLOAD = Number(env.WORKER_PAYLOAD ?? "400000");
const BLOCK_MS = Number(env.WORKER_BLOCK_MS ?? "5");

const corePath =
  env.WORKER_CORE_LIB ?? join(env.PROFCAP_CACHE ?? join(homedir(), ".cache", "profcap"), "rust", "bin", "libworker_core.so");
const core = dlopen(corePath, {
  worker_core_process_step: { args: [FFIType.u64, FFIType.u32], returns: FFIType.u64 },
  worker_core_blocking_wait: { args: [FFIType.u32], returns: FFIType.void },
  worker_core_version: { args: [], returns: FFIType.cstring },
}).symbols;

const stats = { name: NAME, language: "typescript", runtime: `bun ${Bun.version}`, pid: process.pid, steps: 0, checksum: "0", core: String(core.worker_core_version()) };

// JS work: the runtime's own CPU in every step.
function preparePayload(seed: number, n: number): number {
  let acc = seed >>> 0;
  for (let i = 0; i < n; i++) acc = (Math.imul(acc, 1103515245) + 12345 + i) >>> 0;
  return acc;
}

// One step: JS work, then the Rust core's CPU work, then its blocking wait.
function handle_step(step: number, payload: number, iterations: number, blockMs: number): bigint {
  const seed = preparePayload(step, payload);
  const checksum = core.worker_core_process_step(BigInt(seed), iterations) as bigint;
  if (blockMs > 0) core.worker_core_blocking_wait(blockMs);
  return checksum;
}

// Warm-up: JavaScriptCore JIT-compiles a function only after many calls
// (about 25 s of steps at 20 a second); until then it runs in the LLInt
// interpreter, whose frames perf cannot tell apart. A thousand empty steps
// (no payload, no iterations, no wait: microseconds) get handle_step and
// preparePayload compiled, so they are named in the jitdump from the start.
for (let i = 0; i < 2000; i++) handle_step(i, 1, 0, 0);

Bun.serve({
  hostname: "127.0.0.1",
  port: PORT,
  fetch(req) {
    const path = new URL(req.url).pathname;
    if (path === "/health") return new Response("ok");
    if (path === "/stats") return Response.json(stats);
    return new Response("not found", { status: 404 });
  },
});
console.log(`${NAME}: pid ${process.pid} bun ${Bun.version} core ${stats.core} (${corePath}) on 127.0.0.1:${PORT}`);

const interval = 1000 / STEPS_PER_SEC;
let due = performance.now();
let step = 0;
let stopping = false;

function tick() {
  if (stopping) return;
  stats.checksum = String(handle_step(step, PAYLOAD, ITERATIONS, BLOCK_MS));
  stats.steps = ++step;
  due += interval;
  const now = performance.now();
  if (due < now) due = now; // behind: do not burst to catch up
  setTimeout(tick, due - now);
}

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    stopping = true;
    console.log(`${NAME}: stopped after ${step} steps`);
    process.exit(0);
  });
}
tick();
