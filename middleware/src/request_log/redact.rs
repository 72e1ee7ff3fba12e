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
        // Lower-cased once, on the stack, rather than compared ignoring case
        // at every position for every word.
        let mut buffer = [0; 64];
        let Some(lower) = buffer.get_mut(..key.len()) else {
            return self
                .words
                .iter()
                .any(|word| contains_ignoring_ascii_case(key.as_bytes(), word.as_bytes()));
        };
        lower.copy_from_slice(key.as_bytes());
        lower.make_ascii_lowercase();
        self.words.iter().any(|word| {
            let word = word.as_bytes();
            word.len() <= lower.len()
                && lower
                    .windows(word.len())
                    .any(|window| window[0] == word[0] && window == word)
        })
    }
    // ANCHOR_END: is_secret

    /// `query` with every secret value replaced by [`REDACTED`]; borrowed
    /// when nothing was secret.
    pub fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        let bytes = query.as_bytes();
        let mut redacted: Option<String> = None;
        // Where the text not yet copied to `redacted` starts.
        let mut copied_to = 0;
        let mut start = 0;
        // Bytes, not `str::split`: the separators are ASCII, and a query is
        // short enough that setting up a searcher costs more than scanning.
        while start <= bytes.len() {
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b'&')
                .map_or(bytes.len(), |at| start + at);
            if let Some(equals) = bytes[start..end].iter().position(|&b| b == b'=') {
                let value_at = start + equals + 1;
                if value_at < end && self.is_secret(&query[start..value_at - 1]) {
                    let out = redacted.get_or_insert_with(|| String::with_capacity(query.len()));
                    out.push_str(&query[copied_to..value_at]);
                    out.push_str(REDACTED);
                    copied_to = end;
                }
            }
            start = end + 1;
        }
        match redacted {
            None => Cow::Borrowed(query),
            Some(mut out) => {
                out.push_str(&query[copied_to..]);
                Cow::Owned(out)
            }
        }
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
    fn keys_of_any_length_and_case_are_matched() {
        let redactor = Redactor::default();
        let long = "x".repeat(100);
        for (key, secret) in [
            ("X-Amz-Signature", true),
            ("PAGE", false),
            ("", false),
            (&*format!("{long}Token"), true),
            (&*format!("{long}_page"), false),
            (&*format!("{}Secret", "y".repeat(58)), true),
        ] {
            assert_eq!(redactor.is_secret(key), secret, "{key}");
        }
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
