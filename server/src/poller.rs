//! Where connections wait between requests, so that an idle or slow client
//! costs a file descriptor and a buffer, never a request thread.
//!
//! Every request thread of a worker waits in the same epoll set, which holds
//! the listener and every connection that is waiting for input. Each is
//! registered one-shot: when it becomes readable exactly one thread is woken
//! for it, takes it out of the parking table, serves the requests that have
//! arrived, and parks it again. The thread that is woken is the thread that
//! serves, so a request costs no hand-off between threads; under load a
//! thread finds the next ready connection without sleeping, much as an
//! event loop would.
//!
//! Parked connections carry a deadline (the keep-alive or head timeout);
//! whichever thread is awake when the sweep falls due closes the expired
//! ones.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use slab::Slab;

use crate::http1::conn::Connection;

/// How often expired connections are looked for, and so how late past its
/// deadline one may be closed.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;

/// What a waiting request thread was woken for.
pub(crate) enum Ready {
    /// The listener has connections to accept; re-arm it afterwards.
    Listener,
    /// The server is stopping.
    Wake,
    /// A parked connection has input; it now belongs to the caller.
    Connection(Box<Connection>),
    /// A timeout, an interrupted wait, or a connection already closed.
    Nothing,
}

struct Parked {
    connection: Box<Connection>,
    token: u64,
    deadline: Instant,
}

/// The epoll set and the table of parked connections.
pub(crate) struct Poller {
    epoll: Epoll,
    parked: Mutex<Slab<Parked>>,
    /// Distinguishes reuses of a table slot, so that an event for a
    /// connection swept meanwhile cannot hand out its slot's next tenant.
    generation: AtomicU32,
    next_sweep: Mutex<Instant>,
    waker: EventFd,
}

fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

fn one_shot(token: u64) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT,
        token,
    )
}

impl Poller {
    /// A poller watching `listener`, which it makes non-blocking.
    pub(crate) fn new(listener: &TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io_error)?;
        epoll.add(listener, one_shot(LISTENER)).map_err(io_error)?;
        let waker = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(io_error)?;
        epoll
            .add(&waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))
            .map_err(io_error)?;
        Ok(Self {
            epoll,
            parked: Mutex::new(Slab::new()),
            generation: AtomicU32::new(0),
            next_sweep: Mutex::new(Instant::now() + SWEEP_EVERY),
            waker,
        })
    }

    fn parked(&self) -> MutexGuard<'_, Slab<Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for one thing to do, and sweeps expired connections on the way.
    pub(crate) fn wait(&self) -> Ready {
        let mut events = [EpollEvent::empty()];
        // The timeout only bounds how late a sweep can run.
        let timeout = SWEEP_EVERY.as_millis() as u16;
        let woken = self.epoll.wait(&mut events, timeout);
        // Sweep before taking: a connection that keeps sending, slowly, is
        // parked only between its bytes and must still meet its deadline.
        self.sweep_if_due();
        match woken {
            Ok(1) => match events[0].data() {
                LISTENER => Ready::Listener,
                WAKER => Ready::Wake,
                token => self.take(token),
            },
            Ok(_) | Err(Errno::EINTR) => Ready::Nothing,
            Err(errno) => {
                // Only a bug can make epoll_wait fail on a valid set; slow
                // down rather than spin.
                eprintln!("turnstile: epoll_wait failed: {errno}");
                std::thread::sleep(SWEEP_EVERY);
                Ready::Nothing
            }
        }
    }

    fn take(&self, token: u64) -> Ready {
        let key = (token & u64::from(u32::MAX)) as usize;
        let mut parked = self.parked();
        match parked.get(key) {
            Some(entry) if entry.token == token => Ready::Connection(parked.remove(key).connection),
            _ => Ready::Nothing,
        }
    }

    /// Watches a newly accepted connection, closing it at `deadline` if no
    /// request has come by then.
    pub(crate) fn admit(&self, connection: Box<Connection>, deadline: Instant) -> io::Result<()> {
        self.insert(connection, deadline, true)
    }

    /// Parks a connection that was served and now waits for more input.
    pub(crate) fn park(&self, connection: Box<Connection>, deadline: Instant) -> io::Result<()> {
        self.insert(connection, deadline, false)
    }

    fn insert(&self, connection: Box<Connection>, deadline: Instant, new: bool) -> io::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        // The table stays locked until the socket is armed, so no sweep can
        // close it under epoll_ctl.
        let mut parked = self.parked();
        let entry = parked.vacant_entry();
        let token = u64::from(generation) << 32 | entry.key() as u64;
        let event = one_shot(token);
        let armed = if new {
            self.epoll.add(connection.socket(), event)
        } else {
            self.epoll.modify(connection.socket(), &mut { event })
        };
        armed.map_err(io_error)?;
        entry.insert(Parked {
            connection,
            token,
            deadline,
        });
        Ok(())
    }

    /// Arms the listener again after its connections were accepted.
    pub(crate) fn rearm_listener(&self, listener: &TcpListener) {
        let _ = self.epoll.modify(listener, &mut one_shot(LISTENER));
    }

    /// Stops watching the listener: no more connections are accepted.
    pub(crate) fn stop_listening(&self, listener: &TcpListener) {
        let _ = self.epoll.delete(listener);
    }

    /// Wakes one waiting thread with [`Ready::Wake`]; each woken thread
    /// wakes the next as it leaves.
    pub(crate) fn wake(&self) {
        let _ = self.waker.write(1);
    }

    fn sweep_if_due(&self) {
        let now = Instant::now();
        let Ok(mut next_sweep) = self.next_sweep.try_lock() else {
            return;
        };
        if now < *next_sweep {
            return;
        }
        *next_sweep = now + SWEEP_EVERY;
        drop(next_sweep);
        let expired: Vec<Parked> = {
            let mut parked = self.parked();
            let keys: Vec<usize> = parked
                .iter()
                .filter(|(_, entry)| entry.deadline <= now)
                .map(|(key, _)| key)
                .collect();
            keys.into_iter().map(|key| parked.remove(key)).collect()
        };
        // Closing the sockets also takes them out of the epoll set.
        drop(expired);
    }
}
