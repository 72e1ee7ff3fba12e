//! What of a request reaches Sentry, and what is hidden on the way.
//!
//! Always hidden: the credentials in [`ALWAYS_SECRET`], any header whose
//! name has a secret word (the [`Redactor`]'s, such as `token` or `key`,
//! or one of [`SECRET_HEADER_WORDS`]: `X-Auth-Token`, `X-CSRFToken`,
//! `X-Amzn-Oidc-Data`), by the rule the access log hides headers with
//! ([`Redactor::is_secret_header`]); the values of secret-looking query
//! keys (`?token=`, `password=`) and of every path parameter
//! (`;jsessionid=`), in the URL and in any header value that is a URL
//! (`Referer`, `X-Original-URL`). Hidden unless `send_default_pii` is
//! on: the client's address and the headers that carry it ([`FORWARDING`],
//! and any name with `forwarded` or ending in `-ip` or `clientip`). Bodies
//! are never read.
//!
//! ```
//! use turnstile_core::http::HeaderMap;
//! use turnstile_middleware::error_capture::scrub;
//! use turnstile_middleware::redact::Redactor;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("cookie", "session=abc".parse().unwrap());
//! headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
//! headers.insert("accept", "text/html".parse().unwrap());
//!
//! let shown = scrub::headers(&headers, false, &Redactor::default());
//! assert_eq!(shown["cookie"], "[redacted]");
//! assert_eq!(shown["x-forwarded-for"], "[redacted]");
//! assert_eq!(shown["accept"], "text/html");
//! ```

use sentry::protocol::{Map, Url};
use turnstile_core::http::{HeaderMap, Uri};

use crate::redact::{REDACTED, Redactor};

/// The headers always hidden and the words that hide a header, shared
/// with the access log.
pub use crate::redact::{ALWAYS_SECRET, SECRET_HEADER_WORDS};

/// Headers that carry the client's address, sent only with
/// `send_default_pii`; names with `forwarded`, or ending in `-ip` or
/// `clientip`, count too.
pub const FORWARDING: &[&str] = &[
    "forwarded",
    "x-envoy-external-address",
    "cloudfront-viewer-address",
];

fn is_forwarding(name: &str) -> bool {
    FORWARDING.contains(&name)
        || name.contains("forwarded")
        || name.ends_with("-ip")
        || name.ends_with("clientip")
}

// ANCHOR: headers
/// The request's headers as Sentry shows them, secret values replaced by
/// [`REDACTED`]. A name sent twice has its values joined with `, `.
pub fn headers(
    headers: &HeaderMap,
    send_default_pii: bool,
    redactor: &Redactor,
) -> Map<String, String> {
    let mut shown: Map<String, String> = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        let hidden = redactor.is_secret_header(name) || (!send_default_pii && is_forwarding(name));
        let value = if hidden {
            REDACTED.into()
        } else {
            // A value with a query or path parameters is a URL (`Referer`,
            // `X-Original-URL`): its secrets go, as they do from the
            // request's URL.
            let text = String::from_utf8_lossy(value.as_bytes());
            match redactor.url(&text) {
                std::borrow::Cow::Borrowed(_) => text,
                std::borrow::Cow::Owned(redacted) => redacted.into(),
            }
        };
        shown
            .entry(name.to_owned())
            .and_modify(|values| {
                if !hidden {
                    values.push_str(", ");
                    values.push_str(&value);
                }
            })
            .or_insert_with(|| value.into_owned());
    }
    shown
}
// ANCHOR_END: headers

/// The URL the client asked for, `scheme://host/path?query`, with path
/// parameters and secret query values redacted and any user or password
/// removed. `None` when the host is unknown or the result is not a URL.
pub fn url(scheme: &str, host: Option<&str>, uri: &Uri, redactor: &Redactor) -> Option<Url> {
    let host = uri
        .authority()
        .map(|authority| authority.as_str())
        .or(host)?;
    // The user and password of an absolute-form target; Host has none.
    let host = host.rsplit('@').next().unwrap_or(host);
    let mut text = format!("{scheme}://{host}{}", redactor.path(uri.path()));
    if let Some(query) = uri.query() {
        text.push('?');
        text.push_str(&redactor.query(query));
    }
    let url = Url::parse(&text).ok()?;
    Some(sentry::utils::scrub_pii_from_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_secret_looking_headers_are_hidden() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer abc"),
            ("proxy-authorization", "Basic abc"),
            ("cookie", "sessionid=abc"),
            ("x-api-key", "abc"),
            ("x-auth-token", "abc"),
            ("x-csrftoken", "abc"),
            ("user-agent", "curl/8.0"),
        ] {
            headers.append(name, value.parse().unwrap());
        }
        headers.append("cookie", "csrftoken=def".parse().unwrap());
        headers.append("x-amzn-oidc-data", "abc".parse().unwrap());
        headers.append(
            "referer",
            "https://shop.example/reset?email=a&token=abc"
                .parse()
                .unwrap(),
        );
        headers.append(
            "x-original-url",
            "/cart;jsessionid=abc/items".parse().unwrap(),
        );
        headers.append("accept", "text/html;q=0.9".parse().unwrap());
        let shown = super::headers(&headers, true, &Redactor::default());
        for secret in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
            "x-auth-token",
            "x-csrftoken",
            "x-amzn-oidc-data",
        ] {
            assert_eq!(shown[secret], REDACTED, "{secret}");
        }
        assert_eq!(
            shown["referer"],
            "https://shop.example/reset?email=a&token=[redacted]"
        );
        assert_eq!(shown["x-original-url"], "/cart;jsessionid=[redacted]/items");
        assert_eq!(shown["accept"], "text/html;q=0.9");
        assert_eq!(shown["user-agent"], "curl/8.0");
        let everything = format!("{shown:?}");
        assert!(
            !everything.contains("abc") && !everything.contains("def"),
            "{everything}"
        );
    }

    #[test]
    fn forwarding_headers_need_send_default_pii() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("forwarded", "for=203.0.113.9".parse().unwrap());
        headers.insert("fly-client-ip", "203.0.113.9".parse().unwrap());
        headers.insert("x-azure-clientip", "203.0.113.9".parse().unwrap());
        headers.append("accept", "text/html".parse().unwrap());
        headers.append("accept", "*/*".parse().unwrap());
        let hidden = super::headers(&headers, false, &Redactor::default());
        assert_eq!(hidden["x-forwarded-for"], REDACTED);
        assert_eq!(hidden["forwarded"], REDACTED);
        assert_eq!(hidden["fly-client-ip"], REDACTED);
        assert_eq!(hidden["x-azure-clientip"], REDACTED);
        assert_eq!(hidden["accept"], "text/html, */*");
        let shown = super::headers(&headers, true, &Redactor::default());
        assert_eq!(shown["x-forwarded-for"], "203.0.113.9");
    }

    #[test]
    fn urls_lose_secret_query_values_and_user_info() {
        let redactor = Redactor::default();
        let uri: Uri = "/login?next=/home&password=hunter2&api_key=k"
            .parse()
            .unwrap();
        let url = url("https", Some("shop.example"), &uri, &redactor).unwrap();
        assert_eq!(
            url.as_str(),
            "https://shop.example/login?next=/home&password=[redacted]&api_key=[redacted]"
        );
        let absolute: Uri = "http://alice:pw@shop.example/x".parse().unwrap();
        let url = super::url("http", None, &absolute, &redactor).unwrap();
        assert_eq!(url.as_str(), "http://shop.example/x");
        assert!(super::url("http", None, &"/x".parse().unwrap(), &redactor).is_none());
        let with_parameters: Uri = "/cart;jsessionid=s3cret/items?page=2".parse().unwrap();
        let url = super::url("http", Some("shop.example"), &with_parameters, &redactor).unwrap();
        assert_eq!(
            url.as_str(),
            "http://shop.example/cart;jsessionid=[redacted]/items?page=2"
        );
    }
}
