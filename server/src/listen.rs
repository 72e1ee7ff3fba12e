//! Listening sockets and the connections they accept: TCP or Unix-domain,
//! bound here or inherited (systemd socket activation, `fd://N`).
//!
//! A bind is written as Gunicorn writes it: `HOST:PORT`, `HOST` (port
//! 8000), `[V6]:PORT`, `unix:PATH` or `fd://FD`.
//!
//! ```
//! use turnstile_server::Listener;
//!
//! let listener = Listener::bind("127.0.0.1:0", 64).unwrap();
//! assert!(listener.to_string().starts_with("http://127.0.0.1:"));
//! ```

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// Gunicorn's `backlog` default: connections the kernel queues before
/// `accept`.
pub const DEFAULT_BACKLOG: u32 = 2048;

/// The most bytes a connection's kernel send queue holds unsent
/// (`TCP_NOTSENT_LOWAT`).
const UNSENT_MAX: u32 = 128 * 1024;

/// The port of a bind that names only a host.
const DEFAULT_PORT: u16 = 8000;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain stream listener, and the path it is bound to (`None`
    /// for an inherited one whose path is unknown).
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// Binds `spec` (`HOST:PORT`, `HOST`, `unix:PATH` or `fd://FD`) with
    /// room for `backlog` pending connections. A stale Unix socket file
    /// left by an earlier run is replaced; any other file is not.
    pub fn bind(spec: &str, backlog: u32) -> io::Result<Self> {
        Self::bind_reusing(spec, backlog, false)
    }

    /// As [`bind`](Self::bind); with `reuse_port`, a TCP listener sets
    /// `SO_REUSEPORT` (`--reuse-port`), so several servers may listen on one
    /// port and the kernel spreads connections among them.
    pub fn bind_reusing(spec: &str, backlog: u32, reuse_port: bool) -> io::Result<Self> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        if let Some(path) = spec.strip_prefix("unix:") {
            return bind_unix(Path::new(path), backlog);
        }
        if let Some(fd) = spec.strip_prefix("fd://") {
            let fd: u16 = fd
                .parse()
                .map_err(|_| invalid(format!("`{spec}`: not a file descriptor number")))?;
            return Self::inherit(RawFd::from(fd));
        }
        // `[::1]` ends in `]`, not in digits, so it gets the port too.
        let has_port = spec
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
        let with_port;
        let spec = if has_port {
            spec
        } else {
            with_port = format!("{spec}:{DEFAULT_PORT}");
            &with_port
        };
        let mut last_error = None;
        for addr in spec.to_socket_addrs()? {
            match bind_tcp(addr, backlog, reuse_port) {
                Ok(listener) => return Ok(Self::Tcp(listener)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| invalid(format!("`{spec}` names no address"))))
    }

    /// Takes over the listening socket `fd`, inherited from whoever started
    /// this process.
    pub fn inherit(fd: RawFd) -> io::Result<Self> {
        Self::adopt(fd, false)
    }

    /// Takes over a listening socket the arbiter before this one passed
    /// (`USR2`): a Unix socket's file is this process's to remove, as it
    /// was that one's.
    pub(crate) fn inherit_owned(fd: RawFd) -> io::Result<Self> {
        Self::adopt(fd, true)
    }

    fn adopt(fd: RawFd, owns_path: bool) -> io::Result<Self> {
        // Refuse a number that is not an open descriptor before owning it.
        if fd < 0 || !Path::new(&format!("/proc/self/fd/{fd}")).exists() {
            return Err(invalid(format!("descriptor {fd} is not open")));
        }
        // SAFETY: `fd` is open (checked above) and was handed to this
        // process to own: systemd's LISTEN_FDS, an `fd://` bind, or the
        // arbiter before an upgrade. Nothing
        // else in the process uses it.
        #[allow(unsafe_code)]
        let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if !socket.is_listener()? {
            return Err(invalid(format!(
                "descriptor {fd} is not a listening socket"
            )));
        }
        socket.set_cloexec(true)?;
        match socket.domain()? {
            Domain::UNIX => {
                let listener: UnixListener = socket.into();
                let path = owns_path
                    .then(|| {
                        listener
                            .local_addr()
                            .ok()?
                            .as_pathname()
                            .map(Path::to_path_buf)
                    })
                    .flatten();
                Ok(Self::Unix(listener, path))
            }
            _ => Ok(Self::Tcp(socket.into())),
        }
    }

    /// The sockets systemd passed under socket activation (`LISTEN_FDS`
    /// descriptors from 3, when `LISTEN_PID` is this process), or none.
    pub fn from_systemd() -> io::Result<Vec<Self>> {
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            == Some(std::process::id());
        let count: RawFd = match std::env::var("LISTEN_FDS") {
            Ok(count) if for_us => count
                .parse()
                .map_err(|_| invalid(format!("LISTEN_FDS={count:?} is not a number")))?,
            _ => return Ok(Vec::new()),
        };
        // SD_LISTEN_FDS_START: systemd passes them from descriptor 3 on.
        (3..3 + count).map(Self::inherit).collect()
    }

    /// Where it listens, as a client would reach it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(listener) => listener.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }

    /// Accepts a connection already waiting, and its peer's address
    /// (`None` for a Unix-domain peer).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                stream.set_nodelay(true)?;
                // The kernel's send queue is autotuned to megabytes; a client
                // that stops reading would pin all of it, and a thousand of
                // them exhaust the machine's TCP memory, stalling every
                // connection. Unsent bytes are capped; what is in flight is
                // still the congestion window's to size.
                socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_MAX)?;
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            Self::Unix(listener, _) => Ok((Stream::Unix(listener.accept()?.0), None)),
        }
    }

    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Self::Tcp(listener) => listener.set_nonblocking(true),
            Self::Unix(listener, _) => listener.set_nonblocking(true),
        }
    }

    /// Removes the socket file of a Unix listener bound here: the server
    /// calls it once, as it exits.
    pub fn remove_socket_file(&self) {
        if let Self::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(listener) => listener.as_fd(),
            Self::Unix(listener, _) => listener.as_fd(),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => write!(f, "http://{addr}"),
                Err(_) => f.write_str("http://(unknown)"),
            },
            Self::Unix(_, Some(path)) => write!(f, "unix:{}", path.display()),
            Self::Unix(listener, None) => write!(f, "unix:(inherited fd {})", listener.as_raw_fd()),
        }
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As every server does: a restart may bind while old connections linger
    // in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn bind_unix(path: &Path, backlog: i32) -> io::Result<Listener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    Ok(Listener::Unix(socket.into(), Some(path.to_owned())))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// An accepted connection's socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Makes reads and writes return `WouldBlock` rather than wait: a
    /// request thread never waits for a client.
    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.set_nonblocking(true),
            Self::Unix(stream) => stream.set_nonblocking(true),
        }
    }

    /// Bytes written to the socket that the kernel has not yet had
    /// acknowledged (TCP) or read (Unix): what the client must still read
    /// before the server's next write is taken. 0 if it cannot tell.
    pub(crate) fn unsent(&self) -> u64 {
        let mut unsent: nix::libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one `int` through the pointer,
        // which points at one; the descriptor is this stream's, open for
        // as long as `self` is borrowed.
        #[allow(unsafe_code)]
        let done = unsafe { nix::libc::ioctl(self.as_raw_fd(), nix::libc::TIOCOUTQ, &mut unsent) };
        if done == 0 {
            u64::try_from(unsent).unwrap_or(0)
        } else {
            0
        }
    }

    /// Ends the server's side of the connection; the client's may still
    /// send.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.shutdown(std::net::Shutdown::Write),
            Self::Unix(stream) => stream.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => (&*stream).read(buf),
            Stream::Unix(stream) => (&*stream).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => (&*stream).write(buf),
            Stream::Unix(stream) => (&*stream).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => (&*stream).write_vectored(bufs),
            Stream::Unix(stream) => (&*stream).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(stream) => stream.as_fd(),
            Self::Unix(stream) => stream.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_a_port_gets_8000_and_bad_specs_are_errors() {
        // Port 8000 may be taken on a developer's machine: only the parsing
        // is checked, through the error a bad host gives.
        assert!(Listener::bind("fd://x", 16).is_err());
        assert!(Listener::bind("fd://-1", 16).is_err());
        assert!(Listener::bind("no-such-host.invalid", 16).is_err());
        let listener = Listener::bind("[::1]:0", 16).or_else(|_| Listener::bind("127.0.0.1:0", 16));
        assert!(listener.unwrap().local_addr().is_some());
    }

    #[test]
    fn a_unix_socket_replaces_a_stale_one_but_not_a_file() {
        let dir = std::env::temp_dir().join(format!("turnstile-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let spec = format!("unix:{}", path.display());
        let first = Listener::bind(&spec, 16).unwrap();
        drop(first);
        let second = Listener::bind(&spec, 16).unwrap();
        assert_eq!(second.to_string(), spec);
        second.remove_socket_file();
        std::fs::write(&path, "not a socket").unwrap();
        assert!(Listener::bind(&spec, 16).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
