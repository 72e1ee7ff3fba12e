//! Request bodies as their framing delimits them: a length, or chunks.
//!
//! [`BodyDecoder`] does no I/O: it takes the bytes that have arrived and
//! says which of them are body bytes, how many it used and whether the body
//! is complete, and refuses what breaks the framing or the body limit with
//! a [`BodyError`] whose status the server answers with.
//!
//! ```
//! use turnstile_server::http1::decode::BodyDecoder;
//! use turnstile_server::http1::Framing;
//!
//! let mut decoder = BodyDecoder::new(Framing::Chunked, Some(1024)).unwrap();
//! let mut out = [0u8; 64];
//! let step = decoder.decode(b"5\r\nhello\r\n0\r\n\r\nGET /next", &mut out).unwrap();
//! assert_eq!(step.body, b"hello");
//! assert!(step.done);
//! assert_eq!(step.consumed, 15, "the next request is left");
//! ```

use http::HeaderMap;
use turnstile_core::BodyError;

use super::chunked::{ChunkError, ChunkedDecoder};
use super::head::Framing;

/// Decodes one request body. See the [module docs](self).
#[derive(Debug)]
pub struct BodyDecoder {
    framing: Delimited,
    /// Body bytes decoded so far.
    received: u64,
    /// The longest body accepted.
    max: u64,
}

#[derive(Debug)]
enum Delimited {
    Length { remaining: u64 },
    Chunked(Box<ChunkedDecoder>),
}

/// What one call to [`BodyDecoder::decode`] found.
#[derive(Debug)]
pub struct Step<'a> {
    /// Input bytes used.
    pub consumed: usize,
    /// Body bytes among them (decoded, for a chunked body).
    pub body: &'a [u8],
    /// Whether the body has ended, trailers included.
    pub done: bool,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`, refusing one longer than
    /// `max` bytes (`None` for no limit). `None` when there is no body;
    /// a length over the limit is refused at once, before any of it is read.
    ///
    /// # Errors
    ///
    /// [`BodyError::too_large`] when the head announces more than `max`.
    pub fn new(framing: Framing, max: Option<u64>) -> Result<Self, BodyError> {
        let max = max.unwrap_or(u64::MAX);
        let framing = match framing {
            Framing::Empty => Delimited::Length { remaining: 0 },
            Framing::Length(len) if len > max => return Err(too_large()),
            Framing::Length(len) => Delimited::Length { remaining: len },
            Framing::Chunked => Delimited::Chunked(Box::default()),
        };
        Ok(Self {
            framing,
            received: 0,
            max,
        })
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        match &self.framing {
            Delimited::Length { remaining } => *remaining == 0,
            Delimited::Chunked(decoder) => decoder.is_done(),
        }
    }

    /// Decodes from `input`; a chunked body's bytes are written to `out`,
    /// a length-delimited one's are a slice of `input`. Call again with the
    /// rest of the input (and more as it arrives) until `done`.
    ///
    /// # Errors
    ///
    /// A chunked body with broken framing, or any body past the limit.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        out: &'a mut [u8],
    ) -> Result<Step<'a>, BodyError> {
        let (consumed, body): (usize, &'a [u8]) = match &mut self.framing {
            Delimited::Length { remaining } => {
                let n = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= n as u64;
                (n, &input[..n])
            }
            Delimited::Chunked(decoder) => {
                let step = decoder.decode(input, out).map_err(malformed)?;
                (step.consumed, &out[..step.produced])
            }
        };
        self.received += body.len() as u64;
        if self.received > self.max {
            return Err(too_large());
        }
        Ok(Step {
            consumed,
            body,
            done: self.is_done(),
        })
    }

    /// A chunked body's trailer fields, once it is done.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        match &mut self.framing {
            Delimited::Chunked(decoder) if decoder.is_done() => Some(decoder.take_trailers()),
            _ => None,
        }
    }
}

fn too_large() -> BodyError {
    BodyError::too_large("request body larger than the limit")
}

fn malformed(error: ChunkError) -> BodyError {
    BodyError::malformed(match error {
        ChunkError::InvalidSize => "invalid chunk size",
        ChunkError::InvalidExtension => "invalid chunk extension",
        ChunkError::MissingTerminator => "chunk not terminated by CRLF",
        ChunkError::InvalidTrailer(why) => why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, max: Option<u64>, wire: &[u8]) -> Result<Vec<u8>, BodyError> {
        let mut decoder = BodyDecoder::new(framing, max)?;
        let mut body = Vec::new();
        let mut out = [0u8; 7];
        // A byte at a time: every split of the input must decode the same.
        for byte in wire.chunks(1) {
            let mut input = byte;
            while !input.is_empty() && !decoder.is_done() {
                let step = decoder.decode(input, &mut out)?;
                body.extend_from_slice(step.body);
                input = &input[step.consumed..];
            }
        }
        assert!(decoder.is_done(), "incomplete");
        Ok(body)
    }

    #[test]
    fn lengths_and_chunks_decode_on_every_split() {
        assert_eq!(
            decode_all(Framing::Length(5), None, b"hello").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode_all(
                Framing::Chunked,
                None,
                b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
            )
            .unwrap(),
            b"abcde"
        );
    }

    #[test]
    fn bodies_over_the_limit_are_too_large_whichever_their_framing() {
        let announced = BodyDecoder::new(Framing::Length(11), Some(10)).unwrap_err();
        assert!(announced.is_too_large());
        assert_eq!(announced.status(), 413);
        let chunked = decode_all(
            Framing::Chunked,
            Some(4),
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert!(chunked.unwrap_err().is_too_large());
        assert!(
            decode_all(
                Framing::Chunked,
                Some(5),
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn broken_chunks_are_malformed() {
        for wire in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"0\r\nHost: x\r\n\r\n",
        ] {
            let error = decode_all(Framing::Chunked, None, wire).unwrap_err();
            assert!(error.is_malformed(), "{wire:?}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn trailers_are_taken_once_done() {
        let mut decoder = BodyDecoder::new(Framing::Chunked, None).unwrap();
        let mut out = [0u8; 16];
        let step = decoder
            .decode(b"0\r\nChecksum: 7\r\n\r\n", &mut out)
            .unwrap();
        assert!(step.done);
        assert_eq!(decoder.take_trailers().unwrap()["checksum"], "7");
    }
}
