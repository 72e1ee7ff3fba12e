//! HTTP/1.1, as RFC 9112 frames it.
//!
//! `httparse` checks the syntax of a request head; everything that decides
//! where a message ends (Content-Length, Transfer-Encoding, chunk framing)
//! and every defence against request smuggling is here, because a parser
//! that only checks syntax accepts duplicate Content-Length, Content-Length
//! together with Transfer-Encoding, and bare LF line ends.
//!
//! The split follows hyper's `proto/h1`:
//!
//! * [`head`]: the request line and header fields, limits, and the framing
//!   decision ([`Framing`]);
//! * [`decode`]: request bodies as their framing delimits them, with
//!   [`chunked`], a decoder for `Transfer-Encoding: chunked` that is tested
//!   on every split of its input;
//! * [`encode`]: response heads, with the framing the server chooses, and
//!   what is left of a response to write;
//! * `io`: a connection's input buffer, lent by the request thread;
//! * [`conn`]: one connection as a state machine driven by its socket's
//!   readiness, with its one keep-alive decision;
//! * `dispatch`: the boundary between a connection and what serves its
//!   requests (the worker's ids, proxies, records and metrics live there,
//!   outside this module).
//!
//! Only `io` and `conn` touch the socket; the others do no I/O.

pub mod chunked;
pub mod conn;
pub mod decode;
pub(crate) mod dispatch;
pub mod encode;
pub mod head;
pub(crate) mod io;

pub use chunked::{ChunkError, ChunkedDecoder, Decoded};
pub use head::{
    Framing, HeadError, HeadScan, Limits, Parsed, RequestHead, parse_head, parse_head_resuming,
};
