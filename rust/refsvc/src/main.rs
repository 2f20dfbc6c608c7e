//! refsvc: the reference Rust/Tokio service profcap's tests profile. It is
//! shaped like a workflow orchestrator's services (orchestrator part, worker
//! part, database waits, contended locks) and reports ground truth about its
//! own tasks at GET /truth. See rust/README.md.

#[cfg(not(tokio_unstable))]
compile_error!(
    "refsvc needs --cfg tokio_unstable (rust/.cargo/config.toml sets it; a RUSTFLAGS variable replaces that list, so repeat it there)"
);

mod cli;
mod db;
mod http;
mod pipeline;
mod truth;
mod work;

use std::sync::Arc;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start-up (the `_rjem_`
/// prefix is tikv-jemalloc-sys' default; `_RJEM_MALLOC_CONF` in the
/// environment is read after it). Heap sampling every 2^19 bytes (512 KiB) on
/// average; without --jemalloc-prof refsvc switches `prof.active` off at start.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: ConfPtr = ConfPtr(b"prof:true,prof_active:true,lg_prof_sample:19\0".as_ptr());

#[repr(transparent)]
pub struct ConfPtr(*const u8);
// SAFETY: points at an immutable static string.
unsafe impl Sync for ConfPtr {}

fn main() {
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{}", cli::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("refsvc: {e}\n\n{}", cli::USAGE);
            std::process::exit(2);
        }
    };

    if let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() {
        if !args.jemalloc_prof {
            let mut ctl = ctl.blocking_lock();
            if let Err(e) = ctl.deactivate() {
                eprintln!("refsvc: could not switch jemalloc heap sampling off: {e}");
            }
        }
    } else if args.jemalloc_prof {
        eprintln!("refsvc: --jemalloc-prof: jemalloc profiling is not available (opt.prof is false)");
    }

    if let Some(addr) = args.console.clone() {
        start_console(addr, &args);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .thread_name("refsvc-worker")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

/// console-subscriber's layer, with its gRPC server on a thread of its own (a
/// failed bind is reported and the service goes on without a console).
fn start_console(addr: cli::ConsoleAddr, args: &cli::Args) {
    let mut builder = console_subscriber::ConsoleLayer::builder()
        .retention(Duration::from_secs(args.console_retention_secs))
        .publish_interval(Duration::from_millis(args.console_publish_ms));
    if let Some(n) = args.console_buffer {
        builder = builder.event_buffer_capacity(n);
    }
    builder = match &addr {
        cli::ConsoleAddr::Tcp(a) => builder.server_addr(*a),
        cli::ConsoleAddr::Unix(p) => {
            // a socket file left by an earlier run would make the bind fail
            let _ = std::fs::remove_file(p);
            builder.server_addr(p.as_path())
        }
    };
    let (layer, server) = builder.build();
    fn console_filter(meta: &tracing::Metadata<'_>) -> bool {
        if meta.is_event() {
            return meta.target().starts_with("runtime") || meta.target().starts_with("tokio");
        }
        meta.name().starts_with("runtime.") || meta.target().starts_with("tokio")
    }
    let filter = tracing_subscriber::filter::FilterFn::new(console_filter as fn(&tracing::Metadata<'_>) -> bool);
    tracing_subscriber::registry().with(layer.with_filter(filter)).init();
    std::thread::Builder::new()
        .name("console_subscriber".into())
        .spawn(move || {
            // the console's own runtime is not traced
            let _guard = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("console runtime");
            rt.block_on(async move {
                eprintln!("refsvc: tokio-console on {addr}");
                if let Err(e) = server.serve().await {
                    eprintln!("refsvc: tokio-console server on {addr} failed: {e}; running without a console");
                }
            });
        })
        .expect("console thread");
}

async fn run(args: cli::Args) -> i32 {
    let wait = Duration::from_millis(pipeline::tuning::DB_WAIT_MS * if args.sick { 3 } else { 1 });
    let db = match db::Db::connect(args.pg.as_deref(), 3, wait).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("refsvc: {e}");
            return 1;
        }
    };
    let bind = format!("{}:{}", args.bind, args.port);
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("refsvc: listen {bind}: {e}");
            return 1;
        }
    };
    let pidfile = args.pidfile.clone();
    if let Some(p) = &pidfile {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            eprintln!("refsvc: pidfile {p}: {e}");
            return 1;
        }
    }
    eprintln!(
        "refsvc: {} role={} pid={} rest=http://{bind} console={} pprof={} jemalloc_prof={} taskdump={} db={} sick={} workers={}",
        args.name,
        args.role.as_str(),
        std::process::id(),
        args.console.as_ref().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        args.pprof,
        args.jemalloc_prof,
        args.taskdump,
        db.backend(),
        args.sick,
        args.workers
    );
    let app = pipeline::App::new(args, db);
    pipeline::start(&app);
    let router = http::router(Arc::clone(&app));
    let server = truth::spawn_named("http.server", async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("refsvc: http server: {e}");
        }
    });

    let code = tokio::select! {
        s = shutdown_signal() => { eprintln!("refsvc: {s}, exiting"); 0 }
        _ = server => { eprintln!("refsvc: http server ended"); 1 }
    };
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    code
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
