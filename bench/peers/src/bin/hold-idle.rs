//! Holds idle keep-alive connections open beside a load benchmark: opens
//! COUNT connections to ADDR, makes one request on each, then keeps them
//! open, idle, for SECONDS and exits. Prints when all are open.
//!
//! Run: `cargo run --release --manifest-path bench/peers/Cargo.toml --bin hold-idle -- 127.0.0.1:8080 1000 30`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().expect("ADDR COUNT SECONDS");
    let count: usize = args.next().map_or(1000, |n| n.parse().expect("COUNT"));
    let seconds: u64 = args.next().map_or(30, |n| n.parse().expect("SECONDS"));
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .expect("request");
        // Read the whole (small) response: up to the end of its body.
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while !response.ends_with(b"Hello, world!\n") {
            let n = stream.read(&mut buf).expect("response");
            assert!(n > 0, "the server closed an idle connection early");
            response.extend_from_slice(&buf[..n]);
        }
        held.push(stream);
    }
    println!("hold-idle: {count} connections open and idle");
    std::thread::sleep(Duration::from_secs(seconds));
    // Check they were kept: each still answers.
    let mut alive = 0;
    for mut stream in held {
        let mut byte = [0u8; 1];
        if stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .is_ok()
            && stream.read(&mut byte).is_ok_and(|n| n == 1)
        {
            alive += 1;
        }
    }
    println!("hold-idle: {alive} of {count} still open at the end");
}
