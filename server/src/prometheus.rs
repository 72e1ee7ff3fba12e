//! Metrics: a Prometheus recorder in each worker, and one page for the
//! whole server, served by the arbiter.
//!
//! Each worker installs its own recorder ([`install`]) after the fork, so no
//! worker inherits another's counts and the `metrics` facade's global
//! recorder, which can be set once per process, is set where it is used.
//! The layers and the application record through the facade; the engine
//! records the connections it holds and the requests it refuses.
//!
//! With `--metrics-bind`, the arbiter asks every worker for its page when
//! it is scraped, adds them up ([`exposition`]), keeps the totals of the
//! workers that exited, so no counter ever goes backwards, and adds its
//! own: workers alive, workers replaced and why, and the `process_*`
//! figures of every process it supervises. The arbiter stays one thread:
//! the scrape is one more thing its loop waits for.
//!
//! ```no_run
//! use turnstile_server::{Arbiter, ArbiterConfig};
//! # use turnstile_core::{Request, Response};
//!
//! let config = ArbiterConfig {
//!     workers: 2,
//!     metrics_bind: Some("127.0.0.1:9100".into()),
//!     ..ArbiterConfig::default()
//! };
//! Arbiter::new(config).run(|| {
//!     |_request: Request| {
//!         metrics::counter!("greetings_total").increment(1);
//!         Response::new("Hello\n".into())
//!     }
//! });
//! // curl http://127.0.0.1:9100/metrics shows greetings_total, summed over both workers.
//! ```

pub(crate) mod endpoint;
pub(crate) mod exposition;
pub(crate) mod process;

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::http1::dispatch::Slow;

// ANCHOR: install
/// Buckets of every histogram, in seconds unless named otherwise:
/// OpenTelemetry's advice for `http.server.request.duration`.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Buckets of histograms whose name ends in `_bytes`: powers of four from
/// 64 bytes to 64 MiB.
pub const SIZE_BUCKETS: [f64; 11] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Connections open in a worker.
pub const OPEN_CONNECTIONS: &str = "turnstile_open_connections";
/// Connections waiting between requests.
pub const IDLE_CONNECTIONS: &str = "turnstile_idle_connections";
/// Requests the engine answered itself with an error status (bad syntax,
/// too large, unsupported, too slow, or the server too full to hold them).
pub const REFUSED_REQUESTS: &str = "turnstile_refused_requests_total";
/// Bytes of memory the connections hold (input buffers, partial heads,
/// bodies in memory), against the ceiling `--client-memory` sets.
pub const CLIENT_MEMORY: &str = "turnstile_client_memory_bytes";
/// Bytes of request bodies spooled to files.
pub const SPOOLED: &str = "turnstile_spooled_bytes";
/// Clients closed for being slower than the minimum rates, by what they
/// were doing: `request_head`, `request_body` or `response`.
pub const SLOW_CLIENTS: &str = "turnstile_slow_clients_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs this process's Prometheus recorder as the `metrics` facade's
/// global recorder, with [`DURATION_BUCKETS`] and [`SIZE_BUCKETS`]. Workers
/// call it after the fork; a process that serves without an arbiter may
/// call it itself. False when a recorder was installed already.
pub fn install() -> bool {
    let builder = PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &SIZE_BUCKETS));
    let Ok(builder) = builder else {
        return false;
    };
    match builder.install_recorder() {
        Ok(handle) => {
            let installed = HANDLE.set(handle).is_ok();
            describe();
            installed
        }
        Err(_) => false,
    }
}
// ANCHOR_END: install

/// This process's metrics in the text format, without the `process_*`
/// figures (the arbiter adds those for every process); empty when no
/// recorder was installed. Rendering also does the recorder's upkeep.
pub fn snapshot() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Moves the samples histograms gathered since the last page into their
/// buckets, so they do not pile up between scrapes.
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// This process's page: its metrics and its `process_*` figures. What
/// `--metrics-path` serves on the main port.
pub fn render_this_process() -> String {
    let mut page = exposition::Exposition::parse(&snapshot());
    if let Some(stats) = process::Stats::of(std::process::id()) {
        stats.add_to(&mut page);
    }
    page.render()
}

/// The statuses the engine refuses requests with: their series exist from
/// the start, at zero, so a rate over them is defined before the first.
const REFUSAL_STATUSES: [&str; 9] = [
    "400", "408", "413", "414", "417", "431", "501", "503", "505",
];

fn describe() {
    for status in REFUSAL_STATUSES {
        metrics::counter!(REFUSED_REQUESTS, "http_response_status_code" => status).absolute(0);
    }
    for slow in [Slow::Head, Slow::Body, Slow::Response] {
        metrics::counter!(SLOW_CLIENTS, "while" => slow.label()).absolute(0);
    }
    metrics::describe_counter!(
        SLOW_CLIENTS,
        Unit::Count,
        "Clients closed for sending or reading slower than the minimum rate, by what they were doing."
    );
    metrics::describe_gauge!(
        CLIENT_MEMORY,
        Unit::Bytes,
        "Memory held for clients: input buffers, partial heads, bodies in memory."
    );
    metrics::describe_gauge!(SPOOLED, Unit::Bytes, "Request bodies spooled to files.");
    metrics::describe_gauge!(OPEN_CONNECTIONS, "Connections open.");
    metrics::describe_gauge!(
        IDLE_CONNECTIONS,
        "Connections open and waiting between requests."
    );
    metrics::describe_counter!(
        REFUSED_REQUESTS,
        Unit::Count,
        "Requests the server refused before the application saw them, by status."
    );
}

/// Sets the connection gauges: sampled by the worker before each page,
/// rather than moved by every request.
pub(crate) fn set_connections(open: usize, idle: usize) {
    metrics::gauge!(OPEN_CONNECTIONS).set(open as f64);
    metrics::gauge!(IDLE_CONNECTIONS).set(idle as f64);
}

/// Sets the gauges of what the connections hold, sampled before each page.
pub(crate) fn set_held(memory: u64, spooled: u64) {
    metrics::gauge!(CLIENT_MEMORY).set(memory as f64);
    metrics::gauge!(SPOOLED).set(spooled as f64);
}

/// Counts a client closed for being too slow at `what`.
pub(crate) fn too_slow(what: Slow) {
    metrics::counter!(SLOW_CLIENTS, "while" => what.label()).increment(1);
}

/// Counts a request the engine refused with `status`.
pub(crate) fn refused(status: http::StatusCode) {
    metrics::counter!(REFUSED_REQUESTS, "http_response_status_code" => status.as_str().to_owned())
        .increment(1);
}
