"""Python FFI worker: a loop of steps, each calling the Rust worker core.

Started by workers/run.sh under `uv run` (so the pid file names the uv
process, as the reference cluster's scripts do). Each step, handle_step:

  prepare_payload   pure-Python CPU work (the interpreter's half of the stack)
  process_step      worker_core_process_step through ctypes: CPU in
                    worker_core::compute::checksum_block (the Rust half)
  wait_for_io       worker_core_blocking_wait: blocks in worker_core::io::wait_for_io

Between steps the main loop sleeps in idle_until (the worker's own idle).
GET /health on the REST port answers "ok"; GET /stats gives counters as JSON.

Environment: WORKER_NAME, WORKER_PORT (8300), WORKER_CORE_LIB (path of
libworker_core.so), WORKER_STEPS_PER_SEC (20), WORKER_ITERATIONS (20000),
WORKER_PAYLOAD (20000), WORKER_BLOCK_MS (5).
"""

import ctypes
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ.get("WORKER_NAME", "worker-python-1")
PORT = int(os.environ.get("WORKER_PORT", "8300"))
STEPS_PER_SEC = float(os.environ.get("WORKER_STEPS_PER_SEC", "20"))
ITERATIONS = int(os.environ.get("WORKER_ITERATIONS", "20000"))
PAYLOAD = int(os.environ.get("WORKER_PAYLOAD", "20000"))
BLOCK_MS = int(os.environ.get("WORKER_BLOCK_MS", "5"))

stats = {"name": NAME, "language": "python", "pid": os.getpid(), "steps": 0, "checksum": 0}
stopping = threading.Event()


def load_core():
    path = os.environ.get("WORKER_CORE_LIB") or os.path.join(
        os.environ.get("PROFCAP_CACHE", os.path.expanduser("~/.cache/profcap")), "rust", "bin", "libworker_core.so"
    )
    core = ctypes.CDLL(path)
    core.worker_core_process_step.restype = ctypes.c_uint64
    core.worker_core_process_step.argtypes = [ctypes.c_uint64, ctypes.c_uint32]
    core.worker_core_blocking_wait.restype = None
    core.worker_core_blocking_wait.argtypes = [ctypes.c_uint32]
    core.worker_core_version.restype = ctypes.c_char_p
    core.worker_core_version.argtypes = []
    return core, path


def prepare_payload(seed, n):
    """Pure-Python work: the interpreter's own CPU in every step."""
    acc = seed & 0xFFFFFFFF
    for i in range(n):
        acc = (acc * 1103515245 + 12345 + i) & 0xFFFFFFFF
    return acc


def handle_step(core, step):
    """One step: Python work, then the Rust core's CPU work, then its blocking wait."""
    seed = prepare_payload(step, PAYLOAD)
    checksum = core.worker_core_process_step(seed, ITERATIONS)
    core.worker_core_blocking_wait(BLOCK_MS)
    return checksum


def idle_until(deadline):
    """The worker's idle loop: sleep until the next step is due."""
    delay = deadline - time.monotonic()
    if delay > 0:
        stopping.wait(delay)


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body, ctype = b"ok", "text/plain"
        elif self.path == "/stats":
            body, ctype = json.dumps(stats).encode(), "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    core, path = load_core()
    stats["core"] = core.worker_core_version().decode()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Health)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    print(f"{NAME}: pid {os.getpid()} python {sys.version.split()[0]} core {stats['core']} ({path}) on 127.0.0.1:{PORT}", flush=True)
    interval = 1.0 / STEPS_PER_SEC
    due = time.monotonic()
    step = 0
    while not stopping.is_set():
        stats["checksum"] = handle_step(core, step)
        step += 1
        stats["steps"] = step
        due += interval
        if due < time.monotonic():
            due = time.monotonic()  # behind: do not burst to catch up
        idle_until(due)
    server.shutdown()
    print(f"{NAME}: stopped after {step} steps", flush=True)


if __name__ == "__main__":
    main()
