//! The arbiter: the process that binds the listeners, forks the workers and
//! supervises them, as Gunicorn's arbiter does.
//!
//! It stays single-threaded and never runs application code after the
//! first fork (with [`Arbiter::preload`] it builds the application *before*
//! it): `fork()` copies only the calling thread, so a thread, or a lock
//! another thread held, would be missing or stuck in every worker. It checks
//! this before each fork.
//!
//! Its loop waits on a `signalfd`, on one Unix socket per worker and on the
//! metrics endpoint's sockets, at least once a second, and then, in order:
//! handles the signals that arrived, reads the workers' heartbeats (and
//! their pages of metrics), reaps the workers that exited, moves scrapes on,
//! aborts the stuck workers, and forks or retires workers until their
//! number is right.
//!
//! | signal | the arbiter |
//! |---|---|
//! | `TERM` | stops gracefully: workers stop accepting and finish their requests, within `graceful_timeout`; exit 0 |
//! | `INT`, `QUIT` | stops quickly: workers exit without draining |
//! | `HUP` | reloads: re-reads the settings, forks new workers, and retires the old ones once the new are ready |
//! | `TTIN`, `TTOU` | one worker more, or one fewer (never below one) |
//! | `USR1` | reopens the log file, and has every worker do the same |
//! | `CHLD` | reaps the workers that exited (and replaces them) |
//!
//! ```no_run
//! use turnstile_core::{Request, Response};
//! use turnstile_server::{Arbiter, ArbiterConfig};
//!
//! let config = ArbiterConfig {
//!     binds: vec!["127.0.0.1:8000".into()],
//!     workers: 2,
//!     ..ArbiterConfig::default()
//! };
//! let code = Arbiter::new(config)
//!     .post_fork(|worker| eprintln!("worker {} started", worker.id))
//!     .run(|| |_request: Request| Response::new("Hello from a worker\n".into()));
//! std::process::exit(code);
//! ```

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use turnstile_core::{Application, Completion, Request, SharedApp, Worker};

use crate::forwarded::TrustedProxies;
use crate::hooks::{Hooks, RequestInfo, WorkerExit};
use crate::http1::conn::ConnConfig;
use crate::listen::{DEFAULT_BACKLOG, Listener};
use crate::metrics::endpoint::Endpoint;
use crate::metrics::exposition::{Exposition, Kind};
use crate::metrics::process;
use crate::worker::{self, Beat, WorkerSetup};
use crate::{InFlight, log};

/// A worker's exit code when a hook or a per-process resource failed while
/// it booted (Gunicorn's `WORKER_BOOT_ERROR`); the arbiter stops.
pub const WORKER_BOOT_ERROR: i32 = 3;
/// A worker's (or, under `preload`, the arbiter's) exit code when the
/// application could not be built (Gunicorn's `APP_LOAD_ERROR`).
pub const APP_LOAD_ERROR: i32 = 4;

/// Workers that die before they are ready, in a row, before the arbiter
/// gives up rather than fork in a loop.
const MAX_BOOT_FAILURES: u32 = 5;
/// Why a worker is replaced: it died unasked, it was aborted for its
/// timeout, it served `max_requests`, or a reload replaced it.
const RESTART_REASONS: [&str; 4] = ["exit", "timeout", "max_requests", "reload"];
/// How long an aborted worker gets to report its stuck request before it
/// is killed.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// The arbiter's settings: Gunicorn's names, with its defaults.
#[derive(Clone, Debug)]
pub struct ArbiterConfig {
    /// Where to listen (`--bind`, repeatable): `HOST:PORT`, `unix:PATH`,
    /// `fd://FD`. Ignored under systemd socket activation.
    pub binds: Vec<String>,
    /// `--backlog`.
    pub backlog: u32,
    /// Worker processes (`--workers`), at least 1.
    pub workers: usize,
    /// Request threads per worker (`--threads`).
    pub threads: usize,
    /// `--timeout`: a worker whose heartbeat, or whose oldest request, is
    /// older than this is aborted and replaced. Zero turns it off.
    pub timeout: Duration,
    /// `--graceful-timeout`: how long a stopping worker may take to finish
    /// its requests before it is killed.
    pub graceful_timeout: Duration,
    /// `--max-requests`: a worker retires after this many (zero: never).
    pub max_requests: u64,
    /// `--max-requests-jitter`: up to this many more, drawn per worker, so
    /// workers do not all retire at once.
    pub max_requests_jitter: u64,
    /// Limits, timeouts, rates and buffers for the connections.
    pub connection: ConnConfig,
    /// `--forwarded-allow-ips`: the peers whose proxy headers name the
    /// client and the scheme.
    pub trusted_proxies: TrustedProxies,
    /// `--metrics-bind`: where the arbiter serves every worker's metrics,
    /// summed, at `/metrics` (`HOST:PORT`). Implies `metrics`.
    pub metrics_bind: Option<String>,
    /// Whether each worker installs a Prometheus recorder after the fork
    /// ([`crate::metrics::install`]).
    pub metrics: bool,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self {
            binds: vec!["127.0.0.1:8000".into()],
            backlog: DEFAULT_BACKLOG,
            workers: 1,
            threads: crate::DEFAULT_THREADS,
            timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(30),
            max_requests: 0,
            max_requests_jitter: 0,
            connection: ConnConfig::default(),
            trusted_proxies: TrustedProxies::default(),
            metrics_bind: None,
            metrics: false,
        }
    }
}

type Reload = Box<dyn FnMut() -> Result<ArbiterConfig, String>>;

/// A pre-forking server, configured but not started.
pub struct Arbiter {
    config: ArbiterConfig,
    hooks: Hooks,
    preload: bool,
    reload: Option<Reload>,
}

impl std::fmt::Debug for Arbiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arbiter")
            .field("config", &self.config)
            .field("preload", &self.preload)
            .finish_non_exhaustive()
    }
}

macro_rules! hook_setter {
    ($(#[$doc:meta])* $name:ident($($arg:ty),*)) => {
        $(#[$doc])*
        pub fn $name(mut self, hook: impl Fn($($arg),*) + Send + Sync + 'static) -> Self {
            self.hooks.$name = Some(Box::new(hook));
            self
        }
    };
}

impl Arbiter {
    /// An arbiter with these settings, no hooks, and no preloading.
    pub fn new(config: ArbiterConfig) -> Self {
        Self {
            config,
            hooks: Hooks::default(),
            preload: false,
            reload: None,
        }
    }

    /// `--preload`: builds the application once, in the arbiter, before
    /// forking; workers start faster and share its memory pages, but a
    /// `HUP` cannot load new application code.
    pub fn preload(mut self, preload: bool) -> Self {
        self.preload = preload;
        self
    }

    /// How `HUP` re-reads the settings. Without it, `HUP` replaces the
    /// workers with the settings they had.
    pub fn reload_with(
        mut self,
        reload: impl FnMut() -> Result<ArbiterConfig, String> + 'static,
    ) -> Self {
        self.reload = Some(Box::new(reload));
        self
    }

    hook_setter!(
        /// In the arbiter, before the listeners are bound.
        on_starting()
    );
    hook_setter!(
        /// In the arbiter, once listening (given the addresses), before
        /// the first fork.
        when_ready(&[String])
    );
    hook_setter!(
        /// In the arbiter, just before a worker is forked (its pid is 0).
        pre_fork(Worker)
    );
    hook_setter!(
        /// In the worker, first thing after the fork.
        post_fork(Worker)
    );
    hook_setter!(
        /// In the worker, once its application is built, before its request
        /// threads start.
        post_worker_init(Worker)
    );
    hook_setter!(
        /// In the worker, before each request reaches the application.
        pre_request(&Request)
    );
    hook_setter!(
        /// In the worker, after each response was written or abandoned.
        post_request(&RequestInfo, &Completion)
    );
    hook_setter!(
        /// In the worker, when the arbiter aborts it for `--timeout`; given
        /// the request it was stuck on. The worker exits with code 1 after.
        worker_abort(Worker, Option<&InFlight>)
    );
    hook_setter!(
        /// In the worker, as it exits, after its requests have drained.
        worker_exit(Worker)
    );
    hook_setter!(
        /// In the arbiter, after a worker exited and was reaped.
        child_exit(Worker, WorkerExit)
    );
    hook_setter!(
        /// In the arbiter, just before it exits.
        on_exit()
    );

    /// Runs the server until it is stopped, and returns the exit code: 0
    /// after `TERM`, `INT` or `QUIT`; 2 when a listener cannot be bound;
    /// [`WORKER_BOOT_ERROR`] or [`APP_LOAD_ERROR`] when workers cannot
    /// boot; 1 when the arbiter cannot fork safely.
    ///
    /// `app` builds the application: in each worker after the fork, or
    /// once in the arbiter under [`preload`](Self::preload).
    ///
    /// Call it from the main thread of a process that has started no other
    /// thread.
    pub fn run<A, F>(self, app: F) -> i32
    where
        A: Application,
        F: Fn() -> A,
    {
        let signals = match block_signals() {
            Ok(signals) => signals,
            Err(error) => {
                log::critical(format_args!("cannot take the signals: {error}"));
                return 1;
            }
        };
        let hooks = Arc::new(self.hooks);
        if let Some(on_starting) = &hooks.on_starting {
            on_starting();
        }
        let preloaded = if self.preload {
            match panic::catch_unwind(AssertUnwindSafe(|| SharedApp::new(app()))) {
                Ok(app) => Some(app),
                Err(panic) => {
                    log::critical(format_args!(
                        "the application failed to load: {}",
                        panic_message(&*panic)
                    ));
                    return APP_LOAD_ERROR;
                }
            }
        } else {
            None
        };
        let listeners = match bind(&self.config) {
            Ok(listeners) => listeners,
            Err(error) => {
                log::critical(format_args!("{error}"));
                return 2;
            }
        };
        let endpoint = match self.config.metrics_bind.as_deref().map(Endpoint::bind) {
            None => None,
            Some(Ok(endpoint)) => Some(endpoint),
            Some(Err(error)) => {
                log::critical(format_args!(
                    "cannot serve metrics on {}: {error}",
                    self.config.metrics_bind.as_deref().unwrap_or_default()
                ));
                return 2;
            }
        };
        let addresses: Vec<String> = listeners.iter().map(ToString::to_string).collect();
        if let Some(addr) = endpoint.as_ref().and_then(|e| e.local_addr().ok()) {
            println!("turnstile: metrics on http://{addr}/metrics");
        }
        for address in &addresses {
            println!("turnstile: listening on {address}");
        }
        let _ = io::stdout().flush();
        log::info(format_args!(
            "arbiter started (pid {}): {} worker(s) of {} thread(s) on {}",
            std::process::id(),
            self.config.workers,
            self.config.threads,
            addresses.join(", ")
        ));
        if let Some(when_ready) = &hooks.when_ready {
            when_ready(&addresses);
        }
        let mut supervisor = Supervisor {
            target: self.config.workers.max(1),
            config: self.config,
            hooks,
            listeners,
            signals: Some(signals),
            reload: self.reload,
            workers: Vec::new(),
            generation: 0,
            stopping: None,
            boot_failures: 0,
            next_spawn: Instant::now(),
            exit_code: 0,
            metrics: endpoint,
            // Every reason from the start, so a rate over them is defined
            // before the first restart.
            restarts: RESTART_REASONS.iter().map(|reason| (*reason, 0)).collect(),
        };
        let make_app = || match &preloaded {
            Some(app) => app.clone(),
            None => SharedApp::new(app()),
        };
        supervisor.supervise(&make_app);
        for listener in &supervisor.listeners {
            listener.remove_socket_file();
        }
        if let Some(on_exit) = &supervisor.hooks.on_exit {
            on_exit();
        }
        log::info(format_args!("arbiter exiting ({})", supervisor.exit_code));
        supervisor.exit_code
    }
}

/// Binds the configured listeners, or takes systemd's.
fn bind(config: &ArbiterConfig) -> Result<Vec<Listener>, String> {
    let inherited = Listener::from_systemd()
        .map_err(|e| format!("cannot use the sockets systemd passed: {e}"))?;
    if !inherited.is_empty() {
        return Ok(inherited);
    }
    config
        .binds
        .iter()
        .map(|spec| {
            Listener::bind(spec, config.backlog)
                .map_err(|e| format!("cannot listen on {spec}: {e}"))
        })
        .collect()
}

/// The signals the arbiter acts on, blocked so that they queue on a
/// `signalfd` instead of interrupting; workers inherit the mask and take
/// their own.
fn block_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
        Signal::SIGCHLD,
    ] {
        mask.add(signal);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// How the arbiter is stopping: gracefully (workers drain) or quickly
/// (workers exit at once); workers left at `deadline` are killed.
#[derive(Clone, Copy, Debug)]
struct Stopping {
    quick: bool,
    deadline: Instant,
}

/// How long the arbiter's loop, and a worker's, waits between rounds.
pub(crate) fn round(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// A worker process, as the arbiter knows it.
struct WorkerProcess {
    worker: Worker,
    generation: u64,
    /// Its socket: heartbeats and pages in, questions out. Non-blocking.
    channel: UnixStream,
    unread: Vec<u8>,
    ready: bool,
    last_beat: Instant,
    /// The oldest request at the last beat: its age then, and its name.
    oldest: Option<(Duration, String)>,
    /// Since when it has been asked to finish.
    retiring: Option<Instant>,
    /// Since when it has been aborted for its timeout.
    aborted: Option<Instant>,
    killed: bool,
    /// Why it is being replaced, when it is (`reload`, `max_requests`).
    replaced_for: Option<&'static str>,
    /// Its latest page of metrics.
    metrics: Option<Exposition>,
    /// The arbiter's question it has not answered yet.
    asked: Option<u64>,
}

impl WorkerProcess {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.worker.pid as i32)
    }

    fn signal(&self, signal: Signal) {
        let _ = kill(self.pid(), signal);
    }

    fn retire(&mut self) {
        if self.retiring.is_none() {
            self.retiring = Some(Instant::now());
            self.signal(Signal::SIGTERM);
        }
    }

    fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            self.signal(Signal::SIGKILL);
        }
    }

    /// Reads the messages waiting on its socket.
    fn read_messages(&mut self) -> Vec<Beat> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&self.channel).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.unread.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut messages = Vec::new();
        while let Some(message) = Beat::take(&mut self.unread) {
            messages.extend(message);
        }
        messages
    }

    /// Asks it for its page; a worker too busy to take the question keeps
    /// its previous page.
    fn ask(&mut self, question: u64) {
        if (&self.channel)
            .write_all(format!("scrape {question}\n").as_bytes())
            .is_ok()
        {
            self.asked = Some(question);
        }
    }

    /// Keeps a page it sent.
    fn take_page(&mut self, answers: u64, page: &str) {
        self.metrics = Some(Exposition::parse(page));
        if self.asked.is_some_and(|asked| answers >= asked) {
            self.asked = None;
        }
    }
}

struct Supervisor {
    config: ArbiterConfig,
    hooks: Arc<Hooks>,
    listeners: Vec<Listener>,
    /// `None` in a worker, which takes its own.
    signals: Option<SignalFd>,
    reload: Option<Reload>,
    workers: Vec<WorkerProcess>,
    /// Bumped by each reload; workers of older generations are retired
    /// once enough of the newest are ready.
    generation: u64,
    /// Workers wanted (`TTIN`/`TTOU` move it).
    target: usize,
    stopping: Option<Stopping>,
    boot_failures: u32,
    next_spawn: Instant,
    exit_code: i32,
    /// The `--metrics-bind` endpoint.
    metrics: Option<Endpoint>,
    /// Workers replaced, by reason.
    restarts: BTreeMap<&'static str, u64>,
}

impl Supervisor {
    // ANCHOR: supervise
    fn supervise(&mut self, app: &dyn Fn() -> SharedApp) {
        loop {
            self.wait();
            for signal in self.take_signals() {
                self.handle(signal);
            }
            self.read_beats();
            self.reap();
            self.serve_metrics();
            if let Some(stopping) = self.stopping {
                if self.workers.is_empty() {
                    return;
                }
                if Instant::now() >= stopping.deadline {
                    self.kill_stragglers();
                }
                continue;
            }
            self.abort_stuck();
            self.kill_overdue();
            self.manage(app);
        }
    }
    // ANCHOR_END: supervise

    /// Waits for a signal, a worker's message or a scrape, or until the
    /// next round.
    fn wait(&self) {
        let mut fds: Vec<PollFd<'_>> = self
            .signals
            .iter()
            .map(AsFd::as_fd)
            .chain(self.workers.iter().map(|w| w.channel.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let mut wait = round(self.config.timeout);
        if let Some(endpoint) = &self.metrics {
            fds.extend(endpoint.poll_fds());
            if let Some(deadline) = endpoint.next_deadline() {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
        }
        // Rounded up, so a deadline is not polled for in a loop of zeros.
        let millis = wait.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis as u64).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
    }

    // ANCHOR: serve_metrics
    /// Moves scrapes on: asks the workers for their pages when one arrives,
    /// and answers once all have answered or [`COLLECT_WAIT`] has passed.
    ///
    /// [`COLLECT_WAIT`]: crate::metrics::endpoint::COLLECT_WAIT
    fn serve_metrics(&mut self) {
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        if let Some(question) = endpoint.progress() {
            for worker in &mut self.workers {
                if worker.ready && worker.retiring.is_none() && worker.aborted.is_none() {
                    worker.ask(question);
                }
            }
        }
        let answered = self.workers.iter().all(|worker| worker.asked.is_none());
        if endpoint.collecting.is_some() && (answered || endpoint.collection_overdue()) {
            let page = self.page();
            for worker in &mut self.workers {
                worker.asked = None;
            }
            if let Some(endpoint) = &mut self.metrics {
                endpoint.answer(&page);
            }
        }
    }

    /// The server's page: every worker's metrics and what exited workers
    /// counted, summed, with the arbiter's own.
    fn page(&self) -> String {
        let mut page = self
            .metrics
            .as_ref()
            .map(|endpoint| endpoint.retired.clone())
            .unwrap_or_default();
        for metrics in self.workers.iter().filter_map(|w| w.metrics.as_ref()) {
            page.add(metrics);
        }
        page.set(
            "turnstile_workers",
            Kind::Gauge,
            "Worker processes alive.",
            &[],
            self.workers.len() as f64,
        );
        for (reason, count) in &self.restarts {
            page.set(
                "turnstile_worker_restarts_total",
                Kind::Counter,
                "Workers replaced, by reason: exit (it died), timeout, max_requests, reload.",
                &[("reason", reason)],
                *count as f64,
            );
        }
        // The whole server's figures: the arbiter, its workers, and the CPU
        // time of the workers already reaped, so it never goes backwards.
        let mut total = process::Stats::of(std::process::id()).unwrap_or_default();
        for worker in &self.workers {
            if let Some(stats) = process::Stats::of(worker.worker.pid) {
                total.cpu_seconds += stats.cpu_seconds;
                total.resident_bytes += stats.resident_bytes;
                total.open_fds += stats.open_fds;
            }
        }
        total.cpu_seconds += process::Stats::reaped_children_cpu_seconds();
        total.add_to(&mut page);
        page.render()
    }
    // ANCHOR_END: serve_metrics

    fn take_signals(&self) -> Vec<Signal> {
        let mut signals = Vec::new();
        while let Some(Ok(Some(info))) = self.signals.as_ref().map(SignalFd::read_signal) {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                signals.push(signal);
            }
        }
        signals
    }

    fn handle(&mut self, signal: Signal) {
        let now = Instant::now();
        match signal {
            Signal::SIGTERM if self.stopping.is_none() => {
                log::info(format_args!("TERM: stopping gracefully"));
                self.stopping = Some(Stopping {
                    quick: false,
                    deadline: now + self.config.graceful_timeout,
                });
                for worker in &mut self.workers {
                    worker.retire();
                }
            }
            Signal::SIGINT | Signal::SIGQUIT if !self.stopping.is_some_and(|s| s.quick) => {
                log::info(format_args!("{}: stopping quickly", signal.as_str()));
                self.stop_quickly();
            }
            Signal::SIGHUP if self.stopping.is_none() => self.reload(),
            Signal::SIGTTIN => {
                self.target += 1;
                log::info(format_args!("TTIN: now {} worker(s)", self.target));
            }
            Signal::SIGTTOU => {
                self.target = (self.target - 1).max(1);
                log::info(format_args!("TTOU: now {} worker(s)", self.target));
            }
            Signal::SIGUSR1 => {
                if let Err(error) = log::reopen() {
                    eprintln!("turnstile: cannot reopen the log file: {error}");
                }
                log::info(format_args!("USR1: log files reopened"));
                for worker in &self.workers {
                    worker.signal(Signal::SIGUSR1);
                }
            }
            // CHLD: reaping happens every round.
            _ => {}
        }
    }

    fn reload(&mut self) {
        if let Some(reload) = &mut self.reload {
            match reload() {
                Ok(config) => {
                    if config.binds != self.config.binds
                        || config.backlog != self.config.backlog
                        || config.metrics_bind != self.config.metrics_bind
                    {
                        log::warning(format_args!(
                            "HUP: the binds, backlog and metrics bind are kept; restart to change them"
                        ));
                    }
                    self.config = ArbiterConfig {
                        binds: self.config.binds.clone(),
                        backlog: self.config.backlog,
                        metrics_bind: self.config.metrics_bind.clone(),
                        ..config
                    };
                }
                Err(error) => {
                    log::warning(format_args!(
                        "HUP: the settings are not valid, nothing reloaded: {error}"
                    ));
                    return;
                }
            }
        }
        let _ = log::reopen();
        self.generation += 1;
        self.target = self.config.workers.max(1);
        log::info(format_args!(
            "HUP: reloading: starting {} new worker(s)",
            self.target
        ));
    }

    fn read_beats(&mut self) {
        let now = Instant::now();
        for worker in &mut self.workers {
            for beat in worker.read_messages() {
                worker.last_beat = now;
                match beat {
                    Beat::Metrics { answers, page } => worker.take_page(answers, &page),
                    Beat::Ready => {
                        worker.ready = true;
                        self.boot_failures = 0;
                        log::info(format_args!(
                            "worker {} (pid {}) ready",
                            worker.worker.id, worker.worker.pid
                        ));
                    }
                    Beat::Alive { oldest } => worker.oldest = oldest,
                    Beat::Retiring => {
                        // It retires itself (max requests): replace it now,
                        // while it drains.
                        worker.retiring.get_or_insert(now);
                        worker.replaced_for.get_or_insert("max_requests");
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, WorkerExit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, WorkerExit::Signal(signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            // Not one of ours (the arbiter may be pid 1 in a container).
            let Some(index) = self.workers.iter().position(|w| w.pid() == pid) else {
                continue;
            };
            let mut worker = self.workers.remove(index);
            // ANCHOR: fold
            // Its last messages (the page it sent as it exited) are still
            // in the socket.
            for beat in worker.read_messages() {
                if let Beat::Metrics { answers, page } = beat {
                    worker.take_page(answers, &page);
                }
            }
            if let (Some(endpoint), Some(metrics)) = (&mut self.metrics, &worker.metrics) {
                endpoint.retired.add(&metrics.cumulative());
            }
            // ANCHOR_END: fold
            self.exited(&worker, exit);
            if let Some(child_exit) = &self.hooks.child_exit {
                child_exit(worker.worker, exit);
            }
        }
    }

    fn exited(&mut self, worker: &WorkerProcess, exit: WorkerExit) {
        let Worker { id, pid } = worker.worker;
        let how = match exit {
            WorkerExit::Code(code) => format!("exited with code {code}"),
            WorkerExit::Signal(signal) => match Signal::try_from(signal) {
                Ok(signal) => format!("was killed by {}", signal.as_str()),
                Err(_) => format!("was killed by signal {signal}"),
            },
        };
        if self.stopping.is_none() {
            let reason = match worker.aborted {
                Some(_) => Some("timeout"),
                None if worker.retiring.is_none() => Some("exit"),
                None => worker.replaced_for,
            };
            if let Some(reason) = reason {
                *self.restarts.entry(reason).or_default() += 1;
            }
        }
        if self.stopping.is_some() || (worker.retiring.is_some() && exit == WorkerExit::Code(0)) {
            log::info(format_args!("worker {id} (pid {pid}) {how}"));
            return;
        }
        if worker.ready {
            log::warning(format_args!("worker {id} (pid {pid}) {how}; replacing it"));
            return;
        }
        // It died while booting.
        let code = match exit {
            WorkerExit::Code(code @ (WORKER_BOOT_ERROR | APP_LOAD_ERROR)) => Some(code),
            _ => None,
        };
        let old_generation_serving = self
            .workers
            .iter()
            .any(|w| w.generation < self.generation && w.ready && w.retiring.is_none());
        if code.is_some() && old_generation_serving {
            log::critical(format_args!(
                "worker {id} (pid {pid}) {how} while booting: the reload failed; \
                 the workers from before it keep serving"
            ));
            self.abandon_reload();
            return;
        }
        self.boot_failures += 1;
        if let Some(code) = code {
            log::critical(format_args!(
                "worker {id} (pid {pid}) {how} while booting: {}; stopping",
                if code == APP_LOAD_ERROR {
                    "the application failed to load"
                } else {
                    "the worker failed to boot"
                }
            ));
            self.halt(code);
        } else if self.boot_failures >= MAX_BOOT_FAILURES {
            log::critical(format_args!(
                "worker {id} (pid {pid}) {how} while booting, the {MAX_BOOT_FAILURES}th in a row; stopping"
            ));
            self.halt(WORKER_BOOT_ERROR);
        } else {
            let delay = Duration::from_millis(100) * 2u32.pow(self.boot_failures);
            log::warning(format_args!(
                "worker {id} (pid {pid}) {how} while booting; retrying in {} ms",
                delay.as_millis()
            ));
            self.next_spawn = Instant::now() + delay;
        }
    }

    /// Goes back to the generation before the reload, and retires the
    /// workers started for it.
    fn abandon_reload(&mut self) {
        let failed = self.generation;
        self.generation = self
            .workers
            .iter()
            .filter(|w| w.generation < failed)
            .map(|w| w.generation)
            .max()
            .unwrap_or(0);
        for worker in self.workers.iter_mut().filter(|w| w.generation == failed) {
            worker.retire();
        }
    }

    fn halt(&mut self, code: i32) {
        self.exit_code = code;
        self.stop_quickly();
    }

    fn stop_quickly(&mut self) {
        self.stopping = Some(Stopping {
            quick: true,
            deadline: Instant::now() + self.config.graceful_timeout,
        });
        for worker in &self.workers {
            worker.signal(Signal::SIGQUIT);
        }
    }

    /// Kills the workers still running at the stop's deadline.
    fn kill_stragglers(&mut self) {
        let left = self.workers.iter().filter(|w| !w.killed).count();
        if left == 0 {
            return;
        }
        log::warning(format_args!(
            "{left} worker(s) still running after graceful_timeout: killing them"
        ));
        for worker in &mut self.workers {
            worker.kill();
        }
    }

    /// Aborts the workers past their timeout, and kills those that did not
    /// exit once aborted.
    fn abort_stuck(&mut self) {
        let timeout = self.config.timeout;
        if timeout.is_zero() {
            return;
        }
        let now = Instant::now();
        for worker in &mut self.workers {
            if let Some(aborted) = worker.aborted {
                if now >= aborted + ABORT_GRACE {
                    worker.kill();
                }
                continue;
            }
            let silent = now - worker.last_beat;
            let stuck = worker
                .oldest
                .as_ref()
                .map(|(age, request)| (*age + silent, request))
                .filter(|(age, _)| *age > timeout);
            let Worker { id, pid } = worker.worker;
            if let Some((age, request)) = stuck {
                log::critical(format_args!(
                    "WORKER TIMEOUT: worker {id} (pid {pid}) has served {request} for {:.1} s \
                     (timeout {} s); aborting it",
                    age.as_secs_f64(),
                    timeout.as_secs()
                ));
            } else if silent > timeout {
                log::critical(format_args!(
                    "WORKER TIMEOUT: worker {id} (pid {pid}) sent no heartbeat for {:.1} s \
                     (timeout {} s); aborting it",
                    silent.as_secs_f64(),
                    timeout.as_secs()
                ));
            } else {
                continue;
            }
            worker.aborted = Some(now);
            worker.signal(Signal::SIGABRT);
        }
    }

    /// Kills retiring workers still draining after `graceful_timeout`.
    fn kill_overdue(&mut self) {
        let limit = self.config.graceful_timeout;
        for worker in &mut self.workers {
            if worker.retiring.is_some_and(|since| since.elapsed() > limit) && !worker.killed {
                log::warning(format_args!(
                    "worker {} (pid {}) still draining after graceful_timeout; killing it",
                    worker.worker.id, worker.worker.pid
                ));
                worker.kill();
            }
        }
    }

    /// Forks or retires workers until the newest generation has `target`
    /// serving, and retires the older generations once it has.
    fn manage(&mut self, app: &dyn Fn() -> SharedApp) {
        let generation = self.generation;
        let current = |w: &&WorkerProcess| w.generation == generation && w.retiring.is_none();
        let serving = self.workers.iter().filter(current).count();
        if serving > self.target {
            // The oldest go first, as in Gunicorn.
            let extra = serving - self.target;
            for worker in self
                .workers
                .iter_mut()
                .filter(|w| w.generation == generation && w.retiring.is_none())
                .take(extra)
            {
                worker.retire();
            }
        }
        let ready = self
            .workers
            .iter()
            .filter(current)
            .filter(|w| w.ready)
            .count();
        if ready >= self.target {
            for worker in self
                .workers
                .iter_mut()
                .filter(|w| w.generation < generation)
            {
                worker.replaced_for.get_or_insert("reload");
                worker.retire();
            }
        }
        if serving < self.target && Instant::now() >= self.next_spawn {
            for _ in serving..self.target {
                if let Err(error) = self.spawn(app) {
                    log::critical(format_args!("cannot fork a worker: {error}"));
                    if self.stopping.is_some() {
                        return;
                    }
                    self.next_spawn = Instant::now() + Duration::from_secs(1);
                    return;
                }
            }
        }
    }

    /// Forks one worker.
    fn spawn(&mut self, app: &dyn Fn() -> SharedApp) -> io::Result<()> {
        let id = (1..)
            .find(|id| self.workers.iter().all(|w| w.worker.id != *id))
            .expect("a free worker number");
        Hooks::run(&self.hooks.pre_fork, Worker { id, pid: 0 });
        // ANCHOR: fork
        let threads = thread_count();
        if threads > 1 {
            log::critical(format_args!(
                "the arbiter has {threads} threads, so it cannot fork safely; something started \
                 a thread before the fork (in a hook, or while preloading the application): \
                 start it in post_fork or in a PerProcess resource instead"
            ));
            self.halt(1);
            return Err(io::Error::other("the arbiter is not single-threaded"));
        }
        let (channel, to_arbiter) = UnixStream::pair()?;
        channel.set_nonblocking(true)?;
        // SAFETY: the arbiter has one thread (checked just above), so the
        // child is a complete copy: no lock is held by a thread that does
        // not exist there. The child never returns into the arbiter's
        // code: `become_worker` ends in `process::exit`.
        #[allow(unsafe_code)]
        let forked = unsafe { fork() }?;
        // ANCHOR_END: fork
        match forked {
            ForkResult::Parent { child } => {
                drop(to_arbiter);
                let pid = child.as_raw() as u32;
                log::info(format_args!("booting worker {id} (pid {pid})"));
                let now = Instant::now();
                self.workers.push(WorkerProcess {
                    worker: Worker { id, pid },
                    generation: self.generation,
                    channel,
                    unread: Vec::new(),
                    ready: false,
                    last_beat: now,
                    oldest: None,
                    retiring: None,
                    aborted: None,
                    killed: false,
                    replaced_for: None,
                    metrics: None,
                    asked: None,
                });
                Ok(())
            }
            ForkResult::Child => {
                drop(channel);
                self.become_worker(id, to_arbiter, app)
            }
        }
    }

    /// In the child: lets go of what belongs to the arbiter, and runs the
    /// worker.
    fn become_worker(&mut self, id: u32, to_arbiter: UnixStream, app: &dyn Fn() -> SharedApp) -> ! {
        // The other workers' sockets, the arbiter's signals and its metrics
        // endpoint are not ours.
        self.workers.clear();
        self.signals = None;
        self.metrics = None;
        let setup = WorkerSetup {
            worker: Worker {
                id,
                pid: std::process::id(),
            },
            arbiter: nix::unistd::getppid(),
            to_arbiter,
            listeners: std::mem::take(&mut self.listeners),
            config: self.config.clone(),
            hooks: self.hooks.clone(),
        };
        worker::run(setup, app)
    }
}

/// The threads of this process, from `/proc` (1 when it cannot be read).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
