//! Log files that `logrotate` moves away: the server asks for them to be
//! reopened (Turnstile's workers do on `SIGUSR1`), and every writer that
//! holds one opens it again under its name before its next write.
//!
//! It is a counter, not a list of callbacks: asking is one atomic add (safe
//! from anywhere), and a writer notices by comparing the generation it
//! opened its file in.
//!
//! ```
//! use turnstile_core::reopen;
//!
//! let opened_in = reopen::generation();
//! reopen::request();
//! assert!(reopen::generation() != opened_in); // time to open the file again
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every log writer in this process to reopen its file.
pub fn request() {
    GENERATION.fetch_add(1, Ordering::Release);
}

/// How many reopens have been asked for; a writer whose file was opened in
/// an older generation opens it again.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}
