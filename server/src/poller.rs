//! Where connections wait between requests, so that an idle or slow client
//! costs a file descriptor and a buffer, never a request thread.
//!
//! Every request thread of a worker waits in the same epoll set, which holds
//! the listener and every open connection. Connections are registered once,
//! edge-triggered: new input wakes exactly one thread, which leases the
//! connection from the table, serves the requests that have arrived, and
//! hands it back. The thread that is woken is the thread that serves, so a
//! request costs no hand-off between threads and no `epoll_ctl`; under load
//! a thread finds the next ready connection without sleeping, much as an
//! event loop would.
//!
//! Input that arrives while a connection is leased wakes another thread,
//! which finds it busy and marks it; the leaseholder sees the mark when it
//! hands the connection back and serves again, so no edge is lost.
//!
//! Waiting connections carry a deadline (the keep-alive or head timeout);
//! whichever thread is awake when the sweep falls due closes the expired
//! ones.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use slab::Slab;

use crate::http1::conn::Connection;
use crate::listen::Listener;

/// How often expired connections are looked for, and so how late past its
/// deadline one may be closed.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

const WAKER: u64 = u64::MAX;
/// Listener `i`'s token is `FIRST_LISTENER - i`, above any connection's.
const FIRST_LISTENER: u64 = u64::MAX - 1;
const MAX_LISTENERS: u64 = 1024;

/// What a waiting request thread was woken for.
pub(crate) enum Ready {
    /// This listener has connections to accept; re-arm it afterwards.
    Listener(usize),
    /// The server is stopping.
    Wake,
    /// A connection has input; the caller holds it until it gives it back.
    Connection(Lease),
    /// A timeout, an interrupted wait, a busy or an already closed
    /// connection.
    Nothing,
}

/// A connection taken from the table to be served. Give it back with
/// [`Poller::give_back`] or close it with [`Poller::close`].
pub(crate) struct Lease {
    pub(crate) connection: Box<Connection>,
    /// The client shut its side (or the socket failed) as of the wake-up.
    pub(crate) peer_closed: bool,
    token: u64,
}

struct Entry {
    /// Slot and generation: an event for a connection closed meanwhile
    /// cannot reach its slot's next tenant.
    token: u64,
    state: State,
}

enum State {
    Waiting {
        connection: Box<Connection>,
        deadline: Instant,
    },
    /// Leased; `woken` when input arrived meanwhile.
    Leased { woken: bool },
}

/// The epoll set and the table of open connections.
pub(crate) struct Poller {
    epoll: Epoll,
    table: Mutex<Slab<Entry>>,
    generation: AtomicU32,
    next_sweep: Mutex<Instant>,
    waker: EventFd,
}

fn slot(token: u64) -> usize {
    (token & u64::from(u32::MAX)) as usize
}

impl Poller {
    /// A poller watching `listeners`, which it makes non-blocking.
    pub(crate) fn new(listeners: &[Listener]) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (index, listener) in listeners.iter().enumerate() {
            listener.set_nonblocking()?;
            epoll.add(listener, listener_event(index))?;
        }
        let waker = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        // Level-triggered: it stays ready, so every thread sees it.
        epoll.add(&waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))?;
        Ok(Self {
            epoll,
            table: Mutex::new(Slab::new()),
            generation: AtomicU32::new(0),
            next_sweep: Mutex::new(Instant::now() + SWEEP_EVERY),
            waker,
        })
    }

    fn table(&self) -> MutexGuard<'_, Slab<Entry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for one thing to do, and sweeps expired connections on the way.
    pub(crate) fn wait(&self) -> Ready {
        let mut events = [EpollEvent::empty()];
        // The timeout only bounds how late a sweep can run.
        let timeout = SWEEP_EVERY.as_millis() as u16;
        let woken = self.epoll.wait(&mut events, timeout);
        // Sweep before leasing: a connection that keeps sending, slowly,
        // waits only between its bytes and must still meet its deadline.
        self.sweep_if_due();
        match woken {
            Ok(1) => match events[0].data() {
                WAKER => Ready::Wake,
                token if token > FIRST_LISTENER - MAX_LISTENERS => {
                    Ready::Listener((FIRST_LISTENER - token) as usize)
                }
                token => self.lease(token, events[0].events()),
            },
            Ok(_) | Err(Errno::EINTR) => Ready::Nothing,
            Err(errno) => {
                // Only a bug can make epoll_wait fail on a valid set; slow
                // down rather than spin.
                crate::log::critical(format_args!("epoll_wait failed: {errno}"));
                std::thread::sleep(SWEEP_EVERY);
                Ready::Nothing
            }
        }
    }

    // ANCHOR: lease
    fn lease(&self, token: u64, flags: EpollFlags) -> Ready {
        let mut table = self.table();
        let Some(entry) = table
            .get_mut(slot(token))
            .filter(|entry| entry.token == token)
        else {
            return Ready::Nothing;
        };
        match std::mem::replace(&mut entry.state, State::Leased { woken: false }) {
            State::Waiting { connection, .. } => Ready::Connection(Lease {
                connection,
                peer_closed: flags.intersects(
                    EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR,
                ),
                token,
            }),
            State::Leased { .. } => {
                entry.state = State::Leased { woken: true };
                Ready::Nothing
            }
        }
    }
    // ANCHOR_END: lease

    /// Watches a newly accepted connection, closing it at `deadline` if no
    /// request has come by then.
    pub(crate) fn admit(&self, connection: Box<Connection>, deadline: Instant) -> io::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        // The table stays locked until the socket is registered, so its
        // first event finds the entry.
        let mut table = self.table();
        let entry = table.vacant_entry();
        let token = u64::from(generation) << 32 | entry.key() as u64;
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET,
            token,
        );
        self.epoll.add(connection.socket(), event)?;
        entry.insert(Entry {
            token,
            state: State::Waiting {
                connection,
                deadline,
            },
        });
        Ok(())
    }

    // ANCHOR: give_back
    /// Gives a served connection back to wait for input until `deadline`;
    /// returns it instead if input arrived while it was leased.
    pub(crate) fn give_back(&self, lease: Lease, deadline: Instant) -> Option<Lease> {
        let mut table = self.table();
        let entry = table
            .get_mut(slot(lease.token))
            .filter(|entry| entry.token == lease.token)?;
        match entry.state {
            State::Leased { woken: true } => {
                entry.state = State::Leased { woken: false };
                // The flags of the missed wake-up are unknown: assume the worst.
                Some(Lease {
                    peer_closed: true,
                    ..lease
                })
            }
            _ => {
                entry.state = State::Waiting {
                    connection: lease.connection,
                    deadline,
                };
                None
            }
        }
    }
    // ANCHOR_END: give_back

    /// Closes the waiting connections a stopping server owes nothing: idle
    /// keep-alive ones, and new ones silent for `grace`.
    pub(crate) fn close_idle(&self, grace: Duration) {
        let idle: Vec<Entry> = {
            let mut table = self.table();
            let keys: Vec<usize> = table
                .iter()
                .filter(|(_, entry)| match &entry.state {
                    State::Waiting { connection, .. } => connection.idle_while_stopping(grace),
                    State::Leased { .. } => false,
                })
                .map(|(key, _)| key)
                .collect();
            keys.into_iter().map(|key| table.remove(key)).collect()
        };
        drop(idle);
    }

    /// Connections open, waiting or being served.
    pub(crate) fn open_connections(&self) -> usize {
        self.table().len()
    }

    /// Connections open, and how many of them wait for input.
    pub(crate) fn connection_counts(&self) -> (usize, usize) {
        let table = self.table();
        let waiting = table
            .iter()
            .filter(|(_, entry)| matches!(entry.state, State::Waiting { .. }))
            .count();
        (table.len(), waiting)
    }

    /// Closes a leased connection.
    pub(crate) fn close(&self, lease: Lease) {
        let mut table = self.table();
        if table
            .get(slot(lease.token))
            .is_some_and(|entry| entry.token == lease.token)
        {
            table.remove(slot(lease.token));
        }
        drop(table);
        // Closing the socket also takes it out of the epoll set.
        drop(lease);
    }

    /// Arms listener `index` again after its connections were accepted.
    pub(crate) fn rearm_listener(&self, index: usize, listener: &Listener) {
        let _ = self.epoll.modify(listener, &mut listener_event(index));
    }

    /// Stops watching a listener: no more connections are accepted from it.
    pub(crate) fn stop_listening(&self, listener: &Listener) {
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
        let expired: Vec<Entry> = {
            let mut table = self.table();
            let keys: Vec<usize> = table
                .iter()
                .filter(|(_, entry)| match &entry.state {
                    State::Waiting {
                        connection,
                        deadline,
                    } => *deadline <= now && !connection.next_request_arrived(),
                    State::Leased { .. } => false,
                })
                .map(|(key, _)| key)
                .collect();
            keys.into_iter().map(|key| table.remove(key)).collect()
        };
        // Closing the sockets also takes them out of the epoll set.
        drop(expired);
    }
}

/// A listener is one-shot, re-armed after each batch of accepts, so one
/// thread accepts while the others serve.
fn listener_event(index: usize) -> EpollEvent {
    assert!((index as u64) < MAX_LISTENERS, "too many listeners");
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT,
        FIRST_LISTENER - index as u64,
    )
}
