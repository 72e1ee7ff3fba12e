//! Values that belong to one process: declared once, built again in every
//! process that uses them.
//!
//! `fork()` copies a process's memory but not its threads, and shares its
//! open sockets with the child. A database connection, a client with a
//! background thread, an exporter or a random number generator built before
//! the fork is therefore broken or shared in every worker. A [`PerProcess`]
//! value remembers which process built it: in any other process,
//! [`PerProcess::get`] builds a fresh one. The copy inherited from the
//! parent is *forgotten*, not dropped, since its destructor would act on
//! the parent's behalf (flush the parent's buffer, join a thread that does
//! not exist here).
//!
//! Turnstile's workers call [`after_fork`] before their request threads
//! start, so every value in use is rebuilt up front, and [`teardown`] as
//! they exit, so each value's destructor runs in the process that built it.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use turnstile_core::PerProcess;
//!
//! static BUILDS: AtomicU32 = AtomicU32::new(0);
//! let connection = PerProcess::new(|| {
//!     BUILDS.fetch_add(1, Ordering::SeqCst);
//!     format!("connection of process {}", std::process::id())
//! });
//! // Built on first use, then shared by every thread of this process.
//! assert_eq!(*connection.get(), format!("connection of process {}", std::process::id()));
//! let _again = connection.get();
//! assert_eq!(BUILDS.load(Ordering::SeqCst), 1);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

/// A value built once per process, on first use.
pub struct PerProcess<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    build: Box<dyn Fn() -> T + Send + Sync>,
    built: RwLock<Option<Built<T>>>,
    /// Built by [`after_fork`] even when the parent never built it.
    eager: bool,
}

struct Built<T> {
    pid: u32,
    /// [`generation`] when it was built.
    generation: u64,
    value: Arc<T>,
}

/// What the process-wide list needs of each value, whatever its type.
trait Resource: Send + Sync {
    fn rebuild_after_fork(&self);
    fn teardown(&self);
}

/// Every [`PerProcess`] created, oldest first.
static RESOURCES: Mutex<Vec<Weak<dyn Resource>>> = Mutex::new(Vec::new());

impl<T: Send + Sync + 'static> PerProcess<T> {
    /// Declares a value that `build` makes, once in each process.
    pub fn new(build: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::declare(build, false)
    }

    /// Declares a value built in every process [`after_fork`] runs in,
    /// before that process serves: for a value whose building should not
    /// fall on a request (a client that starts a thread and connects), or
    /// that code outside requests needs. Elsewhere it is built on first
    /// use, like [`new`](Self::new)'s. The parent still never builds it.
    pub fn eager(build: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::declare(build, true)
    }

    fn declare(build: impl Fn() -> T + Send + Sync + 'static, eager: bool) -> Self {
        let inner = Arc::new(Inner {
            build: Box::new(build),
            built: RwLock::new(None),
            eager,
        });
        let weak = Arc::downgrade(&inner);
        let weak: Weak<dyn Resource> = weak;
        resources().push(weak);
        Self { inner }
    }

    // ANCHOR: get
    /// This process's value, built now if this process has none yet.
    ///
    /// Once [`after_fork`] has run in a process (a Turnstile worker), a
    /// value built there since is known by [`generation`] alone, without
    /// asking the kernel for the process id on every call. A process forked
    /// from such a worker must call `after_fork` itself.
    pub fn get(&self) -> Arc<T> {
        let generation = generation();
        let built = self
            .inner
            .built
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(built) = built.as_ref()
            && generation != 0
            && built.generation == generation
        {
            return built.value.clone();
        }
        let pid = std::process::id();
        let own = built.as_ref().is_some_and(|built| built.pid == pid);
        drop(built);
        if !own {
            return self.inner.build_for(pid);
        }
        // This process's value, from an earlier generation: stamped anew,
        // so the next call takes the fast path.
        let mut built = self
            .inner
            .built
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match built.as_mut() {
            Some(own) if own.pid == pid => {
                own.generation = generation;
                own.value.clone()
            }
            _ => {
                drop(built);
                self.inner.build_for(pid)
            }
        }
    }
    // ANCHOR_END: get
}

impl<T: Send + Sync + 'static> Inner<T> {
    // ANCHOR: build_for
    fn build_for(&self, pid: u32) -> Arc<T> {
        let mut built = self.built.write().unwrap_or_else(PoisonError::into_inner);
        match built.take() {
            Some(current) if current.pid == pid => {
                let value = current.value.clone();
                *built = Some(current);
                return value;
            }
            // The parent's value: its destructor must not run here.
            Some(inherited) => std::mem::forget(inherited.value),
            None => {}
        }
        let value = Arc::new((self.build)());
        *built = Some(Built {
            pid,
            generation: generation(),
            value: value.clone(),
        });
        value
    }
    // ANCHOR_END: build_for
}

impl<T: Send + Sync + 'static> Resource for Inner<T> {
    fn rebuild_after_fork(&self) {
        let pid = std::process::id();
        let stale = match self
            .built
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(built) => built.pid != pid,
            None => self.eager,
        };
        if stale {
            self.build_for(pid);
        }
    }

    fn teardown(&self) {
        let pid = std::process::id();
        let mut built = self.built.write().unwrap_or_else(PoisonError::into_inner);
        match built.take() {
            Some(own) if own.pid == pid => drop(own),
            Some(inherited) => std::mem::forget(inherited.value),
            None => {}
        }
    }
}

impl<T> Clone for PerProcess<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerProcess").finish_non_exhaustive()
    }
}

/// How many times [`after_fork`] or [`teardown`] has run, counting the
/// parent's calls.
static AFTER_FORKS: AtomicU64 = AtomicU64::new(0);

/// Changes whenever [`after_fork`] or [`teardown`] runs. A hot path may cache what
/// [`PerProcess::get`] returned, in a thread-local, for as long as this is
/// unchanged, and so skip `get`'s check of the process id (a system call).
///
/// It is only as good as the forking server: Turnstile's workers call
/// [`after_fork`] before any request thread starts. Only the thread that
/// called `fork()` lives on in the child, so other threads' caches cannot be
/// stale.
pub fn generation() -> u64 {
    AFTER_FORKS.load(Ordering::Acquire)
}

fn resources() -> std::sync::MutexGuard<'static, Vec<Weak<dyn Resource>>> {
    RESOURCES.lock().unwrap_or_else(PoisonError::into_inner)
}

fn live_resources() -> Vec<Arc<dyn Resource>> {
    let mut resources = resources();
    resources.retain(|weak| weak.strong_count() > 0);
    resources.iter().filter_map(Weak::upgrade).collect()
}

/// In a process just forked: rebuilds every value the parent had built,
/// oldest first, forgetting the parent's copies, and builds the
/// [eager](PerProcess::eager) ones. Other values never built are left to
/// be built on first use.
pub fn after_fork() {
    AFTER_FORKS.fetch_add(1, Ordering::Release);
    for resource in live_resources() {
        resource.rebuild_after_fork();
    }
}

/// As a process exits: drops every value it built, newest first, so each
/// is torn down before the values it may depend on.
pub fn teardown() {
    AFTER_FORKS.fetch_add(1, Ordering::Release);
    for resource in live_resources().into_iter().rev() {
        resource.teardown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_value_from_another_process_is_forgotten_and_rebuilt() {
        static DROPS: AtomicU32 = AtomicU32::new(0);
        struct Noisy(u32);
        impl Drop for Noisy {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        let value = PerProcess::new(|| Noisy(std::process::id()));
        // Pretend the value was built by a parent with another pid.
        *value.inner.built.write().unwrap() = Some(Built {
            pid: std::process::id() + 1,
            generation: generation(),
            value: Arc::new(Noisy(0)),
        });
        after_fork();
        assert_eq!(value.get().0, std::process::id());
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            0,
            "the parent's copy was dropped"
        );
        // The process-wide `teardown` does this for every value; other tests
        // run alongside, so only this one is torn down here.
        Resource::teardown(&*value.inner);
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            1,
            "teardown drops this process's value"
        );
    }

    #[test]
    fn an_eager_value_is_built_after_the_fork_and_a_lazy_one_is_not() {
        let eager = PerProcess::eager(std::process::id);
        let lazy = PerProcess::new(std::process::id);
        after_fork();
        let built = |value: &PerProcess<u32>| value.inner.built.read().unwrap().is_some();
        assert!(built(&eager));
        assert!(!built(&lazy));
    }

    #[test]
    fn threads_share_one_value() {
        let value = PerProcess::new(|| std::thread::current().id());
        let first = value.get();
        let second = std::thread::spawn({
            let value = value.clone();
            move || value.get()
        })
        .join()
        .unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}
