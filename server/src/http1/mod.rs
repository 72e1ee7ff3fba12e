//! HTTP/1.1, as RFC 9112 frames it.
//!
//! `httparse` checks the syntax of a request head; everything that decides
//! where a message ends (Content-Length, Transfer-Encoding, chunk framing)
//! and every defence against request smuggling is here, because a parser
//! that only checks syntax accepts duplicate Content-Length, Content-Length
//! together with Transfer-Encoding, and bare LF line ends.
//!
//! * [`head`]: the request line and header fields, limits, and the framing
//!   decision ([`Framing`]).
//! * [`write`]: response heads, with the framing the server chooses.
//! * [`chunked`]: a decoder for `Transfer-Encoding: chunked` request bodies
//!   that does no I/O, so it is tested on every split of its input.

pub mod chunked;
pub mod conn;
pub mod head;
pub mod write;

pub use chunked::{ChunkError, ChunkedDecoder, Decoded};
pub use head::{Framing, HeadError, Limits, Parsed, RequestHead, parse_head};
