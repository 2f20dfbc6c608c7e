# Ruby FFI worker: a loop of steps, each calling the Rust worker core.
#
# Started by workers/run.sh with Debian's ruby. Each step, handle_step:
#
#   prepare_payload  pure-Ruby CPU work (the interpreter's half of the stack)
#   process_step     worker_core_process_step through Fiddle: CPU in
#                    worker_core::compute::checksum_block (the Rust half)
#   wait_for_io      worker_core_blocking_wait: blocks in worker_core::io::wait_for_io
#
# Fiddle calls release the GVL (need_gvl: false), as a C extension doing I/O
# would. Between steps the main loop sleeps in idle_until. GET /health on the
# REST port answers "ok"; GET /stats gives counters as JSON.
#
# Environment: WORKER_NAME, WORKER_PORT (8200), WORKER_CORE_LIB,
# WORKER_STEPS_PER_SEC (20), WORKER_ITERATIONS (20000), WORKER_PAYLOAD
# (20000), WORKER_BLOCK_MS (5).
require "fiddle"
require "json"
require "socket"

NAME = ENV.fetch("WORKER_NAME", "worker-ruby-1")
PORT = Integer(ENV.fetch("WORKER_PORT", "8200"))
STEPS_PER_SEC = Float(ENV.fetch("WORKER_STEPS_PER_SEC", "20"))
ITERATIONS = Integer(ENV.fetch("WORKER_ITERATIONS", "20000"))
PAYLOAD = Integer(ENV.fetch("WORKER_PAYLOAD", "20000"))
BLOCK_MS = Integer(ENV.fetch("WORKER_BLOCK_MS", "5"))

class WorkerCore
  U64 = -Fiddle::TYPE_LONG_LONG
  U32 = -Fiddle::TYPE_INT

  attr_reader :path, :version

  def initialize
    cache = ENV.fetch("PROFCAP_CACHE", File.join(Dir.home, ".cache", "profcap"))
    @path = ENV["WORKER_CORE_LIB"] || File.join(cache, "rust", "bin", "libworker_core.so")
    lib = Fiddle.dlopen(@path)
    @process_step = Fiddle::Function.new(lib["worker_core_process_step"], [U64, U32], U64, need_gvl: false)
    @blocking_wait = Fiddle::Function.new(lib["worker_core_blocking_wait"], [U32], Fiddle::TYPE_VOID, need_gvl: false)
    @version = Fiddle::Function.new(lib["worker_core_version"], [], Fiddle::TYPE_VOIDP).call.to_s
  end

  def process_step(input, iterations)
    @process_step.call(input, iterations)
  end

  def blocking_wait(ms)
    @blocking_wait.call(ms)
  end
end

$stats = { name: NAME, language: "ruby", pid: Process.pid, steps: 0, checksum: 0 }

# Pure-Ruby work: the interpreter's own CPU in every step.
def prepare_payload(seed, n)
  acc = seed & 0xFFFFFFFF
  i = 0
  while i < n
    acc = (acc * 1103515245 + 12345 + i) & 0xFFFFFFFF
    i += 1
  end
  acc
end

# One step: Ruby work, then the Rust core's CPU work, then its blocking wait.
def handle_step(core, step)
  seed = prepare_payload(step, PAYLOAD)
  checksum = core.process_step(seed, ITERATIONS)
  core.blocking_wait(BLOCK_MS)
  checksum
end

# The worker's idle loop: sleep until the next step is due.
def idle_until(deadline)
  delay = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
  sleep(delay) if delay > 0
end

def serve_health(server)
  loop do
    client = server.accept
    begin
      line = client.gets.to_s
      while (h = client.gets) && h != "\r\n"; end
      path = line.split(" ")[1]
      status, ctype, body = case path
                            when "/health" then ["200 OK", "text/plain", "ok"]
                            when "/stats" then ["200 OK", "application/json", JSON.generate($stats)]
                            else ["404 Not Found", "text/plain", "not found"]
                            end
      client.write("HTTP/1.1 #{status}\r\nContent-Type: #{ctype}\r\nContent-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}")
    rescue StandardError
      nil
    ensure
      client.close
    end
  end
end

core = WorkerCore.new
$stats[:core] = core.version
server = TCPServer.new("127.0.0.1", PORT)
Thread.new { serve_health(server) }.name = "health"
stopping = false
%w[TERM INT].each { |sig| Signal.trap(sig) { stopping = true } }
$stdout.sync = true
puts "#{NAME}: pid #{Process.pid} ruby #{RUBY_VERSION} core #{core.version} (#{core.path}) on 127.0.0.1:#{PORT}"

interval = 1.0 / STEPS_PER_SEC
due = Process.clock_gettime(Process::CLOCK_MONOTONIC)
step = 0
until stopping
  $stats[:checksum] = handle_step(core, step)
  step += 1
  $stats[:steps] = step
  due += interval
  now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  due = now if due < now # behind: do not burst to catch up
  idle_until(due)
end
puts "#{NAME}: stopped after #{step} steps"
