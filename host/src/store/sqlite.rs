//! The embedded backend: one SQLite file (bundled libsqlite3 through `rusqlite`), WAL journal.
//!
//! # One writer thread, group commit
//!
//! SQLite lets one connection write at a time, and a write transaction is cheap except for its
//! commit, which (under `synchronous=FULL`) waits for an fsync of the WAL. So every mutation goes
//! to one OS thread that owns the only write connection: a store method packs its statements into
//! a job (a closure owning copies of its inputs) and sends it, with a `oneshot` for the answer,
//! over a channel. The thread takes the first job, then whatever else is already queued (at most
//! [`MAX_BATCH`]), and runs them all in one `BEGIN IMMEDIATE` transaction, one `COMMIT`, one
//! fsync. Under load the commit cost is shared by the whole batch instead of being paid per call,
//! and the statements themselves run back to back on the thread, with no async round trip per
//! statement. Writes still queue in-process rather than racing for the file lock, and
//! `BEGIN IMMEDIATE` still takes the lock up front, so a read-then-write job cannot fail half way
//! with `SQLITE_BUSY` because another process (an operator's `sqlite3` shell) wrote in between.
//!
//! Each job runs inside its own `SAVEPOINT` (skipped when the batch holds one job): a job that
//! fails is rolled back to its savepoint and answered with its error, and the jobs batched with it
//! are not affected. Every method is still one transaction as far as its caller can tell: it
//! happens entirely or not at all, and it sees the effects of the jobs before it in commit order.
//!
//! # Acknowledged only once durable
//!
//! No job is answered before its batch's `COMMIT` returns: a caller told `Ok` (the API telling the
//! app an action is accepted) holds a durable write, as before (see the
//! [module docs](super#durability)). If the `COMMIT` fails, every job of the batch that had
//! succeeded is answered with the commit's error instead (nothing of the batch is stored); a job
//! that failed gets its own error. Should SQLite itself abandon the transaction mid-batch (disk
//! full, I/O error), the jobs that had run in it are answered with an error the same way and the
//! rest of the batch continues in a new transaction. A job that panics is answered with
//! [`StoreError::Panicked`] and rolled back; the thread carries on.
//!
//! A job once queued runs even if its caller stops waiting for the answer.
//!
//! # Readers
//!
//! Read-only methods go to [`READERS`] connections, each owned by its own thread taking jobs from
//! one shared queue; they never wait for the writer. Each read statement runs in autocommit mode
//! and so takes a fresh WAL snapshot: a read issued after a write was answered sees that write.
//!
//! # Settings and closing
//!
//! `synchronous=FULL` (or `NORMAL` through [`SqliteStore::open_with`]), `foreign_keys=ON`, a
//! 5-second busy timeout in case another process holds the lock, a 32 MB page cache and reads
//! through a 256 MB memory map, and a statement cache of [`STATEMENT_CACHE`] per connection
//! (every statement is prepared once per connection). [`Store::close`] refuses new calls and the
//! jobs still queued (they get [`StoreError::Closed`]), lets the running batch finish, and returns
//! once every thread has closed its connection, so the file can be reopened at once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection as Db, OpenFlags, Params, Row, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::oneshot;

use super::codec::{self, RowExt as _};
use super::crypto::{self, SecretKey};
use super::migrate;
use super::*;

/// Read connections (and reader threads).
pub const READERS: usize = 4;
/// At most this many jobs share one write transaction.
pub const MAX_BATCH: usize = 256;
/// Prepared statements kept per connection.
pub const STATEMENT_CACHE: usize = 256;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in one SQLite file.
pub struct SqliteStore {
    /// To the writer thread; `None` once closed.
    writer: Mutex<Option<mpsc::Sender<WriterMsg>>>,
    /// To the reader threads; `None` once closed.
    readers: Mutex<Option<mpsc::Sender<ReadJob>>>,
    shared: Arc<Shared>,
    /// One per thread, completed (or dropped) once the thread has closed its connection.
    exits: tokio::sync::Mutex<Vec<oneshot::Receiver<()>>>,
    key: SecretKey,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// State shared by the store and its threads.
#[derive(Debug, Default)]
struct Shared {
    closing: AtomicBool,
    queued: AtomicU64,
    batches: AtomicU64,
    jobs: AtomicU64,
}

/// Counters of the writer thread, for benchmarks and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write transactions run (each one `COMMIT`, one fsync under `synchronous=FULL`).
    pub batches: u64,
    /// Jobs (store method calls) run in them; `jobs / batches` is the mean batch size.
    pub jobs: u64,
    /// Jobs sent to the writer and not yet taken by it.
    pub queued: u64,
}

impl SqliteStore {
    /// Open (creating if needed) the store at `path`, migrate it and check `key`.
    ///
    /// # Errors
    /// See [`open`].
    pub async fn open(path: &Path, key: SecretKey) -> Result<Self, StoreError> {
        Self::open_with(path, key, true).await
    }

    /// [`SqliteStore::open`], choosing whether commits fsync the WAL (`full_sync`, the default
    /// and what the durability promise rests on) or not (`synchronous=NORMAL`: a commit survives
    /// a crash of the process, not of the machine).
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_with(path: &Path, key: SecretKey, full_sync: bool) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let fail = |reason: String| StoreError::Open { url: shown.clone(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        create_private(path).map_err(|e| fail(format!("cannot create the database file: {e}")))?;

        let shared = Arc::new(Shared::default());
        let mut exits = Vec::with_capacity(READERS + 1);

        // The writer first: it sets WAL mode, migrates and checks the key before anyone reads.
        let (writer_tx, writer_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        exits.push(exit_rx);
        {
            let (path, key, shared, shown) = (path.to_owned(), key.clone(), shared.clone(), shown.clone());
            std::thread::Builder::new()
                .name("deskgate-sqlite-writer".into())
                .spawn(move || {
                    let opened = open_connection(&path, full_sync, Role::Writer)
                        .map_err(|e| StoreError::Open { url: shown, reason: e.to_string() })
                        .and_then(|mut conn| prepare(&mut conn, &key).map(|()| conn));
                    match opened {
                        Ok(conn) => {
                            let _ = ready_tx.send(Ok(()));
                            writer_loop(&conn, &writer_rx, &shared);
                            drop(conn);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                    let _ = exit_tx.send(());
                })
                .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        }
        let store = Self {
            writer: Mutex::new(Some(writer_tx)),
            readers: Mutex::new(None),
            shared: shared.clone(),
            exits: tokio::sync::Mutex::new(exits),
            key,
            path: path.to_owned(),
        };
        let writer_ready = ready_rx.await.unwrap_or_else(|_| Err(fail("the writer thread exited".into())));
        if let Err(e) = writer_ready {
            store.close().await;
            return Err(e);
        }

        let (reader_tx, reader_rx) = mpsc::channel::<ReadJob>();
        let reader_rx = Arc::new(Mutex::new(reader_rx));
        let mut ready = Vec::with_capacity(READERS);
        for i in 0..READERS {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (exit_tx, exit_rx) = oneshot::channel();
            let (path, queue, shared) = (path.to_owned(), reader_rx.clone(), shared.clone());
            let spawned = std::thread::Builder::new().name(format!("deskgate-sqlite-reader-{i}")).spawn(move || {
                match open_connection(&path, full_sync, Role::Reader) {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        reader_loop(&conn, &queue, &shared);
                        drop(conn);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
                let _ = exit_tx.send(());
            });
            match spawned {
                Ok(_) => {
                    store.exits.lock().await.push(exit_rx);
                    ready.push(ready_rx);
                }
                Err(e) => {
                    drop(reader_tx);
                    store.close().await;
                    return Err(fail(format!("cannot start a reader thread: {e}")));
                }
            }
        }
        *lock(&store.readers) = Some(reader_tx);
        for r in ready {
            let outcome = r.await.unwrap_or_else(|_| Err("a reader thread exited".into()));
            if let Err(reason) = outcome {
                store.close().await;
                return Err(fail(reason));
            }
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer thread's counters so far.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            jobs: self.shared.jobs.load(Ordering::Relaxed),
            queued: self.shared.queued.load(Ordering::Relaxed),
        }
    }

    /// Run `f` on the writer thread in the next batch; its answer once the batch is committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send_to_writer(WriterMsg::Job(Box::new(Job { f, reply })))?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    fn send_to_writer(&self, msg: WriterMsg) -> Result<(), StoreError> {
        let writer = lock(&self.writer);
        let writer = writer.as_ref().ok_or(StoreError::Closed)?;
        let is_job = matches!(msg, WriterMsg::Job(_));
        if is_job {
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
        }
        writer.send(msg).map_err(|_| {
            if is_job {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            }
            StoreError::Closed
        })
    }

    /// Run `f` on one of the reader connections.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn: &Db| {
            let _ = reply.send(guarded(|| f(conn)));
        });
        lock(&self.readers).as_ref().ok_or(StoreError::Closed)?.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Stop the writer before its next batch until the returned sender is dropped. Jobs sent
    /// meanwhile queue up and run as one batch (up to [`MAX_BATCH`]) when it resumes.
    #[cfg(test)]
    fn pause_writer(&self) -> mpsc::Sender<()> {
        let (resume, paused) = mpsc::channel();
        self.send_to_writer(WriterMsg::Pause(paused)).expect("the writer is running");
        resume
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and schema

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// Open one connection with the store's settings.
fn open_connection(path: &Path, full_sync: bool, role: Role) -> rusqlite::Result<Db> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if role == Role::Writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Db::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if role == Role::Writer {
        // Persistent in the file: the readers, opened after the writer, find it set.
        pragma(&conn, "PRAGMA journal_mode = WAL")?;
    }
    pragma(&conn, if full_sync { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" })?;
    pragma(&conn, "PRAGMA foreign_keys = ON")?;
    // A page cache that holds a busy day's hot pages (the default is 2 MB per connection), and
    // reads through a memory map instead of a `pread` per page miss.
    pragma(&conn, "PRAGMA cache_size = -32768")?;
    pragma(&conn, "PRAGMA mmap_size = 268435456")?;
    if role == Role::Reader {
        // A write sent to a reader by mistake fails instead of racing the writer for the lock.
        pragma(&conn, "PRAGMA query_only = ON")?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Run a pragma, ignoring the row some of them return.
fn pragma(conn: &Db, sql: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Migrate and check the key, in one transaction holding the write lock.
fn prepare(conn: &mut Db, key: &SecretKey) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS deskgate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        [],
    )?;
    let applied = query_all(&tx, "SELECT version, checksum FROM deskgate_schema ORDER BY version", [], |r| {
        Ok((r.i64("version")?, r.string("checksum")?))
    })?;
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    for m in migrate::plan(migrate::SQLITE, &applied)? {
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO deskgate_schema (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            params![m.version, m.name, m.checksum(), now],
        )?;
    }
    tx.execute(
        "INSERT INTO deskgate_meta (key, value) VALUES ('key_check', ?1) ON CONFLICT (key) DO NOTHING",
        params![crypto::key_check(key)],
    )?;
    let check: Vec<u8> = tx.query_row("SELECT value FROM deskgate_meta WHERE key = 'key_check'", [], |r| r.get(0))?;
    crypto::verify_key_check(key, &check)?;
    tx.commit()?;
    Ok(())
}

/// Create the database file readable by its owner only (it holds ticket content), unless it
/// exists. An empty file is a valid empty SQLite database; SQLite gives the `-wal` and `-shm`
/// files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The writer thread

enum WriterMsg {
    Job(Box<dyn WriteJob>),
    /// Block until the sender side is dropped (tests: force jobs into one batch).
    #[cfg(test)]
    Pause(mpsc::Receiver<()>),
}

/// A store method's work for the writer, type-erased.
trait WriteJob: Send {
    /// Run the job on the writer connection (inside the batch's transaction).
    fn run(self: Box<Self>, conn: &Db) -> Box<dyn Finished>;
    /// Answer without running (the transaction could not start, or the store is closing).
    fn refuse(self: Box<Self>, err: StoreError);
}

/// A job that ran, holding its result until the batch is committed.
trait Finished: Send {
    fn is_ok(&self) -> bool;
    /// Answer with the job's own result (its batch committed).
    fn deliver(self: Box<Self>);
    /// The batch's work was lost: an `Ok` result becomes `err`; an error is answered as it is.
    fn deliver_lost(self: Box<Self>, err: StoreError);
}

struct Job<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

struct Done<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Db) -> Box<dyn Finished> {
        let Job { f, reply } = *self;
        Box::new(Done { result: guarded(|| f(conn)), reply })
    }

    fn refuse(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

impl<T: Send + 'static> Finished for Done<T> {
    fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    fn deliver(self: Box<Self>) {
        let _ = self.reply.send(self.result);
    }

    fn deliver_lost(self: Box<Self>, err: StoreError) {
        let result = match self.result {
            Ok(_) => Err(err),
            Err(own) => Err(own),
        };
        let _ = self.reply.send(result);
    }
}

/// `f()`, with a panic turned into [`StoreError::Panicked`].
fn guarded<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic".to_owned());
        Err(StoreError::Panicked(what))
    })
}

/// Take batches until every sender is gone.
fn writer_loop(conn: &Db, rx: &mpsc::Receiver<WriterMsg>, shared: &Shared) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    #[cfg(test)]
    let mut pause: Option<mpsc::Receiver<()>> = None;
    loop {
        match rx.recv() {
            Ok(WriterMsg::Job(job)) => batch.push(job),
            #[cfg(test)]
            Ok(WriterMsg::Pause(p)) => pause = Some(p),
            Err(_) => return,
        }
        #[cfg(test)]
        let draining = pause.is_none();
        #[cfg(not(test))]
        let draining = true;
        while draining && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                #[cfg(test)]
                Ok(WriterMsg::Pause(p)) => {
                    pause = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        shared.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        if !batch.is_empty() {
            if shared.closing.load(Ordering::Acquire) {
                for job in batch.drain(..) {
                    job.refuse(StoreError::Closed);
                }
            } else {
                // Counted before any job is answered, so a caller sees its own batch counted.
                shared.batches.fetch_add(1, Ordering::Relaxed);
                shared.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
                run_batch(conn, batch.drain(..));
            }
        }
        #[cfg(test)]
        if let Some(p) = pause.take() {
            let _ = p.recv();
        }
    }
}

/// Run the jobs in one transaction, a savepoint each, and answer them after the commit.
fn run_batch(conn: &Db, jobs: std::vec::Drain<'_, Box<dyn WriteJob>>) {
    let savepoints = jobs.len() > 1;
    let mut jobs = jobs.peekable();
    // Jobs run in the current transaction, awaiting its outcome.
    let mut done: Vec<Box<dyn Finished>> = Vec::with_capacity(jobs.len());
    'transaction: while jobs.peek().is_some() {
        if !conn.is_autocommit() {
            // Never expected: a transaction left open would swallow this batch into it.
            let _ = stmt(conn, "ROLLBACK");
        }
        if let Err(e) = stmt(conn, "BEGIN IMMEDIATE") {
            for job in jobs.by_ref() {
                job.refuse(replicate(&e));
            }
            return;
        }
        for job in jobs.by_ref() {
            if savepoints && let Err(e) = stmt(conn, "SAVEPOINT job") {
                job.refuse(replicate(&e));
                if conn.is_autocommit() {
                    lose(&mut done, "a savepoint could not be opened");
                    continue 'transaction;
                }
                continue;
            }
            let out = job.run(conn);
            if savepoints {
                let undone = if out.is_ok() {
                    stmt(conn, "RELEASE job").err()
                } else {
                    None
                };
                if !out.is_ok() || undone.is_some() {
                    let _ = stmt(conn, "ROLLBACK TO job");
                    let _ = stmt(conn, "RELEASE job");
                }
                if let Some(e) = undone {
                    out.deliver_lost(replicate(&e));
                    continue;
                }
            }
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (disk full, I/O error, ...): nothing
                // run in it is stored. The remaining jobs get a new transaction.
                done.push(out);
                lose(&mut done, "SQLite rolled the transaction back");
                continue 'transaction;
            }
            if !savepoints && !out.is_ok() {
                // The only job failed: undo whatever part of it ran.
                let _ = stmt(conn, "ROLLBACK");
                out.deliver();
                return;
            }
            done.push(out);
        }
        break;
    }
    if done.is_empty() {
        if !conn.is_autocommit() {
            let _ = stmt(conn, "ROLLBACK");
        }
        return;
    }
    let outcome = if done.iter().any(|d| d.is_ok()) { stmt(conn, "COMMIT") } else { stmt(conn, "ROLLBACK") };
    match outcome {
        Ok(()) => {
            for d in done {
                d.deliver();
            }
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = stmt(conn, "ROLLBACK");
            }
            for d in done {
                d.deliver_lost(replicate(&e));
            }
        }
    }
}

/// Answer every job of a transaction SQLite abandoned: none of their work is stored.
fn lose(done: &mut Vec<Box<dyn Finished>>, why: &str) {
    for d in done.drain(..) {
        d.deliver_lost(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some(format!("{why}: the write was not stored; retry it")),
        )));
    }
}

/// One error for each of several jobs (`rusqlite::Error` is not `Clone`).
fn replicate(e: &rusqlite::Error) -> StoreError {
    StoreError::Sqlite(match e {
        rusqlite::Error::SqliteFailure(code, msg) => rusqlite::Error::SqliteFailure(*code, msg.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    })
}

/// A parameterless control statement (`BEGIN`, `SAVEPOINT`, `COMMIT`, ...), prepared once.
fn stmt(conn: &Db, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// The reader threads

type ReadJob = Box<dyn FnOnce(&Db) + Send>;

fn reader_loop(conn: &Db, queue: &Mutex<mpsc::Receiver<ReadJob>>, shared: &Shared) {
    loop {
        // One thread waits on the queue holding the lock, the others wait for the lock.
        let job = lock(queue).recv();
        let Ok(job) = job else { return };
        if shared.closing.load(Ordering::Acquire) {
            // Dropping the job drops its reply: the caller gets `Closed`.
            drop(job);
            continue;
        }
        job(conn);
    }
}

// ---------------------------------------------------------------------------------------------
// Statement helpers (every statement through the connection's statement cache)

/// The first row of `sql`, decoded.
fn query_one<T>(
    conn: &Db,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Every row of `sql`, decoded.
fn query_all<T>(
    conn: &Db,
    sql: &str,
    params: impl Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Run `sql`; the number of rows it changed.
fn execute(conn: &Db, sql: &str, params: impl Params) -> Result<u64, StoreError> {
    Ok(conn.prepare_cached(sql)?.execute(params)? as u64)
}

fn live_connection(conn: &Db, id: &str) -> Result<(), StoreError> {
    let state = query_one(conn, "SELECT state FROM connections WHERE id = ?1", [id], |r| r.string("state"))?;
    match state.as_deref() {
        None | Some("deleted") => Err(StoreError::ConnectionNotFound(id.to_owned())),
        Some(_) => Ok(()),
    }
}

/// Load an entry for a transition by `owner`, checking the lease.
fn leased_entry(conn: &Db, id: i64, owner: &str) -> Result<OutboxEntry, StoreError> {
    let entry = query_one(conn, "SELECT * FROM outbox WHERE id = ?1", [id], |r| codec::outbox(r))?
        .ok_or(StoreError::ActionNotFound(id))?;
    match &entry.lease {
        Some(l) if l.owner == owner => Ok(entry),
        _ => Err(StoreError::LeaseLost { entry: id, owner: owner.to_owned() }),
    }
}

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("ids serialize")
}

/// `e`, with a unique violation reported as `exists`.
fn unique_as(e: StoreError, exists: impl FnOnce() -> StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(ref s) if codec::sqlite_is_unique_violation(s) => exists(),
        e => e,
    }
}

/// `e`, with a foreign-key violation reported as `missing`.
fn fk_as(e: StoreError, missing: impl FnOnce() -> StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(ref s) if codec::sqlite_is_fk_violation(s) => missing(),
        e => e,
    }
}

// ---------------------------------------------------------------------------------------------
// The interface

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM deskgate_schema")?.query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn close(&self) {
        let mut exits = self.exits.lock().await;
        self.shared.closing.store(true, Ordering::Release);
        drop(lock(&self.writer).take());
        drop(lock(&self.readers).take());
        for exit in exits.drain(..) {
            let _ = exit.await;
        }
    }

    // -- connections ---------------------------------------------------------------------

    async fn create_connection(
        &self,
        new: &NewConnection,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let new = new.clone();
        self.write(move |c| {
            query_one(
                c,
                "INSERT INTO connections (id, platform, display_name, plan, settings, state, admin_contact_url, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending_probe', ?6, ?7, ?7) RETURNING *",
                params![new.id, new.platform, new.display_name, new.plan, new.settings.to_string(), new.admin_contact_url, now],
                |r| codec::connection(r),
            )
            .map_err(|e| unique_as(e, || StoreError::ConnectionExists(new.id.clone())))?
            .ok_or_else(|| StoreError::Corrupt("INSERT .. RETURNING returned no row".into()))
        })
        .await
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| query_one(c, "SELECT * FROM connections WHERE id = ?1", [&id], |r| codec::connection(r))).await
    }

    async fn list_connections(&self, include_deleted: bool) -> Result<Vec<Connection>, StoreError> {
        self.read(move |c| {
            query_all(
                c,
                "SELECT * FROM connections WHERE ?1 OR state <> 'deleted' ORDER BY id",
                [include_deleted],
                |r| codec::connection(r),
            )
        })
        .await
    }

    async fn update_connection(
        &self,
        id: &str,
        patch: &ConnectionPatch,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let (id, patch) = (id.to_owned(), patch.clone());
        self.write(move |c| {
            let mut conn = query_one(c, "SELECT * FROM connections WHERE id = ?1", [&id], |r| codec::connection(r))?
                .ok_or_else(|| StoreError::ConnectionNotFound(id.clone()))?;
            if let Some(v) = patch.display_name {
                conn.display_name = v;
            }
            if let Some(v) = patch.plan {
                conn.plan = v;
            }
            if let Some(v) = patch.settings {
                conn.settings = v;
            }
            if let Some(v) = patch.admin_contact_url {
                conn.admin_contact_url = v;
            }
            query_one(
                c,
                "UPDATE connections SET display_name = ?2, plan = ?3, settings = ?4, admin_contact_url = ?5, \
                 updated_at = ?6 WHERE id = ?1 RETURNING *",
                params![id, conn.display_name, conn.plan, conn.settings.to_string(), conn.admin_contact_url, now],
                |r| codec::connection(r),
            )?
            .ok_or_else(|| StoreError::ConnectionNotFound(id.clone()))
        })
        .await
    }

    async fn set_connection_state(
        &self,
        id: &str,
        state: &ConnectionState,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let (id, state) = (id.to_owned(), state.clone());
        self.write(move |c| {
            let (name, reason, kind) = codec::connection_state_cols(&state);
            let conn = query_one(
                c,
                "UPDATE connections SET state = ?2, suspend_reason = ?3, suspend_kind = ?4, updated_at = ?5 \
                 WHERE id = ?1 RETURNING *",
                params![id, name, reason, kind, now],
                |r| codec::connection(r),
            )?
            .ok_or_else(|| StoreError::ConnectionNotFound(id.clone()))?;
            if matches!(state, ConnectionState::Deleted) {
                execute(c, "DELETE FROM credentials WHERE connection_id = ?1", [&id])?;
                execute(c, "DELETE FROM webhook_secrets WHERE connection_id = ?1", [&id])?;
            }
            if matches!(state, ConnectionState::Live) {
                // Events held while it was suspended go to the app now, after everything it may
                // have been given meanwhile: new ids past the newest ever issued, in their old
                // order.
                let held = query_all(
                    c,
                    "SELECT id FROM inbox WHERE connection_id = ?1 AND held = 1 ORDER BY id",
                    [&id],
                    |r| r.i64("id"),
                )?;
                for old in held {
                    execute(
                        c,
                        "UPDATE inbox SET held = 0, id = 1 + MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'inbox'), 0), \
                         (SELECT MAX(id) FROM inbox)) WHERE id = ?1",
                        [old],
                    )?;
                    execute(
                        c,
                        "UPDATE sqlite_sequence SET seq = (SELECT MAX(id) FROM inbox) WHERE name = 'inbox' AND seq < (SELECT MAX(id) FROM inbox)",
                        [],
                    )?;
                }
            }
            Ok(conn)
        })
        .await
    }

    async fn set_probe_report(
        &self,
        id: &str,
        report: &Value,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let (id, report) = (id.to_owned(), report.to_string());
        self.write(move |c| {
            query_one(
                c,
                "UPDATE connections SET probe_report = ?2, updated_at = ?3 WHERE id = ?1 RETURNING *",
                params![id, report, now],
                |r| codec::connection(r),
            )?
            .ok_or_else(|| StoreError::ConnectionNotFound(id.clone()))
        })
        .await
    }

    // -- credentials ---------------------------------------------------------------------

    async fn put_credential(
        &self,
        connection_id: &str,
        secret: &CredentialSecret,
        expires_at: Option<Millis>,
        expect: Expect,
        now: Millis,
    ) -> Result<Credential, StoreError> {
        let sealed = crypto::seal(
            &self.key,
            &crypto::credential_aad(connection_id),
            &codec::secret_plaintext(secret),
        );
        let (id, scheme, key) = (connection_id.to_owned(), secret.scheme(), self.key.clone());
        self.write(move |c| {
            live_connection(c, &id)?;
            let current = query_one(c, "SELECT version FROM credentials WHERE connection_id = ?1", [&id], |r| {
                r.i64("version")
            })?;
            codec::check_expect(&id, expect, current)?;
            query_one(
                c,
                "INSERT INTO credentials (connection_id, scheme, sealed, expires_at, version, refresh_owner, \
                 refresh_started_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6) \
                 ON CONFLICT (connection_id) DO UPDATE SET scheme = excluded.scheme, sealed = excluded.sealed, \
                 expires_at = excluded.expires_at, version = excluded.version, refresh_owner = NULL, \
                 refresh_started_at = NULL, updated_at = excluded.updated_at RETURNING *",
                params![id, scheme, sealed, expires_at, current.unwrap_or(0) + 1, now],
                |r| codec::credential(r, &key),
            )?
            .ok_or_else(|| StoreError::Corrupt("INSERT .. RETURNING returned no row".into()))
        })
        .await
    }

    async fn get_credential(&self, connection_id: &str) -> Result<Option<Credential>, StoreError> {
        let (id, key) = (connection_id.to_owned(), self.key.clone());
        self.read(move |c| {
            query_one(c, "SELECT * FROM credentials WHERE connection_id = ?1", [&id], |r| codec::credential(r, &key))
        })
        .await
    }

    async fn begin_refresh(
        &self,
        connection_id: &str,
        claim: &RefreshClaim,
    ) -> Result<Credential, StoreError> {
        let (id, claim, key) = (connection_id.to_owned(), claim.clone(), self.key.clone());
        self.write(move |c| {
            let (version, owner, since) = query_one(
                c,
                "SELECT * FROM credentials WHERE connection_id = ?1",
                [&id],
                |r| Ok((r.i64("version")?, r.opt_string("refresh_owner")?, r.opt_i64("refresh_started_at")?)),
            )?
            .ok_or_else(|| StoreError::CredentialNotFound(id.clone()))?;
            codec::check_refresh_claim(&id, &claim, version, owner, since)?;
            query_one(
                c,
                "UPDATE credentials SET refresh_owner = ?2, refresh_started_at = ?3 WHERE connection_id = ?1 RETURNING *",
                params![id, claim.owner, claim.now],
                |r| codec::credential(r, &key),
            )?
            .ok_or_else(|| StoreError::CredentialNotFound(id.clone()))
        })
        .await
    }

    async fn end_refresh(&self, connection_id: &str, owner: &str) -> Result<bool, StoreError> {
        let (id, owner) = (connection_id.to_owned(), owner.to_owned());
        self.write(move |c| {
            let n = execute(
                c,
                "UPDATE credentials SET refresh_owner = NULL, refresh_started_at = NULL \
                 WHERE connection_id = ?1 AND refresh_owner = ?2",
                [&id, &owner],
            )?;
            Ok(n > 0)
        })
        .await
    }

    // -- webhook secrets -------------------------------------------------------------------

    async fn set_webhook_secret(
        &self,
        connection_id: &str,
        secret: Option<&[u8]>,
        allow_unsigned: bool,
        now: Millis,
    ) -> Result<Option<WebhookSecretRecord>, StoreError> {
        let sealed = secret.map(|s| crypto::seal(&self.key, &crypto::webhook_secret_aad(connection_id), s));
        let (id, key) = (connection_id.to_owned(), self.key.clone());
        self.write(move |c| {
            live_connection(c, &id)?;
            if sealed.is_none() && !allow_unsigned {
                execute(c, "DELETE FROM webhook_secrets WHERE connection_id = ?1", [&id])?;
                return Ok(None);
            }
            query_one(
                c,
                "INSERT INTO webhook_secrets (connection_id, sealed, allow_unsigned, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (connection_id) DO UPDATE SET sealed = excluded.sealed, \
                 allow_unsigned = excluded.allow_unsigned, updated_at = excluded.updated_at RETURNING *",
                params![id, sealed, allow_unsigned, now],
                |r| codec::webhook_secret(r, &key),
            )
        })
        .await
    }

    async fn get_webhook_secret(&self, connection_id: &str) -> Result<Option<WebhookSecretRecord>, StoreError> {
        let (id, key) = (connection_id.to_owned(), self.key.clone());
        self.read(move |c| {
            query_one(c, "SELECT * FROM webhook_secrets WHERE connection_id = ?1", [&id], |r| codec::webhook_secret(r, &key))
        })
        .await
    }

    // -- outbox --------------------------------------------------------------------------

    async fn enqueue(
        &self,
        new: &NewAction,
        now: Millis,
        dedupe_window: Duration,
    ) -> Result<Enqueued, StoreError> {
        let new = new.clone();
        self.write(move |c| {
            if let Some(app_key) = &new.app_key
                && let Some(e) = query_one(
                    c,
                    "SELECT * FROM outbox WHERE connection_id = ?1 AND app_key = ?2",
                    [&new.connection_id, app_key],
                    |r| codec::outbox(r),
                )?
            {
                return codec::same_action_or_reused(&new, app_key, e);
            }
            if let Some(e) = query_one(
                c,
                "SELECT * FROM outbox WHERE connection_id = ?1 AND idempotency_key = ?2 \
                 AND state IN ('pending', 'sent', 'ambiguous')",
                [&new.connection_id, &new.idempotency_key],
                |r| codec::outbox(r),
            )? {
                return Ok(Enqueued::Existing(e));
            }
            if let Some(e) = query_one(
                c,
                "SELECT * FROM outbox WHERE connection_id = ?1 AND idempotency_key = ?2 \
                 AND state IN ('confirmed', 'diverged') AND updated_at >= ?3 ORDER BY updated_at DESC, id DESC LIMIT 1",
                params![new.connection_id, new.idempotency_key, now.saturating_sub(ms(dedupe_window))],
                |r| codec::outbox(r),
            )? {
                return Ok(Enqueued::Existing(e));
            }
            live_connection(c, &new.connection_id)?;
            let entry = query_one(
                c,
                "INSERT INTO outbox (connection_id, ticket_id, action, idempotency_key, app_key, state, attempts, \
                 not_before, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, ?7) RETURNING *",
                params![
                    new.connection_id,
                    new.ticket_id,
                    new.action.to_string(),
                    new.idempotency_key,
                    new.app_key,
                    new.not_before,
                    now
                ],
                |r| codec::outbox(r),
            )?
            .ok_or_else(|| StoreError::Corrupt("INSERT .. RETURNING returned no row".into()))?;
            Ok(Enqueued::Created(entry))
        })
        .await
    }

    async fn get_action(&self, id: i64) -> Result<Option<OutboxEntry>, StoreError> {
        self.read(move |c| query_one(c, "SELECT * FROM outbox WHERE id = ?1", [id], |r| codec::outbox(r))).await
    }

    async fn find_action_by_app_key(
        &self,
        connection_id: &str,
        app_key: &str,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        let (id, app_key) = (connection_id.to_owned(), app_key.to_owned());
        self.read(move |c| {
            query_one(
                c,
                "SELECT * FROM outbox WHERE connection_id = ?1 AND app_key = ?2",
                [&id, &app_key],
                |r| codec::outbox(r),
            )
        })
        .await
    }

    async fn list_actions(&self, q: &ActionQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        // Only the filters asked for, so SQLite can pick the matching index (`?1 IS NULL OR ...`
        // forms make it scan the whole outbox). Unused numbered parameters are bound but unread.
        let mut sql = String::from("SELECT * FROM outbox WHERE id > ?4");
        if q.connection_id.is_some() {
            sql.push_str(" AND connection_id = ?1");
        }
        if q.ticket_id.is_some() {
            sql.push_str(" AND ticket_id = ?2");
        }
        if q.in_flight_only {
            sql.push_str(" AND state IN ('pending', 'sent', 'ambiguous')");
        }
        sql.push_str(" ORDER BY id LIMIT ?5");
        let q = q.clone();
        self.read(move |c| {
            query_all(
                c,
                &sql,
                params![q.connection_id, q.ticket_id, q.in_flight_only, q.after_id, codec::page(q.limit)],
                |r| codec::outbox(r),
            )
        })
        .await
    }

    async fn claim_actions(&self, claim: &Claim) -> Result<Vec<OutboxEntry>, StoreError> {
        let one = if claim.connection_id.is_some() { "AND o.connection_id = ?4 " } else { "" };
        let sql = format!(
            "UPDATE outbox SET lease_owner = ?1, lease_until = ?2 WHERE id IN (\
               SELECT o.id FROM outbox o JOIN connections c ON c.id = o.connection_id \
               WHERE o.state IN ('pending', 'sent', 'ambiguous') AND o.not_before <= ?3 \
               AND (o.lease_until IS NULL OR o.lease_until <= ?3) AND c.state = 'live' {one}\
               ORDER BY o.not_before, o.id LIMIT ?5) RETURNING *"
        );
        let claim = claim.clone();
        self.write(move |c| {
            codec::due_order(query_all(
                c,
                &sql,
                params![
                    claim.owner,
                    claim.now.saturating_add(ms(claim.lease_for)),
                    claim.now,
                    claim.connection_id,
                    i64::from(claim.limit)
                ],
                |r| codec::outbox(r),
            ))
        })
        .await
    }

    async fn mark_sent(
        &self,
        id: i64,
        owner: &str,
        now: Millis,
    ) -> Result<OutboxEntry, StoreError> {
        let owner = owner.to_owned();
        self.write(move |c| {
            let entry = leased_entry(c, id, &owner)?;
            codec::check_lease_valid(&entry, now)?;
            if !entry.state.is_in_flight() {
                return Err(StoreError::InvalidTransition {
                    entry: id,
                    from: entry.state.name(),
                    to: "sent",
                });
            }
            query_one(
                c,
                "UPDATE outbox SET state = 'sent', state_detail = NULL, attempts = attempts + 1, last_sent_at = ?2, \
                 updated_at = ?2 WHERE id = ?1 RETURNING *",
                [id, now],
                |r| codec::outbox(r),
            )?
            .ok_or(StoreError::ActionNotFound(id))
        })
        .await
    }

    async fn settle_action(
        &self,
        id: i64,
        owner: &str,
        settle: &Settle,
        now: Millis,
    ) -> Result<OutboxEntry, StoreError> {
        let (owner, settle) = (owner.to_owned(), settle.clone());
        self.write(move |c| {
            let entry = leased_entry(c, id, &owner)?;
            let cols = codec::settle_cols(id, &entry.state, &settle)?;
            let settled = query_one(
                c,
                "UPDATE outbox SET state = ?2, state_detail = ?3, result = ?4, not_before = COALESCE(?5, not_before), \
                 lease_owner = NULL, lease_until = NULL, updated_at = ?6 WHERE id = ?1 RETURNING *",
                params![id, cols.state, cols.detail, cols.result, cols.not_before, now],
                |r| codec::outbox(r),
            )?
            .ok_or(StoreError::ActionNotFound(id))?;
            let sent_at = if entry.state == OutboxState::Pending { None } else { entry.last_sent_at };
            execute(
                c,
                "INSERT INTO write_log (entry_id, connection_id, attempt, sent_at, outcome, detail, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, entry.connection_id, entry.attempts, sent_at, settle.outcome().name(), cols.log_detail, now],
            )?;
            Ok(settled)
        })
        .await
    }

    async fn unclaim_actions(&self, ids: &[i64], owner: &str) -> Result<u64, StoreError> {
        let (ids, owner) = (ids_json(ids), owner.to_owned());
        self.write(move |c| {
            execute(
                c,
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
                 WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2",
                [&ids, &owner],
            )
        })
        .await
    }

    async fn write_log(&self, entry_id: i64) -> Result<Vec<WriteLogRecord>, StoreError> {
        self.read(move |c| {
            query_all(c, "SELECT * FROM write_log WHERE entry_id = ?1 ORDER BY id", [entry_id], |r| codec::write_log(r))
        })
        .await
    }

    // -- inbox ---------------------------------------------------------------------------

    async fn insert_events(
        &self,
        events: &[NewEvent],
        now: Millis,
    ) -> Result<InsertReport, StoreError> {
        if events.is_empty() {
            return Ok(InsertReport::default());
        }
        let events = events.to_vec();
        self.write(move |c| {
            let mut report = InsertReport::default();
            for ev in &events {
                let n = execute(
                    c,
                    "INSERT INTO inbox (connection_id, platform, ticket_id, kind, ticket, dedupe_key, created_at, held) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?3 <> '' AND \
                       COALESCE((SELECT state = 'suspended' FROM connections WHERE id = ?1), 0)) \
                     ON CONFLICT (connection_id, dedupe_key) DO NOTHING",
                    params![ev.connection_id, ev.platform, ev.ticket_id, ev.kind, ev.ticket.to_string(), ev.dedupe_key, now],
                )
                .map_err(|e| fk_as(e, || StoreError::ConnectionNotFound(ev.connection_id.clone())))?;
                if n > 0 {
                    report.new += 1;
                } else {
                    report.duplicates += 1;
                }
            }
            Ok(report)
        })
        .await
    }

    async fn pull_events(&self, pull: &Pull) -> Result<Vec<InboxEvent>, StoreError> {
        let pull = pull.clone();
        self.write(move |c| {
            let mut events = query_all(
                c,
                if pull.connection_id.is_some() {
                    "SELECT * FROM inbox WHERE id > ?1 AND acked_at IS NULL AND held = 0 AND connection_id = ?2 ORDER BY id LIMIT ?3"
                } else {
                    "SELECT * FROM inbox WHERE id > ?1 AND acked_at IS NULL AND held = 0 ORDER BY id LIMIT ?3"
                },
                params![pull.after, pull.connection_id, codec::page(pull.limit)],
                |r| codec::inbox(r),
            )?;
            let first: Vec<i64> = events.iter().filter(|e| e.delivered_at.is_none()).map(|e| e.id).collect();
            if !first.is_empty() {
                execute(
                    c,
                    "UPDATE inbox SET delivered_at = ?2 WHERE id IN (SELECT value FROM json_each(?1))",
                    params![ids_json(&first), pull.now],
                )?;
                for e in events.iter_mut().filter(|e| e.delivered_at.is_none()) {
                    e.delivered_at = Some(pull.now);
                }
            }
            Ok(events)
        })
        .await
    }

    async fn ack_events_through(
        &self,
        connection_id: Option<&str>,
        through: i64,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let id = connection_id.map(str::to_owned);
        self.write(move |c| {
            execute(
                c,
                if id.is_some() {
                    "UPDATE inbox SET acked_at = ?3 WHERE id <= ?2 AND acked_at IS NULL AND held = 0 AND connection_id = ?1"
                } else {
                    "UPDATE inbox SET acked_at = ?3 WHERE id <= ?2 AND acked_at IS NULL AND held = 0"
                },
                params![id, through, now],
            )
        })
        .await
    }

    async fn ack_events(&self, ids: &[i64], now: Millis) -> Result<u64, StoreError> {
        let ids = ids_json(ids);
        self.write(move |c| {
            execute(
                c,
                "UPDATE inbox SET acked_at = ?2 WHERE id IN (SELECT value FROM json_each(?1)) AND acked_at IS NULL",
                params![ids, now],
            )
        })
        .await
    }

    async fn inbox_pending(&self, connection_id: &str) -> Result<u64, StoreError> {
        let id = connection_id.to_owned();
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM inbox WHERE connection_id = ?1 AND acked_at IS NULL")?
                .query_row([&id], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    // -- alerts --------------------------------------------------------------------------

    async fn raise_alert(&self, new: &NewAlert, now: Millis) -> Result<Alert, StoreError> {
        let new = new.clone();
        self.write(move |c| {
            query_one(
                c,
                "INSERT INTO alerts (connection_id, kind, text, detail, created_at, attempts, next_attempt_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5) RETURNING *",
                params![new.connection_id, new.kind, new.text, new.detail.to_string(), now],
                |r| codec::alert(r),
            )
            .map_err(|e| fk_as(e, || StoreError::ConnectionNotFound(new.connection_id.clone().unwrap_or_default())))?
            .ok_or_else(|| StoreError::Corrupt("INSERT .. RETURNING returned no row".into()))
        })
        .await
    }

    async fn list_alerts(
        &self,
        connection_id: Option<&str>,
        include_acked: bool,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError> {
        let id = connection_id.map(str::to_owned);
        self.read(move |c| {
            query_all(
                c,
                "SELECT * FROM alerts WHERE (?1 IS NULL OR connection_id = ?1) AND (?2 OR acked_at IS NULL) \
                 ORDER BY id DESC LIMIT ?3",
                params![id, include_acked, codec::page(limit)],
                |r| codec::alert(r),
            )
        })
        .await
    }

    async fn ack_alert(&self, id: i64, now: Millis) -> Result<bool, StoreError> {
        self.write(move |c| {
            let n = execute(c, "UPDATE alerts SET acked_at = ?2 WHERE id = ?1 AND acked_at IS NULL", [id, now])?;
            Ok(n > 0)
        })
        .await
    }

    async fn alerts_due(&self, now: Millis, limit: u32) -> Result<Vec<Alert>, StoreError> {
        self.read(move |c| {
            query_all(
                c,
                "SELECT * FROM alerts WHERE delivered_at IS NULL AND acked_at IS NULL AND next_attempt_at <= ?1 \
                 ORDER BY next_attempt_at, id LIMIT ?2",
                [now, codec::page(limit)],
                |r| codec::alert(r),
            )
        })
        .await
    }

    async fn record_alert_delivery(
        &self,
        id: i64,
        delivery: &AlertDelivery,
        now: Millis,
    ) -> Result<Alert, StoreError> {
        let delivery = delivery.clone();
        self.write(move |c| {
            let row = match &delivery {
                AlertDelivery::Delivered => query_one(
                    c,
                    "UPDATE alerts SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1 RETURNING *",
                    [id, now],
                    |r| codec::alert(r),
                ),
                AlertDelivery::Failed { error, retry_at } => query_one(
                    c,
                    "UPDATE alerts SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1 RETURNING *",
                    params![id, error, retry_at],
                    |r| codec::alert(r),
                ),
            };
            row?.ok_or(StoreError::AlertNotFound(id))
        })
        .await
    }

    // -- timer leases --------------------------------------------------------------------

    async fn acquire_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<TimerLease>, StoreError> {
        codec::check_owner(owner)?;
        let (id, name, owner) = (connection_id.to_owned(), name.to_owned(), owner.to_owned());
        self.write(move |c| {
            query_one(
                c,
                "INSERT INTO timer_leases (connection_id, name, owner, held_until, generation) VALUES (?1, ?2, ?3, ?4, 1) \
                 ON CONFLICT (connection_id, name) DO UPDATE SET owner = excluded.owner, held_until = excluded.held_until, \
                 generation = CASE WHEN timer_leases.owner = excluded.owner AND timer_leases.held_until > ?5 \
                              THEN timer_leases.generation ELSE timer_leases.generation + 1 END \
                 WHERE timer_leases.held_until <= ?5 OR timer_leases.owner = excluded.owner RETURNING *",
                params![id, name, owner, now.saturating_add(ms(ttl)), now],
                |r| codec::timer_lease(r),
            )
        })
        .await
    }

    async fn renew_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<TimerLease>, StoreError> {
        codec::check_owner(owner)?;
        let (id, name, owner) = (connection_id.to_owned(), name.to_owned(), owner.to_owned());
        self.write(move |c| {
            query_one(
                c,
                "UPDATE timer_leases SET held_until = ?4 WHERE connection_id = ?1 AND name = ?2 AND owner = ?3 RETURNING *",
                params![id, name, owner, now.saturating_add(ms(ttl))],
                |r| codec::timer_lease(r),
            )
        })
        .await
    }

    async fn release_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let (id, name, owner) = (connection_id.to_owned(), name.to_owned(), owner.to_owned());
        self.write(move |c| {
            // Keep the row (blank owner, expired) so the generation keeps counting up.
            let n = execute(
                c,
                "UPDATE timer_leases SET owner = '', held_until = 0 WHERE connection_id = ?1 AND name = ?2 AND owner = ?3",
                [&id, &name, &owner],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_lease(&self, connection_id: &str, name: &str) -> Result<Option<TimerLease>, StoreError> {
        let (id, name) = (connection_id.to_owned(), name.to_owned());
        self.read(move |c| {
            query_one(c, "SELECT * FROM timer_leases WHERE connection_id = ?1 AND name = ?2", [&id, &name], |r| codec::timer_lease(r))
        })
        .await
    }

    // -- marks -----------------------------------------------------------------------------

    async fn get_mark(&self, connection_id: &str, name: &str) -> Result<Option<i64>, StoreError> {
        let (id, name) = (connection_id.to_owned(), name.to_owned());
        self.read(move |c| {
            query_one(
                c,
                "SELECT value FROM connection_marks WHERE connection_id = ?1 AND name = ?2",
                [&id, &name],
                |r| r.i64("value"),
            )
        })
        .await
    }

    async fn put_mark(&self, connection_id: &str, name: &str, value: i64, now: Millis) -> Result<i64, StoreError> {
        let (id, name) = (connection_id.to_owned(), name.to_owned());
        self.write(move |c| {
            query_one(
                c,
                "INSERT INTO connection_marks (connection_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (connection_id, name) DO UPDATE SET \
                 value = CASE WHEN excluded.value > connection_marks.value THEN excluded.value ELSE connection_marks.value END, \
                 updated_at = excluded.updated_at RETURNING value",
                params![id, name, value, now],
                |r| r.i64("value"),
            )?
            .ok_or_else(|| StoreError::Corrupt("INSERT .. RETURNING returned no row".into()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! Group commit: concurrency, isolation of a failing job within its batch, closing.

    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicU32;

    use serde_json::json;

    use super::*;

    const T0: Millis = 1_700_000_000_000;
    const WINDOW: Duration = Duration::from_secs(600);

    /// A fresh store in a directory of its own (removed by [`Scratch`]'s drop).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            Self(std::env::temp_dir().join(format!(
                "deskgate-sqlite-unit-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )))
        }

        fn db(&self) -> PathBuf {
            self.0.join("deskgate.db")
        }

        async fn open(&self) -> Arc<SqliteStore> {
            Arc::new(SqliteStore::open(&self.db(), SecretKey::from_bytes([7; 32])).await.expect("open"))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn action(conn: &str, n: usize) -> NewAction {
        NewAction {
            connection_id: conn.into(),
            ticket_id: format!("T{n}"),
            action: json!({"op": "reply", "text": format!("reply {n}")}),
            idempotency_key: format!("{conn}/{n}"),
            app_key: None,
            not_before: T0,
        }
    }

    fn event(conn: &str, key: &str) -> NewEvent {
        NewEvent {
            connection_id: conn.into(),
            platform: "zendesk".into(),
            ticket_id: "T1".into(),
            kind: "ticket.updated".into(),
            ticket: json!({"id": "T1"}),
            dedupe_key: key.into(),
        }
    }

    fn all_actions() -> ActionQuery {
        ActionQuery { limit: 10_000, ..ActionQuery::default() }
    }

    /// Wait until `n` jobs are queued behind the paused writer.
    async fn until_queued(store: &SqliteStore, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.writer_stats().queued < n {
            assert!(tokio::time::Instant::now() < deadline, "only {:?} queued", store.writer_stats());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(store.writer_stats().queued, n);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_enqueues_all_land() {
        let dir = Scratch::new();
        let store = dir.open().await;
        store.create_connection(&NewConnection::new("c", "zendesk", "C"), T0).await.unwrap();
        let before = store.writer_stats();
        let tasks: Vec<_> = (0..500)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.enqueue(&action("c", n), T0, WINDOW).await })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for t in tasks {
            let got = t.await.unwrap().unwrap();
            assert!(got.is_created());
            ids.insert(got.entry().id);
        }
        assert_eq!(ids.len(), 500, "every enqueue got an entry of its own");
        // Read after the answers: the readers see every acknowledged write.
        assert_eq!(store.list_actions(&all_actions()).await.unwrap().len(), 500);
        let after = store.writer_stats();
        assert_eq!(after.jobs - before.jobs, 500);
        assert!(after.batches > before.batches && after.batches - before.batches <= 500, "{after:?}");
        eprintln!("500 enqueues in {} write transactions", after.batches - before.batches);
        store.close().await;

        // Durable: all of them are in the file.
        let again = dir.open().await;
        let listed: BTreeSet<i64> =
            again.list_actions(&all_actions()).await.unwrap().iter().map(|e| e.id).collect();
        assert_eq!(listed, ids);
        again.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_job_does_not_undo_the_rest_of_its_batch() {
        let dir = Scratch::new();
        let store = dir.open().await;
        store.create_connection(&NewConnection::new("c", "zendesk", "C"), T0).await.unwrap();
        let before = store.writer_stats();

        // Everything below is queued behind the paused writer, then runs as one batch.
        let resume = store.pause_writer();
        let s = store.clone();
        let new_conn = tokio::spawn(async move { s.create_connection(&NewConnection::new("d", "zendesk", "D"), T0).await });
        until_queued(&store, 1).await;
        let s = store.clone();
        let duplicate = tokio::spawn(async move { s.create_connection(&NewConnection::new("c", "zendesk", "again"), T0).await });
        until_queued(&store, 2).await;
        let s = store.clone();
        let unknown = tokio::spawn(async move { s.enqueue(&action("nope", 1), T0, WINDOW).await });
        until_queued(&store, 3).await;
        let s = store.clone();
        let enqueued = tokio::spawn(async move { s.enqueue(&action("c", 1), T0, WINDOW).await });
        until_queued(&store, 4).await;
        // Half of this job's inserts succeed before it fails: its savepoint undoes them.
        let s = store.clone();
        let half = tokio::spawn(async move {
            s.insert_events(&[event("c", "undone"), event("nope", "bad")], T0).await
        });
        until_queued(&store, 5).await;
        // A job that writes, then panics: answered with an error, its write undone.
        let s = store.clone();
        let panics = tokio::spawn(async move {
            s.write(|c| -> Result<(), StoreError> {
                execute(
                    c,
                    "INSERT INTO alerts (connection_id, kind, text, detail, created_at, attempts, next_attempt_at) \
                     VALUES (NULL, 'panic', 'x', '{}', 0, 0, 0)",
                    [],
                )?;
                panic!("a bug in a store job")
            })
            .await
        });
        until_queued(&store, 6).await;
        let s = store.clone();
        let events = tokio::spawn(async move { s.insert_events(&[event("c", "kept")], T0).await });
        until_queued(&store, 7).await;
        let s = store.clone();
        let alert = tokio::spawn(async move {
            s.raise_alert(&NewAlert { connection_id: Some("c".into()), kind: "k".into(), text: "t".into(), detail: json!({}) }, T0)
                .await
        });
        until_queued(&store, 8).await;
        drop(resume);

        assert_eq!(new_conn.await.unwrap().unwrap().id, "d");
        assert!(matches!(duplicate.await.unwrap(), Err(StoreError::ConnectionExists(id)) if id == "c"));
        assert!(matches!(unknown.await.unwrap(), Err(StoreError::ConnectionNotFound(id)) if id == "nope"));
        let entry = enqueued.await.unwrap().unwrap();
        assert!(entry.is_created());
        assert!(matches!(half.await.unwrap(), Err(StoreError::ConnectionNotFound(id)) if id == "nope"));
        let panicked = panics.await.unwrap();
        assert!(matches!(&panicked, Err(StoreError::Panicked(m)) if m.contains("a bug in a store job")), "{panicked:?}");
        assert_eq!(events.await.unwrap().unwrap(), InsertReport { new: 1, duplicates: 0 });
        let alert = alert.await.unwrap().unwrap();

        let after = store.writer_stats();
        assert_eq!((after.batches - before.batches, after.jobs - before.jobs), (1, 8), "one batch of eight jobs");

        // What succeeded is stored, what failed is not, also after a reopen.
        store.close().await;
        let store = dir.open().await;
        assert_eq!(store.get_connection("c").await.unwrap().unwrap().display_name, "C");
        assert!(store.get_connection("d").await.unwrap().is_some());
        let actions = store.list_actions(&all_actions()).await.unwrap();
        assert_eq!(actions.iter().map(|e| e.id).collect::<Vec<_>>(), vec![entry.entry().id]);
        let pulled = store.pull_events(&Pull { after: 0, limit: 100, connection_id: None, now: T0 }).await.unwrap();
        assert_eq!(pulled.iter().map(|e| e.dedupe_key.as_str()).collect::<Vec<_>>(), vec!["kept"]);
        let alerts = store.list_alerts(None, true, 100).await.unwrap();
        assert_eq!(alerts.iter().map(|a| a.id).collect::<Vec<_>>(), vec![alert.id]);
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_answers_queued_callers_with_an_error() {
        let dir = Scratch::new();
        let store = dir.open().await;
        store.create_connection(&NewConnection::new("c", "zendesk", "C"), T0).await.unwrap();

        let resume = store.pause_writer();
        let queued: Vec<_> = (0..5)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.enqueue(&action("c", n), T0, WINDOW).await })
            })
            .collect();
        until_queued(&store, 5).await;
        let closing = store.close();
        tokio::pin!(closing);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut closing).await.is_err(),
            "close waits for the writer thread"
        );
        drop(resume);
        tokio::time::timeout(Duration::from_secs(10), closing).await.expect("close returns");
        for t in queued {
            let got = tokio::time::timeout(Duration::from_secs(10), t).await.expect("no hang").unwrap();
            assert!(matches!(got, Err(StoreError::Closed)), "{got:?}");
        }
        // Later calls fail at once, writes and reads alike.
        assert!(matches!(store.enqueue(&action("c", 9), T0, WINDOW).await, Err(StoreError::Closed)));
        assert!(matches!(store.get_connection("c").await, Err(StoreError::Closed)));
        assert!(StoreError::Closed.is_transient());
        store.close().await;

        // The file is released and none of the refused writes is in it.
        let again = dir.open().await;
        assert!(again.list_actions(&all_actions()).await.unwrap().is_empty());
        assert!(again.get_connection("c").await.unwrap().is_some());
        again.close().await;
    }

    #[test]
    fn busy_and_locked_are_transient() {
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        let locked = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED), None);
        let constraint =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE), None);
        assert!(StoreError::from(busy).is_transient());
        assert!(StoreError::from(locked).is_transient());
        assert!(!StoreError::from(constraint).is_transient());
        // Replicated for every job of a failed batch, with the same classification.
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(replicate(&busy).is_transient());
    }
}
