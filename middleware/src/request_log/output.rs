// ANCHOR: all
//! Writing the access log: a `tracing-subscriber` layer that formats each
//! request event, and buffers that let request threads log without waiting
//! for each other.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use turnstile_core::{PerProcess, per_process, reopen};

use super::{AccessFormat, TARGET, with_current_record};

/// How long a line may wait in a buffer before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A buffer is written out once it holds this much: a `write` costs
/// mostly per call, so fewer, larger ones cost less.
const FULL: usize = 64 * 1024;

/// Room for the line that takes a buffer past [`FULL`].
const ROOM_FOR_A_LINE: usize = 1024;

/// Buffers per process; request threads spread over them.
const SHARDS: usize = 16;

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output (`-` on the command line).
    Stdout,
    /// A file, appended to, and reopened under its name when asked
    /// ([`turnstile_core::reopen`]).
    File(PathBuf),
}

impl Output {
    /// `-` is standard output; anything else a file.
    pub fn parse(text: &str) -> Self {
        match text {
            "-" => Self::Stdout,
            path => Self::File(PathBuf::from(path)),
        }
    }

    /// Opens the destination, to check it can be written before anything
    /// starts.
    ///
    /// # Errors
    ///
    /// The file cannot be created or opened for appending.
    pub fn check(&self) -> io::Result<()> {
        self.open().map(drop)
    }

    fn open(&self) -> io::Result<Sink> {
        Ok(match self {
            Self::Stdout => Sink::Stdout,
            Self::File(path) => {
                Sink::File(OpenOptions::new().create(true).append(true).open(path)?)
            }
        })
    }
}

enum Sink {
    Stdout,
    File(File),
}

/// The access-log layer for a `tracing` subscriber: writes every request
/// event as one line in its [`AccessFormat`].
///
/// Compose it behind [`RequestLog::events`](super::RequestLog::events), so
/// it sees those events only. Clones share the buffers.
#[derive(Clone, Debug)]
pub struct AccessLog {
    /// Shared by clones; tells this log's buffers apart in a thread's cache.
    id: u64,
    format: Arc<AccessFormat>,
    // Built in each process that logs: its thread and buffers do not
    // survive a fork.
    file: PerProcess<LogFile>,
}

impl AccessLog {
    /// Writes `format` lines to `output`.
    pub fn new(format: AccessFormat, output: Output) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            format: Arc::new(format),
            file: PerProcess::new(move || LogFile::open(output.clone())),
        }
    }

    /// Writes this process's buffered lines now. Workers do it as they
    /// exit (`per_process::teardown`); a program that serves without
    /// Turnstile's arbiter calls it before it ends.
    pub fn flush(&self) {
        self.file.get().shared.write_out_all();
    }
}

thread_local! {
    /// This thread's scratch line, reused.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The buffers this thread last wrote to: which log, in which
    /// `per_process::generation`, saving `PerProcess::get` (and its
    /// `getpid`) on every line.
    static BUFFERS: RefCell<Option<(u64, u64, Arc<Shared>)>> = const { RefCell::new(None) };
}

impl AccessLog {
    fn with_buffers(&self, f: impl FnOnce(&Shared)) {
        let log = self.id;
        let generation = per_process::generation();
        BUFFERS.with(|cached| {
            let mut cached = cached.borrow_mut();
            match &*cached {
                Some((known, seen_in, shared)) if *known == log && *seen_in == generation => {
                    f(shared);
                }
                _ => {
                    let shared = self.file.get().shared.clone();
                    f(&shared);
                    *cached = Some((log, generation, shared));
                }
            }
        });
    }
}

// ANCHOR: on_event
impl<S: Subscriber> tracing_subscriber::Layer<S> for AccessLog {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        with_current_record(|record| {
            LINE.with(|line| {
                let mut line = line.borrow_mut();
                line.clear();
                self.format.write(record, &mut line);
                self.with_buffers(|buffers| buffers.append(&line));
            });
        });
    }
}
// ANCHOR_END: on_event

/// One process's access log: the buffers, the file, and the thread that
/// writes out what waits longer than [`FLUSH_INTERVAL`].
struct LogFile {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").finish_non_exhaustive()
    }
}

struct Shared {
    buffers: Vec<Mutex<Vec<u8>>>,
    output: Output,
    /// The open file and the reopen generation it was opened in. Locked
    /// only to write a whole buffer out.
    sink: Mutex<(Option<Sink>, u64)>,
    stopping: Mutex<bool>,
    wake: Condvar,
}

impl LogFile {
    fn open(output: Output) -> Self {
        let generation = reopen::generation();
        let sink = output
            .open()
            .map_err(|error| eprintln!("turnstile: cannot open the access log {output:?}: {error}"))
            .ok();
        let shared = Arc::new(Shared {
            buffers: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            output,
            sink: Mutex::new((sink, generation)),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        });
        let flusher = std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let shared = shared.clone();
                move || shared.flush_every(FLUSH_INTERVAL)
            })
            .map_err(|error| eprintln!("turnstile: no access-log flusher thread: {error}"))
            .ok();
        Self { shared, flusher }
    }
}

impl Drop for LogFile {
    /// A stopping worker writes out every line it buffered.
    fn drop(&mut self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        self.shared.write_out_all();
    }
}

// ANCHOR: append
impl Shared {
    /// Appends a line to this thread's buffer; writes the buffer out when
    /// it is full. Threads share a buffer only when there are more threads
    /// than buffers, so the lock is almost never contended.
    fn append(&self, line: &[u8]) {
        let full = {
            let mut buffer = lock(&self.buffers[shard()]);
            buffer.extend_from_slice(line);
            // The next buffer starts at its working size rather than
            // growing, and copying itself, on the way there.
            (buffer.len() >= FULL).then(|| {
                std::mem::replace(&mut *buffer, Vec::with_capacity(FULL + ROOM_FOR_A_LINE))
            })
        };
        if let Some(full) = full {
            self.write_out(&full);
        }
    }
    // ANCHOR_END: append

    fn write_out_all(&self) {
        for buffer in &self.buffers {
            let pending = std::mem::take(&mut *lock(buffer));
            if !pending.is_empty() {
                self.write_out(&pending);
            }
        }
        // A reopen is due even when nothing was logged.
        self.write_out(&[]);
    }

    /// One `write` per buffer: whole lines, appended, so lines from other
    /// threads and processes never interleave within one.
    fn write_out(&self, bytes: &[u8]) {
        let mut sink = lock(&self.sink);
        let (open, opened_in) = &mut *sink;
        let generation = reopen::generation();
        if *opened_in != generation {
            *opened_in = generation;
            if let Output::File(_) = self.output {
                *open = self.output.open().ok();
            }
        }
        if bytes.is_empty() {
            return;
        }
        // Nowhere is left to report a failing log (a closed stdout, a full
        // disk); requests go on.
        let _ = match open {
            Some(Sink::File(file)) => file.write_all(bytes),
            Some(Sink::Stdout) => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(bytes).and_then(|()| stdout.flush())
            }
            None => Ok(()),
        };
    }

    fn flush_every(&self, interval: Duration) {
        let mut stopping = lock(&self.stopping);
        while !*stopping {
            stopping = self
                .wake
                .wait_timeout(stopping, interval)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            drop(stopping);
            self.write_out_all();
            stopping = lock(&self.stopping);
        }
    }
}

/// This thread's buffer number.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| match shard.get() {
        Some(mine) => mine,
        None => {
            let mine = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(Some(mine));
            mine
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
// ANCHOR_END: all
