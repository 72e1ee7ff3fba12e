//! A connection's input: the bytes read from its socket and not used yet.
//!
//! Most requests arrive whole in one read. They are read into the request
//! thread's own buffer, which the connection borrows for the length of a
//! job ([`Input::lend`]); only what is left when the job ends (a partial
//! head, the next pipelined request) is copied into a buffer of the
//! connection's own ([`Input::settle`]), sized to what it holds and counted
//! against the worker's memory ceiling. An idle connection holds no buffer.

use std::io::{self, Read};
use std::sync::Arc;

use crate::budget::{Budget, Share};
use crate::listen::Stream;

/// The size of each request thread's read buffer.
pub(crate) const THREAD_BUFFER: usize = 64 * 1024;

/// The bytes read from a connection and not yet used.
#[derive(Debug)]
pub(crate) struct Input {
    /// Initialised throughout; `buf[start..end]` is unused input.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// `buf` is the thread's, lent for this job.
    lent: bool,
    /// The thread's buffer, set aside while this connection grew one of its
    /// own during the job.
    spare: Vec<u8>,
    /// What a buffer of the connection's own takes of the ceiling.
    share: Share,
    /// The largest the buffer may grow: a head at its limits.
    max: usize,
}

/// What [`Input::fill`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// `n` bytes arrived; `filled` when they filled the room offered, so
    /// more may be waiting.
    Read { n: usize, filled: bool },
    /// Nothing has arrived.
    WouldBlock,
    /// The client has closed its side.
    Eof,
    /// No room: the buffer is at its largest, or growing it would pass the
    /// memory ceiling.
    Full,
    /// The socket failed.
    Failed,
}

impl Input {
    /// Empty input that may grow to `max` bytes, its own buffer counted
    /// against `memory`.
    pub(crate) fn new(memory: &Arc<Budget>, max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            lent: false,
            spare: Vec::new(),
            share: Share::new(memory),
            max: max.max(THREAD_BUFFER),
        }
    }

    /// The bytes not yet used.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether no byte is waiting to be used.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks the first `n` buffered bytes used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Forgets every buffered byte.
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// At the start of a job: reads go to the thread's buffer unless the
    /// connection holds bytes of its own.
    pub(crate) fn lend(&mut self, thread: &mut Vec<u8>) {
        if self.buf.is_empty() {
            if thread.is_empty() {
                // Lost with a connection that panicked mid-job.
                *thread = vec![0; THREAD_BUFFER];
            }
            std::mem::swap(&mut self.buf, thread);
            self.lent = true;
        }
    }

    /// At the end of a job: gives the thread its buffer back, keeping what
    /// is left over in one of the connection's own. False when that would
    /// pass the memory ceiling: the leftover is dropped, and the caller
    /// refuses the request.
    pub(crate) fn settle(&mut self, thread: &mut Vec<u8>) -> bool {
        if !self.spare.is_empty() {
            std::mem::swap(thread, &mut self.spare);
            self.spare = Vec::new();
        }
        if self.lent {
            self.lent = false;
            let lent = std::mem::take(&mut self.buf);
            let kept = if self.is_empty() {
                true
            } else {
                let left = &lent[self.start..self.end];
                let fits = self.share.resize(left.len() as u64);
                if fits {
                    self.buf = left.to_vec();
                }
                fits
            };
            *thread = lent;
            if !kept || self.buf.is_empty() {
                self.clear();
            } else {
                self.start = 0;
                self.end = self.buf.len();
            }
            return kept;
        }
        if self.is_empty() {
            if !self.buf.is_empty() {
                self.buf = Vec::new();
                self.share.resize(0);
            }
        } else if self.buf.len() > 2 * (self.end - self.start) {
            // Grown for a large head that has since been used: keep only
            // what is left.
            let left = self.buf[self.start..self.end].to_vec();
            self.share.resize(left.len() as u64);
            self.end = left.len();
            self.start = 0;
            self.buf = left;
        }
        true
    }

    /// Reads what has arrived, without waiting.
    pub(crate) fn fill(&mut self, stream: &Stream) -> Fill {
        if !self.make_room() {
            return Fill::Full;
        }
        let space = self.buf.len() - self.end;
        loop {
            match (&*stream).read(&mut self.buf[self.end..]) {
                Ok(0) => return Fill::Eof,
                Ok(n) => {
                    self.end += n;
                    return Fill::Read {
                        n,
                        filled: n == space,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fill::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Fill::Failed,
            }
        }
    }

    /// Makes room at the end: moving what is buffered to the front, or
    /// growing the buffer (a head larger than the thread's buffer).
    fn make_room(&mut self) -> bool {
        if self.buf.is_empty() {
            // Not lent (a lingering connection after its buffer was given
            // up): a small buffer of its own.
            if !self.share.resize(4096) {
                return false;
            }
            self.buf = vec![0; 4096];
        }
        if self.end < self.buf.len() {
            return true;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        let grown = (self.buf.len() * 2).min(self.max);
        if grown <= self.buf.len() || !self.share.resize(grown as u64) {
            return false;
        }
        if self.lent {
            let mut own = vec![0; grown];
            own[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.spare = std::mem::replace(&mut self.buf, own);
            self.lent = false;
        } else {
            self.buf.resize(grown, 0);
        }
        true
    }

    #[cfg(test)]
    fn held(&self) -> u64 {
        self.share.held()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (Stream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Stream::Unix(ours), theirs)
    }

    #[test]
    fn a_request_read_whole_leaves_the_connection_no_buffer() {
        let memory = Arc::new(Budget::new(0));
        let (stream, mut client) = pair();
        let mut input = Input::new(&memory, 1 << 20);
        let mut thread = vec![0; THREAD_BUFFER];
        input.lend(&mut thread);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            input.fill(&stream),
            Fill::Read {
                n: 18,
                filled: false
            }
        );
        input.consume(18);
        assert!(input.settle(&mut thread));
        assert_eq!(
            thread.len(),
            THREAD_BUFFER,
            "the thread has its buffer back"
        );
        assert_eq!((input.held(), memory.used()), (0, 0));
        input.lend(&mut thread);
        assert_eq!(input.fill(&stream), Fill::WouldBlock);
        assert!(input.settle(&mut thread));
    }

    #[test]
    fn leftovers_are_kept_and_counted_and_refused_past_the_ceiling() {
        let memory = Arc::new(Budget::new(100));
        let (stream, mut client) = pair();
        let mut input = Input::new(&memory, 1 << 20);
        let mut thread = vec![0; THREAD_BUFFER];
        input.lend(&mut thread);
        client.write_all(b"GET / HTTP/1.1\r\nHost: a").unwrap();
        assert!(matches!(input.fill(&stream), Fill::Read { n: 23, .. }));
        assert!(input.settle(&mut thread));
        assert_eq!(memory.used(), 23, "the partial head is held");
        assert_eq!(input.buffered(), b"GET / HTTP/1.1\r\nHost: a");
        input.lend(&mut thread);
        assert!(!input.lent, "it reads into its own buffer now");
        client.write_all(&[b'b'; 200]).unwrap();
        // It grows as the head does, until growing would pass the ceiling.
        let mut fills = 0;
        while let Fill::Read { .. } = input.fill(&stream) {
            fills += 1;
            assert!(memory.used() <= 100);
        }
        assert!(fills > 0);
        assert_eq!(input.fill(&stream), Fill::Full);
        input.clear();
        assert!(input.settle(&mut thread));
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_head_larger_than_the_thread_buffer_grows_one_of_its_own() {
        let memory = Arc::new(Budget::new(0));
        let (stream, mut client) = pair();
        let mut input = Input::new(&memory, 4 * THREAD_BUFFER);
        let mut thread = vec![0; THREAD_BUFFER];
        input.lend(&mut thread);
        let sent = vec![b'x'; THREAD_BUFFER + 10];
        let writer = std::thread::spawn(move || client.write_all(&sent).map(|()| client));
        let mut total = 0;
        while total < THREAD_BUFFER + 10 {
            match input.fill(&stream) {
                Fill::Read { n, .. } => total += n,
                Fill::WouldBlock => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
        let _client = writer.join().unwrap().unwrap();
        assert_eq!(input.buffered().len(), THREAD_BUFFER + 10);
        assert!(memory.used() >= 2 * THREAD_BUFFER as u64);
        assert!(input.settle(&mut thread));
        assert_eq!(
            thread.len(),
            THREAD_BUFFER,
            "the thread's own buffer came back"
        );
        assert_eq!(memory.used(), input.held());
        assert!(
            input.held() <= 2 * (THREAD_BUFFER as u64 + 10),
            "sized to what is left"
        );
    }
}
