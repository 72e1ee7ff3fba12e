//! What the arbiter and its workers agree on: the messages a worker sends
//! on its socket, the exit codes that say why a worker stopped, and the
//! length of a round.
//!
//! Both sides use it; neither uses the other, so this is where a change
//! to the conversation is made.

use std::time::Duration;

/// A worker's exit code when a hook or a per-process resource failed while
/// it booted (Gunicorn's `WORKER_BOOT_ERROR`); the arbiter stops.
pub const WORKER_BOOT_ERROR: i32 = 3;
/// A worker's (or, under `preload`, the arbiter's) exit code when the
/// application could not be built (Gunicorn's `APP_LOAD_ERROR`).
pub const APP_LOAD_ERROR: i32 = 4;

/// How long the arbiter's loop, and a worker's, waits between rounds.
pub(crate) fn round(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// A message from a worker to the arbiter: one line on its socket, or, for
/// a page of metrics, a line giving its length and then the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// The request threads have started.
    Ready,
    /// Still alive; the oldest request in flight, its age and its name.
    Alive { oldest: Option<(Duration, String)> },
    /// Retiring by itself (`max_requests`): replace it now.
    Retiring,
    /// The worker's metrics, in answer to the arbiter's question `answers`
    /// (0 when sent unasked: every round, and as it exits).
    Metrics { answers: u64, page: String },
}

/// The longest page of metrics the arbiter accepts from a worker.
pub(crate) const MAX_PAGE: usize = 64 << 20;

impl Beat {
    pub(crate) fn to_line(&self) -> String {
        match self {
            Self::Ready => "ready\n".to_owned(),
            Self::Retiring => "retiring\n".to_owned(),
            Self::Metrics { answers, page } => format!("metrics {answers} {}\n{page}", page.len()),
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

    /// Takes the first whole message off the front of `unread`: `None`
    /// until one has arrived. A line that makes no sense is dropped.
    pub(crate) fn take(unread: &mut Vec<u8>) -> Option<Option<Self>> {
        let end = unread.iter().position(|&b| b == b'\n')?;
        if let Some(header) = unread[..end].strip_prefix(b"metrics ") {
            let header = std::str::from_utf8(header).ok();
            let frame = header.and_then(|header| {
                let (answers, len) = header.split_once(' ')?;
                Some((answers.parse::<u64>().ok()?, len.parse::<usize>().ok()?))
            });
            let Some((answers, len)) = frame.filter(|(_, len)| *len <= MAX_PAGE) else {
                // Nothing after it can be trusted to start a message.
                unread.clear();
                return Some(None);
            };
            if unread.len() < end + 1 + len {
                return None;
            }
            let page = String::from_utf8_lossy(&unread[end + 1..end + 1 + len]).into_owned();
            unread.drain(..end + 1 + len);
            return Some(Some(Self::Metrics { answers, page }));
        }
        let line: Vec<u8> = unread.drain(..=end).collect();
        Some(Self::parse(&line[..end]))
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

    #[test]
    fn a_page_of_metrics_is_taken_whole() {
        let page = Beat::Metrics {
            answers: 7,
            page: "# TYPE x counter\nx 1\n".into(),
        };
        let mut unread = format!("alive\n{}ready\n", page.to_line()).into_bytes();
        let whole = unread.clone();
        // Arriving a byte at a time, nothing is taken before it is all there.
        let mut arrived = Vec::new();
        let mut taken = Vec::new();
        for &byte in &whole {
            arrived.push(byte);
            while let Some(beat) = Beat::take(&mut arrived) {
                taken.push(beat);
            }
        }
        assert_eq!(
            taken,
            [
                Some(Beat::Alive { oldest: None }),
                Some(page),
                Some(Beat::Ready)
            ]
        );
        // A length past the limit is not waited for.
        unread = format!("metrics 0 {}\nx", MAX_PAGE + 1).into_bytes();
        assert_eq!(Beat::take(&mut unread), Some(None));
        assert!(unread.is_empty());
    }
}
