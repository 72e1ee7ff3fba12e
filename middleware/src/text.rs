//! Shared by the layers: numbers and addresses written as text without the
//! formatting machinery, since every request's log line, `Server-Timing`
//! header and span writes some.
//!
//! ```text
//! Duration 1.5 ms with 3 decimals  ->  "1.500"   (milliseconds)
//! Duration 1.5 ms with 6 decimals  ->  "0.001500" (seconds)
//! 127.0.0.1                        ->  "127.0.0.1"
//! ```

use std::io::Write as _;

/// A duration rounded to the microsecond, in units of `10^decimals`
/// microseconds with that many decimals (at most 6; more count as 6):
/// seconds with 6, milliseconds with 3, as `{:.6}` and `{:.3}` print them,
/// without floating point. The access log and `Server-Timing` write one for
/// every request.
pub(crate) fn push_micros(out: &mut Vec<u8>, duration: std::time::Duration, decimals: u32) {
    out.extend_from_slice(Micros::new(duration, decimals).as_bytes());
}

/// The text [`push_micros`] writes, on the stack.
pub(crate) struct Micros {
    text: [u8; 28],
    len: usize,
}

impl Micros {
    pub(crate) fn new(duration: std::time::Duration, decimals: u32) -> Self {
        let decimals = decimals.min(6);
        // In u64: 128-bit division costs more than the rest put together.
        let micros = duration
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from((duration.subsec_nanos() + 500) / 1000));
        let unit = 10u64.pow(decimals);
        let mut text = [0; 28];
        let mut digits = itoa::Buffer::new();
        let whole = digits.format(micros / unit).as_bytes();
        let mut len = whole.len();
        text[..len].copy_from_slice(whole);
        text[len] = b'.';
        len += 1;
        let mut fraction = micros % unit;
        for place in text[len..len + decimals as usize].iter_mut().rev() {
            *place = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        len += decimals as usize;
        Self { text, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// An address as text; an IPv4 one without the formatting machinery, since
/// every request's log line and span has one.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    let std::net::IpAddr::V4(ip) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_and_addresses_read_as_format_would_write_them() {
        let d = Duration::from_micros(1_500);
        assert_eq!(
            Micros::new(d, 3).as_bytes(),
            format!("{:.3}", 1.5).as_bytes()
        );
        assert_eq!(Micros::new(d, 6).as_bytes(), b"0.001500");
        let mut out = Vec::new();
        push_ip(&mut out, "10.0.200.7".parse().unwrap());
        assert_eq!(out, b"10.0.200.7");
        out.clear();
        push_ip(&mut out, "::1".parse().unwrap());
        assert_eq!(out, b"::1");
    }
}
