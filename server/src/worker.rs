//! A worker process, from the fork to its exit.
//!
//! In order: it takes its own signals, reseeds its request ids, runs the
//! `post_fork` hook, builds the application (unless the arbiter preloaded
//! it), rebuilds the per-process resources inherited from the arbiter, runs
//! `post_worker_init`, and only then starts its request threads. Its main
//! thread then sends the arbiter a heartbeat (with the oldest request in
//! flight) every round and acts on signals:
//!
//! | signal | the worker |
//! |---|---|
//! | `TERM` | stops accepting, finishes its requests (within `graceful_timeout`), exits 0 |
//! | `INT`, `QUIT` | exits at once |
//! | `USR1` | reopens the error log, and asks the layers to reopen theirs (`turnstile_core::reopen`) |
//! | `ABRT` | the arbiter's timeout: logs the stuck request, runs `worker_abort`, tears down the per-process resources (writing out buffered access-log lines), exits 1 |
//!
//! It also retires itself after `max_requests`, and stops if the arbiter
//! goes away.

use std::cell::Cell;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd as _};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{MsgFlags, recv};
use nix::unistd::{Pid, getppid};
use turnstile_core::{SharedApp, Worker, per_process};

use crate::forwarded::TrustedProxies;
use crate::hooks::{Hooks, WithRequestHooks};
use crate::http1::conn::ConnConfig;
use crate::listen::Listener;
use crate::protocol::{APP_LOAD_ERROR, Beat, WORKER_BOOT_ERROR, round};
use crate::{Server, ServerHandle, error_log, prometheus, request_ids};

/// What a worker is handed at the fork.
pub(crate) struct WorkerSetup {
    pub(crate) worker: Worker,
    pub(crate) arbiter: Pid,
    pub(crate) to_arbiter: UnixStream,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) config: WorkerConfig,
    pub(crate) hooks: Arc<Hooks>,
}

/// The arbiter's settings that a worker acts on.
#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    pub(crate) threads: usize,
    pub(crate) connection: ConnConfig,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) timeout: Duration,
    pub(crate) graceful_timeout: Duration,
    pub(crate) max_requests: u64,
    pub(crate) max_requests_jitter: u64,
    /// Whether it installs a Prometheus recorder.
    pub(crate) metrics: bool,
    /// Whether it sends its pages to the arbiter (`--metrics-bind`).
    pub(crate) pages: bool,
    /// `--name`, for its title in `ps`.
    pub(crate) name: Option<String>,
    /// `--user` and `--group`, switched to before anything of the
    /// application runs.
    pub(crate) user: Option<u32>,
    pub(crate) group: Option<u32>,
}

/// How long a message to the arbiter may take to write: the arbiter reads
/// its sockets every round, so only an arbiter that is stuck takes longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the worker until it exits.
pub(crate) fn run(setup: WorkerSetup, app: &dyn Fn() -> SharedApp) -> ! {
    let WorkerSetup {
        worker,
        arbiter,
        to_arbiter,
        listeners,
        config,
        hooks,
    } = setup;
    // Told when the arbiter dies, and checked here for a death before that.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if getppid() != arbiter {
        std::process::exit(0);
    }
    if let Some(name) = &config.name {
        crate::process_setup::set_title(&format!("turnstile: worker [{name}]"));
    }
    if let Err(error) = crate::process_setup::become_user(config.user, config.group) {
        boot_failed(worker, "switching to --user and --group", &error);
    }
    let signals = match take_signals() {
        Ok(signals) => signals,
        Err(error) => {
            error_log::critical(format_args!(
                "worker {}: cannot take signals: {error}",
                worker.id
            ));
            std::process::exit(WORKER_BOOT_ERROR);
        }
    };
    request_ids::reseed();
    // ANCHOR: recorder
    // Before anything records: the post_fork hook and the application may.
    let metrics_on = config.metrics || config.pages;
    if metrics_on {
        prometheus::install();
    }
    // ANCHOR_END: recorder
    let _ = to_arbiter.set_write_timeout(Some(WRITE_TIMEOUT));
    let to_arbiter = ToArbiter {
        stream: to_arbiter,
        broken: Cell::new(false),
    };
    // Pages go to the arbiter only when it serves them.
    let pages = config.pages;

    let app = boot(worker, &hooks, app);
    let mut server = Server::from_listeners(listeners)
        .threads(config.threads)
        .connection_config(config.connection.clone())
        .trusted_proxies(config.trusted_proxies.clone())
        .worker(worker);
    // The request threads say when the limit is reached, so the worker
    // retires at once rather than at its next round.
    let limit_reached = Arc::new(
        EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .unwrap_or_else(|error| boot_failed(worker, "an eventfd", &error)),
    );
    let max_requests = match config.max_requests {
        0 => None,
        max => Some(max.saturating_add(jitter(config.max_requests_jitter))),
    };
    if let Some(max) = max_requests {
        server = server.request_limit(max, limit_reached.clone());
    }
    let handle = server.spawn(WithRequestHooks::new(app, &hooks));
    to_arbiter.send(&Beat::Ready);

    let round = PollTimeout::try_from(round(config.timeout)).unwrap_or(PollTimeout::MAX);
    let quick = loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(limit_reached.as_fd(), PollFlags::POLLIN),
            PollFd::new(to_arbiter.stream.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, round);
        // ANCHOR: answer
        if let Some(question) = to_arbiter.questions() {
            to_arbiter.send(&page(&handle, question));
        }
        // ANCHOR_END: answer
        let mut stop = None;
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) => stop = stop.or(Some(false)),
                Ok(Signal::SIGINT | Signal::SIGQUIT) => stop = Some(true),
                Ok(Signal::SIGUSR1) => {
                    if let Err(error) = error_log::reopen() {
                        eprintln!("turnstile: cannot reopen the log file: {error}");
                    }
                    // The layers' own log files (the access log) follow.
                    turnstile_core::reopen::request();
                    error_log::info(format_args!("worker {}: log files reopened", worker.id));
                }
                Ok(Signal::SIGABRT) => abort(worker, &hooks, &handle, &to_arbiter, pages),
                _ => {}
            }
        }
        if let Some(quick) = stop {
            break quick;
        }
        if getppid() != arbiter {
            error_log::warning(format_args!(
                "worker {}: the arbiter is gone; stopping",
                worker.id
            ));
            break false;
        }
        if limit_reached.read().is_ok() {
            error_log::info(format_args!(
                "worker {} (pid {}): served {} requests; retiring",
                worker.id,
                worker.pid,
                handle.requests_served()
            ));
            to_arbiter.send(&Beat::Retiring);
            break false;
        }
        let oldest = handle
            .oldest_in_flight()
            .map(|request| (request.elapsed(), request.describe()));
        to_arbiter.send(&Beat::Alive { oldest });
        // ANCHOR: round_page
        // Every round: the page is what a worker killed before the next
        // scrape leaves behind, and rendering it is the recorder's upkeep.
        if pages {
            to_arbiter.send(&page(&handle, 0));
        } else if metrics_on {
            prometheus::upkeep();
        }
        // ANCHOR_END: round_page
    };
    if !quick {
        let drained = handle.shutdown_until(Instant::now() + config.graceful_timeout);
        if !drained {
            error_log::warning(format_args!(
                "worker {}: requests still running after graceful_timeout",
                worker.id
            ));
        }
    }
    Hooks::run(&hooks.worker_exit, worker);
    // ANCHOR: last_page
    if pages {
        // The last page: what the worker counted while it drained.
        to_arbiter.send(&Beat::Metrics {
            answers: 0,
            page: prometheus::snapshot(),
        });
    }
    // ANCHOR_END: last_page
    per_process::teardown();
    std::process::exit(0)
}

/// This worker's metrics, with its connections counted now.
fn page(handle: &ServerHandle, answers: u64) -> Beat {
    let (open, idle) = handle.connections();
    prometheus::set_connections(open, idle);
    let (memory, spool) = handle.held();
    prometheus::set_held(memory, spool);
    Beat::Metrics {
        answers,
        page: prometheus::snapshot(),
    }
}

/// Everything between the fork and the request threads. A failure here is
/// a failed boot: the worker exits with the code the arbiter stops on.
// ANCHOR: boot
fn boot(worker: Worker, hooks: &Hooks, app: &dyn Fn() -> SharedApp) -> SharedApp {
    let step = |code: i32, what: &str, f: &mut dyn FnMut()| {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(f)) {
            error_log::critical(format_args!(
                "worker {} (pid {}): {what} failed: {}",
                worker.id,
                worker.pid,
                turnstile_core::Panicked::from_payload(&*panic).message()
            ));
            std::process::exit(code);
        }
    };
    step(WORKER_BOOT_ERROR, "the post_fork hook", &mut || {
        Hooks::run(&hooks.post_fork, worker);
    });
    let mut built = None;
    step(APP_LOAD_ERROR, "loading the application", &mut || {
        built = Some(app());
    });
    step(
        WORKER_BOOT_ERROR,
        "rebuilding the per-process resources",
        &mut || {
            per_process::after_fork();
        },
    );
    step(WORKER_BOOT_ERROR, "the post_worker_init hook", &mut || {
        Hooks::run(&hooks.post_worker_init, worker);
    });
    built.expect("the application was built")
}
// ANCHOR_END: boot

fn boot_failed(worker: Worker, what: &str, error: &dyn std::fmt::Display) -> ! {
    error_log::critical(format_args!(
        "worker {} (pid {}): {what} failed: {error}",
        worker.id, worker.pid
    ));
    std::process::exit(WORKER_BOOT_ERROR)
}

// ANCHOR: abort
/// The arbiter's timeout: report what was stuck, then exit.
fn abort(
    worker: Worker,
    hooks: &Hooks,
    handle: &ServerHandle,
    to_arbiter: &ToArbiter,
    pages: bool,
) -> ! {
    let stuck = handle.oldest_in_flight();
    match &stuck {
        Some(request) => error_log::critical(format_args!(
            "worker {} (pid {}) aborted by the arbiter's timeout while serving {} for {:.1} s",
            worker.id,
            worker.pid,
            request.describe(),
            request.elapsed().as_secs_f64()
        )),
        None => error_log::critical(format_args!(
            "worker {} (pid {}) aborted by the arbiter's timeout",
            worker.id, worker.pid
        )),
    }
    if let Some(worker_abort) = &hooks.worker_abort {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| worker_abort(worker, stuck.as_ref())));
    }
    // What the other requests' layers buffered (access-log lines) is
    // written out, and what was counted is handed over; the arbiter kills
    // the worker if this hangs.
    if pages {
        to_arbiter.send(&page(handle, 0));
    }
    let _ = panic::catch_unwind(per_process::teardown);
    std::process::exit(1)
}
// ANCHOR_END: abort

/// The worker's own signalfd, and its mask: exactly the signals it takes
/// (the arbiter's other blocked ones, `ALRM` say, are the application's
/// again, and so is `CHLD`).
fn take_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGABRT,
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        mask.add(signal);
    }
    mask.thread_set_mask()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// The worker's end of its socket to the arbiter, used by its main thread.
struct ToArbiter {
    /// Blocking, with a write timeout: a page is written whole or not at
    /// all.
    stream: UnixStream,
    /// Set when a write failed, perhaps midway through a message: nothing
    /// more is sent, so the arbiter never reads a message's remains as
    /// another, and replaces this worker once its heartbeats stop.
    broken: Cell<bool>,
}

impl ToArbiter {
    fn send(&self, beat: &Beat) {
        if self.broken.get() {
            return;
        }
        if (&self.stream).write_all(beat.to_line().as_bytes()).is_err() {
            self.broken.set(true);
        }
    }

    /// The latest question the arbiter asked (`scrape N` lines), if any
    /// arrived.
    fn questions(&self) -> Option<u64> {
        let mut buf = [0u8; 256];
        let mut latest = None;
        while let Ok(n @ 1..) = recv(self.stream.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            for line in buf[..n].split(|&b| b == b'\n') {
                let number = std::str::from_utf8(line)
                    .ok()
                    .and_then(|line| line.strip_prefix("scrape "))
                    .and_then(|number| number.parse::<u64>().ok());
                latest = latest.max(number);
            }
        }
        latest
    }
}

/// A random number in `0..=max`, drawn per worker.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    getrandom::u64().unwrap_or(0) % (max + 1)
}
