//! Command line: a small hand parser (`--flag VALUE` or `--flag=VALUE`).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the tokio-console gRPC server listens: TCP, or a Unix socket
/// (`unix:/path`, console-subscriber's `ServerAddr::Unix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ConsoleAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleAddr::Tcp(a) => write!(f, "{a}"),
            ConsoleAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Orchestration,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Orchestration => "orchestration",
            Role::Worker => "worker",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Args {
    pub name: String,
    pub role: Role,
    pub bind: String,
    pub port: u16,
    /// None: no console
    pub console: Option<ConsoleAddr>,
    pub pprof: bool,
    pub jemalloc_prof: bool,
    pub taskdump: bool,
    pub pg: Option<String>,
    pub pidfile: Option<String>,
    pub sick: bool,
    pub workers: usize,
    pub spawn_backlog: usize,
    pub hog_ms: u64,
    pub spin_ms: u64,
    pub steps_per_sec: f64,
    pub console_retention_secs: u64,
    /// console-subscriber's publish interval (its default: 1 s)
    pub console_publish_ms: u64,
    /// console-subscriber's event buffer capacity (None: its default, 102400)
    pub console_buffer: Option<usize>,
    /// long-lived named idle tasks spawned at start, and the length of each name
    pub idle_tasks: usize,
    pub idle_task_name_bytes: usize,
}

pub const USAGE: &str = "\
usage: refsvc [flags]

  --name NAME            instance name (default: refsvc)
  --role ROLE            orchestration | worker (default: orchestration)
  --bind HOST            REST listen host (default: 127.0.0.1)
  --port N               REST port (default: 8080)
  --console ADDR         tokio-console gRPC bind, HOST:PORT or unix:/PATH (default: $TOKIO_CONSOLE_BIND, else 127.0.0.1:6669)
  --no-console           no tokio-console server (and no console instrumentation layer)
  --pprof                serve GET /debug/pprof/profile (pprof-rs CPU profile)
  --jemalloc-prof        serve GET /debug/pprof/heap (jemalloc heap profile); without it heap sampling is off
  --taskdump             serve GET /debug/tokio/dump (tokio task dump)
  --pg URL               PostgreSQL connection string; the database wait is SELECT pg_sleep(..)
                         (without it, a tokio::time::sleep of the same length)
  --pidfile PATH         write the process id to PATH (removed on SIGTERM/SIGINT)
  --sick                 3x the CPU in hash_payload and a 3x slower database wait
  --workers N            tokio worker threads (default: 2)
  --spawn-backlog N      tasks spawned behind the hogs each backlog round (default: 64; 0: no backlog rounds)
  --hog-ms N             how long each backlog.hog spins without yielding (default: 200)
  --spin-ms N            truth-spinner's CPU per poll (default: 3)
  --steps-per-sec F      steps dispatched per second (default: 40)
  --console-retention S  seconds tokio-console keeps completed tasks (default: 20)
  --console-publish-ms N tokio-console publish interval in milliseconds (default: 1000, the subscriber's)
  --console-buffer N     tokio-console event buffer capacity (default: the subscriber's, 102400); a small one
                         makes the subscriber drop spawn events (dropped_events)
  --idle-tasks N         spawn N long-lived idle tasks at start, named idle.NNNNNN (default: 0)
  --idle-task-name-bytes B  pad each idle task's name with '.' to B bytes (default: 0: no padding), so
                         that a few thousand of them make the console's state exceed 4 MiB
  -h, --help             this text
";

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: not a valid number: {v:?}"))
}

pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        name: "refsvc".into(),
        role: Role::Orchestration,
        bind: "127.0.0.1".into(),
        port: 8080,
        console: None,
        pprof: false,
        jemalloc_prof: false,
        taskdump: false,
        pg: None,
        pidfile: None,
        sick: false,
        workers: 2,
        spawn_backlog: 64,
        hog_ms: 200,
        spin_ms: 3,
        steps_per_sec: 40.0,
        console_retention_secs: 20,
        console_publish_ms: 1000,
        console_buffer: None,
        idle_tasks: 0,
        idle_task_name_bytes: 0,
    };
    let mut console_flag: Option<String> = None;
    let mut no_console = false;
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--name" => a.name = value(&mut it)?,
            "--role" => {
                a.role = match value(&mut it)?.as_str() {
                    "orchestration" => Role::Orchestration,
                    "worker" => Role::Worker,
                    other => return Err(format!("--role: orchestration or worker, not {other:?}")),
                }
            }
            "--bind" => a.bind = value(&mut it)?,
            "--port" => a.port = num("--port", &value(&mut it)?)?,
            "--console" => console_flag = Some(value(&mut it)?),
            "--no-console" => no_console = true,
            "--pprof" => a.pprof = true,
            "--jemalloc-prof" => a.jemalloc_prof = true,
            "--taskdump" => a.taskdump = true,
            "--pg" => a.pg = Some(value(&mut it)?),
            "--pidfile" => a.pidfile = Some(value(&mut it)?),
            "--sick" => a.sick = true,
            "--workers" => a.workers = num("--workers", &value(&mut it)?)?,
            "--spawn-backlog" => a.spawn_backlog = num("--spawn-backlog", &value(&mut it)?)?,
            "--hog-ms" => a.hog_ms = num("--hog-ms", &value(&mut it)?)?,
            "--spin-ms" => a.spin_ms = num("--spin-ms", &value(&mut it)?)?,
            "--steps-per-sec" => a.steps_per_sec = num("--steps-per-sec", &value(&mut it)?)?,
            "--console-retention" => a.console_retention_secs = num("--console-retention", &value(&mut it)?)?,
            "--console-publish-ms" => a.console_publish_ms = num("--console-publish-ms", &value(&mut it)?)?,
            "--console-buffer" => a.console_buffer = Some(num("--console-buffer", &value(&mut it)?)?),
            "--idle-tasks" => a.idle_tasks = num("--idle-tasks", &value(&mut it)?)?,
            "--idle-task-name-bytes" => a.idle_task_name_bytes = num("--idle-task-name-bytes", &value(&mut it)?)?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if a.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    if !(a.steps_per_sec > 0.0) {
        return Err("--steps-per-sec must be positive".into());
    }
    if a.console_publish_ms == 0 {
        return Err("--console-publish-ms must be positive".into());
    }
    if a.console_buffer == Some(0) {
        return Err("--console-buffer must be positive".into());
    }
    if !no_console {
        let addr = console_flag
            .or_else(|| std::env::var("TOKIO_CONSOLE_BIND").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "127.0.0.1:6669".into());
        a.console = Some(match addr.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => ConsoleAddr::Unix(PathBuf::from(path)),
            Some(_) => return Err("console address \"unix:\" has no path".into()),
            None => ConsoleAddr::Tcp(resolve(&addr).map_err(|e| format!("console address {addr:?}: {e}"))?),
        });
    }
    Ok(a)
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let a = p(&["--name", "worker-rust-1", "--role=worker", "--port", "8100", "--console", "127.0.0.1:6671",
            "--pprof", "--sick", "--workers", "3"]).unwrap();
        assert_eq!(a.name, "worker-rust-1");
        assert_eq!(a.role, Role::Worker);
        assert_eq!(a.port, 8100);
        assert_eq!(a.console, Some(ConsoleAddr::Tcp("127.0.0.1:6671".parse().unwrap())));
        assert!(a.pprof && a.sick && !a.taskdump);
        assert_eq!(a.workers, 3);
        assert!(p(&["--no-console"]).unwrap().console.is_none());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--port"]).is_err());
        assert!(p(&["--role", "x"]).is_err());
        let u = p(&["--console", "unix:/tmp/c.sock", "--idle-tasks", "3", "--idle-task-name-bytes=64"]).unwrap();
        assert_eq!(u.console, Some(ConsoleAddr::Unix("/tmp/c.sock".into())));
        assert_eq!(u.console.unwrap().to_string(), "unix:/tmp/c.sock");
        assert_eq!((u.idle_tasks, u.idle_task_name_bytes), (3, 64));
        assert!(p(&["--console", "unix:"]).is_err());
        assert!(p(&["--console-publish-ms", "0"]).is_err());
    }
}
