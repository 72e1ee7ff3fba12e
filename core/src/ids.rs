//! The identifiers that follow a request through the layers and into the
//! logs: its [`RequestId`] and, when tracing is on, its [`TraceId`].
//!
//! The server gives every request a UUID. A layer may replace it with the
//! id a client or proxy sent (`X-Request-Id`), once it has checked that the
//! id is safe to copy into logs and headers:
//!
//! ```
//! use turnstile_core::{RequestId, Uuid};
//! use turnstile_core::http::HeaderValue;
//!
//! let sent = HeaderValue::from_static("req-7f3a9c");
//! assert_eq!(RequestId::from_header(&sent).unwrap().to_string(), "req-7f3a9c");
//!
//! // Spaces and quotes could forge a log line; the layer generates an id instead.
//! let forged = HeaderValue::from_static("x\" 200 - \"GET /admin");
//! assert!(RequestId::from_header(&forged).is_none());
//!
//! let generated = RequestId::from(Uuid::from_u128(0x1234));
//! assert_eq!(generated.to_string(), "00000000-0000-0000-0000-000000001234");
//! ```

use std::fmt;

use http::HeaderValue;
use uuid::Uuid;

/// A request's id: the UUID the server generated, or a token a client sent
/// that passed [`RequestId::from_header`]'s checks.
///
/// Cheap to clone: a generated id is 16 bytes, an adopted one shares the
/// header's bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Generated(Uuid),
    Adopted(HeaderValue),
}

impl RequestId {
    /// The longest id adopted from a request header, in bytes.
    pub const MAX_LEN: usize = 128;

    /// The id of a request no server has seen (all zeros).
    pub const fn nil() -> Self {
        Self(Repr::Generated(Uuid::nil()))
    }

    /// Whether no server or layer has given the request an id.
    pub fn is_nil(&self) -> bool {
        self.0 == Repr::Generated(Uuid::nil())
    }

    /// Adopts the id a client or proxy sent, when it is 1 to
    /// [`MAX_LEN`](Self::MAX_LEN) bytes of letters, digits and
    /// `! # $ % & ' * + - . ^ _ ` | ~ / = : @`.
    ///
    /// Those are HTTP's token characters plus the separators of base64 and
    /// of most tracing ids; nothing that could end a quoted log field, split
    /// a header list or start a new line is accepted.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let valid = (1..=Self::MAX_LEN).contains(&bytes.len())
            && bytes.iter().all(|&byte| is_id_byte(byte));
        valid.then(|| Self(Repr::Adopted(value.clone())))
    }

    /// The id as a header value, for echoing it on the response.
    pub fn to_header_value(&self) -> HeaderValue {
        match &self.0 {
            Repr::Adopted(value) => value.clone(),
            Repr::Generated(uuid) => {
                let mut buffer = Uuid::encode_buffer();
                let text = uuid.hyphenated().encode_lower(&mut buffer);
                HeaderValue::from_str(text).expect("a UUID is a valid header value")
            }
        }
    }

    /// The generated UUID, or `None` for an adopted id.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match &self.0 {
            Repr::Generated(uuid) => Some(*uuid),
            Repr::Adopted(_) => None,
        }
    }
}

fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/=:@".contains(&byte)
}

impl From<Uuid> for RequestId {
    fn from(uuid: Uuid) -> Self {
        Self(Repr::Generated(uuid))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::nil()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Generated(uuid) => fmt::Display::fmt(&uuid.hyphenated(), f),
            // Only checked ASCII gets in, so this never fails.
            Repr::Adopted(value) => f.write_str(value.to_str().unwrap_or_default()),
        }
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// The W3C trace id of the trace a request belongs to: 16 bytes, shown as
/// 32 lower-case hex digits. The tracing layer puts one in the request's
/// extensions; the logging layer writes it next to the request id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// The 32 lower-case hex digits, without formatting machinery: the
    /// access log and error capture write one for every request.
    pub fn hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0; 32];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        text
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adopt(text: &[u8]) -> Option<RequestId> {
        RequestId::from_header(&HeaderValue::from_bytes(text).unwrap())
    }

    #[test]
    fn adopts_tokens_up_to_the_limit_only() {
        let longest = vec![b'a'; RequestId::MAX_LEN];
        assert!(adopt(&longest).is_some());
        let too_long = vec![b'a'; RequestId::MAX_LEN + 1];
        assert!(adopt(&too_long).is_none());
        assert!(adopt(b"").is_none());
        for accepted in [
            &b"4f1c2f5e-3a0b-4c6d-9e8f-0123456789ab"[..],
            b"Root=1-5759e988-bd862e3fe1be46a994272793",
            b"dGhpcyBpcyBiYXNlNjQ+/w==",
        ] {
            assert!(adopt(accepted).is_some(), "{accepted:?}");
        }
        for refused in [
            &b"two words"[..],
            b"quote\"d",
            b"a,b",
            b"semi;colon",
            b"back\\slash",
            b"tab\there",
            b"caf\xc3\xa9",
        ] {
            assert!(adopt(refused).is_none(), "{refused:?}");
        }
    }

    #[test]
    fn generated_and_adopted_ids_print_as_sent() {
        let uuid = Uuid::from_u128(0xabcdef);
        let generated = RequestId::from(uuid);
        assert_eq!(generated.as_uuid(), Some(uuid));
        assert_eq!(
            generated.to_header_value(),
            "00000000-0000-0000-0000-000000abcdef"
        );
        let adopted = adopt(b"abc-123").unwrap();
        assert_eq!(adopted.as_uuid(), None);
        assert_eq!(adopted.to_string(), "abc-123");
        assert!(RequestId::nil().is_nil() && !adopted.is_nil());
    }

    #[test]
    fn trace_ids_print_as_hex() {
        let mut bytes = [0; 16];
        bytes[0] = 0x4b;
        bytes[15] = 0x0f;
        assert_eq!(
            TraceId(bytes).to_string(),
            "4b00000000000000000000000000000f"
        );
        let every_digit = TraceId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128.to_be_bytes());
        assert_eq!(every_digit.to_string(), "0123456789abcdeffedcba9876543210");
        assert_eq!(every_digit.hex(), *b"0123456789abcdeffedcba9876543210");
    }
}
