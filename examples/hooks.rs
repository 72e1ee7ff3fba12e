//! Every server hook, printed as it runs, with the process it runs in; and
//! a per-process resource torn down as each worker exits.
//!
//! Run with: `cargo run --example hooks`, then in another terminal
//! `curl http://ADDRESS/` with the address it prints, and stop it with
//! Ctrl-C (or `kill -TERM`). Each line says which hook ran, in which
//! process, for which worker.

use std::sync::Arc;

use turnstile::middleware::post_fork::PostFork;
use turnstile::server::{Arbiter, ArbiterConfig};
use turnstile::{Request, Response, Stack};

/// Stands for a resource that must be closed in the process that opened it.
struct Session {
    opened_by: u32,
}

impl Drop for Session {
    fn drop(&mut self) {
        say(&format!("teardown session opened_by={}", self.opened_by));
    }
}

fn say(what: &str) {
    println!("{what} pid={}", std::process::id());
}

fn main() {
    let config = ArbiterConfig {
        binds: vec!["127.0.0.1:0".into()],
        workers: 2,
        threads: 2,
        ..ArbiterConfig::default()
    };
    let code = Arbiter::new(config)
        .on_starting(|| say("on_starting"))
        .when_ready(|_| say("when_ready"))
        .pre_fork(|worker| say(&format!("pre_fork worker={}", worker.id)))
        .post_fork(|worker| say(&format!("post_fork worker={}", worker.id)))
        .post_worker_init(|worker| say(&format!("post_worker_init worker={}", worker.id)))
        .pre_request(|request| say(&format!("pre_request {}", request.uri().path())))
        .post_request(|info, completion| {
            say(&format!(
                "post_request {} status={} bytes={}",
                info.uri.path(),
                completion.status.as_u16(),
                completion.body_bytes
            ));
        })
        .worker_exit(|worker| say(&format!("worker_exit worker={}", worker.id)))
        .child_exit(|worker, how| say(&format!("child_exit worker={} {how:?}", worker.id)))
        .on_exit(|| say("on_exit"))
        .run(|| {
            Stack::new()
                .layer(PostFork::new(|| Session {
                    opened_by: std::process::id(),
                }))
                .app(|request: Request| {
                    let session = request.extensions().get::<Arc<Session>>().unwrap();
                    Response::new(format!("session of process {}\n", session.opened_by).into())
                })
        });
    std::process::exit(code);
}
