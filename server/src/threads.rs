//! A fixed pool of request threads sharing the listeners and one poller, and
//! the in-process server API built on it: a worker process runs one.
//!
//! What each thread does next is the scheduler's decision (`sched.rs`): one
//! at a time waits in the [`poller`](crate::poller), then works through
//! what it found (connections to accept, sockets ready, connections due)
//! as an event loop would, while a parked thread watches for the
//! application blocking and joins in when it does. A thread never waits for
//! a client: it works only while a connection has bytes to read or room to
//! write, or while the application computes. Idle, slow and non-reading
//! clients wait in the poller.
//!
//! ```no_run
//! use turnstile_core::{Request, Response};
//! use turnstile_server::Server;
//!
//! let server = Server::bind("127.0.0.1:0").unwrap().threads(4);
//! let handle = server.spawn(|_request: Request| Response::new("Hello, world!\n".into()));
//! println!("listening on http://{}", handle.addr());
//! handle.shutdown();
//! ```

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::eventfd::EventFd;
use turnstile_core::{Application, Environ, Worker};

use crate::budget::Budget;
use crate::forwarded::TrustedProxies;
use crate::http1::conn::{After, ConnConfig, Connection, Cx, Scratch};
use crate::in_flight::{InFlight, Records, RequestLimit};
use crate::listen::{Listener, Stream};
use crate::poller::{Events, Lease, Poller, Ready};
use crate::sched::{HANDOFF, Next, Sched};
use crate::serve::Serve;
use crate::spool::Spool;

/// Request threads when [`Server::threads`] is not called (`--threads`).
pub const DEFAULT_THREADS: usize = 8;

/// A server bound to its listening sockets, not yet serving.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<Listener>,
    threads: usize,
    conn: ConnConfig,
    trusted_proxies: TrustedProxies,
    worker: Worker,
    limit: Option<Arc<RequestLimit>>,
}

impl Server {
    /// Binds the TCP address `addr` (port 0 picks a free port).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::from_listener(TcpListener::bind(addr)?))
    }

    /// Serves on a listener bound elsewhere (inherited, or from systemd).
    pub fn from_listener(listener: impl Into<Listener>) -> Self {
        Self::from_listeners(vec![listener.into()])
    }

    /// Serves on every one of `listeners` (several `--bind`s).
    pub fn from_listeners(listeners: Vec<Listener>) -> Self {
        Self {
            listeners,
            threads: DEFAULT_THREADS,
            conn: ConnConfig::default(),
            trusted_proxies: TrustedProxies::default(),
            worker: Worker {
                id: 0,
                pid: std::process::id(),
            },
            limit: None,
        }
    }

    /// Sets the number of request threads (`--threads`, at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Sets the connections' settings: limits, timeouts, rates, buffers.
    pub fn connection_config(mut self, conn: ConnConfig) -> Self {
        self.conn = conn;
        self
    }

    /// Sets the peers whose proxy headers name the client and the scheme
    /// (`--forwarded-allow-ips`).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Says which worker this is, for each request's [`Environ`].
    pub(crate) fn worker(mut self, worker: Worker) -> Self {
        self.worker = worker;
        self
    }

    /// Writes to `reached` once `max` requests have been served.
    pub(crate) fn request_limit(mut self, max: u64, reached: Arc<EventFd>) -> Self {
        self.limit = Some(Arc::new(RequestLimit::new(max, reached)));
        self
    }

    /// The first TCP address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listeners
            .iter()
            .find_map(Listener::local_addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no TCP listener"))
    }

    /// Starts the request threads and returns at once.
    ///
    /// # Panics
    ///
    /// If the operating system refuses an epoll set, an eventfd or a
    /// thread: nothing can be served then.
    pub fn spawn(self, app: impl Application) -> ServerHandle {
        let addr = self.local_addr().ok();
        let poller = Poller::new(&self.listeners).expect("the poller starts");
        crate::request_ids::ensure_seeded();
        let mut records = Records::default();
        let thread_records: Vec<_> = (0..self.threads)
            .map(|_| records.add(self.limit.clone()))
            .collect();
        let spool = Spool {
            dir: self.conn.spool_dir.clone(),
            in_memory: self.conn.body_buffer_size,
            memory: Arc::new(Budget::new(self.conn.client_memory)),
            disk: Arc::new(Budget::new(self.conn.spool_max_size)),
        };
        let stopping = match &self.limit {
            Some(limit) => limit.stopping.clone(),
            None => Arc::default(),
        };
        let shared = Arc::new(Shared {
            worker: self.worker,
            local_addrs: self.listeners.iter().map(Listener::local_addr).collect(),
            listeners: RwLock::new(self.listeners),
            poller,
            service: Serve {
                app,
                trusted_proxies: self.trusted_proxies,
            },
            config: self.conn,
            spool,
            sched: Mutex::new(Sched::default()),
            parked: Condvar::new(),
            watcher: Condvar::new(),
            stopping,
            limit: self.limit,
            records,
        });
        let threads = thread_records
            .into_iter()
            .enumerate()
            .map(|(n, record)| {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("turnstile-request-{n}"))
                    .spawn(move || shared.request_thread(Scratch::new(record)))
                    .expect("the request thread starts")
            })
            .collect();
        let control: Arc<dyn Control> = shared;
        ServerHandle {
            addr,
            control,
            threads,
        }
    }

    /// Serves until the process ends.
    pub fn run(self, app: impl Application) {
        for thread in self.spawn(app).threads {
            let _ = thread.join();
        }
    }
}

/// Connections accepted per wake-up before the listener is re-armed, so one
/// thread does not accept a whole backlog while others wait.
const ACCEPT_BATCH: usize = 64;

/// What a thread sleeps for after `accept` fails for lack of descriptors or
/// memory, rather than retrying at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections a stopping server accepts from one listener's queue at
/// most, so that a flood cannot keep it accepting.
const QUEUED_AT_MOST: usize = 65_536;

/// How often a draining server looks for connections still open.
const DRAIN_CHECK: Duration = Duration::from_millis(10);

/// What the request threads share.
struct Shared<A> {
    worker: Worker,
    /// Emptied (so closed, in this process) by a stop, once their queues
    /// are accepted; a thread accepts under the read lock.
    listeners: RwLock<Vec<Listener>>,
    /// Each listener's address, looked up once rather than per connection.
    local_addrs: Vec<Option<SocketAddr>>,
    poller: Poller,
    service: Serve<A>,
    config: ConnConfig,
    spool: Spool,
    sched: Mutex<Sched<Ready>>,
    /// Where parked threads wait to be called.
    parked: Condvar,
    /// Where the watcher waits.
    watcher: Condvar,
    /// Set by a shutdown, or by reaching `--max-requests` (shared with the
    /// limit, so the threads stop accepting without waiting for the
    /// worker's main thread): accept nothing more, close each connection
    /// after its next response.
    stopping: Arc<AtomicBool>,
    limit: Option<Arc<RequestLimit>>,
    records: Records,
}

impl<A: Application> Shared<A> {
    fn sched(&self) -> MutexGuard<'_, Sched<Ready>> {
        self.sched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ANCHOR: request_thread
    /// A request thread: the scheduler says what to do next, and this does
    /// it, outside the lock.
    fn request_thread(&self, mut scratch: Scratch) {
        let mut found = Vec::new();
        let mut events = Events::default();
        let mut sched = self.sched();
        let mut next = sched.next();
        loop {
            if sched.call_watcher() {
                self.parked.notify_one();
            }
            next = match next {
                Next::Run(job) => {
                    drop(sched);
                    self.run(job, &mut scratch);
                    sched = self.sched();
                    sched.done();
                    sched.next()
                }
                Next::Poll => {
                    drop(sched);
                    let stopping = self.stopping.load(Ordering::Acquire);
                    self.poller
                        .wait(&mut found, &mut events, &self.config, stopping);
                    sched = self.sched();
                    sched.polled(found.drain(..));
                    sched.next()
                }
                Next::Watch => {
                    sched = self
                        .watcher
                        .wait_timeout(sched, HANDOFF)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    sched.watched()
                }
                Next::Park => {
                    sched = self
                        .parked
                        .wait(sched)
                        .unwrap_or_else(PoisonError::into_inner);
                    sched.woken()
                }
                Next::Exit => return,
            };
        }
    }

    fn run(&self, job: Ready, scratch: &mut Scratch) {
        match job {
            Ready::Listener(index) => self.accept(index),
            Ready::Connection(lease) => self.serve(lease, scratch, false),
            Ready::Due(lease) => self.serve(lease, scratch, true),
        }
    }

    /// Drives a connection until it waits for its socket again, or closes.
    fn serve(&self, mut lease: Lease, scratch: &mut Scratch, due: bool) {
        let mut due = due;
        loop {
            let mut cx = Cx {
                service: &self.service,
                config: &self.config,
                spool: &self.spool,
                scratch: &mut *scratch,
                stopping: &self.stopping,
            };
            let Lease {
                connection,
                peer_closed,
                ..
            } = &mut lease;
            // Application panics are caught where the application runs;
            // this catches a bug of the server's own, so the thread lives on
            // and the connection's entry is freed.
            let after = panic::catch_unwind(AssertUnwindSafe(|| {
                if due {
                    connection.on_tick(&mut cx)
                } else {
                    connection.on_ready(&mut cx, *peer_closed)
                }
            }))
            .unwrap_or(After::Close);
            due = false;
            match after {
                After::Wait => match self.poller.give_back(lease) {
                    // An event came while it was being served.
                    Some(again) => lease = again,
                    None => return,
                },
                After::Again => {
                    // To the back of the queue: others' turn first.
                    self.sched().push(Ready::Connection(lease));
                    return;
                }
                After::Close => return self.close(lease),
            }
        }
    }
    // ANCHOR_END: request_thread

    /// Closes a connection. A response it held is dropped with it, and its
    /// completion hooks, application code, run then: a panic in them must
    /// not take the thread.
    fn close(&self, lease: Lease) {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| self.poller.close(lease)));
    }

    fn accept(&self, index: usize) {
        // A stop holds the write lock while it takes the queues and closes
        // the listeners: once it has, there is nothing here to accept from.
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(listener) = listeners.get(index) else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            if !self.accepts() {
                break;
            }
            match listener.accept() {
                Ok((stream, peer)) => self.admit(index, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if out_of_resources(&e) => {
                    crate::error_log::warning(format_args!(
                        "cannot accept a connection: {e}; retrying in {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    ));
                    thread::sleep(ACCEPT_BACKOFF);
                    break;
                }
                // A connection reset before it was accepted, or a signal:
                // the listener is still good.
                Err(_) => {}
            }
        }
        if self.accepts() {
            self.poller.rearm_listener(index, listener);
        }
    }

    fn admit(&self, index: usize, stream: Stream, peer: Option<SocketAddr>) {
        let mut environ = Environ::new();
        environ.remote_addr = peer;
        environ.client_addr = peer;
        environ.server_addr = self.local_addrs[index];
        environ.worker = self.worker;
        let limits = &self.config.limits;
        if let Ok(connection) = Connection::new(stream, environ, &self.spool.memory, limits) {
            let _ = self.poller.admit(Box::new(connection));
        }
    }

    // ANCHOR: stop_listening
    /// Stops accepting: takes what each listener has queued (until
    /// `EAGAIN`), then closes the listeners. Once every process holding a
    /// listening socket has, its port refuses connections; none that the
    /// kernel queued is reset, except one completed between the last
    /// `accept` and the close.
    fn stop_listening(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut listeners = self
            .listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (index, listener) in listeners.iter().enumerate() {
            self.poller.stop_listening(listener);
            for _ in 0..QUEUED_AT_MOST {
                match listener.accept() {
                    Ok((stream, peer)) => self.admit(index, stream, peer),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                    Err(_) => break,
                }
            }
        }
        listeners.clear();
    }
    // ANCHOR_END: stop_listening

    /// Whether new connections are still taken: not stopping, and under
    /// the request limit.
    fn accepts(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
            && !self.limit.as_ref().is_some_and(|limit| limit.is_reached())
    }
}

fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        Errno::from_raw(error.raw_os_error().unwrap_or(0)),
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

/// The part of [`Shared`] the handle needs, without the application type.
trait Control: Send + Sync {
    fn stop(&self);
    /// Whether any connection is left.
    fn drain(&self) -> bool;
    fn exit(&self);
    fn records(&self) -> &Records;
    fn connection_counts(&self) -> (usize, usize);
    fn held(&self) -> (u64, u64);
}

impl<A: Application> Control for Shared<A> {
    fn stop(&self) {
        self.stop_listening();
    }

    fn drain(&self) -> bool {
        // Idle connections close as their keep-alive time ends (the
        // poller's sweep), not here: a client may be sending its next
        // request on one right now, and it is answered, with `close`.
        self.poller.open_connections() > 0
    }

    fn exit(&self) {
        self.sched().exit();
        self.parked.notify_all();
        self.watcher.notify_all();
        self.poller.wake();
    }

    fn records(&self) -> &Records {
        &self.records
    }

    fn connection_counts(&self) -> (usize, usize) {
        self.poller.connection_counts()
    }

    fn held(&self) -> (u64, u64) {
        (self.spool.memory.used(), self.spool.disk.used())
    }
}

/// A running server: its address, what it is doing, and the way to stop it.
pub struct ServerHandle {
    addr: Option<SocketAddr>,
    control: Arc<dyn Control>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The first TCP address the server listens on.
    ///
    /// # Panics
    ///
    /// If it listens on Unix sockets only.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the server listens on TCP")
    }

    /// Requests served to the end so far.
    pub fn requests_served(&self) -> u64 {
        self.control.records().served()
    }

    /// Connections open, and how many of them wait for a request.
    pub fn connections(&self) -> (usize, usize) {
        self.control.connection_counts()
    }

    /// What the connections hold: bytes of memory (input buffers, partial
    /// heads, bodies in memory) against the memory ceiling, and bytes of
    /// spooled bodies.
    pub fn held(&self) -> (u64, u64) {
        self.control.held()
    }

    /// The request whose application code has been running longest, if
    /// any is: a request waiting for its client is on no thread.
    pub fn oldest_in_flight(&self) -> Option<InFlight> {
        self.control.records().oldest()
    }

    /// Stops accepting and drains, and returns when all threads have
    /// stopped: the connections the listeners had queued are accepted,
    /// then the listeners are closed; every request being served, or that
    /// arrives on an open connection, is served, its response saying
    /// `Connection: close`; an idle connection is closed when its
    /// keep-alive time ends (one that has sent nothing yet, after
    /// [`STOPPING_FIRST_REQUEST`](crate::http1::conn::STOPPING_FIRST_REQUEST)
    /// or the keep-alive time, whichever is longer).
    pub fn shutdown(self) {
        // Far enough to be never, near enough not to overflow.
        self.shutdown_until(Instant::now() + Duration::from_secs(365 * 24 * 3600));
    }

    /// As [`shutdown`](Self::shutdown), but gives up at `deadline`.
    /// Returns whether everything drained; threads still serving then are
    /// left running, for the process's exit to end.
    pub fn shutdown_until(self, deadline: Instant) -> bool {
        self.control.stop();
        while self.control.drain() && Instant::now() < deadline {
            thread::sleep(DRAIN_CHECK);
        }
        self.control.exit();
        while Instant::now() < deadline {
            if self.threads.iter().all(JoinHandle::is_finished) {
                break;
            }
            thread::sleep(DRAIN_CHECK);
        }
        let finished = self.threads.iter().all(JoinHandle::is_finished);
        for thread in self.threads.into_iter().filter(JoinHandle::is_finished) {
            let _ = thread.join();
        }
        finished
    }
}
