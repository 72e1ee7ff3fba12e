//! Budgets a worker shares among its connections: the memory it holds for
//! clients (input buffers, partial heads, bodies kept in memory) and the
//! disk its spooled bodies take.
//!
//! A connection takes a [`Share`] of a [`Budget`] and grows or shrinks it
//! as its buffers change; a share that would take the budget past its limit
//! is refused, and the connection answers `503` instead of holding more.
//! Dropping a share gives its bytes back, however the connection ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A limit on bytes held, and how many are held now.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes; 0 means no limit.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            limit: if limit == 0 { u64::MAX } else { limit },
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes, unless that passes the limit.
    fn take(&self, n: u64) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(after) = used.checked_add(n).filter(|after| *after <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One holder's part of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<Budget>,
    held: u64,
}

impl Share {
    /// A share of nothing yet.
    pub(crate) fn new(budget: &Arc<Budget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            held: 0,
        }
    }

    /// Bytes this share holds.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Holds `bytes` in all: growing is refused past the budget's limit
    /// (and the share is left as it was); shrinking always succeeds.
    pub(crate) fn resize(&mut self, bytes: u64) -> bool {
        if bytes > self.held {
            if !self.budget.take(bytes - self.held) {
                return false;
            }
        } else {
            self.budget.give_back(self.held - bytes);
        }
        self.held = bytes;
        true
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_within_the_limit_and_give_back_when_dropped() {
        let memory = Arc::new(Budget::new(1024));
        let mut first = Share::new(&memory);
        assert!(first.resize(1000));
        let mut second = Share::new(&memory);
        assert!(!second.resize(100), "past the limit");
        assert_eq!(second.held(), 0, "a refused share holds nothing more");
        assert!(second.resize(24), "up to the limit");
        assert!(first.resize(10), "shrinking always succeeds");
        assert!(second.resize(1000));
        assert_eq!(memory.used(), 1010);
        drop(first);
        drop(second);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn zero_is_no_limit() {
        let budget = Arc::new(Budget::new(0));
        let mut share = Share::new(&budget);
        assert!(share.resize(u64::MAX / 2));
    }
}
