//! What stands in for a secret in every output, and the one rule the
//! server and the layers share for paths: a path parameter's value
//! (`;jsessionid=…`) is never shown.
//!
//! ```
//! use turnstile_core::redact::path_parameters;
//!
//! assert_eq!(path_parameters("/cart;jsessionid=A1F3/items"), "/cart;jsessionid=[redacted]/items");
//! assert_eq!(path_parameters("/plain/path"), "/plain/path");
//! ```

use std::borrow::Cow;

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// `path` with the value of every parameter (`;name=value` in a segment,
/// as in `/cart;jsessionid=A1F3/items`) replaced by [`REDACTED`], whatever
/// its name, since in practice they carry session ids; a parameter without
/// a value is kept. Borrowed when nothing was hidden.
pub fn path_parameters(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let mut redacted: Option<String> = None;
    let capacity = path.len() + REDACTED.len();
    let mut copied_to = 0;
    let mut from = 0;
    // Every `;` starts a parameter, which runs to the next `;` or `/`.
    while let Some(at) = bytes[from..].iter().position(|&b| b == b';') {
        let start = from + at + 1;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b';' || b == b'/')
            .map_or(bytes.len(), |at| start + at);
        if let Some(equals) = bytes[start..end].iter().position(|&b| b == b'=') {
            let value_at = start + equals + 1;
            if value_at < end {
                let out = redacted.get_or_insert_with(|| String::with_capacity(capacity));
                out.push_str(&path[copied_to..value_at]);
                out.push_str(REDACTED);
                copied_to = end;
            }
        }
        from = end;
    }
    match redacted {
        None => Cow::Borrowed(path),
        Some(mut out) => {
            out.push_str(&path[copied_to..]);
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_value_is_hidden_and_the_rest_kept() {
        assert_eq!(
            path_parameters("/a;x=1;y=2/b;z=3"),
            "/a;x=[redacted];y=[redacted]/b;z=[redacted]"
        );
        assert_eq!(path_parameters("/a;flag/b;=/c;k="), "/a;flag/b;=/c;k=");
        assert!(matches!(
            path_parameters("/no/parameters"),
            Cow::Borrowed(_)
        ));
    }
}
