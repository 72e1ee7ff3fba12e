// ANCHOR: all
//! Query-string redaction: the values of secret-looking keys never reach a
//! log line.
//!
//! A key is secret when its name, percent-decoded and lower-cased, contains
//! one of the words: `access_token`, `X-Amz-Signature` and `client_secret`
//! all match. Matching by word errs on the side of hiding (`monkey` hides
//! too); a log line with one value too few is cheaper than a leaked token.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The words that make a query key secret, unless configured otherwise.
pub const DEFAULT_SECRET_WORDS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "key",
    "code",
    "signature",
    "sig",
    "auth",
    "session",
    "credential",
    "jwt",
];

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// Decides which query values are secret, and hides them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redactor {
    words: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(DEFAULT_SECRET_WORDS.iter().copied())
    }
}

impl Redactor {
    /// A redactor for keys that contain any of `words` (case-insensitive).
    pub fn new<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut words: Vec<String> = words
            .into_iter()
            .map(str::trim)
            .filter(|word| !word.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        words.sort();
        words.dedup();
        Self { words }
    }

    /// The same redactor, hiding keys with these words too.
    pub fn and<'a>(self, words: impl IntoIterator<Item = &'a str>) -> Self {
        let added = Self::new(words);
        Self::new(self.words.iter().chain(&added.words).map(String::as_str))
    }

    // ANCHOR: is_secret
    /// Whether `key`, as it appears in a query string, names a secret.
    pub fn is_secret(&self, key: &str) -> bool {
        // Every request's query goes through here: only an escaped key is
        // decoded into a new string.
        if key.contains('%') {
            let key = percent_decode_str(key)
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            return self.words.iter().any(|word| key.contains(word.as_str()));
        }
        self.words
            .iter()
            .any(|word| contains_ignoring_ascii_case(key.as_bytes(), word.as_bytes()))
    }
    // ANCHOR_END: is_secret

    /// `query` with every secret value replaced by [`REDACTED`]; borrowed
    /// when nothing was secret.
    pub fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        let mut redacted = String::new();
        // Where the text not yet copied to `redacted` starts.
        let mut copied_to = 0;
        let mut start = 0;
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && !value.is_empty()
                && self.is_secret(key)
            {
                let value_at = start + key.len() + 1;
                redacted.push_str(&query[copied_to..value_at]);
                redacted.push_str(REDACTED);
                copied_to = value_at + value.len();
            }
            start += pair.len() + 1;
        }
        if copied_to == 0 {
            return Cow::Borrowed(query);
        }
        redacted.push_str(&query[copied_to..]);
        Cow::Owned(redacted)
    }

    /// `url` (a `Referer`, say) with its query redacted.
    pub fn url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        let Some((before, rest)) = url.split_once('?') else {
            return Cow::Borrowed(url);
        };
        let (query, fragment) = match rest.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (rest, None),
        };
        match self.query(query) {
            Cow::Borrowed(_) => Cow::Borrowed(url),
            Cow::Owned(query) => Cow::Owned(match fragment {
                Some(fragment) => format!("{before}?{query}#{fragment}"),
                None => format!("{before}?{query}"),
            }),
        }
    }
}

/// Whether `haystack` contains `needle` (lower-case), whatever the case of
/// `haystack`'s ASCII letters.
fn contains_ignoring_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len()
        && haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_hidden_and_the_rest_kept_verbatim() {
        let redactor = Redactor::default();
        let cases = [
            ("a=1&b=two", "a=1&b=two"),
            ("token=abc", "token=[redacted]"),
            (
                "q=rust&access_token=abc&page=2",
                "q=rust&access_token=[redacted]&page=2",
            ),
            (
                "X-Amz-Signature=f00&X-Amz-Date=1",
                "X-Amz-Signature=[redacted]&X-Amz-Date=1",
            ),
            ("%74oken=abc", "%74oken=[redacted]"),
            ("PASSWORD=hunter2", "PASSWORD=[redacted]"),
            (
                "api_key=k&code=c&state=s",
                "api_key=[redacted]&code=[redacted]&state=s",
            ),
            ("token&token=", "token&token="),
            ("", ""),
        ];
        for (query, expected) in cases {
            assert_eq!(redactor.query(query), expected, "{query}");
        }
        assert!(matches!(redactor.query("a=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn configured_words_add_to_the_defaults() {
        let redactor = Redactor::default().and(["Email", " "]);
        assert_eq!(
            redactor.query("email=a@b&token=t"),
            "email=[redacted]&token=[redacted]"
        );
        assert_eq!(Redactor::new(["email"]).query("token=t"), "token=t");
    }

    #[test]
    fn urls_keep_their_path_and_fragment() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor.url("https://example.com/reset?token=abc&x=1#top"),
            "https://example.com/reset?token=[redacted]&x=1#top"
        );
        assert_eq!(redactor.url("https://example.com/"), "https://example.com/");
    }
}
// ANCHOR_END: all
