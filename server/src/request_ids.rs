//! Request ids that are unique across every worker of a server.
//!
//! Each process draws a random 64-bit prefix from the operating system and
//! numbers its requests after it. Forked workers start with a copy of the
//! arbiter's memory, so a worker calls [`reseed`] right after the fork:
//! without it, every worker would hand out the same ids.

use std::sync::atomic::{AtomicU64, Ordering};

use turnstile_core::Uuid;

static PREFIX: AtomicU64 = AtomicU64::new(0);
static OFFSET: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The low 62 bits: the rest of the second half is the UUID variant.
const LOW_BITS: u64 = (1 << 62) - 1;
/// Odd, so multiplying by it permutes the counter's values.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// Draws this process's prefix afresh. Call it once in each new process
/// before requests are served (the server does), never concurrently with
/// [`next_request_id`].
pub fn reseed() {
    let mut seed = [0u8; 16];
    // Without the system's randomness, the time and pid still differ per
    // process; ids then stay unique in practice, if guessable.
    if getrandom::fill(&mut seed).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        seed = (now ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    let [prefix, offset] = [&seed[..8], &seed[8..]]
        .map(|half| u64::from_le_bytes(half.try_into().expect("eight bytes")));
    PREFIX.store(prefix, Ordering::Relaxed);
    OFFSET.store(offset, Ordering::Relaxed);
    COUNTER.store(0, Ordering::Relaxed);
}

/// Seeds the process once if nobody has.
pub(crate) fn ensure_seeded() {
    if PREFIX.load(Ordering::Relaxed) == 0 {
        reseed();
    }
}

/// The next request id: a version-4-shaped UUID whose first half is the
/// process's prefix and whose second half numbers the request, scrambled
/// so ids do not show how many requests came before. Unique within a
/// process for 2^62 requests; ids are identifiers, not secrets.
pub fn next_request_id() -> Uuid {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = (PREFIX.load(Ordering::Relaxed) & !0xF000) | 0x4000;
    let low = n
        .wrapping_mul(SPREAD)
        .wrapping_add(OFFSET.load(Ordering::Relaxed))
        & LOW_BITS;
    Uuid::from_u64_pair(high, low | (0b10 << 62))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_distinct_version_4_uuids_and_reseeding_changes_the_prefix() {
        ensure_seeded();
        let ids: HashSet<Uuid> = (0..10_000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = next_request_id();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(id.get_variant(), uuid_variant());
        let before = id.as_u64_pair().0;
        reseed();
        assert_ne!(next_request_id().as_u64_pair().0, before);
    }

    fn uuid_variant() -> turnstile_core::uuid::Variant {
        turnstile_core::uuid::Variant::RFC4122
    }
}
