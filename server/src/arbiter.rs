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
//! metrics endpoint's sockets, at least once a second, turns what it found
//! into events for the [`Supervisor`](crate::supervisor), which decides,
//! and does what it was told: fork, signal, reload, upgrade, exit. It forks
//! the first workers at once.
//!
//! | signal | the arbiter |
//! |---|---|
//! | `TERM` | stops gracefully: closes its copies of the listeners; workers take what the listeners queued, close them, and finish their requests (each open connection's next response says `close`), within `graceful_timeout`; exit 0 |
//! | `INT`, `QUIT` | stops quickly: workers exit without draining |
//! | `HUP` | reloads: re-reads the settings, forks new workers, and retires the old ones once the new are ready; if the new cannot boot, the old keep serving |
//! | `TTIN`, `TTOU` | one worker more, or one fewer (never below one) |
//! | `WINCH` | retires every worker and stays (after a `USR2`, before the old arbiter's `TERM`) |
//! | `USR1` | reopens the log file, and has every worker do the same |
//! | `USR2` | upgrades: starts the binary again by the path it was started with, handing it the listeners; the old arbiter serves on until told `TERM` (or `WINCH`) |
//! | `CHLD` | reaps the workers that exited (and replaces them) |
//! | `ALRM`, `PROF`, `VTALRM`, `IO`, `PWR`, `STKFLT`, `XCPU`, `XFSZ` | logged and ignored |
//!
//! Signals that report a fault (`SEGV`, `BUS`, `ILL`, `FPE`, `ABRT`, `SYS`,
//! `TRAP`) stay fatal, and real-time signals keep their default.
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

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getppid};
use turnstile_core::{Application, Completion, Panicked, Request, SharedApp, Worker};

use crate::forwarded::TrustedProxies;
use crate::hooks::{Hooks, RequestInfo, WorkerExit};
use crate::http1::conn::ConnConfig;
use crate::listen::{DEFAULT_BACKLOG, Listener};
use crate::prometheus::endpoint::Endpoint;
use crate::prometheus::exposition::{Exposition, Kind};
use crate::prometheus::process;
use crate::protocol::{APP_LOAD_ERROR, Beat, round};
use crate::supervisor::{Action, Ask, Event, Level, Settings, Sig, Supervisor, Upgrade};
use crate::worker::{self, WorkerConfig, WorkerSetup};
use crate::{InFlight, error_log};

/// The environment variables an arbiter hands the one its `USR2` starts:
/// the listening descriptors, the metrics endpoint's, and its own pid.
const LISTEN_FDS_VAR: &str = "TURNSTILE_LISTEN_FDS";
const METRICS_FD_VAR: &str = "TURNSTILE_METRICS_FD";
const PARENT_VAR: &str = "TURNSTILE_UPGRADED_FROM";

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
    /// ([`crate::prometheus::install`]).
    pub metrics: bool,
    /// `--pid`: the file the arbiter writes its pid to (an upgraded one
    /// writes `FILE.2` until the arbiter before it is gone).
    pub pidfile: Option<PathBuf>,
    /// `--reuse-port`: TCP listeners set `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// `--name`: the processes' titles in `ps` become `turnstile: arbiter
    /// [NAME]` and `turnstile: worker [NAME]`.
    pub name: Option<String>,
    /// `--user` and `--group`: what the workers run as (ids), switched to as
    /// each boots; the arbiter keeps its own.
    pub user: Option<u32>,
    /// See `user`.
    pub group: Option<u32>,
    /// `--env`: variables set in the arbiter's environment before anything
    /// else runs, so the application and the workers see them.
    pub env: Vec<(String, String)>,
    /// `--capture-output`: standard output and error go to the error log
    /// once the arbiter has announced where it listens.
    pub capture_output: bool,
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
            pidfile: None,
            reuse_port: false,
            name: None,
            user: None,
            group: None,
            env: Vec::new(),
            capture_output: false,
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
    /// [`WORKER_BOOT_ERROR`](crate::WORKER_BOOT_ERROR) or [`APP_LOAD_ERROR`] when workers cannot
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
        // Before anything changes them: what `USR2` starts again.
        let start = StartContext::now();
        let inherited = Inherited::take();
        for (name, value) in &self.config.env {
            // SAFETY: the arbiter has one thread here (run's contract), so
            // nothing reads the environment as it changes.
            #[allow(unsafe_code)]
            unsafe {
                std::env::set_var(name, value);
            }
        }
        if let Some(name) = &self.config.name {
            crate::process_setup::set_title(&format!("turnstile: arbiter [{name}]"));
        }
        let signals = match block_signals() {
            Ok(signals) => signals,
            Err(error) => {
                error_log::critical(format_args!("cannot take the signals: {error}"));
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
                    error_log::critical(format_args!(
                        "the application failed to load: {}",
                        Panicked::from_payload(&*panic).message()
                    ));
                    return APP_LOAD_ERROR;
                }
            }
        } else {
            None
        };
        let listeners = match bind(&self.config, &inherited) {
            Ok(listeners) => listeners,
            Err(error) => {
                error_log::critical(format_args!("{error}"));
                return 2;
            }
        };
        let endpoint = match (&inherited.metrics, self.config.metrics_bind.as_deref()) {
            (Some(listener), _) => listener
                .try_clone()
                .and_then(Endpoint::from_listener)
                .map(Some),
            (None, None) => Ok(None),
            (None, Some(addr)) => Endpoint::bind(addr).map(Some),
        };
        let endpoint = match endpoint {
            Ok(endpoint) => endpoint,
            Err(error) => {
                error_log::critical(format_args!(
                    "cannot serve metrics on {}: {error}",
                    self.config.metrics_bind.as_deref().unwrap_or_default()
                ));
                return 2;
            }
        };
        drop(inherited.metrics);
        let upgrade = Upgrade {
            child: None,
            parent: inherited.parent,
        };
        let pidfile = self
            .config
            .pidfile
            .clone()
            .map(|path| PidFile::new(path, upgrade));
        if let Some(pidfile) = &pidfile
            && let Err(error) = pidfile.write()
        {
            error_log::critical(format_args!(
                "cannot write the pid file {}: {error}",
                pidfile.current().display()
            ));
            return 2;
        }
        let addresses: Vec<String> = listeners.iter().map(ToString::to_string).collect();
        // Written, not printed: a closed standard output (the terminal or
        // the pipe that started the arbiter before an upgrade is gone) is
        // no reason to stop.
        let mut stdout = io::stdout().lock();
        if let Some(addr) = endpoint.as_ref().and_then(|e| e.local_addr().ok()) {
            let _ = writeln!(stdout, "turnstile: metrics on http://{addr}/metrics");
        }
        for address in &addresses {
            let _ = writeln!(stdout, "turnstile: listening on {address}");
        }
        let _ = stdout.flush();
        drop(stdout);
        if self.config.capture_output
            && let Err(error) = error_log::capture_output()
        {
            error_log::warning(format_args!(
                "cannot send the output to the log file: {error}"
            ));
        }
        error_log::info(format_args!(
            "arbiter started (pid {}): {} worker(s) of {} thread(s) on {}{}",
            std::process::id(),
            self.config.workers,
            self.config.threads,
            addresses.join(", "),
            match upgrade.parent {
                Some(parent) => format!(", upgrading the arbiter {parent}"),
                None => String::new(),
            }
        ));
        if let Some(when_ready) = &hooks.when_ready {
            when_ready(&addresses);
        }
        let mut shell = Shell {
            supervisor: Supervisor::new(settings(&self.config), upgrade),
            config: self.config,
            hooks,
            listeners,
            signals: Some(signals),
            reload: self.reload,
            links: Vec::new(),
            metrics: endpoint,
            start,
            pidfile,
        };
        let make_app = || match &preloaded {
            Some(app) => app.clone(),
            None => SharedApp::new(app()),
        };
        let code = shell.supervise(&make_app);
        if let Some(pidfile) = &shell.pidfile {
            pidfile.remove();
        }
        if let Some(on_exit) = &shell.hooks.on_exit {
            on_exit();
        }
        code
    }
}

/// The supervisor's settings out of the arbiter's.
fn settings(config: &ArbiterConfig) -> Settings {
    Settings {
        workers: config.workers,
        timeout: config.timeout,
        graceful_timeout: config.graceful_timeout,
    }
}

/// How this process was started, for `USR2` to start it again: by the
/// path it was started with, so that a replaced file is the one that runs.
#[derive(Debug)]
struct StartContext {
    argv: Vec<OsString>,
    cwd: Option<PathBuf>,
}

impl StartContext {
    fn now() -> Self {
        Self {
            argv: std::env::args_os().collect(),
            cwd: std::env::current_dir().ok(),
        }
    }
}

/// What the arbiter before this one handed over (`USR2`), taken out of the
/// environment so that workers and the application do not see it.
#[derive(Debug, Default)]
struct Inherited {
    listeners: Vec<RawFd>,
    metrics: Option<TcpListener>,
    parent: Option<u32>,
}

impl Inherited {
    fn take() -> Self {
        let vars = [LISTEN_FDS_VAR, METRICS_FD_VAR, PARENT_VAR].map(|name| {
            let value = std::env::var(name).ok();
            if value.is_some() {
                // SAFETY: the arbiter has one thread here (run's contract),
                // so nothing reads the environment as it changes.
                #[allow(unsafe_code)]
                unsafe {
                    std::env::remove_var(name);
                }
            }
            value
        });
        let [fds, metrics, parent] = vars;
        let number = |text: &str| text.trim().parse::<RawFd>().ok().filter(|fd| *fd >= 0);
        Self {
            listeners: fds
                .iter()
                .flat_map(|fds| fds.split(','))
                .filter_map(number)
                .collect(),
            metrics: metrics.as_deref().and_then(number).and_then(|fd| {
                // Owned only once it is known to be open.
                Path::new(&format!("/proc/self/fd/{fd}")).exists().then(|| {
                    // SAFETY: the descriptor is open (checked) and was
                    // handed to this process to own by the arbiter before
                    // it; nothing else here uses it.
                    #[allow(unsafe_code)]
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    let _ = fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
                    TcpListener::from(owned)
                })
            }),
            parent: parent.and_then(|pid| pid.trim().parse().ok()),
        }
    }
}

/// Takes the listeners the arbiter before this one passed, or systemd's,
/// or binds the configured ones.
fn bind(config: &ArbiterConfig, inherited: &Inherited) -> Result<Vec<Listener>, String> {
    if !inherited.listeners.is_empty() {
        return inherited
            .listeners
            .iter()
            .map(|fd| {
                Listener::inherit_owned(*fd)
                    .map_err(|e| format!("cannot use the socket the arbiter before passed: {e}"))
            })
            .collect();
    }
    let from_systemd = Listener::from_systemd()
        .map_err(|e| format!("cannot use the sockets systemd passed: {e}"))?;
    if !from_systemd.is_empty() {
        return Ok(from_systemd);
    }
    config
        .binds
        .iter()
        .map(|spec| {
            Listener::bind_reusing(spec, config.backlog, config.reuse_port)
                .map_err(|e| format!("cannot listen on {spec}: {e}"))
        })
        .collect()
}

/// The signals the arbiter takes: every one whose default would end or
/// stop it, but those that report a fault. Blocked, so that they queue on
/// a `signalfd` instead of interrupting; workers set their own mask.
const TAKEN: [Signal; 18] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
];

fn block_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in TAKEN {
        mask.add(signal);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// A signal, as the supervisor knows it.
fn sig(signal: Signal) -> Sig {
    match signal {
        Signal::SIGTERM => Sig::Term,
        Signal::SIGINT => Sig::Int,
        Signal::SIGQUIT => Sig::Quit,
        Signal::SIGHUP => Sig::Hup,
        Signal::SIGTTIN => Sig::Ttin,
        Signal::SIGTTOU => Sig::Ttou,
        Signal::SIGUSR1 => Sig::Usr1,
        Signal::SIGUSR2 => Sig::Usr2,
        Signal::SIGWINCH => Sig::Winch,
        Signal::SIGCHLD => Sig::Chld,
        other => Sig::Other(other.as_str()),
    }
}

/// The pid file (`--pid`), with Gunicorn's names: an upgraded arbiter
/// writes `FILE.2`, and renames it `FILE` once the arbiter before it is
/// gone.
#[derive(Debug)]
struct PidFile {
    path: PathBuf,
    provisional: bool,
}

impl PidFile {
    fn new(path: PathBuf, upgrade: Upgrade) -> Self {
        Self {
            path,
            provisional: upgrade.parent.is_some(),
        }
    }

    fn current(&self) -> PathBuf {
        if self.provisional {
            let mut name = self.path.clone().into_os_string();
            name.push(".2");
            PathBuf::from(name)
        } else {
            self.path.clone()
        }
    }

    fn write(&self) -> io::Result<()> {
        // Written aside and renamed, so a reader never sees half a pid.
        let path = self.current();
        let mut aside = path.clone().into_os_string();
        aside.push(".tmp");
        std::fs::write(&aside, format!("{}\n", std::process::id()))?;
        std::fs::rename(&aside, &path)
    }

    fn promote(&mut self) -> io::Result<()> {
        let provisional = self.current();
        self.provisional = false;
        std::fs::rename(provisional, &self.path)
    }

    /// Removes it if it still names this process (an upgraded arbiter may
    /// have taken the name since).
    fn remove(&self) {
        let path = self.current();
        let ours = std::fs::read_to_string(&path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A worker process, as the shell knows it: its socket and its pages.
struct WorkerLink {
    worker: Worker,
    /// Its socket: heartbeats and pages in, questions out. Non-blocking.
    channel: UnixStream,
    unread: Vec<u8>,
    /// Its latest page of metrics.
    metrics: Option<Exposition>,
    /// The arbiter's question it has not answered yet.
    asked: Option<u64>,
}

impl WorkerLink {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.worker.pid as i32)
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

/// The arbiter's hands: it waits, reads, forks and signals, and the
/// supervisor decides.
struct Shell {
    supervisor: Supervisor,
    config: ArbiterConfig,
    hooks: Arc<Hooks>,
    listeners: Vec<Listener>,
    /// `None` in a worker, which takes its own.
    signals: Option<SignalFd>,
    reload: Option<Reload>,
    links: Vec<WorkerLink>,
    /// The `--metrics-bind` endpoint.
    metrics: Option<Endpoint>,
    start: StartContext,
    pidfile: Option<PidFile>,
}

impl Shell {
    // ANCHOR: supervise
    /// Runs until the supervisor says exit, and returns the code.
    fn supervise(&mut self, app: &dyn Fn() -> SharedApp) -> i32 {
        // The first round is now: the first workers are forked at once.
        let mut events = VecDeque::from([Event::Round]);
        loop {
            while let Some(event) = events.pop_front() {
                for action in self.supervisor.on(Instant::now(), event) {
                    if let Some(code) = self.act(action, app, &mut events) {
                        return code;
                    }
                }
            }
            self.wait();
            events.extend(self.take_signals().into_iter().map(Event::Signal));
            events.extend(self.read_beats());
            events.extend(self.reap());
            if let Some(parent) = self.supervisor.upgrade().parent
                && getppid().as_raw() as u32 != parent
            {
                events.push_back(Event::ParentGone);
            }
            self.serve_metrics();
            events.push_back(Event::Round);
        }
    }
    // ANCHOR_END: supervise

    /// Does what the supervisor decided; what it leads to (a fork's pid, a
    /// reload's settings) is a new event. Returns the exit code to exit
    /// with.
    fn act(
        &mut self,
        action: Action,
        app: &dyn Fn() -> SharedApp,
        events: &mut VecDeque<Event>,
    ) -> Option<i32> {
        match action {
            Action::Spawn { id } => events.push_back(self.spawn(id, app)),
            Action::Ask { pid, ask } => {
                let signal = match ask {
                    Ask::Retire => Signal::SIGTERM,
                    Ask::Quit => Signal::SIGQUIT,
                    Ask::Abort => Signal::SIGABRT,
                    Ask::Kill => Signal::SIGKILL,
                    Ask::ReopenLogs => Signal::SIGUSR1,
                };
                let _ = kill(Pid::from_raw(pid as i32), signal);
            }
            Action::Log(level, message) => match level {
                Level::Info => error_log::info(format_args!("{message}")),
                Level::Warning => error_log::warning(format_args!("{message}")),
                Level::Critical => error_log::critical(format_args!("{message}")),
            },
            Action::ReopenLogs => {
                if let Err(error) = error_log::reopen() {
                    eprintln!("turnstile: cannot reopen the log file: {error}");
                }
            }
            Action::Reload => events.push_back(Event::Reloaded(self.reload())),
            Action::Upgrade => events.push_back(match self.upgrade() {
                Ok(pid) => Event::Upgraded { pid },
                Err(error) => Event::UpgradeFailed {
                    error: error.to_string(),
                },
            }),
            Action::CloseListeners { unlink } => {
                for listener in self.listeners.drain(..) {
                    if unlink {
                        listener.remove_socket_file();
                    }
                }
            }
            Action::RestorePidFile => {
                if let Some(pidfile) = &self.pidfile
                    && let Err(error) = pidfile.write()
                {
                    error_log::warning(format_args!("cannot write the pid file again: {error}"));
                }
            }
            Action::PromotePidFile => {
                if let Some(pidfile) = &mut self.pidfile
                    && let Err(error) = pidfile.promote()
                {
                    error_log::warning(format_args!("cannot rename the pid file: {error}"));
                }
            }
            Action::Exit(code) => return Some(code),
        }
        None
    }

    /// Waits for a signal, a worker's message or a scrape, or until the
    /// next round.
    fn wait(&self) {
        let mut fds: Vec<PollFd<'_>> = self
            .signals
            .iter()
            .map(AsFd::as_fd)
            .chain(self.links.iter().map(|w| w.channel.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let now = Instant::now();
        let mut wait = round(self.config.timeout);
        if let Some(deadline) = self.supervisor.next_deadline() {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        if let Some(endpoint) = &self.metrics {
            fds.extend(endpoint.poll_fds());
            if let Some(deadline) = endpoint.next_deadline() {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
        }
        // Rounded up, so a deadline is not polled for in a loop of zeros.
        let millis = wait.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis as u64).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
    }

    fn take_signals(&self) -> Vec<Sig> {
        let mut signals = Vec::new();
        while let Some(Ok(Some(info))) = self.signals.as_ref().map(SignalFd::read_signal) {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                signals.push(sig(signal));
            }
        }
        signals
    }

    /// The workers' messages: pages are kept here, the rest go to the
    /// supervisor.
    fn read_beats(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for link in &mut self.links {
            for beat in link.read_messages() {
                if let Beat::Metrics { answers, page } = &beat {
                    link.take_page(*answers, page);
                }
                events.push(Event::Message {
                    pid: link.worker.pid,
                    beat,
                });
            }
        }
        events
    }

    fn reap(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, WorkerExit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, WorkerExit::Signal(signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return events,
                Ok(_) => continue,
            };
            events.push(Event::Exited {
                pid: pid.as_raw() as u32,
                exit,
            });
            let Some(index) = self.links.iter().position(|w| w.pid() == pid) else {
                continue;
            };
            let mut link = self.links.remove(index);
            // ANCHOR: fold
            // Its last messages (the page it sent as it exited) are still
            // in the socket.
            for beat in link.read_messages() {
                if let Beat::Metrics { answers, page } = beat {
                    link.take_page(answers, &page);
                }
            }
            if let (Some(endpoint), Some(metrics)) = (&mut self.metrics, &link.metrics) {
                endpoint.retired.add(&metrics.cumulative());
            }
            // ANCHOR_END: fold
            if let Some(child_exit) = &self.hooks.child_exit {
                child_exit(link.worker, exit);
            }
        }
    }

    /// Re-reads the settings, keeping what a reload cannot change.
    fn reload(&mut self) -> Result<Settings, String> {
        let _ = error_log::reopen();
        let Some(reload) = &mut self.reload else {
            return Ok(settings(&self.config));
        };
        let config = reload()?;
        if config.binds != self.config.binds
            || config.backlog != self.config.backlog
            || config.metrics_bind != self.config.metrics_bind
            || config.pidfile != self.config.pidfile
        {
            error_log::warning(format_args!(
                "HUP: the binds, backlog, metrics bind and pid file are kept; restart to change them"
            ));
        }
        self.config = ArbiterConfig {
            binds: self.config.binds.clone(),
            backlog: self.config.backlog,
            metrics_bind: self.config.metrics_bind.clone(),
            pidfile: self.config.pidfile.clone(),
            ..config
        };
        Ok(settings(&self.config))
    }

    // ANCHOR: upgrade
    /// Starts the binary again, by the path and arguments it was started
    /// with, handing it the listening sockets (the metrics endpoint's too).
    /// It starts as this arbiter's child, with an empty signal mask (the
    /// standard library's spawn resets it before `exec`).
    fn upgrade(&mut self) -> io::Result<u32> {
        let (program, args) = self
            .start
            .argv
            .split_first()
            .ok_or_else(|| io::Error::other("the arbiter's command line is unknown"))?;
        let passed: Vec<BorrowedFd<'_>> = self
            .listeners
            .iter()
            .map(AsFd::as_fd)
            .chain(self.metrics.as_ref().map(|e| e.listener().as_fd()))
            .collect();
        let listen_fds: Vec<String> = self
            .listeners
            .iter()
            .map(|l| l.as_fd().as_raw_fd().to_string())
            .collect();
        let mut command = Command::new(program);
        command
            .args(args)
            .env(LISTEN_FDS_VAR, listen_fds.join(","))
            .env(PARENT_VAR, std::process::id().to_string())
            // systemd's sockets, if any, are passed as ours.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID");
        if let Some(endpoint) = &self.metrics {
            command.env(METRICS_FD_VAR, endpoint.listener().as_raw_fd().to_string());
        }
        if let Some(cwd) = &self.start.cwd {
            command.current_dir(cwd);
        }
        // Inherited across `exec` only for the spawn.
        for fd in &passed {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        let spawned = command.spawn();
        for fd in &passed {
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        Ok(spawned?.id())
    }
    // ANCHOR_END: upgrade

    // ANCHOR: serve_metrics
    /// Moves scrapes on: asks the workers for their pages when one arrives,
    /// and answers once all have answered or [`COLLECT_WAIT`] has passed.
    ///
    /// [`COLLECT_WAIT`]: crate::prometheus::endpoint::COLLECT_WAIT
    fn serve_metrics(&mut self) {
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        if let Some(question) = endpoint.progress() {
            for link in &mut self.links {
                if self.supervisor.is_serving(link.worker.pid) {
                    link.ask(question);
                }
            }
        }
        let answered = self.links.iter().all(|link| link.asked.is_none());
        if endpoint.collecting.is_some() && (answered || endpoint.collection_overdue()) {
            let page = self.page();
            for link in &mut self.links {
                link.asked = None;
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
        for metrics in self.links.iter().filter_map(|w| w.metrics.as_ref()) {
            page.add(metrics);
        }
        page.set(
            "turnstile_workers",
            Kind::Gauge,
            "Worker processes alive.",
            &[],
            self.supervisor.worker_count() as f64,
        );
        for (reason, count) in self.supervisor.restarts() {
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
        for link in &self.links {
            if let Some(stats) = process::Stats::of(link.worker.pid) {
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

    /// Forks worker `id`.
    fn spawn(&mut self, id: u32, app: &dyn Fn() -> SharedApp) -> Event {
        Hooks::run(&self.hooks.pre_fork, Worker { id, pid: 0 });
        // ANCHOR: fork
        let threads = thread_count();
        if threads > 1 {
            error_log::critical(format_args!(
                "the arbiter has {threads} threads, so it cannot fork safely; something started \
                 a thread before the fork (in a hook, or while preloading the application): \
                 start it in post_fork or in a PerProcess resource instead"
            ));
            return Event::CannotFork;
        }
        let (channel, to_arbiter) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(error) => return fork_failed(id, &error),
        };
        if let Err(error) = channel.set_nonblocking(true) {
            return fork_failed(id, &error);
        }
        // SAFETY: the arbiter has one thread (checked just above), so the
        // child is a complete copy: no lock is held by a thread that does
        // not exist there. The child never returns into the arbiter's
        // code: `become_worker` ends in `process::exit`.
        #[allow(unsafe_code)]
        let forked = unsafe { fork() };
        // ANCHOR_END: fork
        match forked {
            Err(error) => fork_failed(id, &error),
            Ok(ForkResult::Parent { child }) => {
                drop(to_arbiter);
                let pid = child.as_raw() as u32;
                self.links.push(WorkerLink {
                    worker: Worker { id, pid },
                    channel,
                    unread: Vec::new(),
                    metrics: None,
                    asked: None,
                });
                Event::Forked { id, pid }
            }
            Ok(ForkResult::Child) => {
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
        self.links.clear();
        self.signals = None;
        self.metrics = None;
        let config = &self.config;
        let setup = WorkerSetup {
            worker: Worker {
                id,
                pid: std::process::id(),
            },
            arbiter: nix::unistd::getppid(),
            to_arbiter,
            listeners: std::mem::take(&mut self.listeners),
            config: WorkerConfig {
                threads: config.threads,
                connection: config.connection.clone(),
                trusted_proxies: config.trusted_proxies.clone(),
                timeout: config.timeout,
                graceful_timeout: config.graceful_timeout,
                max_requests: config.max_requests,
                max_requests_jitter: config.max_requests_jitter,
                metrics: config.metrics,
                pages: config.metrics_bind.is_some(),
                name: config.name.clone(),
                user: config.user,
                group: config.group,
            },
            hooks: self.hooks.clone(),
        };
        worker::run(setup, app)
    }
}

fn fork_failed(id: u32, error: &dyn std::fmt::Display) -> Event {
    Event::ForkFailed {
        id,
        error: error.to_string(),
    }
}

/// The threads of this process, from `/proc` (1 when it cannot be read).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}
