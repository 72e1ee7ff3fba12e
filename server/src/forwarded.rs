//! Proxy headers, believed only from trusted proxies (`--forwarded-allow-ips`).
//!
//! Behind a reverse proxy every connection comes from the proxy, so the
//! proxy says who the client was (`X-Forwarded-For`, or `for=` in RFC
//! 7239's `Forwarded`) and whether it spoke HTTPS (`X-Forwarded-Proto:
//! https`, `X-Forwarded-Protocol: ssl`, `X-Forwarded-Ssl: on`, or `proto=`).
//! Anyone can send those headers, so they change a request's
//! [`Environ::client_addr`] and [`Environ::scheme`] only when the peer is a
//! trusted proxy: an address in the list (default `127.0.0.1,::1`, `*` for
//! any) or a Unix-socket peer, as with Gunicorn.
//!
//! ```
//! use turnstile_server::forwarded::TrustedProxies;
//!
//! let proxies: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
//! assert!(proxies.trusts(Some("10.1.2.3:5000".parse().unwrap())));
//! assert!(!proxies.trusts(Some("192.0.2.1:5000".parse().unwrap())));
//! assert!(proxies.trusts(None)); // a Unix-socket peer
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::uri::Scheme;
use http::{HeaderMap, HeaderName, header};
use ipnet::IpNet;
use turnstile_core::Environ;

/// The peers allowed to set the client address and scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies {
    any: bool,
    nets: Vec<IpNet>,
}

impl Default for TrustedProxies {
    /// Gunicorn's default: the loopback addresses.
    fn default() -> Self {
        "127.0.0.1,::1".parse().expect("the default list parses")
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Parses a comma-separated list of addresses and networks
    /// (`10.0.0.0/8`), or `*` for any peer.
    fn from_str(list: &str) -> Result<Self, String> {
        let mut proxies = Self {
            any: false,
            nets: Vec::new(),
        };
        for item in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            if item == "*" {
                proxies.any = true;
            } else if let Ok(net) = item.parse::<IpNet>() {
                proxies.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                proxies.nets.push(IpNet::from(ip));
            } else {
                return Err(format!(
                    "`{item}` is not an IP address or network (such as 10.0.0.0/8), nor `*`"
                ));
            }
        }
        Ok(proxies)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        if self.any {
            items.insert(0, "*".into());
        }
        f.write_str(&items.join(","))
    }
}

/// Headers from a trusted proxy that contradict each other.
#[derive(Debug, PartialEq, Eq)]
pub struct ConflictingSchemes;

impl fmt::Display for ConflictingSchemes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the proxy's scheme headers contradict each other")
    }
}

impl TrustedProxies {
    /// Whether `peer` may set the client address and scheme; `None` is a
    /// Unix-socket peer, always trusted.
    pub fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        match peer {
            None => true,
            Some(peer) => self.trusts_ip(peer.ip()),
        }
    }

    fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.any || self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Sets `environ`'s client address and scheme from `headers` when its
    /// peer is trusted.
    ///
    /// # Errors
    ///
    /// When the scheme headers disagree (Gunicorn answers 400 too).
    pub fn apply(
        &self,
        headers: &HeaderMap,
        environ: &mut Environ,
    ) -> Result<(), ConflictingSchemes> {
        if !self.trusts(environ.remote_addr) || !has_proxy_headers(headers) {
            return Ok(());
        }
        let forwarded = rfc7239(headers);
        let client = match &forwarded {
            Some(forwarded) => self.client(&forwarded.fors),
            None => self.client(&x_forwarded_for(headers)),
        };
        if let Some(client) = client {
            // A forwarded address has no port the server can know.
            environ.client_addr = Some(SocketAddr::new(client, 0));
        }
        let mut https = None;
        let mut vote = |secure: bool| match https {
            Some(earlier) if earlier != secure => Err(ConflictingSchemes),
            _ => {
                https = Some(secure);
                Ok(())
            }
        };
        if let Some(proto) = forwarded.and_then(|forwarded| forwarded.proto) {
            vote(proto.eq_ignore_ascii_case("https"))?;
        }
        for (name, secure_value) in &SECURE_SCHEME_HEADERS {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                vote(value.trim().eq_ignore_ascii_case(secure_value))?;
            }
        }
        match https {
            Some(true) => environ.scheme = Scheme::HTTPS,
            Some(false) => environ.scheme = Scheme::HTTP,
            None => {}
        }
        Ok(())
    }

    /// The client: walking from the nearest hop, the first address that is
    /// not itself a trusted proxy, or the farthest one if all are.
    fn client(&self, hops: &[IpAddr]) -> Option<IpAddr> {
        let mut farthest = None;
        for &hop in hops.iter().rev() {
            if !self.trusts_ip(hop) {
                return Some(hop);
            }
            farthest = Some(hop);
        }
        farthest
    }
}

/// Gunicorn's `secure_scheme_headers`: each header and the value that means
/// HTTPS.
const SECURE_SCHEME_HEADERS: [(HeaderName, &str); 3] = [
    (HeaderName::from_static("x-forwarded-proto"), "https"),
    (HeaderName::from_static("x-forwarded-protocol"), "ssl"),
    (HeaderName::from_static("x-forwarded-ssl"), "on"),
];

/// Names, not strings: a lookup by a string parses it first, and every
/// request from a trusted peer is looked through for all five.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn has_proxy_headers(headers: &HeaderMap) -> bool {
    let is_proxy_header = |name: &HeaderName| {
        name == header::FORWARDED
            || name == X_FORWARDED_FOR
            || SECURE_SCHEME_HEADERS
                .iter()
                .any(|(scheme, _)| scheme == name)
    };
    // A lookup hashes the name: with few fields, comparing each is cheaper.
    if headers.keys_len() <= 8 {
        headers.keys().any(is_proxy_header)
    } else {
        [header::FORWARDED, X_FORWARDED_FOR]
            .iter()
            .chain(SECURE_SCHEME_HEADERS.iter().map(|(name, _)| name))
            .any(|name| headers.contains_key(name))
    }
}

/// Every address of every `X-Forwarded-For` line, farthest first. A hop
/// that is not an address (`unknown`) cuts the list: nothing farther can
/// be placed.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let hops: Vec<Option<IpAddr>> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect();
    let start = hops.iter().rposition(Option::is_none).map_or(0, |i| i + 1);
    hops[start..].iter().flatten().copied().collect()
}

/// What RFC 7239's `Forwarded` says: the `for=` hops (farthest first) and
/// the nearest hop's `proto=`.
struct Forwarded {
    fors: Vec<IpAddr>,
    proto: Option<String>,
}

fn rfc7239(headers: &HeaderMap) -> Option<Forwarded> {
    let mut fors = Vec::new();
    let mut proto = None;
    let mut any = false;
    for value in headers.get_all(header::FORWARDED).iter() {
        let value = value.to_str().ok()?;
        for element in value.split(',') {
            any = true;
            let mut element_for = None;
            for pair in element.split(';') {
                let Some((key, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                if key.trim().eq_ignore_ascii_case("for") {
                    element_for = Some(parse_node(value));
                } else if key.trim().eq_ignore_ascii_case("proto") {
                    proto = Some(value.to_owned());
                }
            }
            match element_for {
                Some(Some(ip)) => fors.push(ip),
                // `unknown` or an obfuscated name: nothing before it counts.
                Some(None) => fors.clear(),
                None => {}
            }
        }
    }
    any.then_some(Forwarded { fors, proto })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn environ_after(
        peer: &str,
        proxies: &str,
        headers: &[(&str, &str)],
    ) -> Result<Environ, ConflictingSchemes> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut environ = Environ::new();
        let peer: SocketAddr = peer.parse().unwrap();
        environ.remote_addr = Some(peer);
        environ.client_addr = Some(peer);
        let proxies: TrustedProxies = proxies.parse().unwrap();
        proxies.apply(&map, &mut environ).map(|()| environ)
    }

    fn client(environ: &Environ) -> String {
        environ.client_addr.unwrap().ip().to_string()
    }

    #[test]
    fn only_a_trusted_peer_sets_the_client_and_scheme() {
        let headers = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ];
        let trusted = environ_after("127.0.0.1:5000", "127.0.0.1,::1", &headers).unwrap();
        assert_eq!(client(&trusted), "203.0.113.7");
        assert_eq!(trusted.scheme, Scheme::HTTPS);
        let stranger = environ_after("198.51.100.9:5000", "127.0.0.1,::1", &headers).unwrap();
        assert_eq!(client(&stranger), "198.51.100.9");
        assert_eq!(stranger.scheme, Scheme::HTTP);
        let any = environ_after("198.51.100.9:5000", "*", &headers).unwrap();
        assert_eq!(client(&any), "203.0.113.7");
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        // The client forged the first entry; the trusted 10.0.0.2 appended
        // the address it saw.
        let headers = [("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.2")];
        let environ = environ_after("10.0.0.1:80", "10.0.0.0/8", &headers).unwrap();
        assert_eq!(client(&environ), "203.0.113.7");
        let headers = [("x-forwarded-for", "unknown, 10.0.0.3")];
        let environ = environ_after("10.0.0.1:80", "10.0.0.0/8", &headers).unwrap();
        assert_eq!(client(&environ), "10.0.0.3");
    }

    #[test]
    fn rfc_7239_forwarded_is_read_with_ports_and_brackets() {
        let headers = [(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711";proto=https"#,
        )];
        let environ = environ_after("[::1]:9000", "::1", &headers).unwrap();
        assert_eq!(client(&environ), "2001:db8:cafe::17");
        assert_eq!(environ.scheme, Scheme::HTTPS);
    }

    #[test]
    fn contradicting_scheme_headers_are_refused() {
        // Gunicorn's invalid/019: https by one header, off by another.
        let headers = [("x-forwarded-proto", "https"), ("x-forwarded-ssl", "off")];
        assert_eq!(
            environ_after("127.0.0.1:1", "*", &headers).unwrap_err(),
            ConflictingSchemes
        );
    }

    #[test]
    fn lists_parse_and_bad_items_are_named() {
        let proxies: TrustedProxies = " 10.0.0.0/8 ,::1".parse().unwrap();
        assert!(proxies.trusts(Some("[::ffff:10.9.9.9]:1".parse().unwrap())));
        assert_eq!(proxies.to_string(), "10.0.0.0/8,::1/128");
        let error = "10.0.0.0/8, proxy.internal"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(error.contains("`proxy.internal`"), "{error}");
    }

    #[test]
    fn proxy_headers_are_found_among_few_fields_and_many() {
        let others: Vec<String> = (0..12).map(|n| format!("x-other-{n}")).collect();
        for proxy in [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-protocol",
            "x-forwarded-ssl",
        ] {
            for fields in [0, 3, 12] {
                let mut map = HeaderMap::new();
                for name in &others[..fields] {
                    map.insert(
                        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        HeaderValue::from_static("1"),
                    );
                }
                assert!(!has_proxy_headers(&map), "{fields} fields");
                map.insert(
                    http::HeaderName::from_static(proxy),
                    HeaderValue::from_static("1"),
                );
                assert!(has_proxy_headers(&map), "{proxy} among {fields} fields");
            }
        }
    }
}
