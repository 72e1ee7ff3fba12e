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

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Pid, getppid};
use turnstile_core::{SharedApp, Worker, per_process};

use crate::arbiter::{APP_LOAD_ERROR, ArbiterConfig, WORKER_BOOT_ERROR, panic_message, round};
use crate::hooks::{Hooks, WithRequestHooks};
use crate::listen::Listener;
use crate::{Server, ServerHandle, ids, log};

/// What a worker is handed at the fork.
pub(crate) struct WorkerSetup {
    pub(crate) worker: Worker,
    pub(crate) arbiter: Pid,
    pub(crate) to_arbiter: OwnedFd,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) config: ArbiterConfig,
    pub(crate) hooks: Arc<Hooks>,
}

/// A message from a worker to the arbiter, one line on its pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// The request threads have started.
    Ready,
    /// Still alive; the oldest request in flight, its age and its name.
    Alive { oldest: Option<(Duration, String)> },
    /// Retiring by itself (`max_requests`): replace it now.
    Retiring,
}

impl Beat {
    fn to_line(&self) -> String {
        match self {
            Self::Ready => "ready\n".to_owned(),
            Self::Retiring => "retiring\n".to_owned(),
            Self::Alive { oldest: None } => "alive\n".to_owned(),
            Self::Alive {
                oldest: Some((age, request)),
            } => {
                // One line, whatever the request's bytes were.
                let request: String = request
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                format!("alive {} {request}\n", age.as_millis())
            }
        }
    }

    pub(crate) fn parse(line: &[u8]) -> Option<Self> {
        let line = std::str::from_utf8(line).ok()?;
        match line.split_once(' ') {
            None => match line {
                "ready" => Some(Self::Ready),
                "retiring" => Some(Self::Retiring),
                "alive" => Some(Self::Alive { oldest: None }),
                _ => None,
            },
            Some(("alive", rest)) => {
                let (millis, request) = rest.split_once(' ')?;
                let age = Duration::from_millis(millis.parse().ok()?);
                Some(Self::Alive {
                    oldest: Some((age, request.to_owned())),
                })
            }
            Some(_) => None,
        }
    }
}

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
    let signals = match take_signals() {
        Ok(signals) => signals,
        Err(error) => {
            log::critical(format_args!(
                "worker {}: cannot take signals: {error}",
                worker.id
            ));
            std::process::exit(WORKER_BOOT_ERROR);
        }
    };
    ids::reseed();

    let app = boot(worker, &hooks, app);
    let mut server = Server::from_listeners(listeners)
        .threads(config.threads)
        .connection_config(config.connection.clone())
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
    send(&to_arbiter, &Beat::Ready);

    let round = PollTimeout::try_from(round(config.timeout)).unwrap_or(PollTimeout::MAX);
    let quick = loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(limit_reached.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, round);
        let mut stop = None;
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) => stop = stop.or(Some(false)),
                Ok(Signal::SIGINT | Signal::SIGQUIT) => stop = Some(true),
                Ok(Signal::SIGUSR1) => {
                    if let Err(error) = log::reopen() {
                        eprintln!("turnstile: cannot reopen the log file: {error}");
                    }
                    // The layers' own log files (the access log) follow.
                    turnstile_core::reopen::request();
                    log::info(format_args!("worker {}: log files reopened", worker.id));
                }
                Ok(Signal::SIGABRT) => abort(worker, &hooks, &handle),
                _ => {}
            }
        }
        if let Some(quick) = stop {
            break quick;
        }
        if getppid() != arbiter {
            log::warning(format_args!(
                "worker {}: the arbiter is gone; stopping",
                worker.id
            ));
            break false;
        }
        if limit_reached.read().is_ok() {
            log::info(format_args!(
                "worker {} (pid {}): served {} requests; retiring",
                worker.id,
                worker.pid,
                handle.requests_served()
            ));
            send(&to_arbiter, &Beat::Retiring);
            break false;
        }
        let oldest = handle
            .oldest_in_flight()
            .map(|request| (request.elapsed(), request.describe()));
        send(&to_arbiter, &Beat::Alive { oldest });
    };
    if !quick {
        let drained = handle.shutdown_until(Instant::now() + config.graceful_timeout);
        if !drained {
            log::warning(format_args!(
                "worker {}: requests still running after graceful_timeout",
                worker.id
            ));
        }
    }
    Hooks::run(&hooks.worker_exit, worker);
    per_process::teardown();
    std::process::exit(0)
}

/// Everything between the fork and the request threads. A failure here is
/// a failed boot: the worker exits with the code the arbiter stops on.
// ANCHOR: boot
fn boot(worker: Worker, hooks: &Hooks, app: &dyn Fn() -> SharedApp) -> SharedApp {
    let step = |code: i32, what: &str, f: &mut dyn FnMut()| {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(f)) {
            log::critical(format_args!(
                "worker {} (pid {}): {what} failed: {}",
                worker.id,
                worker.pid,
                panic_message(&*panic)
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
    log::critical(format_args!(
        "worker {} (pid {}): {what} failed: {error}",
        worker.id, worker.pid
    ));
    std::process::exit(WORKER_BOOT_ERROR)
}

/// The arbiter's timeout: report what was stuck, then exit.
fn abort(worker: Worker, hooks: &Hooks, handle: &ServerHandle) -> ! {
    let stuck = handle.oldest_in_flight();
    match &stuck {
        Some(request) => log::critical(format_args!(
            "worker {} (pid {}) aborted by the arbiter's timeout while serving {} for {:.1} s",
            worker.id,
            worker.pid,
            request.describe(),
            request.elapsed().as_secs_f64()
        )),
        None => log::critical(format_args!(
            "worker {} (pid {}) aborted by the arbiter's timeout",
            worker.id, worker.pid
        )),
    }
    if let Some(worker_abort) = &hooks.worker_abort {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| worker_abort(worker, stuck.as_ref())));
    }
    // What the other requests' layers buffered (access-log lines) is
    // written out; the arbiter kills the worker if this hangs.
    let _ = panic::catch_unwind(per_process::teardown);
    std::process::exit(1)
}

/// The worker's own signalfd. The mask inherited from the arbiter already
/// blocks its signals; `ABRT` joins them, and `CHLD` is the application's
/// again.
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
    ] {
        mask.add(signal);
    }
    mask.thread_block()?;
    let mut child = SigSet::empty();
    child.add(Signal::SIGCHLD);
    child.thread_unblock()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// A heartbeat that cannot be written (the arbiter is behind) is dropped:
/// the next one says the same.
fn send(to_arbiter: &OwnedFd, beat: &Beat) {
    let _ = nix::unistd::write(to_arbiter, beat.to_line().as_bytes());
}

/// A random number in `0..=max`, drawn per worker.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    getrandom::u64().unwrap_or(0) % (max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_survive_their_line_format() {
        let beats = [
            Beat::Ready,
            Beat::Retiring,
            Beat::Alive { oldest: None },
            Beat::Alive {
                oldest: Some((Duration::from_millis(1500), "GET /slow (request x)".into())),
            },
        ];
        for beat in beats {
            let line = beat.to_line();
            assert_eq!(Beat::parse(line.trim_end().as_bytes()), Some(beat));
        }
        assert_eq!(Beat::parse(b"alive soon GET /"), None);
        let tricky = Beat::Alive {
            oldest: Some((Duration::ZERO, "GET /a\nb".into())),
        };
        assert_eq!(tricky.to_line().matches('\n').count(), 1);
    }
}
