//! The arbiter's decisions, without doing any of them.
//!
//! [`Supervisor::on`] is told what happened (a signal, a worker's message
//! or exit, a fork, a round passing) and when, and answers with the
//! [`Action`]s to take: fork, signal, kill, reload, upgrade, log, exit.
//! It does no I/O and reads no clock: the arbiter's shell (`arbiter.rs`)
//! waits, reads and forks, and feeds the results back as events, so that
//! every scenario here is a unit test on a sequence of events.
//!
//! ```text
//! shell:  wait ─► event ─► supervisor.on(now, event) ─► actions ─► do them
//!                   ▲                                                  │
//!                   └──────────── Forked, Reloaded, Upgraded ◄─────────┘
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::hooks::WorkerExit;
use crate::protocol::{APP_LOAD_ERROR, Beat, WORKER_BOOT_ERROR};

/// Workers that die before they are ready, in a row, before the arbiter
/// gives up rather than fork in a loop.
pub(crate) const MAX_BOOT_FAILURES: u32 = 5;
/// Why a worker is replaced: it died unasked, it was aborted for its
/// timeout, it served `max_requests`, or a reload replaced it.
pub(crate) const RESTART_REASONS: [&str; 4] = ["exit", "timeout", "max_requests", "reload"];
/// How long an aborted worker gets to report its stuck request before it
/// is killed.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How long the arbiter waits before forking again after a fork failed.
const FORK_RETRY: Duration = Duration::from_secs(1);

/// The signals an arbiter is sent, by what they ask of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sig {
    Term,
    Int,
    Quit,
    Hup,
    Ttin,
    Ttou,
    Usr1,
    Usr2,
    Winch,
    Chld,
    /// Any other signal that reached the arbiter (by its name).
    Other(&'static str),
}

/// What the arbiter asks of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `TERM`: stop accepting, finish, exit.
    Retire,
    /// `QUIT`: exit at once.
    Quit,
    /// `ABRT`: report the stuck request and exit.
    Abort,
    /// `KILL`.
    Kill,
    /// `USR1`: reopen the log files.
    ReopenLogs,
}

/// A message's urgency, for the error log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warning,
    Critical,
}

/// The settings the supervisor decides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// `--workers`.
    pub(crate) workers: usize,
    /// `--timeout` (zero: off).
    pub(crate) timeout: Duration,
    /// `--graceful-timeout`.
    pub(crate) graceful_timeout: Duration,
}

/// Where this arbiter stands in a binary upgrade (`USR2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// The arbiter this one started with `USR2`, while it runs.
    pub(crate) child: Option<u32>,
    /// The arbiter that started this one, while it runs: this one is then
    /// the upgrade, and its pid file the provisional one.
    pub(crate) parent: Option<u32>,
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Time passed: the shell's wait ended (the first round is at start).
    Round,
    Signal(Sig),
    /// What the shell's [`Action::Reload`] read: the new settings, or why
    /// there are none.
    Reloaded(Result<Settings, String>),
    /// An [`Action::Spawn`] forked worker `id` as `pid`.
    Forked {
        id: u32,
        pid: u32,
    },
    /// An [`Action::Spawn`] could not fork.
    ForkFailed {
        id: u32,
        error: String,
    },
    /// A message on worker `pid`'s socket.
    Message {
        pid: u32,
        beat: Beat,
    },
    /// A child process was reaped: a worker, or the upgraded arbiter.
    Exited {
        pid: u32,
        exit: WorkerExit,
    },
    /// An [`Action::Upgrade`] started the new arbiter as `pid`.
    Upgraded {
        pid: u32,
    },
    /// An [`Action::Upgrade`] could not start it.
    UpgradeFailed {
        error: String,
    },
    /// The arbiter that started this one is gone: this one takes over.
    ParentGone,
    /// The arbiter cannot fork safely (it has threads).
    CannotFork,
}

/// Something to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Fork worker `id` (answer with `Forked` or `ForkFailed`).
    Spawn {
        id: u32,
    },
    /// Signal worker `pid`.
    Ask {
        pid: u32,
        ask: Ask,
    },
    Log(Level, String),
    /// Reopen the arbiter's log file.
    ReopenLogs,
    /// Re-read the settings (answer with `Reloaded`).
    Reload,
    /// Re-execute the binary with the listeners (answer with `Upgraded` or
    /// `UpgradeFailed`).
    Upgrade,
    /// Close the arbiter's copies of the listeners; `unlink` removes their
    /// socket files too (not while another arbiter shares them).
    CloseListeners {
        unlink: bool,
    },
    /// Write this arbiter's pid file again (an upgrade failed).
    RestorePidFile,
    /// Move the provisional pid file to the real name (the old arbiter is
    /// gone).
    PromotePidFile,
    /// Exit the process with this code.
    Exit(i32),
}

/// How the arbiter is stopping: gracefully (workers drain) or quickly;
/// workers left at `deadline` are killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stopping {
    quick: bool,
    deadline: Instant,
}

/// A worker process, as the supervisor knows it.
#[derive(Clone, Debug)]
struct Known {
    id: u32,
    /// 0 until forked.
    pid: u32,
    generation: u64,
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
}

/// The arbiter's state, and its decisions.
#[derive(Debug)]
pub(crate) struct Supervisor {
    settings: Settings,
    workers: Vec<Known>,
    /// The generation being served: workers of older ones are retired once
    /// enough of it are ready.
    generation: u64,
    /// The newest generation ever started, so a reload after an abandoned
    /// one gets a number of its own.
    newest: u64,
    /// Workers wanted (`TTIN`, `TTOU`, `WINCH` move it).
    target: usize,
    stopping: Option<Stopping>,
    boot_failures: u32,
    /// Not before then: a fork after a failed boot or fork waits.
    next_spawn: Option<Instant>,
    exit_code: i32,
    upgrade: Upgrade,
    /// Workers replaced, by reason.
    restarts: BTreeMap<&'static str, u64>,
}

impl Supervisor {
    pub(crate) fn new(settings: Settings, upgrade: Upgrade) -> Self {
        Self {
            settings,
            workers: Vec::new(),
            generation: 0,
            newest: 0,
            target: settings.workers.max(1),
            stopping: None,
            boot_failures: 0,
            next_spawn: None,
            exit_code: 0,
            upgrade,
            // Every reason from the start, so a rate over them is defined
            // before the first restart.
            restarts: RESTART_REASONS.iter().map(|reason| (*reason, 0)).collect(),
        }
    }

    /// Workers replaced so far, by reason.
    pub(crate) fn restarts(&self) -> &BTreeMap<&'static str, u64> {
        &self.restarts
    }

    /// Whether worker `pid` is serving (ready, neither retiring nor
    /// aborted): the one to ask for its metrics.
    pub(crate) fn is_serving(&self, pid: u32) -> bool {
        self.find(pid)
            .is_some_and(|w| w.ready && w.retiring.is_none() && w.aborted.is_none())
    }

    /// Workers forked and not yet reaped.
    pub(crate) fn worker_count(&self) -> usize {
        self.workers.iter().filter(|w| w.pid != 0).count()
    }

    /// The upgrade this arbiter is part of.
    pub(crate) fn upgrade(&self) -> Upgrade {
        self.upgrade
    }

    /// When the supervisor next has something to decide without an event
    /// (a fork held back), if sooner than a round.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_spawn
    }

    fn find(&self, pid: u32) -> Option<&Known> {
        self.workers.iter().find(|w| w.pid == pid && pid != 0)
    }

    fn find_mut(&mut self, pid: u32) -> Option<&mut Known> {
        self.workers.iter_mut().find(|w| w.pid == pid && pid != 0)
    }

    // ANCHOR: on
    /// Decides what to do about `event`, which happened at `now`.
    pub(crate) fn on(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Round => {}
            Event::Signal(signal) => self.signal(now, signal, &mut out),
            Event::Reloaded(settings) => self.reloaded(settings, &mut out),
            Event::Forked { id, pid } => {
                if let Some(worker) = self.workers.iter_mut().find(|w| w.id == id && w.pid == 0) {
                    worker.pid = pid;
                    worker.last_beat = now;
                }
                log(
                    &mut out,
                    Level::Info,
                    format!("booting worker {id} (pid {pid})"),
                );
            }
            Event::ForkFailed { id, error } => {
                self.workers.retain(|w| !(w.id == id && w.pid == 0));
                log(
                    &mut out,
                    Level::Critical,
                    format!("cannot fork a worker: {error}"),
                );
                self.next_spawn = Some(now + FORK_RETRY);
            }
            Event::Message { pid, beat } => self.message(now, pid, beat, &mut out),
            Event::Exited { pid, exit } => self.exited(now, pid, exit, &mut out),
            Event::Upgraded { pid } => {
                self.upgrade.child = Some(pid);
                log(
                    &mut out,
                    Level::Info,
                    format!(
                        "USR2: the upgraded arbiter started (pid {pid}); \
                         send this one TERM to stop, or WINCH to retire its workers"
                    ),
                );
            }
            Event::UpgradeFailed { error } => {
                log(
                    &mut out,
                    Level::Critical,
                    format!(
                        "USR2: cannot start the upgraded arbiter: {error}; this one keeps serving"
                    ),
                );
                out.push(Action::RestorePidFile);
            }
            Event::CannotFork => self.halt(now, 1, &mut out),
            Event::ParentGone => {
                if let Some(parent) = self.upgrade.parent.take() {
                    log(
                        &mut out,
                        Level::Info,
                        format!(
                            "the arbiter before this one (pid {parent}) is gone: this one takes over"
                        ),
                    );
                    out.push(Action::PromotePidFile);
                }
            }
        }
        self.decide(now, &mut out);
        out
    }
    // ANCHOR_END: on

    /// What every event leads to: the stop's end, or the workers put
    /// right (aborted, killed, forked, retired).
    fn decide(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(stopping) = self.stopping {
            if self.workers.is_empty() {
                log(
                    out,
                    Level::Info,
                    format!("arbiter exiting ({})", self.exit_code),
                );
                out.push(Action::Exit(self.exit_code));
            } else if now >= stopping.deadline {
                self.kill_stragglers(out);
            }
            return;
        }
        self.abort_stuck(now, out);
        self.kill_overdue(now, out);
        self.manage(now, out);
    }

    fn signal(&mut self, now: Instant, signal: Sig, out: &mut Vec<Action>) {
        match signal {
            Sig::Term if self.stopping.is_none() => {
                log(out, Level::Info, "TERM: stopping gracefully".into());
                self.stop(now, false, out);
            }
            Sig::Int | Sig::Quit if !self.stopping.is_some_and(|s| s.quick) => {
                let name = if signal == Sig::Int { "INT" } else { "QUIT" };
                log(out, Level::Info, format!("{name}: stopping quickly"));
                self.stop(now, true, out);
            }
            Sig::Term | Sig::Int | Sig::Quit => {}
            Sig::Hup if self.stopping.is_none() => {
                log(out, Level::Info, "HUP: reloading".into());
                out.push(Action::Reload);
            }
            Sig::Ttin if self.stopping.is_none() => {
                self.target += 1;
                log(
                    out,
                    Level::Info,
                    format!("TTIN: now {} worker(s)", self.target),
                );
            }
            Sig::Ttou if self.stopping.is_none() => {
                self.target = self.target.saturating_sub(1).max(1);
                log(
                    out,
                    Level::Info,
                    format!("TTOU: now {} worker(s)", self.target),
                );
            }
            Sig::Winch if self.stopping.is_none() => {
                self.target = 0;
                log(
                    out,
                    Level::Info,
                    "WINCH: retiring every worker; the arbiter stays (HUP or TTIN start workers again)"
                        .into(),
                );
            }
            Sig::Usr1 => {
                out.push(Action::ReopenLogs);
                log(out, Level::Info, "USR1: log files reopened".into());
                for worker in self.workers.iter().filter(|w| w.pid != 0) {
                    out.push(Action::Ask {
                        pid: worker.pid,
                        ask: Ask::ReopenLogs,
                    });
                }
            }
            Sig::Usr2 if self.stopping.is_none() => {
                if let Some(child) = self.upgrade.child {
                    log(
                        out,
                        Level::Warning,
                        format!("USR2 ignored: the upgraded arbiter (pid {child}) is running"),
                    );
                } else if let Some(parent) = self.upgrade.parent {
                    log(
                        out,
                        Level::Warning,
                        format!(
                            "USR2 ignored: this arbiter is the upgrade of pid {parent}, \
                             which is still running"
                        ),
                    );
                } else {
                    log(
                        out,
                        Level::Info,
                        "USR2: upgrading: starting the binary again".into(),
                    );
                    out.push(Action::Upgrade);
                }
            }
            Sig::Chld => {}
            Sig::Hup | Sig::Ttin | Sig::Ttou | Sig::Winch | Sig::Usr2 => log(
                out,
                Level::Info,
                format!("{signal:?} ignored while stopping").to_uppercase(),
            ),
            Sig::Other(name) => log(out, Level::Warning, format!("{name} ignored")),
        }
    }

    fn stop(&mut self, now: Instant, quick: bool, out: &mut Vec<Action>) {
        let first = self.stopping.is_none();
        self.stopping = Some(Stopping {
            quick,
            deadline: now + self.settings.graceful_timeout,
        });
        if first {
            // The listeners' queues are the workers' to take and close; the
            // arbiter's copies would keep the ports open after them. Another
            // arbiter of an upgrade still uses the socket files.
            let unlink = self.upgrade == Upgrade::default();
            out.push(Action::CloseListeners { unlink });
        }
        // Ones not forked yet never will be.
        self.workers.retain(|w| w.pid != 0);
        let ask = if quick { Ask::Quit } else { Ask::Retire };
        for worker in &mut self.workers {
            if quick || worker.retiring.is_none() {
                worker.retiring.get_or_insert(now);
                out.push(Action::Ask {
                    pid: worker.pid,
                    ask,
                });
            }
        }
    }

    fn reloaded(&mut self, settings: Result<Settings, String>, out: &mut Vec<Action>) {
        match settings {
            Ok(settings) => {
                self.settings = settings;
                self.newest += 1;
                self.generation = self.newest;
                self.target = settings.workers.max(1);
                log(
                    out,
                    Level::Info,
                    format!("HUP: starting {} new worker(s)", self.target),
                );
            }
            Err(error) => log(
                out,
                Level::Warning,
                format!("HUP: the settings are not valid, nothing reloaded: {error}"),
            ),
        }
    }

    fn message(&mut self, now: Instant, pid: u32, beat: Beat, out: &mut Vec<Action>) {
        let Some(worker) = self.find_mut(pid) else {
            return;
        };
        worker.last_beat = now;
        match beat {
            Beat::Ready => {
                worker.ready = true;
                let id = worker.id;
                self.boot_failures = 0;
                log(out, Level::Info, format!("worker {id} (pid {pid}) ready"));
            }
            Beat::Alive { oldest } => worker.oldest = oldest,
            Beat::Retiring => {
                // It retires itself (max requests): replace it now, while it
                // drains.
                worker.retiring.get_or_insert(now);
                worker.replaced_for.get_or_insert("max_requests");
            }
            Beat::Metrics { .. } => {}
        }
    }

    fn exited(&mut self, now: Instant, pid: u32, exit: WorkerExit, out: &mut Vec<Action>) {
        if self.upgrade.child == Some(pid) {
            self.upgrade.child = None;
            log(
                out,
                Level::Critical,
                format!(
                    "the upgraded arbiter (pid {pid}) {}; this one keeps serving",
                    describe(exit)
                ),
            );
            out.push(Action::RestorePidFile);
            return;
        }
        // Not one of ours (the arbiter may be pid 1 in a container).
        let Some(index) = self.workers.iter().position(|w| w.pid == pid && pid != 0) else {
            return;
        };
        let worker = self.workers.remove(index);
        let (id, how) = (worker.id, describe(exit));
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
            log(out, Level::Info, format!("worker {id} (pid {pid}) {how}"));
            return;
        }
        if worker.ready {
            log(
                out,
                Level::Warning,
                format!("worker {id} (pid {pid}) {how}; replacing it"),
            );
            return;
        }
        // It died while booting.
        if worker.generation != self.generation || worker.retiring.is_some() {
            // A worker of a reload already given up on, or one retired.
            log(
                out,
                Level::Info,
                format!("worker {id} (pid {pid}) {how} while booting, as it was no longer wanted"),
            );
            return;
        }
        let code = match exit {
            WorkerExit::Code(code @ (WORKER_BOOT_ERROR | APP_LOAD_ERROR)) => Some(code),
            _ => None,
        };
        let older_serving = self
            .workers
            .iter()
            .any(|w| w.generation < self.generation && w.ready && w.retiring.is_none());
        if code.is_some() && older_serving {
            log(
                out,
                Level::Critical,
                format!(
                    "worker {id} (pid {pid}) {how} while booting: the reload failed; \
                     the workers from before it keep serving"
                ),
            );
            self.abandon_reload(now, out);
            return;
        }
        self.boot_failures += 1;
        if let Some(code) = code {
            let why = if code == APP_LOAD_ERROR {
                "the application failed to load"
            } else {
                "the worker failed to boot"
            };
            log(
                out,
                Level::Critical,
                format!("worker {id} (pid {pid}) {how} while booting: {why}; stopping"),
            );
            self.halt(now, code, out);
        } else if self.boot_failures >= MAX_BOOT_FAILURES {
            log(
                out,
                Level::Critical,
                format!(
                    "worker {id} (pid {pid}) {how} while booting, \
                     the {MAX_BOOT_FAILURES}th in a row; stopping"
                ),
            );
            self.halt(now, WORKER_BOOT_ERROR, out);
        } else {
            let delay = Duration::from_millis(100) * 2u32.pow(self.boot_failures);
            log(
                out,
                Level::Warning,
                format!(
                    "worker {id} (pid {pid}) {how} while booting; retrying in {} ms",
                    delay.as_millis()
                ),
            );
            self.next_spawn = Some(now + delay);
        }
    }

    /// Goes back to the generation before the reload, and retires the
    /// workers started for it.
    fn abandon_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        let failed = self.generation;
        self.generation = self
            .workers
            .iter()
            .filter(|w| w.generation < failed)
            .map(|w| w.generation)
            .max()
            .unwrap_or(0);
        self.target = self
            .workers
            .iter()
            .filter(|w| w.generation == self.generation && w.retiring.is_none())
            .count()
            .max(1);
        for worker in self.workers.iter_mut().filter(|w| w.generation == failed) {
            retire(worker, now, out);
        }
        self.workers.retain(|w| w.pid != 0);
    }

    fn halt(&mut self, now: Instant, code: i32, out: &mut Vec<Action>) {
        self.exit_code = code;
        self.stop(now, true, out);
    }

    /// Kills the workers still running at the stop's deadline.
    fn kill_stragglers(&mut self, out: &mut Vec<Action>) {
        let left: Vec<&mut Known> = self.workers.iter_mut().filter(|w| !w.killed).collect();
        if left.is_empty() {
            return;
        }
        log(
            out,
            Level::Warning,
            format!(
                "{} worker(s) still running after graceful_timeout: killing them",
                left.len()
            ),
        );
        for worker in left {
            kill(worker, out);
        }
    }

    /// Aborts the workers past their timeout, and kills those that did not
    /// exit once aborted.
    fn abort_stuck(&mut self, now: Instant, out: &mut Vec<Action>) {
        let timeout = self.settings.timeout;
        if timeout.is_zero() {
            return;
        }
        for worker in self.workers.iter_mut().filter(|w| w.pid != 0) {
            if let Some(aborted) = worker.aborted {
                if now >= aborted + ABORT_GRACE {
                    kill(worker, out);
                }
                continue;
            }
            let silent = now.saturating_duration_since(worker.last_beat);
            let stuck = worker
                .oldest
                .as_ref()
                .map(|(age, request)| (*age + silent, request))
                .filter(|(age, _)| *age > timeout);
            let (id, pid) = (worker.id, worker.pid);
            let why = if let Some((age, request)) = stuck {
                format!("has served {request} for {:.1} s", age.as_secs_f64())
            } else if silent > timeout {
                format!("sent no heartbeat for {:.1} s", silent.as_secs_f64())
            } else {
                continue;
            };
            log(
                out,
                Level::Critical,
                format!(
                    "WORKER TIMEOUT: worker {id} (pid {pid}) {why} (timeout {} s); aborting it",
                    timeout.as_secs()
                ),
            );
            worker.aborted = Some(now);
            out.push(Action::Ask {
                pid,
                ask: Ask::Abort,
            });
        }
    }

    /// Kills retiring workers still draining after `graceful_timeout`.
    fn kill_overdue(&mut self, now: Instant, out: &mut Vec<Action>) {
        let limit = self.settings.graceful_timeout;
        for worker in &mut self.workers {
            let overdue = worker
                .retiring
                .is_some_and(|since| now.saturating_duration_since(since) > limit);
            if overdue && !worker.killed {
                let (id, pid) = (worker.id, worker.pid);
                log(
                    out,
                    Level::Warning,
                    format!(
                        "worker {id} (pid {pid}) still draining after graceful_timeout; killing it"
                    ),
                );
                kill(worker, out);
            }
        }
    }

    /// Forks or retires workers until the generation being served has
    /// `target` serving, and retires the older generations once it has.
    fn manage(&mut self, now: Instant, out: &mut Vec<Action>) {
        let generation = self.generation;
        let current = |w: &&Known| w.generation == generation && w.retiring.is_none();
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
                retire(worker, now, out);
            }
            self.workers.retain(|w| w.pid != 0 || w.retiring.is_none());
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
                retire(worker, now, out);
            }
        }
        if serving < self.target && self.next_spawn.is_none_or(|at| now >= at) {
            self.next_spawn = None;
            for _ in serving..self.target {
                let id = (1..)
                    .find(|id| self.workers.iter().all(|w| w.id != *id))
                    .expect("a free worker number");
                self.workers.push(Known {
                    id,
                    pid: 0,
                    generation,
                    ready: false,
                    last_beat: now,
                    oldest: None,
                    retiring: None,
                    aborted: None,
                    killed: false,
                    replaced_for: None,
                });
                out.push(Action::Spawn { id });
            }
        }
    }
}

fn retire(worker: &mut Known, now: Instant, out: &mut Vec<Action>) {
    if worker.retiring.is_none() {
        worker.retiring = Some(now);
        if worker.pid != 0 {
            out.push(Action::Ask {
                pid: worker.pid,
                ask: Ask::Retire,
            });
        }
    }
}

fn kill(worker: &mut Known, out: &mut Vec<Action>) {
    if !worker.killed && worker.pid != 0 {
        worker.killed = true;
        out.push(Action::Ask {
            pid: worker.pid,
            ask: Ask::Kill,
        });
    }
}

fn log(out: &mut Vec<Action>, level: Level, message: String) {
    out.push(Action::Log(level, message));
}

/// How a process ended, for a log line.
fn describe(exit: WorkerExit) -> String {
    match exit {
        WorkerExit::Code(code) => format!("exited with code {code}"),
        WorkerExit::Signal(signal) => match signal_name(signal) {
            Some(name) => format!("was killed by {name}"),
            None => format!("was killed by signal {signal}"),
        },
    }
}

/// The name of a signal that ends processes, by its Linux number.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        workers: 2,
        timeout: Duration::from_secs(30),
        graceful_timeout: Duration::from_secs(30),
    };

    /// A supervisor and its shell's part, played by the test: a spawn is
    /// answered with a pid at once.
    struct Run {
        supervisor: Supervisor,
        now: Instant,
        next_pid: u32,
        /// Pids forked so far, in order.
        forked: Vec<u32>,
        actions: Vec<Action>,
    }

    impl Run {
        fn new(settings: Settings, upgrade: Upgrade) -> Self {
            Self {
                supervisor: Supervisor::new(settings, upgrade),
                now: Instant::now(),
                next_pid: 100,
                forked: Vec::new(),
                actions: Vec::new(),
            }
        }

        /// Started, with every worker forked and ready.
        fn serving(settings: Settings) -> Self {
            let mut run = Self::new(settings, Upgrade::default());
            run.on(Event::Round);
            run.ready_all();
            run
        }

        /// Feeds an event, answering spawns; returns everything decided.
        fn on(&mut self, event: Event) -> Vec<Action> {
            let mut pending = vec![event];
            let mut decided = Vec::new();
            while let Some(event) = pending.pop() {
                for action in self.supervisor.on(self.now, event) {
                    if let Action::Spawn { id } = action {
                        let pid = self.next_pid;
                        self.next_pid += 1;
                        self.forked.push(pid);
                        pending.push(Event::Forked { id, pid });
                    }
                    decided.push(action);
                }
            }
            self.actions.extend(decided.clone());
            decided
        }

        fn ready_all(&mut self) {
            for pid in self.forked.clone() {
                if !self.supervisor.is_serving(pid) {
                    self.on(Event::Message {
                        pid,
                        beat: Beat::Ready,
                    });
                }
            }
        }

        fn exit(&mut self, pid: u32, code: i32) -> Vec<Action> {
            self.on(Event::Exited {
                pid,
                exit: WorkerExit::Code(code),
            })
        }

        fn later(&mut self, by: Duration) -> Vec<Action> {
            self.now += by;
            self.on(Event::Round)
        }
    }

    fn spawns(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .count()
    }

    fn asked(actions: &[Action], wanted: Ask) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Ask { pid, ask } if *ask == wanted => Some(*pid),
                _ => None,
            })
            .collect()
    }

    fn exits(actions: &[Action]) -> Option<i32> {
        actions.iter().find_map(|a| match a {
            Action::Exit(code) => Some(*code),
            _ => None,
        })
    }

    fn logged(actions: &[Action], text: &str) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, Action::Log(_, line) if line.contains(text)))
    }

    #[test]
    fn the_first_workers_are_forked_in_the_first_round() {
        let mut run = Run::new(SETTINGS, Upgrade::default());
        let first = run.on(Event::Round);
        assert_eq!(spawns(&first), 2);
        assert_eq!(run.supervisor.worker_count(), 2);
        // And not again while they boot.
        assert_eq!(spawns(&run.later(Duration::from_secs(1))), 0);
    }

    #[test]
    fn term_closes_the_arbiters_listeners_retires_every_worker_and_exits_0_after_them() {
        let mut run = Run::serving(SETTINGS);
        let stop = run.on(Event::Signal(Sig::Term));
        assert!(stop.contains(&Action::CloseListeners { unlink: true }));
        assert_eq!(asked(&stop, Ask::Retire), [100, 101]);
        assert_eq!(exits(&run.exit(100, 0)), None);
        assert_eq!(exits(&run.exit(101, 0)), Some(0));
    }

    #[test]
    fn term_before_the_workers_are_ready_lets_them_boot_and_drain() {
        let mut run = Run::new(SETTINGS, Upgrade::default());
        run.on(Event::Round);
        let stop = run.on(Event::Signal(Sig::Term));
        // Asked to retire, not killed: each takes what is queued first.
        assert_eq!(asked(&stop, Ask::Retire), [100, 101]);
        assert!(asked(&run.later(Duration::from_secs(5)), Ask::Kill).is_empty());
        run.exit(100, 0);
        assert_eq!(exits(&run.exit(101, 0)), Some(0));
    }

    #[test]
    fn workers_left_at_the_stops_deadline_are_killed() {
        let mut run = Run::serving(SETTINGS);
        run.on(Event::Signal(Sig::Term));
        let late = run.later(SETTINGS.graceful_timeout + Duration::from_millis(1));
        assert_eq!(asked(&late, Ask::Kill), [100, 101]);
    }

    #[test]
    fn int_and_quit_stop_quickly_even_during_a_graceful_stop() {
        let mut run = Run::serving(SETTINGS);
        run.on(Event::Signal(Sig::Term));
        let quick = run.on(Event::Signal(Sig::Quit));
        assert_eq!(asked(&quick, Ask::Quit), [100, 101]);
        // A second INT asks nothing more.
        assert!(asked(&run.on(Event::Signal(Sig::Int)), Ask::Quit).is_empty());
    }

    #[test]
    fn a_worker_retiring_itself_is_replaced_while_it_drains() {
        let mut run = Run::serving(SETTINGS);
        let retiring = run.on(Event::Message {
            pid: 100,
            beat: Beat::Retiring,
        });
        assert_eq!(spawns(&retiring), 1);
        run.exit(100, 0);
        assert_eq!(run.supervisor.restarts()["max_requests"], 1);
        assert_eq!(run.supervisor.restarts()["exit"], 0);
    }

    #[test]
    fn a_worker_that_dies_is_replaced_and_counted() {
        let mut run = Run::serving(SETTINGS);
        let died = run.on(Event::Exited {
            pid: 101,
            exit: WorkerExit::Signal(9),
        });
        assert!(logged(&died, "was killed by SIGKILL; replacing it"));
        assert_eq!(spawns(&died), 1);
        assert_eq!(run.supervisor.restarts()["exit"], 1);
    }

    #[test]
    fn hup_reloads_and_retires_the_old_workers_once_the_new_are_ready() {
        let mut run = Run::serving(SETTINGS);
        assert!(run.on(Event::Signal(Sig::Hup)).contains(&Action::Reload));
        let reloaded = run.on(Event::Reloaded(Ok(SETTINGS)));
        assert_eq!(spawns(&reloaded), 2);
        assert!(asked(&reloaded, Ask::Retire).is_empty(), "{reloaded:?}");
        run.on(Event::Message {
            pid: 102,
            beat: Beat::Ready,
        });
        let ready = run.on(Event::Message {
            pid: 103,
            beat: Beat::Ready,
        });
        assert_eq!(asked(&ready, Ask::Retire), [100, 101]);
        run.exit(100, 0);
        run.exit(101, 0);
        assert_eq!(run.supervisor.restarts()["reload"], 2);
    }

    #[test]
    fn hup_with_bad_settings_reloads_nothing() {
        let mut run = Run::serving(SETTINGS);
        let bad = run.on(Event::Reloaded(Err("workers: not a number".into())));
        assert_eq!(spawns(&bad), 0);
        assert!(logged(&bad, "nothing reloaded: workers: not a number"));
    }

    #[test]
    fn a_reload_whose_three_workers_cannot_load_keeps_the_old_ones_and_a_later_one_succeeds() {
        let three = Settings {
            workers: 3,
            ..SETTINGS
        };
        let mut run = Run::serving(three);
        run.on(Event::Signal(Sig::Hup));
        run.on(Event::Reloaded(Ok(three)));
        let new = [103, 104, 105];
        let mut actions = Vec::new();
        for pid in new {
            actions.extend(run.exit(pid, APP_LOAD_ERROR));
        }
        assert!(logged(&actions, "the reload failed"), "{actions:?}");
        assert_eq!(exits(&actions), None, "{actions:?}");
        // Only the new ones still booting are let go.
        assert_eq!(asked(&actions, Ask::Retire), [104, 105]);
        assert!(asked(&actions, Ask::Quit).is_empty());
        assert_eq!(spawns(&actions), 0, "{actions:?}");
        for pid in [100, 101, 102] {
            assert!(run.supervisor.is_serving(pid));
        }
        assert_eq!(spawns(&run.later(Duration::from_secs(5))), 0);
        // A good reload after it.
        run.on(Event::Signal(Sig::Hup));
        assert_eq!(spawns(&run.on(Event::Reloaded(Ok(three)))), 3);
        run.actions.clear();
        run.ready_all();
        assert_eq!(asked(&run.actions, Ask::Retire), [100, 101, 102]);
    }

    #[test]
    fn an_application_that_cannot_load_at_start_stops_the_arbiter_with_its_code() {
        let mut run = Run::new(SETTINGS, Upgrade::default());
        run.on(Event::Round);
        let failed = run.exit(100, APP_LOAD_ERROR);
        assert!(logged(&failed, "the application failed to load; stopping"));
        assert_eq!(asked(&failed, Ask::Quit), [101]);
        assert_eq!(exits(&run.exit(101, APP_LOAD_ERROR)), Some(APP_LOAD_ERROR));
    }

    #[test]
    fn workers_dying_while_booting_are_retried_with_back_off_then_given_up_on() {
        let one = Settings {
            workers: 1,
            ..SETTINGS
        };
        let mut run = Run::new(one, Upgrade::default());
        run.on(Event::Round);
        for failure in 1..MAX_BOOT_FAILURES {
            let pid = *run.forked.last().unwrap();
            let died = run.on(Event::Exited {
                pid,
                exit: WorkerExit::Signal(11),
            });
            assert_eq!(spawns(&died), 0, "forked again at once");
            let delay = Duration::from_millis(100) * 2u32.pow(failure);
            assert_eq!(run.supervisor.next_deadline(), Some(run.now + delay));
            assert_eq!(spawns(&run.later(delay)), 1);
        }
        let pid = *run.forked.last().unwrap();
        let last = run.on(Event::Exited {
            pid,
            exit: WorkerExit::Signal(11),
        });
        assert_eq!(exits(&last), Some(WORKER_BOOT_ERROR));
    }

    #[test]
    fn a_stuck_worker_is_aborted_then_killed() {
        let mut run = Run::serving(SETTINGS);
        run.on(Event::Message {
            pid: 100,
            beat: Beat::Alive {
                oldest: Some((Duration::from_secs(29), "GET /slow".into())),
            },
        });
        // Its sibling keeps beating; it does not.
        run.now += Duration::from_secs(2);
        // Any event is a moment to decide: here, its sibling's beat.
        let aborted = run.on(Event::Message {
            pid: 101,
            beat: Beat::Alive { oldest: None },
        });
        assert_eq!(asked(&aborted, Ask::Abort), [100]);
        assert!(logged(
            &aborted,
            "WORKER TIMEOUT: worker 1 (pid 100) has served GET /slow"
        ));
        assert!(asked(&run.later(Duration::from_secs(1)), Ask::Kill).is_empty());
        assert_eq!(asked(&run.later(ABORT_GRACE), Ask::Kill), [100]);
        run.on(Event::Exited {
            pid: 100,
            exit: WorkerExit::Signal(9),
        });
        assert_eq!(run.supervisor.restarts()["timeout"], 1);
    }

    #[test]
    fn a_retiring_worker_past_the_graceful_timeout_is_killed() {
        let mut run = Run::serving(SETTINGS);
        run.on(Event::Signal(Sig::Ttou));
        assert_eq!(asked(&run.actions, Ask::Retire), [100]);
        let late = run.later(SETTINGS.graceful_timeout + Duration::from_secs(1));
        assert_eq!(asked(&late, Ask::Kill), [100]);
    }

    #[test]
    fn ttin_adds_a_worker_and_ttou_retires_the_oldest_but_never_the_last() {
        let mut run = Run::serving(SETTINGS);
        assert_eq!(spawns(&run.on(Event::Signal(Sig::Ttin))), 1);
        run.ready_all();
        let fewer = run.on(Event::Signal(Sig::Ttou));
        assert_eq!(asked(&fewer, Ask::Retire), [100]);
        run.exit(100, 0);
        run.on(Event::Signal(Sig::Ttou));
        run.exit(101, 0);
        let last = run.on(Event::Signal(Sig::Ttou));
        assert!(logged(&last, "TTOU: now 1 worker(s)"));
        assert!(asked(&last, Ask::Retire).is_empty());
        assert!(run.supervisor.is_serving(102));
    }

    #[test]
    fn winch_retires_every_worker_and_the_arbiter_stays() {
        let mut run = Run::serving(SETTINGS);
        let winch = run.on(Event::Signal(Sig::Winch));
        assert_eq!(asked(&winch, Ask::Retire), [100, 101]);
        run.exit(100, 0);
        let after = run.exit(101, 0);
        assert_eq!(exits(&after), None);
        assert_eq!(spawns(&run.later(Duration::from_secs(5))), 0);
        // TTIN brings one back.
        assert_eq!(spawns(&run.on(Event::Signal(Sig::Ttin))), 1);
    }

    #[test]
    fn usr2_upgrades_once_and_a_failed_upgrade_restores_the_pid_file() {
        let mut run = Run::serving(SETTINGS);
        assert!(run.on(Event::Signal(Sig::Usr2)).contains(&Action::Upgrade));
        run.on(Event::Upgraded { pid: 500 });
        let again = run.on(Event::Signal(Sig::Usr2));
        assert!(!again.contains(&Action::Upgrade));
        assert!(logged(
            &again,
            "USR2 ignored: the upgraded arbiter (pid 500) is running"
        ));
        // The new arbiter exits (it could not boot): this one serves on.
        let gone = run.on(Event::Exited {
            pid: 500,
            exit: WorkerExit::Code(4),
        });
        assert!(gone.contains(&Action::RestorePidFile));
        assert_eq!(exits(&gone), None);
        assert!(run.supervisor.is_serving(100) && run.supervisor.is_serving(101));
        // And may upgrade again; a start that fails restores it too.
        assert!(run.on(Event::Signal(Sig::Usr2)).contains(&Action::Upgrade));
        let failed = run.on(Event::UpgradeFailed {
            error: "no such file".into(),
        });
        assert!(failed.contains(&Action::RestorePidFile));
    }

    #[test]
    fn the_old_arbiter_of_an_upgrade_keeps_the_socket_files_at_term() {
        let mut run = Run::serving(SETTINGS);
        run.on(Event::Signal(Sig::Usr2));
        run.on(Event::Upgraded { pid: 500 });
        let stop = run.on(Event::Signal(Sig::Term));
        assert!(stop.contains(&Action::CloseListeners { unlink: false }));
    }

    #[test]
    fn an_upgraded_arbiter_takes_over_when_the_old_one_is_gone() {
        let upgrade = Upgrade {
            child: None,
            parent: Some(42),
        };
        let mut run = Run::new(SETTINGS, upgrade);
        assert_eq!(spawns(&run.on(Event::Round)), 2);
        let usr2 = run.on(Event::Signal(Sig::Usr2));
        assert!(!usr2.contains(&Action::Upgrade));
        assert!(run.on(Event::ParentGone).contains(&Action::PromotePidFile));
        assert!(run.on(Event::Signal(Sig::Usr2)).contains(&Action::Upgrade));
    }

    #[test]
    fn other_signals_are_logged_and_ignored() {
        let mut run = Run::serving(SETTINGS);
        let alarm = run.on(Event::Signal(Sig::Other("SIGALRM")));
        assert!(logged(&alarm, "SIGALRM ignored"));
        assert_eq!(exits(&alarm), None);
        assert!(asked(&alarm, Ask::Retire).is_empty());
    }

    #[test]
    fn a_failed_fork_is_retried_a_second_later() {
        let mut run = Run::serving(SETTINGS);
        run.on(Event::Exited {
            pid: 100,
            exit: WorkerExit::Code(1),
        });
        // The replacement's fork failed.
        let id = 1;
        run.supervisor.workers.retain(|w| w.pid != 102);
        run.supervisor.workers.push(Known {
            id,
            pid: 0,
            generation: 0,
            ready: false,
            last_beat: run.now,
            oldest: None,
            retiring: None,
            aborted: None,
            killed: false,
            replaced_for: None,
        });
        let failed = run.on(Event::ForkFailed {
            id,
            error: "EAGAIN".into(),
        });
        assert_eq!(spawns(&failed), 0);
        assert_eq!(spawns(&run.later(FORK_RETRY)), 1);
    }

    #[test]
    fn a_child_that_is_not_a_worker_is_ignored() {
        let mut run = Run::serving(SETTINGS);
        let stranger = run.exit(7, 0);
        assert_eq!(spawns(&stranger), 0);
        assert!(stranger.is_empty());
    }

    #[test]
    fn an_arbiter_that_cannot_fork_safely_stops_with_1() {
        let mut run = Run::new(SETTINGS, Upgrade::default());
        let halted = run.on(Event::CannotFork);
        assert_eq!(exits(&halted), Some(1));
    }
}
