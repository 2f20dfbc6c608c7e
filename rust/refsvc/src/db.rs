//! The slow database wait. With `--pg URL` every query is a real
//! `SELECT pg_sleep(S)` over tokio-postgres (a small pool of connections, plus
//! one connection reserved for truth-db-waiter); without it the wait is a
//! `tokio::time::sleep` of the same length. S is 20 ms, 60 ms with `--sick`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::truth::spawn_named;

pub static DB_QUERIES: AtomicU64 = AtomicU64::new(0);
pub static DB_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static DB_WAIT_NS: AtomicU64 = AtomicU64::new(0);

pub struct Db {
    clients: Vec<tokio_postgres::Client>,
    next: AtomicUsize,
    pub wait: Duration,
}

/// Which connection a query uses: the shared pool, or the one reserved for
/// truth-db-waiter (so its waits are not queued behind the pool's).
#[derive(Clone, Copy)]
pub enum Lane {
    Pool,
    Reserved,
}

impl Db {
    pub fn backend(&self) -> &'static str {
        if self.clients.is_empty() {
            "sleep"
        } else {
            "postgres"
        }
    }

    /// Connects `pool + 1` clients (retrying for up to 15 s), or returns the
    /// sleep backend when `url` is None.
    pub async fn connect(url: Option<&str>, pool: usize, wait: Duration) -> Result<Db, String> {
        let mut clients = Vec::new();
        if let Some(url) = url {
            let deadline = Instant::now() + Duration::from_secs(15);
            while clients.len() < pool + 1 {
                match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
                    Ok((client, conn)) => {
                        spawn_named("db.connection", async move {
                            if let Err(e) = conn.await {
                                eprintln!("refsvc: postgres connection ended: {e}");
                            }
                        });
                        clients.push(client);
                    }
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("refsvc: postgres connect failed ({e}), retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(format!("postgres connect: {e}")),
                }
            }
        }
        Ok(Db { clients, next: AtomicUsize::new(0), wait })
    }
}

/// One database round trip that waits `db.wait` on the server (or sleeps that
/// long). Returns the time it took.
#[inline(never)]
pub async fn db_query(db: &Db, lane: Lane) -> Duration {
    let t = Instant::now();
    if db.clients.is_empty() {
        tokio::time::sleep(db.wait).await;
    } else {
        let client = match lane {
            Lane::Reserved => &db.clients[0],
            Lane::Pool => {
                let n = db.clients.len() - 1;
                &db.clients[1 + db.next.fetch_add(1, Relaxed) % n.max(1)]
            }
        };
        let secs = db.wait.as_secs_f64();
        // A query timeout, as services have; it also puts a tokio leaf future
        // (the timeout's Sleep) under db_query, so the wait shows in task dumps
        // (tokio-postgres itself waits on a futures channel, which they omit).
        let limit = db.wait * 50 + Duration::from_secs(1);
        match tokio::time::timeout(limit, client.execute("SELECT pg_sleep($1)", &[&secs])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                DB_ERRORS.fetch_add(1, Relaxed);
                eprintln!("refsvc: db_query: {e}");
                tokio::time::sleep(db.wait).await;
            }
            Err(_) => {
                DB_ERRORS.fetch_add(1, Relaxed);
                eprintln!("refsvc: db_query: no answer within {limit:?}");
            }
        }
    }
    let d = t.elapsed();
    DB_QUERIES.fetch_add(1, Relaxed);
    DB_WAIT_NS.fetch_add(d.as_nanos() as u64, Relaxed);
    d
}
