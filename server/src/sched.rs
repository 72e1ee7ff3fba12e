//! Which request thread does what, decided without threads: the request
//! threads are a thin shell around [`Sched`], which says what each of them
//! does next, and is unit-tested on sequences of events.
//!
//! One thread at a time waits in the poller; it takes what is ready as a
//! batch of jobs, then works through them itself, the way an event loop
//! does: a request whose application answers quickly is served by the
//! thread that was woken for it, with no hand-off between threads and no
//! other thread made runnable. On one core, that is what keeps the tail
//! latency low: with every thread runnable, a request preempted halfway
//! waits for all the others' time slices.
//!
//! Threads exist for applications that block. While work is pending (jobs
//! queued, or nobody waiting in the poller), one parked thread is the
//! *watcher*: it wakes every [`HANDOFF`], and if no job has finished and no
//! poll has returned since it last looked, the threads at work are stuck
//! in the application, and it joins them. Another parked thread becomes
//! the watcher, and so on, until every thread is busy. An application that
//! blocks for 5 ms still gets every thread; one that answers in
//! microseconds keeps one.
//!
//! ```text
//!   next() ──► Run(job) ──► done() ──┐
//!     ▲    ──► Poll ──► polled(jobs) ┤
//!     │    ──► Park ──► woken() ─────┤  (called: becomes the watcher)
//!     │    ──► Watch ─► watched() ───┤  (no progress: takes over)
//!     └──────────────────────────────┘
//! ```

use std::collections::VecDeque;
use std::time::Duration;

/// How long the watcher waits for progress before it joins in.
pub(crate) const HANDOFF: Duration = Duration::from_millis(1);

/// How many looks in a row the watcher finds nothing pending before it
/// parks: under load the thread at work waits in the poller for a moment
/// between batches, and a watcher that parked then would have to be called
/// again at the next batch, a wake-up for every poll.
const QUIET_LOOKS: u8 = 10;

/// What a thread does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<J> {
    /// Run this job, then call [`Sched::done`].
    Run(J),
    /// Wait in the poller, then call [`Sched::polled`] with what was ready.
    Poll,
    /// Wait [`HANDOFF`] as the watcher, then call [`Sched::watched`].
    Watch,
    /// Wait until called, then call [`Sched::woken`].
    Park,
    /// Leave: the server is stopping.
    Exit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    /// No thread watches.
    Nobody,
    /// A parked thread has been called to watch and has not woken yet.
    Called,
    /// A thread watches; `seen` is the progress at its last look, `quiet`
    /// the looks in a row that found nothing pending.
    Watching { seen: u64, quiet: u8 },
}

/// The request threads' shared state. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Sched<J> {
    queue: VecDeque<J>,
    /// A thread waits in the poller, or is about to.
    polling: bool,
    watch: Watch,
    /// Threads parked, not watching.
    idle: usize,
    /// Jobs finished and polls returned: what the watcher looks at.
    progress: u64,
    exiting: bool,
}

impl<J> Default for Sched<J> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            polling: false,
            watch: Watch::Nobody,
            idle: 0,
            progress: 0,
            exiting: false,
        }
    }
}

impl<J> Sched<J> {
    /// What a thread at work does next: a queued job, else the poller if
    /// nobody waits in it, else nothing (it parks).
    pub(crate) fn next(&mut self) -> Next<J> {
        if self.exiting {
            return Next::Exit;
        }
        if let Some(job) = self.queue.pop_front() {
            return Next::Run(job);
        }
        if !self.polling {
            self.polling = true;
            return Next::Poll;
        }
        self.idle += 1;
        Next::Park
    }

    /// A job has finished.
    pub(crate) fn done(&mut self) {
        self.progress += 1;
    }

    /// The poller returned these jobs. The thread that polled goes on with
    /// [`next`](Self::next), so it runs the first of them itself.
    pub(crate) fn polled(&mut self, jobs: impl IntoIterator<Item = J>) {
        self.polling = false;
        self.progress += 1;
        self.queue.extend(jobs);
    }

    /// Queues a job behind the others: a connection that had more to do
    /// than one job's share.
    pub(crate) fn push(&mut self, job: J) {
        self.queue.push_back(job);
    }

    /// Whether a parked thread must be called to watch: work is pending,
    /// nobody watches and a thread is parked. Once true, it is false until
    /// the called thread has woken. The shell asks after every change.
    pub(crate) fn call_watcher(&mut self) -> bool {
        let call = self.pending() && self.watch == Watch::Nobody && self.idle > 0;
        if call {
            self.watch = Watch::Called;
        }
        call
    }

    /// A parked thread woke: the watcher, if it was called, else it parks
    /// again (or leaves).
    pub(crate) fn woken(&mut self) -> Next<J> {
        if self.exiting {
            return Next::Exit;
        }
        if self.watch == Watch::Called {
            self.idle -= 1;
            self.watch = Watch::Watching {
                seen: self.progress,
                quiet: 0,
            };
            return Next::Watch;
        }
        Next::Park
    }

    /// The watcher's wait ended: it watches on while work progresses, stops
    /// when none is pending, and takes over when nothing has moved.
    pub(crate) fn watched(&mut self) -> Next<J> {
        if self.exiting {
            return Next::Exit;
        }
        let Watch::Watching { seen, quiet } = self.watch else {
            // Not reached: only the watcher waits for this.
            return self.next();
        };
        if !self.pending() {
            if quiet + 1 >= QUIET_LOOKS {
                self.watch = Watch::Nobody;
                self.idle += 1;
                return Next::Park;
            }
            self.watch = Watch::Watching {
                seen: self.progress,
                quiet: quiet + 1,
            };
            return Next::Watch;
        }
        if self.progress != seen {
            self.watch = Watch::Watching {
                seen: self.progress,
                quiet: 0,
            };
            return Next::Watch;
        }
        self.watch = Watch::Nobody;
        self.next()
    }

    /// Every thread leaves once its job is done.
    pub(crate) fn exit(&mut self) {
        self.exiting = true;
    }

    /// Work nobody is doing may be waiting: jobs are queued, or nobody
    /// waits in the poller for new ones.
    fn pending(&self) -> bool {
        !self.queue.is_empty() || !self.polling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two threads, `a` at work and `b` parked.
    fn one_working_one_parked() -> Sched<&'static str> {
        let mut sched = Sched::default();
        assert_eq!(sched.next(), Next::Poll, "a polls");
        assert_eq!(sched.next(), Next::Park, "b has nothing to do");
        assert!(
            !sched.call_watcher(),
            "a waits in the poller: nothing pending"
        );
        sched
    }

    #[test]
    fn the_thread_that_polls_runs_what_it_found_and_another_watches() {
        let mut sched = one_working_one_parked();
        sched.polled(["x", "y"]);
        assert_eq!(sched.next(), Next::Run("x"), "a runs the first itself");
        assert!(sched.call_watcher(), "b is called to watch");
        assert!(!sched.call_watcher(), "once");
        assert_eq!(sched.woken(), Next::Watch);
        sched.done();
        assert_eq!(sched.watched(), Next::Watch, "x finished: b watches on");
        assert_eq!(sched.next(), Next::Run("y"), "a goes on with y");
        sched.done();
        assert_eq!(sched.next(), Next::Poll, "then a polls again");
        for _ in 1..QUIET_LOOKS {
            assert_eq!(
                sched.watched(),
                Next::Watch,
                "a waits in the poller for a moment: b watches on"
            );
        }
        assert_eq!(
            sched.watched(),
            Next::Park,
            "a has waited in the poller long enough: b stops watching"
        );
        assert!(!sched.call_watcher());
    }

    #[test]
    fn the_watcher_takes_over_when_nothing_moves() {
        let mut sched = one_working_one_parked();
        sched.polled(["slow", "next"]);
        assert_eq!(sched.next(), Next::Run("slow"));
        assert!(sched.call_watcher());
        assert_eq!(sched.woken(), Next::Watch);
        // `slow` blocks for longer than the hand-off.
        assert_eq!(sched.watched(), Next::Run("next"), "b takes over");
        assert!(
            !sched.call_watcher(),
            "nobody is parked to watch: every thread is busy"
        );
        sched.done();
        assert_eq!(sched.next(), Next::Poll, "b polls, since a is still busy");
    }

    #[test]
    fn a_watcher_takes_the_poller_when_every_thread_is_stuck() {
        let mut sched = Sched::default();
        assert_eq!(sched.next(), Next::Poll, "a");
        assert_eq!(sched.next(), Next::Park, "b");
        assert_eq!(sched.next(), Next::Park, "c");
        sched.polled(["stuck"]);
        assert_eq!(sched.next(), Next::Run("stuck"), "a");
        assert!(sched.call_watcher(), "nobody waits in the poller");
        assert_eq!(sched.woken(), Next::Watch, "b");
        assert_eq!(sched.watched(), Next::Poll, "b takes the poller");
        assert!(
            !sched.call_watcher(),
            "b waits in the poller: nothing pending"
        );
        sched.polled(["also stuck"]);
        assert_eq!(sched.next(), Next::Run("also stuck"), "b");
        assert!(sched.call_watcher(), "c is called");
        assert_eq!(sched.woken(), Next::Watch, "c");
        assert_eq!(sched.watched(), Next::Poll, "c takes the poller");
    }

    #[test]
    fn only_the_called_thread_watches() {
        let mut sched = Sched::default();
        assert_eq!(sched.next(), Next::Poll);
        assert_eq!(sched.next(), Next::Park);
        assert_eq!(sched.next(), Next::Park);
        sched.polled(["x"]);
        assert_eq!(sched.next(), Next::Run("x"));
        assert!(sched.call_watcher());
        assert_eq!(sched.woken(), Next::Watch, "the first to wake");
        assert_eq!(sched.woken(), Next::Park, "a spurious wake-up parks again");
    }

    #[test]
    fn every_thread_leaves_at_exit() {
        let mut sched = one_working_one_parked();
        sched.polled(["x"]);
        sched.exit();
        assert_eq!(sched.next(), Next::Exit, "queued jobs are left");
        assert_eq!(sched.woken(), Next::Exit);
        assert_eq!(sched.watched(), Next::Exit);
    }
}
