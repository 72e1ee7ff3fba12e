//! Server hooks that join the server to the layers.

use std::time::Duration;

use crate::Worker;
use crate::middleware::error_capture::{StuckRequest, report_stuck_request};
use crate::server::{InFlight, error_log};

// ANCHOR: report_stuck
/// The `worker_abort` hook: the request a worker was stuck on reaches
/// Sentry (when the error_capture layer reports) before the worker dies.
/// The arbiter kills it 2 s after the abort, so the report gets 1 s.
pub fn report_stuck(worker: Worker, stuck: Option<&InFlight>) {
    let Some(stuck) = stuck else { return };
    let sent = report_stuck_request(
        &StuckRequest {
            method: &stuck.method,
            target: &stuck.target,
            host: stuck.host.as_ref(),
            request_id: stuck.request_id.to_string(),
            ran_for: stuck.elapsed(),
            worker,
        },
        Duration::from_secs(1),
    );
    if let Some(event_id) = sent {
        error_log::info(format_args!(
            "worker {} (pid {}): the stuck request was reported to Sentry as event {}",
            worker.id,
            worker.pid,
            event_id.simple()
        ));
    }
}
// ANCHOR_END: report_stuck
