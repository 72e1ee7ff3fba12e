//! In-process costs of the HTTP/1.1 engine: parsing request heads, decoding
//! a chunked body, and serialising a response head.
//!
//! Run: `cargo bench -p turnstile-server --bench http1`
//! The load benchmark against hyper is `bench/load.sh`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use turnstile_server::http1::encode::{BodyFraming, DateCache, write_head};
use turnstile_server::http1::{ChunkedDecoder, Limits, Parsed, parse_head};

/// What wrk sends.
const MINIMAL: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";

/// What a browser sends for a page, cookies and all.
const BROWSER: &[u8] =
    b"GET /articles/2026/11/the-life-of-a-request?utm_source=feed&page=2 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.7,fr;q=0.3\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/articles/\r\n\
Connection: keep-alive\r\n\
Cookie: sessionid=0123456789abcdef0123456789abcdef; csrftoken=fedcba9876543210; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=0, i\r\n\
\r\n";

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse_head");
    for (name, wire) in [("minimal", MINIMAL), ("browser", BROWSER)] {
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| match parse_head(black_box(wire), &limits) {
                Ok(Parsed::Complete { head, .. }) => head,
                _ => unreachable!("the head is whole and valid"),
            });
        });
    }
    group.finish();
}

fn chunked(c: &mut Criterion) {
    // 64 chunks of 1 KiB and the last chunk: a streamed upload.
    let mut wire = Vec::new();
    for _ in 0..64 {
        wire.extend_from_slice(b"400\r\n");
        wire.extend_from_slice(&[b'x'; 1024]);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut out = vec![0u8; 16 * 1024];
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode_64_KiB", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::default();
            let mut input = black_box(&wire[..]);
            while !decoder.is_done() {
                let step = decoder.decode(input, &mut out).expect("valid chunks");
                input = &input[step.consumed..];
            }
        });
    });
    group.finish();
}

fn serialise(c: &mut Criterion) {
    let mut dates = DateCache::default();
    let mut plain = HeaderMap::new();
    plain.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let mut page = plain.clone();
    page.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
    page.insert(
        "x-request-id",
        HeaderValue::from_static("0193b0e2-7c4d-7a8e-9f10-1a2b3c4d5e6f"),
    );
    page.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=63072000"),
    );
    page.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("theme=dark; Path=/; HttpOnly"),
    );
    let mut out = Vec::with_capacity(8 * 1024);
    let mut group = c.benchmark_group("write_head");
    for (name, headers) in [("hello", &plain), ("page", &page)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_head(
                    &mut out,
                    StatusCode::OK,
                    black_box(headers),
                    BodyFraming::Length(14),
                    true,
                    dates.now(),
                );
                black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, parse, chunked, serialise);
criterion_main!(benches);
