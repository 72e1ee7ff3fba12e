// ANCHOR: all
//! The pipeline each worker builds: a batch processor (the [`SpanQueue`])
//! exporting OTLP over HTTP/protobuf (the [`OtlpExporter`]) with a
//! blocking client, configured by OpenTelemetry's standard environment
//! variables.
//!
//! `opentelemetry-otlp`'s own blocking client is `reqwest::blocking`, which
//! runs a tokio runtime on a hidden thread; [`UreqClient`] sends with
//! `ureq` from the batch processor's thread instead, with timeouts.

use std::time::Duration;

use opentelemetry::{Key, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::otlp::{OtlpExporter, OtlpSettings};
use super::queue::{QueueSettings, SpanQueue};

/// How long an export may take, connection included, unless
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (in
/// milliseconds) says otherwise.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a process on its way out waits for its last spans to be sent:
/// one export's worth.
pub const SHUTDOWN_TIMEOUT: Duration = EXPORT_TIMEOUT;

/// The variables that name where spans go; without one, nothing is
/// exported.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

fn variable(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The first of `names` that is set.
fn first(names: [&str; 2]) -> Option<(&str, String)> {
    names
        .into_iter()
        .find_map(|name| variable(name).map(|value| (name, value)))
}

/// Whether the environment asks for spans to be exported: an endpoint is
/// set, `OTEL_SDK_DISABLED` is not `true` and `OTEL_TRACES_EXPORTER` is
/// not `none`. Whether [`from_env`] builds a provider.
pub fn is_configured() -> bool {
    let disabled = variable("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let none = variable("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && !none && first(ENDPOINT_VARIABLES).is_some()
}

/// Checks what this pipeline cannot do, before anything starts: an
/// exporter other than OTLP, a protocol other than HTTP/protobuf, a timeout
/// that is not a number of milliseconds, compression, an endpoint that is
/// not a URL or a header that is not one, a batch setting (`OTEL_BSP_*`)
/// that is not a positive number.
///
/// # Errors
///
/// The variable and why it cannot be used.
pub fn check_env() -> Result<(), String> {
    if !is_configured() {
        return Ok(());
    }
    if let Some(exporter) = variable("OTEL_TRACES_EXPORTER")
        && exporter != "otlp"
    {
        return Err(format!(
            "OTEL_TRACES_EXPORTER={exporter}: only otlp (or none) is supported"
        ));
    }
    only(
        [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ],
        "http/protobuf",
        "no gRPC, no JSON",
    )?;
    only(
        [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ],
        "none",
        "no gzip",
    )?;
    OtlpSettings::from_env(export_timeout()?)?;
    QueueSettings::from_env()?;
    Ok(())
}

/// Refuses a value of the first of `names` that is set, other than the one
/// this pipeline supports.
fn only(names: [&str; 2], supported: &str, not: &str) -> Result<(), String> {
    match first(names) {
        Some((name, value)) if value != supported => Err(format!(
            "{name}={value}: only {supported} is supported ({not})"
        )),
        _ => Ok(()),
    }
}

fn export_timeout() -> Result<Duration, String> {
    match first([
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]) {
        Some((name, millis)) => millis
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}={millis}: expected milliseconds")),
        None => Ok(EXPORT_TIMEOUT),
    }
}

// ANCHOR: from_env
/// A tracer provider from the environment, as OpenTelemetry's SDKs read
/// it, or `None` when [`is_configured`] is false:
///
/// - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
///   `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended),
///   `OTEL_EXPORTER_OTLP_HEADERS`, and the `_TIMEOUT` variables;
/// - `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`;
/// - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`;
/// - `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE` and
///   `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, for the [`SpanQueue`] that batches
///   the spans.
///
/// What the environment leaves out of the resource is filled in:
/// `service.name` (`default_service`), `service.version`
/// (`service_version`) and `service.instance.id`, new in every process, so
/// each worker is told apart.
///
/// # Errors
///
/// What [`check_env`] refuses.
pub fn from_env(
    default_service: &str,
    service_version: &str,
) -> Result<Option<SdkTracerProvider>, String> {
    if !is_configured() {
        return Ok(None);
    }
    check_env()?;
    let timeout = export_timeout()?;
    let settings = QueueSettings::from_env()?;
    let exporter = OtlpExporter::new(OtlpSettings::from_env(timeout)?);
    // The environment's resource first; ours only fills its gaps.
    let from_env = Resource::builder().build();
    let lacks = |key: &'static str| from_env.get(&Key::from_static_str(key)).is_none();
    let mut defaults = Vec::new();
    let unnamed = from_env
        .get(&Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    if unnamed {
        defaults.push(KeyValue::new("service.name", default_service.to_owned()));
    }
    if lacks("service.version") {
        defaults.push(KeyValue::new("service.version", service_version.to_owned()));
    }
    if lacks("service.instance.id") {
        defaults.push(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ));
    }
    let resource = Resource::builder_empty()
        .with_attributes(
            from_env
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attributes(defaults)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(SpanQueue::new(exporter, settings))
            .with_resource(resource)
            .build(),
    ))
}
// ANCHOR_END: from_env

// ANCHOR: client
/// OTLP's HTTP client, on `ureq`: blocking, which suits the batch
/// processor's own thread, and bounded by a timeout. A failed export is
/// logged (at most once a minute), since the SDK's own logging is off.
#[derive(Debug)]
pub struct UreqClient {
    agent: ureq::Agent,
    last_complaint: std::sync::Mutex<Option<std::time::Instant>>,
}

impl UreqClient {
    /// A client bounded by [`EXPORT_TIMEOUT`].
    pub fn new() -> Self {
        Self::with_timeout(EXPORT_TIMEOUT)
    }

    /// A client bounded by `timeout`, connection included.
    pub fn with_timeout(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(Duration::from_secs(1))))
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Self {
            agent,
            last_complaint: std::sync::Mutex::new(None),
        }
    }

    fn complain(&self, what: &dyn std::fmt::Display) {
        let mut last = self
            .last_complaint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(target: "turnstile::traces", "exporting spans failed: {what}");
        }
    }
}

impl Default for UreqClient {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let response = match self.agent.run(Request::from_parts(parts, body.as_ref())) {
            Ok(response) => response,
            Err(error) => {
                self.complain(&error);
                return Err(error.into());
            }
        };
        if response.status().as_u16() >= 400 {
            self.complain(&format_args!(
                "the collector answered {}",
                response.status()
            ));
        }
        let (parts, mut body) = response.into_parts();
        let body = body.read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }
}
// ANCHOR_END: client
// ANCHOR_END: all
