// ANCHOR: all
//! Redaction: the secrets a request carries (the values of secret-looking
//! query keys, every path parameter, credential headers) never reach a log
//! line, a span or an error report.
//!
//! A query key is secret when its name, percent-decoded and lower-cased,
//! contains one of the words of [`DEFAULT_SECRET_WORDS`]: `access_token`,
//! `X-Amz-Signature` and `client_secret` all match. Matching by word errs
//! on the side of hiding (`monkey`, `compass` and `inside` hide too); a
//! log line with one value too few is cheaper than a leaked token.
//!
//! The words cover every key of Sentry's `DEFAULT_DENYLIST` and of
//! OpenTelemetry's default query redaction (`AWSAccessKeyId`, `Signature`,
//! `sig`, `X-Goog-Signature`), each a test checks:
//!
//! - `pass`: `password`, `passwd`, `passphrase`, and `pass` itself;
//! - `pwd`: `mysql_pwd`;
//! - `secret`, `token` (`csrftoken`, `XSRF-TOKEN`), `jwt`, and `code`
//!   (an OAuth code);
//! - `key`: `api_key`, `apikey`, `x_api_key`, `private_key`,
//!   `privatekey`, `AWSAccessKeyId`;
//! - `sig`: `signature`, `X-Goog-Signature`, `sig`;
//! - `auth` (`authorization`) and `credential` (`credentials`);
//! - `session` (`sessionid`, `aiohttp_session`, `user_session`) and `sid`
//!   (`PHPSESSID`, `connect.sid`);
//! - `csrf` and `xsrf` (`_csrf`, `_xsrf`), and `cookie` (`set_cookie`);
//! - `symfony`: Symfony 1's session cookie, on Sentry's list; no
//!   ordinary key holds the word, so hiding it costs nothing;
//! - `forwarded_for`: `x_forwarded_for`, the client's address as a query
//!   or environ key. With its underscore it leaves the `X-Forwarded-For`
//!   header alone, which the access log prints when its format names it
//!   and Sentry gets with `send_default_pii`.
//!
//! Not `private`: `private_key` holds `key` already, and `private` alone
//! would hide flags such as `private=1`.
//!
//! Path parameters (`/cart;jsessionid=A1F3/items`) are hidden whatever
//! their names: servlet containers and others put session ids there, under
//! names no word list knows, and few applications put anything else.
//!
//! A header holds a credential when it is one of [`ALWAYS_SECRET`], or its
//! name has one of the words or of [`SECRET_HEADER_WORDS`]
//! ([`Redactor::is_secret_header`]): the access log and Sentry hide the
//! same headers.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The words that make a query key (or a header name) secret, unless
/// configured otherwise; the module docs say why each is there.
pub const DEFAULT_SECRET_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "jwt",
    "code",
    "key",
    "sig",
    "auth",
    "credential",
    "session",
    "sid",
    "csrf",
    "xsrf",
    "cookie",
    "symfony",
    "forwarded_for",
];

/// Request and response headers whose values are credentials, whatever
/// the redactor's words.
pub const ALWAYS_SECRET: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Words that make a header name secret, besides the redactor's: the
/// identity and signature headers of proxies and platforms.
pub const SECRET_HEADER_WORDS: &[&str] =
    &["oidc", "principal", "hmac", "cert", "dpop", "csrf", "xsrf"];

pub use turnstile_core::redact::REDACTED;

/// Decides which query values and headers are secret, and hides them and
/// every path parameter.
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

    /// Whether the header `name` (lower-case, as `HeaderName` spells it)
    /// holds a credential: one of [`ALWAYS_SECRET`], or a name with one of
    /// this redactor's words or of [`SECRET_HEADER_WORDS`].
    pub fn is_secret_header(&self, name: &str) -> bool {
        ALWAYS_SECRET.contains(&name)
            || self.is_secret(name)
            || SECRET_HEADER_WORDS.iter().any(|word| name.contains(word))
    }

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

    /// `path` with the value of every parameter (`;name=value` in a
    /// segment, as in `/cart;jsessionid=A1F3/items`) replaced by
    /// [`REDACTED`], whatever its name; a parameter without a value is
    /// kept. Borrowed when nothing was hidden.
    pub fn path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        turnstile_core::redact::path_parameters(path)
    }

    /// `url` (a `Referer`, say) with its path parameters and its query's
    /// secret values redacted. The parameters are looked for only in a
    /// path (`/…`) or a `scheme://` URL: `text/html;q=0.9` is no URL.
    pub fn url<'a>(&self, url: &'a str) -> Cow<'a, str> {
        let end = url.find(['?', '#']).unwrap_or(url.len());
        if let Some(start) = path_start(&url[..end])
            && let Cow::Owned(path) = self.path(&url[start..end])
        {
            let whole = format!("{}{path}{}", &url[..start], &url[end..]);
            return Cow::Owned(self.query_in(&whole).into_owned());
        }
        self.query_in(url)
    }

    /// `url` with the query after its first `?` redacted, fragment kept (a
    /// query in the fragment, `#/reset?token=…`, is redacted too).
    fn query_in<'a>(&self, url: &'a str) -> Cow<'a, str> {
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

/// Where the path of `head` (a URL up to its query or fragment) starts:
/// at once for a path, after the authority for `scheme://host/…`, and
/// nowhere for anything else.
fn path_start(head: &str) -> Option<usize> {
    if head.starts_with('/') {
        return Some(0);
    }
    let (scheme, rest) = head.split_once("://")?;
    let mut letters = scheme.chars();
    let is_scheme = letters.next().is_some_and(|c| c.is_ascii_alphabetic())
        && letters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return None;
    }
    Some(scheme.len() + "://".len() + rest.find('/')?)
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

    /// Sentry's `DEFAULT_DENYLIST` (sentry-python's `scrubber.py`).
    const SENTRY_DENYLIST: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "api_key",
        "apikey",
        "auth",
        "credentials",
        "mysql_pwd",
        "privatekey",
        "private_key",
        "token",
        "session",
        "csrftoken",
        "sessionid",
        "x_csrftoken",
        "x_forwarded_for",
        "set_cookie",
        "cookie",
        "authorization",
        "x_api_key",
        "aiohttp_session",
        "connect.sid",
        "csrf_token",
        "csrf",
        "_csrf",
        "_csrf_token",
        "PHPSESSID",
        "_session",
        "symfony",
        "user_session",
        "_xsrf",
        "XSRF-TOKEN",
    ];

    /// The query keys OpenTelemetry's HTTP semantic conventions redact by
    /// default.
    const OTEL_QUERY_KEYS: &[&str] = &["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

    #[test]
    fn every_key_sentry_and_opentelemetry_hide_is_secret() {
        let redactor = Redactor::default();
        for key in SENTRY_DENYLIST.iter().chain(OTEL_QUERY_KEYS) {
            assert!(redactor.is_secret(key), "{key}");
            assert_eq!(
                redactor.query(&format!("{key}=v&page=2")),
                format!("{key}=[redacted]&page=2")
            );
        }
        for key in ["pass", "passphrase", "jsessionid", "ASP.NET_SessionId"] {
            assert!(redactor.is_secret(key), "{key}");
        }
    }

    #[test]
    fn ordinary_keys_are_not_secret() {
        let redactor = Redactor::default();
        for key in [
            "page", "q", "sort", "lang", "id", "user", "name", "state", "next", "email",
        ] {
            assert!(!redactor.is_secret(key), "{key}");
        }
        let query = "page=2&q=rust&sort=asc&lang=en&id=7&user=ann&name=a";
        assert!(matches!(redactor.query(query), Cow::Borrowed(_)));
    }

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
            ("pass=hunter2&page=2", "pass=[redacted]&page=2"),
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
    fn every_path_parameter_value_is_hidden() {
        let redactor = Redactor::default();
        for (path, expected) in [
            ("/x;jsessionid=ABC/y", "/x;jsessionid=[redacted]/y"),
            (
                "/a;flag;color=red;k=v/b;c=d",
                "/a;flag;color=[redacted];k=[redacted]/b;c=[redacted]",
            ),
            ("/;sid=1", "/;sid=[redacted]"),
            ("/x;k=a=b/y", "/x;k=[redacted]/y"),
            ("/x;k=/y;flag", "/x;k=/y;flag"),
            ("/caf\u{e9};k=v", "/caf\u{e9};k=[redacted]"),
            ("/plain/path", "/plain/path"),
            ("", ""),
        ] {
            assert_eq!(redactor.path(path), expected, "{path}");
        }
        assert!(matches!(redactor.path("/x;flag/y"), Cow::Borrowed(_)));
    }

    #[test]
    fn urls_keep_their_path_and_fragment() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor.url("https://example.com/reset?token=abc&x=1#top"),
            "https://example.com/reset?token=[redacted]&x=1#top"
        );
        assert_eq!(redactor.url("https://example.com/"), "https://example.com/");
        assert_eq!(
            redactor.url("https://example.com/app#/reset?token=abc"),
            "https://example.com/app#/reset?token=[redacted]"
        );
    }

    #[test]
    fn urls_lose_their_path_parameters_and_other_values_keep_theirs() {
        let redactor = Redactor::default();
        for (value, expected) in [
            (
                "https://shop.example/cart;jsessionid=A1/items?token=t&page=2#top",
                "https://shop.example/cart;jsessionid=[redacted]/items?token=[redacted]&page=2#top",
            ),
            ("/cart;jsessionid=A1", "/cart;jsessionid=[redacted]"),
            ("http://host;x=1", "http://host;x=1"),
            ("text/html;q=0.9,*/*;q=0.8", "text/html;q=0.9,*/*;q=0.8"),
            (
                "<https://a.example/x>; rel=preload",
                "<https://a.example/x>; rel=preload",
            ),
            ("for=192.0.2.1;proto=https", "for=192.0.2.1;proto=https"),
        ] {
            assert_eq!(redactor.url(value), expected, "{value}");
        }
    }

    #[test]
    fn credential_headers_are_secret_and_the_others_are_not() {
        let redactor = Redactor::default();
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-auth-token",
            "x-csrftoken",
            "x-xsrf-token",
            "x-amzn-oidc-data",
            "x-session-id",
        ] {
            assert!(redactor.is_secret_header(name), "{name}");
        }
        for name in [
            "accept",
            "user-agent",
            "referer",
            "x-request-id",
            "x-forwarded-for",
            "x-forwarded-host",
            "content-type",
            "traceparent",
        ] {
            assert!(!redactor.is_secret_header(name), "{name}");
        }
        // Without any word, the credentials stay hidden.
        assert!(Redactor::new(Vec::<&str>::new()).is_secret_header("cookie"));
    }
}
// ANCHOR_END: all
