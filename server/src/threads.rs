//! A fixed pool of request threads sharing one listener, and the in-process
//! server API built on it.
//!
//! Each thread accepts a connection and serves it to the end. The operating
//! system hands each new connection to one waiting thread, as Gunicorn's
//! sync workers share their listening socket.
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
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use turnstile_core::{Application, Environ, Worker};

use crate::http1::conn::{ConnConfig, serve_connection};

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
            threads: 8,
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
    pub fn spawn(self, app: impl Application) -> ServerHandle {
        let addr = self
            .listener
            .local_addr()
            .expect("a bound listener has an address");
        let stopping = Arc::new(AtomicBool::new(false));
        let listener = Arc::new(self.listener);
        let app = Arc::new(app);
        let conn = Arc::new(self.conn);
        let threads = (0..self.threads)
            .map(|n| {
                let (listener, app, conn, stopping) = (
                    listener.clone(),
                    app.clone(),
                    conn.clone(),
                    stopping.clone(),
                );
                thread::Builder::new()
                    .name(format!("turnstile-request-{n}"))
                    .spawn(move || accept_loop(&listener, &*app, &conn, &stopping))
                    .expect("the request thread starts")
            })
            .collect();
        ServerHandle {
            addr,
            stopping,
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

fn accept_loop<A: Application>(
    listener: &TcpListener,
    app: &A,
    conn: &ConnConfig,
    stopping: &AtomicBool,
) {
    let local = listener.local_addr().ok();
    let worker = Worker {
        id: 0,
        pid: std::process::id(),
    };
    while !stopping.load(Ordering::Acquire) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            // Too many open files, a connection reset before accept: the
            // listener is still good.
            Err(_) => continue,
        };
        if stopping.load(Ordering::Acquire) {
            break;
        }
        let mut environ = Environ::new();
        environ.remote_addr = Some(peer);
        environ.client_addr = Some(peer);
        environ.server_addr = local;
        environ.worker = worker;
        let _ = serve_connection(app, stream, &environ, conn);
    }
}

/// A running server: its address, and the way to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets every thread finish the connection it is
    /// serving, and returns when all have.
    pub fn shutdown(self) {
        self.stopping.store(true, Ordering::Release);
        // Wake the threads blocked in accept(): each sees the flag.
        for _ in &self.threads {
            let _ = TcpStream::connect(self.addr);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
