//! Request bodies received before the application is called: kept in
//! memory up to a size (nginx's `client_body_buffer_size`), spooled beyond
//! it to an unlinked file in the spool directory, which the application
//! then reads as it would the socket.
//!
//! Both are counted against the worker's budgets: the memory ceiling it
//! shares with every connection's buffers, and the spool's total size. A
//! body that would pass either is refused with 503 before it is all read:
//! the server is full, which is not the client's fault. A body that has
//! memory refused goes to the spool instead, while the spool has room.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use turnstile_core::{BodyRead, RequestBody};

use crate::budget::{Budget, Share};

/// Where bodies go, and how much of each the worker holds.
#[derive(Debug)]
pub(crate) struct Spool {
    /// The directory of the spool files (unlinked as they are made).
    pub(crate) dir: PathBuf,
    /// The most body bytes kept in memory for one request.
    pub(crate) in_memory: u64,
    /// The worker's memory ceiling, shared with the connections' buffers.
    pub(crate) memory: Arc<Budget>,
    /// The bytes of every spool file, together.
    pub(crate) disk: Arc<Budget>,
}

/// Why a body could not be kept.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// The memory ceiling and the spool are both full: 503.
    Full,
    /// The spool file could not be made or written: 503, and a warning.
    Io(io::Error),
}

/// One request's body as it arrives.
#[derive(Debug)]
pub(crate) struct BodyStore {
    memory: Vec<u8>,
    in_memory: Share,
    file: Option<(File, Share)>,
    len: u64,
}

impl BodyStore {
    /// An empty store, with room for `expected` bytes when the head gave a
    /// length that fits in memory.
    pub(crate) fn new(spool: &Spool, expected: Option<u64>) -> Self {
        let mut store = Self {
            memory: Vec::new(),
            in_memory: Share::new(&spool.memory),
            file: None,
            len: 0,
        };
        if let Some(expected) = expected.filter(|len| *len <= spool.in_memory)
            && store.in_memory.resize(expected)
        {
            store.memory.reserve_exact(expected as usize);
        }
        store
    }

    /// Keeps `bytes` after the ones before.
    pub(crate) fn push(&mut self, spool: &Spool, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let after = self.len + bytes.len() as u64;
        if self.file.is_none() && after <= spool.in_memory && self.room_in_memory(spool, after) {
            self.memory.extend_from_slice(bytes);
            self.len = after;
            return Ok(());
        }
        let (file, share) = match &mut self.file {
            Some(spooled) => spooled,
            None => {
                let file = spool_file(&spool.dir).map_err(StoreError::Io)?;
                let spooled = self.file.insert((file, Share::new(&spool.disk)));
                // What memory held moves to the file.
                if !spooled.1.resize(self.len) {
                    return Err(StoreError::Full);
                }
                spooled.0.write_all(&self.memory).map_err(StoreError::Io)?;
                self.memory = Vec::new();
                self.in_memory.resize(0);
                spooled
            }
        };
        if !share.resize(after) {
            return Err(StoreError::Full);
        }
        file.write_all(bytes).map_err(StoreError::Io)?;
        self.len = after;
        Ok(())
    }

    /// Grows the memory share to hold `after` bytes, doubling as a vector
    /// does but never past the in-memory size.
    fn room_in_memory(&mut self, spool: &Spool, after: u64) -> bool {
        if after <= self.memory.capacity() as u64 {
            return true;
        }
        let room = (self.memory.capacity() as u64 * 2)
            .max(4096)
            .min(spool.in_memory)
            .max(after);
        if !self.in_memory.resize(room) {
            return false;
        }
        self.memory.reserve_exact(room as usize - self.memory.len());
        true
    }

    /// The body, for the application to read: from memory, or from the
    /// start of the spool file. Its trailers are readable once it has been
    /// read to its end. Memory is no longer the client's to hold once the
    /// application has it, so its share ends here; the spool file's ends
    /// when the body is dropped, as the file does.
    pub(crate) fn into_body(self, trailers: Option<HeaderMap>) -> io::Result<RequestBody> {
        let source = match self.file {
            Some((mut file, share)) => {
                file.rewind()?;
                Source::File {
                    file: file.take(self.len),
                    _share: share,
                }
            }
            None if trailers.is_none() => {
                // The common case needs no reader of its own.
                return Ok(RequestBody::from_bytes(self.memory));
            }
            None => Source::Memory(io::Cursor::new(Bytes::from(self.memory))),
        };
        Ok(RequestBody::new(Received {
            source,
            trailers,
            ended: false,
        }))
    }
}

/// A body received whole, as the application reads it.
struct Received {
    source: Source,
    trailers: Option<HeaderMap>,
    ended: bool,
}

enum Source {
    Memory(io::Cursor<Bytes>),
    File { file: io::Take<File>, _share: Share },
}

impl Read for Received {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.source {
            Source::Memory(bytes) => bytes.read(out)?,
            Source::File { file, .. } => file.read(out)?,
        };
        if n == 0 && !out.is_empty() {
            self.ended = true;
        }
        Ok(n)
    }
}

impl BodyRead for Received {
    fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref().filter(|_| self.ended)
    }
}

/// A new file in `dir` that no other process can open: made unnamed where
/// the file system allows (`O_TMPFILE`), else named and unlinked at once.
fn spool_file(dir: &Path) -> io::Result<File> {
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(file) => Ok(file),
        Err(error) if error.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
            let name = dir.join(format!(
                ".turnstile-body-{}-{:016x}",
                std::process::id(),
                getrandom::u64().unwrap_or(0)
            ));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&name)?;
            std::fs::remove_file(&name)?;
            Ok(file)
        }
        Err(error) => Err(error),
    }
}

/// Whether bodies can be spooled to `dir`: it is a directory this process
/// can make files in. Checked at start, so a bad setting stops the server
/// before it serves.
pub fn check_spool_dir(dir: &Path) -> io::Result<()> {
    spool_file(dir).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(in_memory: u64, memory: u64, disk: u64) -> Spool {
        Spool {
            dir: std::env::temp_dir(),
            in_memory,
            memory: Arc::new(Budget::new(memory)),
            disk: Arc::new(Budget::new(disk)),
        }
    }

    fn read_all(body: RequestBody) -> (Vec<u8>, Option<HeaderMap>) {
        let mut body = body;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes).unwrap();
        (bytes, body.trailers().cloned())
    }

    #[test]
    fn a_small_body_stays_in_memory() {
        let spool = spool(1024, 0, 0);
        let mut store = BodyStore::new(&spool, Some(11));
        store.push(&spool, b"hello ").unwrap();
        store.push(&spool, b"world").unwrap();
        assert!(store.file.is_none());
        assert_eq!(spool.memory.used(), 11);
        let body = store.into_body(None).unwrap();
        assert_eq!(read_all(body).0, b"hello world");
    }

    #[test]
    fn a_large_body_is_spooled_and_read_back_whole() {
        let spool = spool(1024, 0, 0);
        let mut store = BodyStore::new(&spool, None);
        let chunk: Vec<u8> = (0..=255).collect();
        for _ in 0..40 {
            store.push(&spool, &chunk).unwrap();
        }
        assert!(store.file.is_some(), "spooled past 1 KiB");
        assert_eq!(spool.memory.used(), 0, "memory given back");
        assert_eq!(spool.disk.used(), 40 * 256);
        let mut trailers = HeaderMap::new();
        trailers.insert("checksum", "42".parse().unwrap());
        let body = store.into_body(Some(trailers)).unwrap();
        let (bytes, trailers) = read_all(body);
        assert_eq!(bytes.len(), 40 * 256);
        assert!(bytes.chunks(256).all(|c| c == &chunk[..]));
        assert_eq!(trailers.unwrap()["checksum"], "42");
        assert_eq!(spool.disk.used(), 0, "the file's share ends with the body");
    }

    #[test]
    fn memory_refused_goes_to_the_spool_and_a_full_spool_is_refused() {
        let spool = spool(4096, 100, 5000);
        let mut store = BodyStore::new(&spool, Some(4000));
        store.push(&spool, &[b'x'; 3000]).unwrap();
        assert!(store.file.is_some(), "the ceiling sent it to the spool");
        store.push(&spool, &[b'x'; 2000]).unwrap();
        assert!(matches!(
            store.push(&spool, &[b'x'; 1]),
            Err(StoreError::Full)
        ));
    }

    #[test]
    fn trailers_show_once_the_body_is_read() {
        let spool = spool(1024, 0, 0);
        let mut store = BodyStore::new(&spool, None);
        store.push(&spool, b"abc").unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("x", "1".parse().unwrap());
        let mut body = store.into_body(Some(trailers)).unwrap();
        assert!(body.trailers().is_none());
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes).unwrap();
        assert_eq!(body.trailers().unwrap()["x"], "1");
    }

    #[test]
    fn the_spool_directory_is_checked() {
        assert!(check_spool_dir(&std::env::temp_dir()).is_ok());
        assert!(check_spool_dir(Path::new("/nonexistent/turnstile")).is_err());
    }
}
