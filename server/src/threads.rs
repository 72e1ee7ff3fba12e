//! A fixed pool of request threads sharing one listener and one poller, and
//! the in-process server API built on it.
//!
//! A thread waits in the [`poller`](crate::poller) for a connection with
//! input (or the listener with connections to accept), serves the requests
//! that have arrived, and parks the connection again: an idle keep-alive
//! connection or a client sending its head slowly holds no thread.
//! A thread is held only while the application runs, or while it reads a
//! request body or writes a response (each bounded by the I/O timeout).
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::errno::Errno;
use turnstile_core::{Application, Environ, Worker};

use crate::http1::conn::{ConnConfig, Connection, Next, Scratch};
use crate::poller::{Lease, Poller, Ready};

/// Request threads when [`Server::threads`] is not called (`--threads`).
pub const DEFAULT_THREADS: usize = 8;

/// A server bound to a listening socket, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    threads: usize,
    conn: ConnConfig,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::from_listener(TcpListener::bind(addr)?))
    }

    /// Serves on a listener bound elsewhere (inherited, or from systemd).
    pub fn from_listener(listener: TcpListener) -> Self {
        Self {
            listener,
            threads: DEFAULT_THREADS,
            conn: ConnConfig::default(),
        }
    }

    /// Sets the number of request threads (`--threads`, at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Sets the per-connection settings: limits and timeouts.
    pub fn connection_config(mut self, conn: ConnConfig) -> Self {
        self.conn = conn;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts the request threads and returns at once.
    ///
    /// # Panics
    ///
    /// If the operating system refuses an epoll set, an eventfd or a
    /// thread: nothing can be served then.
    pub fn spawn(self, app: impl Application) -> ServerHandle {
        let addr = self
            .listener
            .local_addr()
            .expect("a bound listener has an address");
        let poller = Poller::new(&self.listener).expect("the poller starts");
        let shared = Arc::new(Shared {
            worker: Worker {
                id: 0,
                pid: std::process::id(),
            },
            local_addr: addr,
            listener: self.listener,
            poller,
            app,
            config: self.conn,
            stopping: AtomicBool::new(false),
        });
        let threads = (0..self.threads)
            .map(|n| {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("turnstile-request-{n}"))
                    .spawn(move || shared.request_thread())
                    .expect("the request thread starts")
            })
            .collect();
        let stop: Arc<dyn Stop> = shared;
        ServerHandle {
            addr,
            stop,
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

/// What the request threads share.
struct Shared<A> {
    worker: Worker,
    local_addr: SocketAddr,
    listener: TcpListener,
    poller: Poller,
    app: A,
    config: ConnConfig,
    stopping: AtomicBool,
}

impl<A: Application> Shared<A> {
    // ANCHOR: request_thread
    fn request_thread(&self) {
        let mut scratch = Scratch::default();
        while !self.stopping.load(Ordering::Acquire) {
            match self.poller.wait() {
                Ready::Listener => self.accept(),
                Ready::Connection(lease) => self.serve(lease, &mut scratch),
                Ready::Wake => break,
                Ready::Nothing => {}
            }
        }
        // Pass the wake-up on to the next waiting thread.
        self.poller.wake();
    }

    fn serve(&self, mut lease: Lease, scratch: &mut Scratch) {
        loop {
            let Lease {
                connection,
                peer_closed,
                ..
            } = &mut lease;
            // Application panics are caught around the call; this catches
            // the rest (a streamed body's iterator, a completion hook), so
            // the thread lives on and the connection's entry is freed.
            let next = panic::catch_unwind(AssertUnwindSafe(|| {
                connection.serve_ready(
                    &self.app,
                    &self.config,
                    scratch,
                    &self.stopping,
                    *peer_closed,
                )
            }))
            .unwrap_or(Next::Close);
            match next {
                Next::Read { deadline } if !self.stopping.load(Ordering::Acquire) => {
                    match self.poller.give_back(lease, deadline) {
                        // Input came while it was being served.
                        Some(again) => lease = again,
                        None => return,
                    }
                }
                Next::Read { .. } | Next::Close => return self.poller.close(lease),
            }
        }
    }
    // ANCHOR_END: request_thread

    fn accept(&self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let mut environ = Environ::new();
                    environ.remote_addr = Some(peer);
                    environ.client_addr = Some(peer);
                    environ.server_addr = Some(self.local_addr);
                    environ.worker = self.worker;
                    if let Ok(connection) = Connection::new(stream, environ, &self.config) {
                        let deadline = connection.deadline(&self.config);
                        let _ = self.poller.admit(Box::new(connection), deadline);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if out_of_resources(&e) => {
                    eprintln!(
                        "turnstile: cannot accept a connection: {e}; retrying in {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    thread::sleep(ACCEPT_BACKOFF);
                    break;
                }
                // A connection reset before it was accepted, or a signal:
                // the listener is still good.
                Err(_) => {}
            }
        }
        if !self.stopping.load(Ordering::Acquire) {
            self.poller.rearm_listener(&self.listener);
        }
    }
}

fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        Errno::from_raw(error.raw_os_error().unwrap_or(0)),
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

/// The part of [`Shared`] the handle needs, without the application type.
trait Stop: Send + Sync {
    fn stop(&self);
}

impl<A: Application> Stop for Shared<A> {
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.poller.stop_listening(&self.listener);
        self.poller.wake();
    }
}

/// A running server: its address, and the way to stop it.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<dyn Stop>,
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
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets every thread finish the request it is serving
    /// (its response says `Connection: close`), closes the idle connections,
    /// and returns when all threads have stopped.
    pub fn shutdown(self) {
        self.stop.stop();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
