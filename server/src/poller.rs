//! Where connections wait for their sockets, so that an idle, slow or
//! non-reading client costs a file descriptor and a buffer, never a
//! request thread.
//!
//! One epoll set holds the listeners and every open connection, registered
//! once, edge-triggered for input and output. One request thread at a time
//! waits in it ([`Poller::wait`], as the scheduler in `sched.rs` decides)
//! and takes what is ready as a batch: a connection with an event is
//! *leased* from the table at once and handed out as a [`Lease`], so
//! whichever thread runs the job owns the connection until it gives it
//! back or closes it.
//!
//! An event for a connection already leased marks it; the leaseholder sees
//! the mark when it gives the connection back and goes on with it, so no
//! edge is lost.
//!
//! Every [`SWEEP_EVERY`] the waiting thread also asks each waiting
//! connection whether it is due (idle past its keep-alive, slower than a
//! minimum rate, done lingering) and leases those out too, to be answered.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use slab::Slab;

use crate::http1::conn::{ConnConfig, Connection};
use crate::listen::Listener;

/// How often waiting connections are looked at, and so how late past its
/// deadline one may be answered.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Connections open at once that make a burst, whose memory the sweep
/// gives back once most of them have closed.
const BURST: usize = 1024;

/// The most events taken in one wait.
const BATCH: usize = 64;

const WAKER: u64 = u64::MAX;
/// Listener `i`'s token is `FIRST_LISTENER - i`, above any connection's.
const FIRST_LISTENER: u64 = u64::MAX - 1;
const MAX_LISTENERS: u64 = 1024;

/// Room for the events one wait takes, kept by each request thread rather
/// than zeroed again for every wait.
pub(crate) struct Events([EpollEvent; BATCH]);

impl Default for Events {
    fn default() -> Self {
        Self([EpollEvent::empty(); BATCH])
    }
}

/// What a wait found ready.
pub(crate) enum Ready {
    /// This listener has connections to accept; re-arm it afterwards.
    Listener(usize),
    /// A connection's socket is ready; the job owns it.
    Connection(Lease),
    /// A waiting connection is due: idle too long, too slow, done
    /// lingering.
    Due(Lease),
}

/// A connection taken from the table. Give it back with
/// [`Poller::give_back`] or close it with [`Poller::close`].
pub(crate) struct Lease {
    pub(crate) connection: Box<Connection>,
    /// The client shut its side (or the socket failed) as of the event.
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
    Waiting(Box<Connection>),
    /// Leased; `woken` when an event arrived meanwhile.
    Leased {
        woken: bool,
    },
}

/// The epoll set and the table of open connections.
pub(crate) struct Poller {
    epoll: Epoll,
    table: Mutex<Slab<Entry>>,
    generation: AtomicU32,
    next_sweep: Mutex<Instant>,
    /// The most connections open at once since memory was last given back.
    peak: AtomicUsize,
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
        // Level-triggered: once woken for the stop, it stays woken.
        epoll.add(&waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))?;
        Ok(Self {
            epoll,
            table: Mutex::new(Slab::new()),
            generation: AtomicU32::new(0),
            next_sweep: Mutex::new(Instant::now() + SWEEP_EVERY),
            peak: AtomicUsize::new(0),
            waker,
        })
    }

    fn table(&self) -> MutexGuard<'_, Slab<Entry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ANCHOR: wait
    /// Sweeps when due, then waits for sockets to be ready (not at all
    /// when the sweep found work), adding what it found to `ready`.
    /// `events` is the waiting thread's own, kept from call to call.
    pub(crate) fn wait(
        &self,
        ready: &mut Vec<Ready>,
        events: &mut Events,
        config: &ConnConfig,
        stopping: bool,
    ) {
        self.sweep_if_due(ready, config, stopping);
        let events = &mut events.0;
        // The timeout only bounds how late a sweep can run.
        let timeout = if ready.is_empty() {
            SWEEP_EVERY.as_millis() as u16
        } else {
            0u16
        };
        let woken = match self.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(errno) => {
                // Only a bug can make epoll_wait fail on a valid set; slow
                // down rather than spin.
                crate::error_log::critical(format_args!("epoll_wait failed: {errno}"));
                std::thread::sleep(SWEEP_EVERY);
                0
            }
        };
        let mut table = self.table();
        for event in &events[..woken] {
            match event.data() {
                WAKER => {}
                token if token > FIRST_LISTENER - MAX_LISTENERS => {
                    ready.push(Ready::Listener((FIRST_LISTENER - token) as usize));
                }
                token => {
                    if let Some(lease) = lease(&mut table, token, event.events()) {
                        ready.push(Ready::Connection(lease));
                    }
                }
            }
        }
    }
    // ANCHOR_END: wait

    /// Watches a newly accepted connection.
    pub(crate) fn admit(&self, connection: Box<Connection>) -> io::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        // The table stays locked until the socket is registered, so its
        // first event finds the entry.
        let mut table = self.table();
        let entry = table.vacant_entry();
        let token = u64::from(generation) << 32 | entry.key() as u64;
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET,
            token,
        );
        self.epoll.add(connection.socket(), event)?;
        entry.insert(Entry {
            token,
            state: State::Waiting(connection),
        });
        Ok(())
    }

    // ANCHOR: give_back
    /// Gives a connection back to wait for its socket; returns it instead
    /// if an event arrived while it was leased.
    pub(crate) fn give_back(&self, lease: Lease) -> Option<Lease> {
        let mut table = self.table();
        let entry = table
            .get_mut(slot(lease.token))
            .filter(|entry| entry.token == lease.token)?;
        match entry.state {
            State::Leased { woken: true } => {
                entry.state = State::Leased { woken: false };
                // The flags of the missed event are unknown: assume the worst.
                Some(Lease {
                    peer_closed: true,
                    ..lease
                })
            }
            _ => {
                entry.state = State::Waiting(lease.connection);
                None
            }
        }
    }
    // ANCHOR_END: give_back

    /// Connections open, waiting or being served.
    pub(crate) fn open_connections(&self) -> usize {
        self.table().len()
    }

    /// Connections open, and how many of them wait between requests.
    pub(crate) fn connection_counts(&self) -> (usize, usize) {
        let table = self.table();
        let idle = table
            .iter()
            .filter(|(_, entry)| matches!(&entry.state, State::Waiting(c) if c.is_idle()))
            .count();
        (table.len(), idle)
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

    /// Wakes the thread waiting in the poller, for good: the server stops.
    pub(crate) fn wake(&self) {
        let _ = self.waker.write(1);
    }

    fn sweep_if_due(&self, ready: &mut Vec<Ready>, config: &ConnConfig, stopping: bool) {
        let now = Instant::now();
        {
            let mut next_sweep = self
                .next_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if now < *next_sweep {
                return;
            }
            *next_sweep = now + SWEEP_EVERY;
        }
        let mut table = self.table();
        let open = table.len();
        let peak = self.peak.fetch_max(open, Ordering::Relaxed).max(open);
        let burst_closed = peak >= BURST && open * 4 < peak;
        if burst_closed {
            self.peak.store(open, Ordering::Relaxed);
            table.shrink_to_fit();
        }
        for (_, entry) in table.iter_mut() {
            let due = match &entry.state {
                State::Waiting(connection) => connection.due(now, config, stopping),
                State::Leased { .. } => false,
            };
            if due
                && let State::Waiting(connection) =
                    std::mem::replace(&mut entry.state, State::Leased { woken: false })
            {
                ready.push(Ready::Due(Lease {
                    connection,
                    peer_closed: false,
                    token: entry.token,
                }));
            }
        }
        drop(table);
        if burst_closed {
            // A burst has closed: the allocator gives its memory back,
            // which it would otherwise keep; outside the table's lock,
            // since that may take milliseconds.
            give_back_memory();
        }
    }
}

/// Returns the allocator's free memory to the system. glibc's malloc keeps
/// what a burst of connections freed, scattered among what is still in
/// use, unless asked.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size and touches only the allocator's
    // own state, under its own locks; any thread may call it at any time.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Takes the connection `token` names out of the table, or marks it woken
/// if it is leased already.
fn lease(table: &mut Slab<Entry>, token: u64, flags: EpollFlags) -> Option<Lease> {
    let entry = table
        .get_mut(slot(token))
        .filter(|entry| entry.token == token)?;
    match std::mem::replace(&mut entry.state, State::Leased { woken: false }) {
        State::Waiting(connection) => Some(Lease {
            connection,
            peer_closed: flags
                .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR),
            token,
        }),
        State::Leased { .. } => {
            entry.state = State::Leased { woken: true };
            None
        }
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
