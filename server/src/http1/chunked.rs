//! A decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! It does no I/O: [`ChunkedDecoder::decode`] takes whatever bytes have
//! arrived and a buffer for body bytes, and says how much of each it used.
//! That makes it the same code whether the bytes come whole, one at a time,
//! or split anywhere, and lets the tests try all of those.
//!
//! ```
//! use turnstile_server::http1::ChunkedDecoder;
//!
//! let mut decoder = ChunkedDecoder::new();
//! let wire = b"5\r\nhello\r\n6;lang=en\r\n world\r\n0\r\nChecksum: 42\r\n\r\n";
//! let mut body = [0u8; 64];
//! let (mut read, mut written) = (0, 0);
//! while !decoder.is_done() {
//!     let step = decoder.decode(&wire[read..], &mut body[written..]).unwrap();
//!     read += step.consumed;
//!     written += step.produced;
//! }
//! assert_eq!(&body[..written], b"hello world");
//! assert_eq!(decoder.trailers()["checksum"], "42");
//! ```

use http::{HeaderMap, HeaderName};

/// How much of the input and output one call to
/// [`decode`](ChunkedDecoder::decode) used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Body bytes written to the output buffer.
    pub produced: usize,
}

/// Why a chunked body was refused. The body is broken past repair, so the
/// connection must close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line that is not hex digits, optional extensions, CRLF.
    InvalidSize,
    /// A chunk extension with a bare CR or LF, or longer than allowed.
    InvalidExtension,
    /// Chunk data not followed by CRLF, or the body ended early.
    MissingTerminator,
    /// A malformed, forbidden or oversized trailer field.
    InvalidTrailer(&'static str),
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::InvalidSize => f.write_str("invalid chunk size"),
            ChunkError::InvalidExtension => f.write_str("invalid chunk extension"),
            ChunkError::MissingTerminator => f.write_str("chunk not terminated by CRLF"),
            ChunkError::InvalidTrailer(why) => write!(f, "invalid trailer: {why}"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Longest chunk extension accepted on one chunk-size line.
const MAX_EXTENSION: usize = 4096;
/// Most bytes of trailer fields accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;
/// Fields that must never come in a trailer: they frame or route the message
/// or carry credentials, and a proxy may not have seen them.
const FORBIDDEN_TRAILERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "trailer",
    "authorization",
    "te",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size { size: u64, digits: u8 },
    /// Whitespace after the size, allowed only before an extension.
    SizeSpace { size: u64 },
    /// Inside `;extensions`, `len` bytes so far.
    Extension { size: u64, len: usize },
    /// Saw the CR ending a size line.
    SizeLf { size: u64 },
    /// `remaining` bytes of chunk data to pass on.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Saw CR inside or ending a trailer line.
    TrailerLf { empty: bool },
    /// The body and its trailers are complete.
    Done,
}

/// Decodes one chunked body. See the [module docs](self).
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    trailer_section: Vec<u8>,
    trailers: HeaderMap,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            trailer_section: Vec::new(),
            trailers: HeaderMap::new(),
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer fields, once [`is_done`](Self::is_done).
    pub fn trailers(&self) -> &HeaderMap {
        &self.trailers
    }

    /// Takes the trailer fields, leaving none.
    pub fn take_trailers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.trailers)
    }

    /// Decodes from `input` into `out` until the input runs out, the output
    /// is full, or the body ends. Call again with more input (or more room)
    /// while [`is_done`](Self::is_done) is false; if the connection ends
    /// first, the body was cut short: [`ChunkError::MissingTerminator`].
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<Decoded, ChunkError> {
        let mut consumed = 0;
        let mut produced = 0;
        while consumed < input.len() && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let room = out.len() - produced;
                if room == 0 {
                    break;
                }
                let available = input.len() - consumed;
                let n = usize::try_from(remaining)
                    .map_or(available, |r| r.min(available))
                    .min(room);
                out[produced..produced + n].copy_from_slice(&input[consumed..consumed + n]);
                consumed += n;
                produced += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            let byte = input[consumed];
            consumed += 1;
            self.state = self.step(byte)?;
        }
        Ok(Decoded { consumed, produced })
    }

    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { size, digits } => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    // 16 hex digits fill a u64; more would overflow.
                    if digits == 16 {
                        return Err(ChunkError::InvalidSize);
                    }
                    let value = u64::from((byte as char).to_digit(16).unwrap_or(0));
                    State::Size {
                        size: size << 4 | value,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(ChunkError::InvalidSize),
                b'\r' => State::SizeLf { size },
                b';' => State::Extension { size, len: 0 },
                b' ' | b'\t' => State::SizeSpace { size },
                _ => return Err(ChunkError::InvalidSize),
            },
            State::SizeSpace { size } => match byte {
                b' ' | b'\t' => State::SizeSpace { size },
                b';' => State::Extension { size, len: 0 },
                _ => return Err(ChunkError::InvalidSize),
            },
            State::Extension { size, len } => match byte {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkError::InvalidExtension),
                _ if len >= MAX_EXTENSION => return Err(ChunkError::InvalidExtension),
                _ => State::Extension { size, len: len + 1 },
            },
            State::SizeLf { size } => match byte {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => State::Data { remaining: size },
                // A CR not followed by LF: inside an extension it is a bare
                // CR there, otherwise a broken size line.
                _ => return Err(ChunkError::InvalidExtension),
            },
            State::Data { .. } => unreachable!("data is copied in bulk by decode"),
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::MissingTerminator),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(ChunkError::MissingTerminator),
            },
            State::TrailerStart => match byte {
                b'\r' => State::TrailerLf { empty: true },
                b' ' | b'\t' => return Err(ChunkError::InvalidTrailer("obsolete line folding")),
                _ => self.push_trailer(byte)?,
            },
            State::Trailer => match byte {
                b'\r' => State::TrailerLf { empty: false },
                b'\n' => return Err(ChunkError::InvalidTrailer("bare LF")),
                _ => self.push_trailer(byte)?,
            },
            State::TrailerLf { empty } => match byte {
                b'\n' if empty => {
                    self.trailers = parse_trailers(&self.trailer_section)?;
                    State::Done
                }
                b'\n' => {
                    self.trailer_section.extend_from_slice(b"\r\n");
                    State::TrailerStart
                }
                _ if empty => return Err(ChunkError::MissingTerminator),
                _ => return Err(ChunkError::InvalidTrailer("bare CR")),
            },
            State::Done => State::Done,
        })
    }

    fn push_trailer(&mut self, byte: u8) -> Result<State, ChunkError> {
        if self.trailer_section.len() >= MAX_TRAILERS {
            return Err(ChunkError::InvalidTrailer("trailer section too large"));
        }
        self.trailer_section.push(byte);
        Ok(State::Trailer)
    }
}

fn parse_trailers(section: &[u8]) -> Result<HeaderMap, ChunkError> {
    let mut trailers = HeaderMap::new();
    if section.is_empty() {
        return Ok(trailers);
    }
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ChunkError::InvalidTrailer("field without a colon"))?;
        let name = HeaderName::from_bytes(&line[..colon])
            .map_err(|_| ChunkError::InvalidTrailer("invalid field name"))?;
        if FORBIDDEN_TRAILERS.contains(&name.as_str()) {
            return Err(ChunkError::InvalidTrailer("field not allowed in a trailer"));
        }
        let value = super::head::field_value(&line[colon + 1..])
            .map_err(|_| ChunkError::InvalidTrailer("invalid field value"))?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `piece` bytes into a buffer of
    /// `room` bytes at a time.
    fn decode(wire: &[u8], piece: usize, room: usize) -> Result<(Vec<u8>, HeaderMap), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut buf = vec![0; room];
        let mut at = 0;
        while !decoder.is_done() {
            if at == wire.len() {
                return Err(ChunkError::MissingTerminator);
            }
            let end = (at + piece).min(wire.len());
            let mut input = &wire[at..end];
            while !input.is_empty() && !decoder.is_done() {
                let step = decoder.decode(input, &mut buf)?;
                body.extend_from_slice(&buf[..step.produced]);
                input = &input[step.consumed..];
                at += step.consumed;
            }
        }
        Ok((body, decoder.take_trailers()))
    }

    fn every_split(wire: &[u8]) -> Result<Vec<u8>, ChunkError> {
        let whole = decode(wire, wire.len().max(1), 1 << 16);
        for piece in 1..=wire.len().min(8) {
            for room in [1, 3, 64] {
                assert_eq!(
                    decode(wire, piece, room),
                    whole,
                    "piece {piece}, room {room}"
                );
            }
        }
        whole.map(|(body, _)| body)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers_in_every_split() {
        let wire = b"5\r\nhello\r\n6 ;a=\"b c\"\r\n world\r\n0\r\nX-Sum: 1\r\nX-Sum: 2\r\n\r\n";
        assert_eq!(every_split(wire).unwrap(), b"hello world");
        let (_, trailers) = decode(wire, 4, 4).unwrap();
        assert_eq!(trailers.get_all("x-sum").iter().count(), 2);
    }

    #[test]
    fn sizes_in_upper_case_and_with_leading_zeros() {
        assert_eq!(
            every_split(b"000A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn refuses_broken_framing() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5_\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"10000000000000000\r\n", ChunkError::InvalidSize),
            (
                b"5;a\rb\r\nhello\r\n0\r\n\r\n",
                ChunkError::InvalidExtension,
            ),
            (b"5;a\nhello\r\n0\r\n\r\n", ChunkError::InvalidExtension),
            (b"5\r\nhelloXY0\r\n\r\n", ChunkError::MissingTerminator),
            (
                b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n",
                ChunkError::InvalidTrailer("field not allowed in a trailer"),
            ),
            (
                b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
                ChunkError::InvalidTrailer("field not allowed in a trailer"),
            ),
            (
                b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n",
                ChunkError::InvalidTrailer("obsolete line folding"),
            ),
        ];
        for (wire, error) in cases {
            assert_eq!(
                every_split(wire).unwrap_err(),
                *error,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn a_body_cut_short_is_unfinished() {
        for wire in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"0\r\n",
            b"0\r\nX: 1\r\n",
        ] {
            assert_eq!(
                decode(wire, 3, 8).unwrap_err(),
                ChunkError::MissingTerminator
            );
        }
    }
}
