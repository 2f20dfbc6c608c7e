//! REST: /health, /metrics, /truth and the profiling endpoints.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::db;
use crate::pipeline::{App, Kind};
use crate::truth::{self, TaskStats};
use crate::work;

type Q = Query<HashMap<String, String>>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/truth", get(truth_json))
        .route("/truth/at", get(truth_at_json))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/heap", get(heap_profile))
        .route("/debug/tokio/dump", get(task_dump))
        .with_state(app)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

fn not_enabled(flag: &str) -> Response {
    text(StatusCode::NOT_FOUND, format!("404 not enabled: start refsvc with {flag}\n"))
}

fn binary(body: Vec<u8>, filename: &str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// /debug/pprof/profile?seconds=N[&hz=F]: pprof-rs CPU profile, gzipped pprof protobuf

async fn cpu_profile(State(app): State<Arc<App>>, Query(q): Q) -> Response {
    if !app.args.pprof {
        return not_enabled("--pprof");
    }
    let secs: f64 = match q.get("seconds").map(|s| s.parse::<f64>()) {
        None => 30.0,
        Some(Ok(v)) if v > 0.0 && v <= 600.0 => v,
        Some(_) => return text(StatusCode::BAD_REQUEST, "seconds: a number in (0, 600]\n"),
    };
    let hz: i32 = match q.get("hz").map(|s| s.parse::<i32>()) {
        None => 99,
        Some(Ok(v)) if (1..=10_000).contains(&v) => v,
        Some(_) => return text(StatusCode::BAD_REQUEST, "hz: an integer in [1, 10000]\n"),
    };
    // ProfilerGuard is not Send: it lives on a thread of its own
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("pprof-profile".into()).spawn(move || {
        let _ = tx.send(run_cpu_profile(secs, hz));
    });
    if let Err(e) = spawned {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("profiler thread: {e}\n"));
    }
    match rx.await {
        Ok(Ok(body)) => binary(body, "profile.pb.gz"),
        Ok(Err((code, msg))) => text(code, msg),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "profiler thread died\n"),
    }
}

fn run_cpu_profile(secs: f64, hz: i32) -> Result<Vec<u8>, (StatusCode, String)> {
    use pprof::protos::Message;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(hz)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("profiler busy or failed: {e}\n")))?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let report = guard
        .report()
        .build()
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("report: {e}\n")))?;
    drop(guard);
    let profile = report.pprof().map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("pprof: {e}\n")))?;
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 2), flate2::Compression::default());
    gz.write_all(&raw).and_then(|_| gz.finish()).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("gzip: {e}\n")))
}

// ---------------------------------------------------------------------------
// /debug/pprof/heap: jemalloc_pprof, gzipped pprof protobuf (inuse_space, bytes)

async fn heap_profile(State(app): State<Arc<App>>) -> Response {
    if !app.args.jemalloc_prof {
        return not_enabled("--jemalloc-prof");
    }
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "jemalloc profiling is not compiled in or opt.prof is false\n");
    };
    let guard = ctl.clone().lock_owned().await;
    let res = tokio::task::spawn_blocking(move || {
        let mut guard = guard;
        if !guard.activated() {
            return Err("jemalloc profiling is not active".to_string());
        }
        guard.dump_pprof().map_err(|e| e.to_string())
    })
    .await;
    match res {
        Ok(Ok(body)) => binary(body, "heap.pb.gz"),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("heap dump: {e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("heap dump task: {e}\n")),
    }
}

// ---------------------------------------------------------------------------
// /debug/tokio/dump[?timeout_ms=N][&format=tokio]: tokio task dump, text (format in rust/README.md)

async fn task_dump(State(app): State<Arc<App>>, Query(q): Q) -> Response {
    if !app.args.taskdump {
        return not_enabled("--taskdump");
    }
    let timeout_ms: u64 = q.get("timeout_ms").and_then(|s| s.parse().ok()).unwrap_or(5_000).clamp(10, 60_000);
    let tokio_format = q.get("format").map(|s| s == "tokio").unwrap_or(false);
    let handle = tokio::runtime::Handle::current();
    let dump = match tokio::time::timeout(Duration::from_millis(timeout_ms), handle.dump()).await {
        Ok(d) => d,
        Err(_) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("task dump timed out after {timeout_ms} ms (a worker thread blocked for more than 250 ms?)\n"),
            )
        }
    };
    let name = app.args.name.clone();
    let out = tokio::task::spawn_blocking(move || format_dump(&dump, &name, tokio_format)).await;
    match out {
        Ok(s) => text(StatusCode::OK, s),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("format dump: {e}\n")),
    }
}

/// Strips the `::h0123456789abcdef` hash suffix of a demangled Rust symbol.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, tail)) if tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => name,
    }
}

fn format_dump(dump: &tokio::runtime::Dump, service: &str, tokio_format: bool) -> String {
    let tasks: Vec<_> = dump.tasks().iter().collect();
    let mut out = String::new();
    let _ = writeln!(out, "# tokio task dump service={service} pid={} unix_ns={} tasks={}", std::process::id(), truth::unix_ns(), tasks.len());
    for task in tasks {
        let id = task.id().to_string();
        let name = truth::task_name(&id).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "task id={id} name={name}");
        if tokio_format {
            let _ = writeln!(out, "{}", task.trace());
            out.push('\n');
            continue;
        }
        for (i, bt) in task.trace().resolve_backtraces().iter().enumerate() {
            let _ = writeln!(out, "  trace {i}");
            for frame in bt.frames() {
                let mut any = false;
                for sym in frame.symbols() {
                    any = true;
                    let fname = sym.name_demangled().map(strip_hash).unwrap_or("??");
                    let _ = write!(out, "    {fname}");
                    if let (Some(file), Some(line)) = (sym.filename(), sym.lineno()) {
                        let _ = write!(out, " at {}:{line}", file.display());
                        if let Some(col) = sym.colno() {
                            let _ = write!(out, ":{col}");
                        }
                    }
                    out.push('\n');
                }
                if !any {
                    let _ = writeln!(out, "    ?? at {:p}", frame.ip());
                }
            }
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------
// /metrics: Prometheus text format

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    let mut o = String::new();
    let labels = format!(
        "service=\"{}\",role=\"{}\"",
        app.args.name,
        app.args.role.as_str()
    );
    let _ = writeln!(o, "# HELP refsvc_info Instance information.\n# TYPE refsvc_info gauge");
    let _ = writeln!(o, "refsvc_info{{{labels},sick=\"{}\",db=\"{}\",workers=\"{}\"}} 1", app.args.sick, app.db.backend(), app.args.workers);
    let _ = writeln!(o, "# HELP refsvc_steps_total Steps completed, per kind.\n# TYPE refsvc_steps_total counter");
    for k in Kind::ALL {
        let _ = writeln!(o, "refsvc_steps_total{{{labels},kind=\"{}\"}} {}", k.as_str(), m.steps_done[k as usize].load(Relaxed));
    }
    let _ = writeln!(o, "# HELP refsvc_step_latency_seconds_total Summed dispatch-to-commit time of completed steps, per kind.\n# TYPE refsvc_step_latency_seconds_total counter");
    for k in Kind::ALL {
        let _ = writeln!(o, "refsvc_step_latency_seconds_total{{{labels},kind=\"{}\"}} {}", k.as_str(), secs(m.step_latency_ns[k as usize].load(Relaxed)));
    }
    let counter = |o: &mut String, name: &str, help: &str, v: String| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels}}} {v}");
    };
    counter(&mut o, "refsvc_steps_dispatched_total", "Steps dispatched by the orchestrator part.", m.steps_dispatched.load(Relaxed).to_string());
    counter(&mut o, "refsvc_steps_skipped_total", "Dispatcher ticks skipped because too many steps were in flight.", m.steps_skipped.load(Relaxed).to_string());
    let _ = writeln!(o, "# HELP refsvc_steps_in_flight Steps dispatched and not yet committed.\n# TYPE refsvc_steps_in_flight gauge\nrefsvc_steps_in_flight{{{labels}}} {}", m.in_flight.load(Relaxed));
    let _ = writeln!(o, "# HELP refsvc_work_cpu_seconds_total Thread CPU time inside each work function.\n# TYPE refsvc_work_cpu_seconds_total counter");
    for c in work::ALL {
        let _ = writeln!(o, "refsvc_work_cpu_seconds_total{{{labels},function=\"{}\"}} {}", c.name, secs(c.cpu_ns.load(Relaxed)));
    }
    let _ = writeln!(o, "# HELP refsvc_work_calls_total Calls of each work function.\n# TYPE refsvc_work_calls_total counter");
    for c in work::ALL {
        let _ = writeln!(o, "refsvc_work_calls_total{{{labels},function=\"{}\"}} {}", c.name, c.calls.load(Relaxed));
    }
    counter(&mut o, "refsvc_db_queries_total", "Database queries (pg_sleep or its sleep stand-in).", db::DB_QUERIES.load(Relaxed).to_string());
    counter(&mut o, "refsvc_db_errors_total", "Database queries that failed.", db::DB_ERRORS.load(Relaxed).to_string());
    counter(&mut o, "refsvc_db_wait_seconds_total", "Time spent in db_query.", secs(db::DB_WAIT_NS.load(Relaxed)));
    counter(&mut o, "refsvc_async_mutex_locks_total", "Acquisitions of the ledger tokio::sync::Mutex.", m.ledger_locks.load(Relaxed).to_string());
    counter(&mut o, "refsvc_async_mutex_wait_seconds_total", "Time spent waiting for the ledger tokio::sync::Mutex.", secs(m.ledger_wait_ns.load(Relaxed)));
    counter(&mut o, "refsvc_std_mutex_locks_total", "Acquisitions of the results std::sync::Mutex.", work::STD_MUTEX_LOCKS.load(Relaxed).to_string());
    counter(&mut o, "refsvc_std_mutex_wait_seconds_total", "Time spent blocked on the results std::sync::Mutex.", secs(work::STD_MUTEX_WAIT_NS.load(Relaxed)));
    counter(&mut o, "refsvc_backlog_rounds_total", "Spawn backlog rounds.", m.backlog_rounds.load(Relaxed).to_string());
    counter(&mut o, "refsvc_backlog_tasks_total", "Tasks spawned behind the backlog hogs.", m.backlog_tasks.load(Relaxed).to_string());
    counter(&mut o, "refsvc_tasks_spawned_total", "Named tasks spawned.", truth::TASKS_SPAWNED.load(Relaxed).to_string());
    counter(&mut o, "refsvc_process_cpu_seconds_total", "Process CPU time (CLOCK_PROCESS_CPUTIME_ID).", secs(work::process_cpu_ns()));
    let rt = tokio::runtime::Handle::current().metrics();
    let _ = writeln!(o, "# HELP refsvc_tokio_alive_tasks Tasks alive in the runtime.\n# TYPE refsvc_tokio_alive_tasks gauge\nrefsvc_tokio_alive_tasks{{{labels}}} {}", rt.num_alive_tasks());
    text(StatusCode::OK, o).into_response_with_type("text/plain; version=0.0.4; charset=utf-8")
}

fn secs(ns: u64) -> String {
    format!("{:.9}", ns as f64 / 1e9)
}

trait WithType {
    fn into_response_with_type(self, ct: &'static str) -> Response;
}

impl WithType for Response {
    fn into_response_with_type(mut self, ct: &'static str) -> Response {
        self.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
        self
    }
}

// ---------------------------------------------------------------------------
// /truth: JSON ground truth (fields and units in rust/README.md)

fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn task_json(s: &TaskStats, now_mono: u64) -> String {
    let spawned = s.spawned_mono.load(Relaxed);
    let completed = s.completed_mono.load(Relaxed);
    let end = if completed != 0 { completed } else { now_mono };
    let total = if spawned != 0 { end.saturating_sub(spawned) } else { 0 };
    let fpd = s.first_poll_delay_ns().map(|v| v.to_string()).unwrap_or_else(|| "null".into());
    let id = s.task_id.lock().unwrap().clone();
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\"name\":{},\"task_id\":{},\"spawned_at_unix_ns\":{},\"alive\":{},\"instances\":{},\
\"polls\":{},\"busy_ns\":{},\"idle_ns\":{},\"scheduled_ns\":{},\"total_ns\":{},\"first_poll_delay_ns\":{},\
\"max_first_poll_delay_ns\":{},\"max_poll_ns\":{},\"wakes\":{},\"self_wakes\":{},\
\"db_wait_ns\":{},\"db_waits\":{},\"async_mutex_wait_ns\":{},\"async_mutex_waits\":{},\"async_mutex_hold_ns\":{},\
\"channel_wait_ns\":{},\"channel_waits\":{},\"sleep_ns\":{},\"sleeps\":{},\"spin_ns\":{},\"yields\":{},\"backlog_ahead\":{}}}",
        jstr(&s.name),
        jstr(&id),
        s.spawned_at_unix_ns.load(Relaxed),
        spawned != 0 && completed == 0,
        s.instances.load(Relaxed),
        s.polls.load(Relaxed),
        s.busy_ns.load(Relaxed),
        s.idle_ns.load(Relaxed),
        s.scheduled_ns.load(Relaxed),
        total,
        fpd,
        s.max_first_poll_delay_ns.load(Relaxed),
        s.max_poll_ns.load(Relaxed),
        s.wakes.load(Relaxed),
        s.self_wakes.load(Relaxed),
        s.db_wait_ns.load(Relaxed),
        s.db_waits.load(Relaxed),
        s.async_mutex_wait_ns.load(Relaxed),
        s.async_mutex_waits.load(Relaxed),
        s.async_mutex_hold_ns.load(Relaxed),
        s.channel_wait_ns.load(Relaxed),
        s.channel_waits.load(Relaxed),
        s.sleep_ns.load(Relaxed),
        s.sleeps.load(Relaxed),
        s.spin_ns.load(Relaxed),
        s.yields.load(Relaxed),
        s.backlog_ahead.load(Relaxed),
    );
    o
}

pub fn truth_document(app: &App) -> String {
    let now_mono = truth::mono_ns();
    let m = &app.metrics;
    let mut o = String::from("{\n");
    let _ = writeln!(
        o,
        "\"service\":{{\"name\":{},\"role\":{},\"pid\":{},\"sick\":{},\"workers\":{},\"db_backend\":{},\"db_wait_ns\":{},\
\"pprof\":{},\"jemalloc_prof\":{},\"taskdump\":{},\"console\":{},\"started_unix_ns\":{},\"now_unix_ns\":{},\"uptime_ns\":{},\"process_cpu_ns\":{}}},",
        jstr(&app.args.name),
        jstr(app.args.role.as_str()),
        std::process::id(),
        app.args.sick,
        app.args.workers,
        jstr(app.db.backend()),
        truth::ns(app.db.wait),
        app.args.pprof,
        app.args.jemalloc_prof,
        app.args.taskdump,
        app.args.console.as_ref().map(|a| jstr(&a.to_string())).unwrap_or_else(|| "null".into()),
        app.started_unix_ns,
        truth::unix_ns(),
        truth::ns(app.started.elapsed()),
        work::process_cpu_ns(),
    );
    o.push_str("\"tasks\":[\n");
    let all = app.truth.all();
    for (i, s) in all.iter().enumerate() {
        o.push_str(&task_json(s, now_mono));
        o.push_str(if i + 1 < all.len() { ",\n" } else { "\n" });
    }
    o.push_str("],\n\"cpu_work\":{\n");
    for (i, c) in work::ALL.iter().enumerate() {
        let _ = write!(
            o,
            "{}:{{\"calls\":{},\"cpu_ns\":{},\"wall_ns\":{}}}{}\n",
            jstr(c.name),
            c.calls.load(Relaxed),
            c.cpu_ns.load(Relaxed),
            c.wall_ns.load(Relaxed),
            if i + 1 < work::ALL.len() { "," } else { "" }
        );
    }
    o.push_str("},\n\"steps\":{");
    for (i, k) in Kind::ALL.iter().enumerate() {
        let _ = write!(o, "{}{}:{}", if i > 0 { "," } else { "" }, jstr(k.as_str()), m.steps_done[*k as usize].load(Relaxed));
    }
    let _ = write!(
        o,
        "}},\n\"steps_dispatched\":{},\n\"db\":{{\"queries\":{},\"errors\":{},\"wait_ns\":{}}},\n\
\"async_mutex\":{{\"name\":\"ledger\",\"locks\":{},\"wait_ns\":{},\"hold_ns\":{}}},\n\
\"std_mutex\":{{\"name\":\"results\",\"locks\":{},\"wait_ns\":{}}},\n\
\"backlog\":{{\"rounds\":{},\"tasks\":{},\"hog_ms\":{},\"per_round\":{}}}\n}}\n",
        m.steps_dispatched.load(Relaxed),
        db::DB_QUERIES.load(Relaxed),
        db::DB_ERRORS.load(Relaxed),
        db::DB_WAIT_NS.load(Relaxed),
        m.ledger_locks.load(Relaxed),
        m.ledger_wait_ns.load(Relaxed),
        m.ledger_hold_ns.load(Relaxed),
        work::STD_MUTEX_LOCKS.load(Relaxed),
        work::STD_MUTEX_WAIT_NS.load(Relaxed),
        m.backlog_rounds.load(Relaxed),
        m.backlog_tasks.load(Relaxed),
        app.args.hog_ms,
        app.args.spawn_backlog,
    );
    o
}

async fn truth_json(State(app): State<Arc<App>>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], truth_document(&app)).into_response()
}

/// `GET /truth/at?unix_ns=T[,T...]`: each ground-truth task's state at each
/// past instant T (Unix ns, mapped onto the monotonic clock with the current
/// offset), from the task's timeline (see truth::At for what each field
/// holds). `covered` is false for an instant older than the timeline keeps.
async fn truth_at_json(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(list) = q.get("unix_ns") else {
        return (StatusCode::BAD_REQUEST, "400 want ?unix_ns=T[,T...]\n").into_response();
    };
    let mut ts = Vec::new();
    for v in list.split(',') {
        match v.trim().parse::<u64>() {
            Ok(t) => ts.push(t),
            Err(_) => return (StatusCode::BAD_REQUEST, format!("400 unix_ns: not a number: {v:?}\n")).into_response(),
        }
    }
    let now_mono = truth::mono_ns();
    let now_unix = truth::unix_ns();
    let mut o = format!("{{\"now_unix_ns\":{now_unix},\"at\":[");
    for (i, &t) in ts.iter().enumerate() {
        let future = t > now_unix;
        let mono = now_mono.saturating_sub(now_unix.saturating_sub(t));
        let _ = write!(o, "{}{{\"unix_ns\":{t},\"future\":{future},\"tasks\":[", if i > 0 { "," } else { "" });
        for (j, s) in app.truth.all().iter().enumerate() {
            let a = s.timeline.at(mono.min(now_mono));
            let a0 = a.unwrap_or_default();
            let _ = write!(
                o,
                "{}{{\"name\":{},\"covered\":{},\"instances\":{},\"alive_ns\":{},\"busy_ns\":{},\"scheduled_ns\":{},\
\"first_poll_wait_ns\":{},\"idle_ns\":{},\"polls\":{},\"wakes\":{},\"self_wakes\":{}}}",
                if j > 0 { "," } else { "" },
                jstr(&s.name),
                a.is_some() && !future,
                a0.instances,
                a0.alive_ns,
                a0.busy_ns,
                a0.scheduled_ns,
                a0.first_poll_wait_ns,
                a0.idle_ns(),
                a0.polls,
                a0.wakes,
                a0.self_wakes,
            );
        }
        o.push_str("]}");
    }
    o.push_str("]}\n");
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], o).into_response()
}
