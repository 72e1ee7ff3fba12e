//! Request and response bodies.
//!
//! A request body is a streaming reader: the application pulls bytes when it
//! wants them, and the server decodes framing (Content-Length or chunked)
//! underneath. A response body is one of four shapes, chosen so the server can
//! pick the cheapest way to write it: nothing, bytes in memory, a stream of
//! chunks of unknown length, or an open file of known length.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::completion::CompletionHooks;

/// A source of request-body bytes, as the server hands it to the application.
///
/// Anything that is [`Read`] + [`Send`] can be one; the server's own readers
/// also report trailer fields of a chunked body once it has been read to its end.
pub trait BodyRead: Read + Send {
    /// Trailer fields that followed a chunked body, available after the last
    /// byte has been read. `None` when the body had none or is not finished.
    fn trailers(&self) -> Option<&HeaderMap> {
        None
    }
}

/// Adapts any reader that has no trailers.
struct PlainReader<R>(R);

impl<R: Read> Read for PlainReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Send> BodyRead for PlainReader<R> {}

/// The body of a [`Request`](crate::Request): a streaming reader of the bytes
/// the client sent, with framing already removed.
///
/// Like WSGI's `wsgi.input`, it is read at most once and only as far as the
/// application wants; a server drains or discards what is left after the
/// response.
///
/// ```
/// use std::io::Read;
/// use turnstile_core::RequestBody;
///
/// let mut body = RequestBody::from_bytes("name=turnstile");
/// let mut text = String::new();
/// body.read_to_string(&mut text).unwrap();
/// assert_eq!(text, "name=turnstile");
/// ```
pub struct RequestBody {
    source: Source,
    /// Where a reader's client fault is kept, for the boundary that called
    /// the application to find even when the application turned the read
    /// error into an error of its own. Only readers can fail.
    fault: Option<Arc<OnceLock<BodyError>>>,
}

enum Source {
    Empty,
    Bytes(io::Cursor<Bytes>),
    Reader(Box<dyn BodyRead>),
}

impl RequestBody {
    /// A body with no bytes, as for a `GET` without `Content-Length`.
    pub fn empty() -> Self {
        Self {
            source: Source::Empty,
            fault: None,
        }
    }

    /// A body held in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self {
            source: Source::Bytes(io::Cursor::new(bytes.into())),
            fault: None,
        }
    }

    /// A body read from any reader (one with no trailer fields).
    pub fn from_reader(reader: impl Read + Send + 'static) -> Self {
        Self::new(PlainReader(reader))
    }

    /// A body read from a [`BodyRead`], the form servers use.
    pub fn new(reader: impl BodyRead + 'static) -> Self {
        Self {
            source: Source::Reader(Box::new(reader)),
            fault: Some(Arc::default()),
        }
    }

    /// Where the client fault a read of this body fails with will be kept.
    pub(crate) fn fault_watch(&self) -> Option<Arc<OnceLock<BodyError>>> {
        self.fault.clone()
    }

    /// Trailer fields of a chunked body, once it has been read to its end.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        match &self.source {
            Source::Reader(reader) => reader.trailers(),
            Source::Empty | Source::Bytes(_) => None,
        }
    }
}

impl Read for RequestBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Empty => Ok(0),
            Source::Bytes(cursor) => cursor.read(buf),
            Source::Reader(reader) => {
                let read = reader.read(buf);
                if let (Err(error), Some(fault)) = (&read, &self.fault)
                    && let Some(cause) = BodyError::of(error)
                {
                    let _ = fault.set(cause.clone());
                }
                read
            }
        }
    }
}

impl Default for RequestBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.source {
            Source::Empty => "empty",
            Source::Bytes(_) => "bytes",
            Source::Reader(_) => "reader",
        };
        f.debug_tuple("RequestBody").field(&kind).finish()
    }
}

/// Why a request body could not be received: always the client's fault,
/// so a server answers it with a 4xx of its own, never a 500, and no layer
/// reports it as the application's failure.
///
/// Turnstile's server receives every body before the application is called
/// and answers these itself; a body read from elsewhere (a test, another
/// server) fails with one inside the [`io::Error`] its reader returns, and
/// [`BodyError::of`] finds it there.
///
/// ```
/// use std::io::Read;
/// use turnstile_core::{BodyError, RequestBody};
///
/// let mut body = RequestBody::from_reader(std::io::Cursor::new(b"part").chain(
///     turnstile_core::test::FailingReader(BodyError::incomplete("the client went away")),
/// ));
/// let error = body.read_to_end(&mut Vec::new()).unwrap_err();
/// let cause = BodyError::of(&error).unwrap();
/// assert!(cause.is_incomplete());
/// assert_eq!(cause.status(), 400);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError {
    kind: BodyErrorKind,
    detail: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyErrorKind {
    TooLarge,
    Incomplete,
    Malformed,
    TimedOut,
}

impl BodyError {
    /// Longer than the server accepts (`--limit-request-body`): 413.
    pub fn too_large(detail: &'static str) -> Self {
        Self::new(BodyErrorKind::TooLarge, detail)
    }

    /// Ended before its framing said it would: 400.
    pub fn incomplete(detail: &'static str) -> Self {
        Self::new(BodyErrorKind::Incomplete, detail)
    }

    /// Broken framing (a bad chunk size, a missing CRLF, a bad trailer): 400.
    pub fn malformed(detail: &'static str) -> Self {
        Self::new(BodyErrorKind::Malformed, detail)
    }

    /// Arrived slower than the server's minimum rate: 408.
    pub fn timed_out(detail: &'static str) -> Self {
        Self::new(BodyErrorKind::TimedOut, detail)
    }

    fn new(kind: BodyErrorKind, detail: &'static str) -> Self {
        Self { kind, detail }
    }

    /// Whether the body was longer than allowed.
    pub fn is_too_large(&self) -> bool {
        self.kind == BodyErrorKind::TooLarge
    }

    /// Whether the body ended early.
    pub fn is_incomplete(&self) -> bool {
        self.kind == BodyErrorKind::Incomplete
    }

    /// Whether the body's framing was broken.
    pub fn is_malformed(&self) -> bool {
        self.kind == BodyErrorKind::Malformed
    }

    /// Whether the body arrived too slowly.
    pub fn is_timed_out(&self) -> bool {
        self.kind == BodyErrorKind::TimedOut
    }

    /// The status a server answers with: 413, 400 or 408.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            BodyErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyErrorKind::Incomplete | BodyErrorKind::Malformed => StatusCode::BAD_REQUEST,
            BodyErrorKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The body error inside `error`, if a body's reader failed with one.
    pub fn of(error: &io::Error) -> Option<&BodyError> {
        error.get_ref()?.downcast_ref::<BodyError>()
    }

    /// The body error in `error` or in the chain of its sources.
    pub fn in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<BodyError>() {
                return Some(found);
            }
            if let Some(found) = error.downcast_ref::<io::Error>().and_then(Self::of) {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail)
    }
}

impl std::error::Error for BodyError {}

impl From<BodyError> for io::Error {
    fn from(error: BodyError) -> Self {
        let kind = match error.kind {
            BodyErrorKind::Incomplete => io::ErrorKind::UnexpectedEof,
            BodyErrorKind::TimedOut => io::ErrorKind::TimedOut,
            BodyErrorKind::TooLarge | BodyErrorKind::Malformed => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}

/// A stream of body chunks whose total length is not known in advance.
///
/// The server sends it with `Transfer-Encoding: chunked` (or, for HTTP/1.0,
/// by closing the connection after the last chunk). An `Err` item aborts the
/// response: the server closes the connection so the client sees a truncated
/// body rather than a complete-looking wrong one.
pub type ChunkStream = Box<dyn Iterator<Item = io::Result<Bytes>> + Send>;

/// What a response body holds: the shape decides how the server writes it.
pub enum Content {
    /// No body bytes (`Content-Length: 0`, or none at all for 204/304).
    Empty,
    /// Bytes in memory, sent with `Content-Length`.
    Bytes(Bytes),
    /// Chunks produced one at a time, sent chunked.
    Stream(ChunkStream),
    /// An open file of known length, sent with `Content-Length`.
    File {
        /// The open file, read from its current position.
        file: File,
        /// How many bytes to send.
        len: u64,
    },
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Empty => f.write_str("Empty"),
            Content::Bytes(bytes) => f.debug_tuple("Bytes").field(&bytes.len()).finish(),
            Content::Stream(_) => f.write_str("Stream"),
            Content::File { len, .. } => f.debug_struct("File").field("len", len).finish(),
        }
    }
}

/// The body of a [`Response`](crate::Response): its [`Content`] plus the
/// completion hooks that run once the server has written it.
///
/// The hooks are WSGI's `close()`: see [`crate::completion`].
///
/// ```
/// use turnstile_core::{Content, ResponseBody};
///
/// let body = ResponseBody::from("Hello, world!\n");
/// assert_eq!(body.len(), Some(14));
/// let stream = ResponseBody::stream(["a", "b"].into_iter().map(|s| Ok(s.into())));
/// assert_eq!(stream.len(), None);
/// assert!(matches!(stream.content(), Content::Stream(_)));
/// ```
#[derive(Debug)]
pub struct ResponseBody {
    content: Content,
    hooks: CompletionHooks,
}

impl ResponseBody {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::from_content(Content::Empty)
    }

    /// A body streamed chunk by chunk; its length is unknown until the end.
    pub fn stream(chunks: impl Iterator<Item = io::Result<Bytes>> + Send + 'static) -> Self {
        Self::from_content(Content::Stream(Box::new(chunks)))
    }

    /// A body read from an open file, `len` bytes from its current position.
    pub fn file(file: File, len: u64) -> Self {
        Self::from_content(Content::File { file, len })
    }

    /// A body with this content and no completion hooks yet.
    pub fn from_content(content: Content) -> Self {
        Self {
            content,
            hooks: CompletionHooks::default(),
        }
    }

    /// The number of body bytes, when known before writing.
    pub fn len(&self) -> Option<u64> {
        match &self.content {
            Content::Empty => Some(0),
            Content::Bytes(bytes) => Some(bytes.len() as u64),
            Content::Stream(_) => None,
            Content::File { len, .. } => Some(*len),
        }
    }

    /// Whether the body is known to hold no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// What the body holds.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// Replaces the content, keeping the completion hooks: for layers that
    /// rewrite a body (a generic error page, say) without losing what inner
    /// layers asked to be told.
    pub fn replace_content(&mut self, content: Content) -> Content {
        std::mem::replace(&mut self.content, content)
    }

    /// Wraps a streamed body's chunks, for a layer that must run code
    /// around each pull (binding its context again, say); any other body
    /// is left as it is.
    ///
    /// ```
    /// use turnstile_core::ResponseBody;
    ///
    /// let mut body = ResponseBody::stream(["a", "b"].into_iter().map(|s| Ok(s.into())));
    /// body.map_stream(|chunks| Box::new(chunks.map(|chunk| chunk.map(|c| c.to_ascii_uppercase().into()))));
    /// ```
    pub fn map_stream(&mut self, wrap: impl FnOnce(ChunkStream) -> ChunkStream) {
        if let Content::Stream(_) = self.content
            && let Content::Stream(chunks) = std::mem::replace(&mut self.content, Content::Empty)
        {
            self.content = Content::Stream(wrap(chunks));
        }
    }

    pub(crate) fn hooks_mut(&mut self) -> &mut CompletionHooks {
        &mut self.hooks
    }

    /// Splits the body into what to write and the hooks to run afterwards.
    /// Servers call this; see [`CompletionHooks::complete`].
    pub fn into_parts(self) -> (Content, CompletionHooks) {
        (self.content, self.hooks)
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Content> for ResponseBody {
    fn from(content: Content) -> Self {
        Self::from_content(content)
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        Self::from_content(Content::Bytes(bytes))
    }
}

impl From<&'static str> for ResponseBody {
    fn from(text: &'static str) -> Self {
        Bytes::from_static(text.as_bytes()).into()
    }
}

impl From<&'static [u8]> for ResponseBody {
    fn from(bytes: &'static [u8]) -> Self {
        Bytes::from_static(bytes).into()
    }
}

impl From<String> for ResponseBody {
    fn from(text: String) -> Self {
        Bytes::from(text).into()
    }
}

impl From<Vec<u8>> for ResponseBody {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<()> for ResponseBody {
    fn from((): ()) -> Self {
        Self::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct WithTrailers {
        data: io::Cursor<&'static [u8]>,
        trailers: HeaderMap,
    }

    impl Read for WithTrailers {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.data.read(buf)
        }
    }

    impl BodyRead for WithTrailers {
        fn trailers(&self) -> Option<&HeaderMap> {
            Some(&self.trailers)
        }
    }

    #[test]
    fn empty_body_reads_nothing() {
        let mut buf = Vec::new();
        RequestBody::empty().read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    fn reader_body_streams_and_reports_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("checksum", "abc".parse().unwrap());
        let mut body = RequestBody::new(WithTrailers {
            data: io::Cursor::new(b"hello"),
            trailers,
        });
        let mut buf = Vec::new();
        body.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"hello");
        assert_eq!(body.trailers().unwrap()["checksum"], "abc");
        assert!(RequestBody::from_bytes("x").trailers().is_none());
    }

    #[test]
    fn response_body_lengths() {
        assert_eq!(ResponseBody::empty().len(), Some(0));
        assert!(ResponseBody::from(()).is_empty());
        assert_eq!(ResponseBody::from(vec![1, 2, 3]).len(), Some(3));
        assert_eq!(ResponseBody::from(String::from("four")).len(), Some(4));
        assert_eq!(ResponseBody::stream(std::iter::empty()).len(), None);
    }

    #[test]
    fn replacing_content_keeps_the_body_usable() {
        let mut body = ResponseBody::from("secret stack trace");
        let old = body.replace_content(Content::Bytes(Bytes::from_static(b"oops")));
        assert!(matches!(old, Content::Bytes(b) if b == "secret stack trace"));
        assert_eq!(body.len(), Some(4));
    }
}
