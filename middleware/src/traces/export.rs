// ANCHOR: all
//! The pipeline each worker builds: a batch processor exporting OTLP over
//! HTTP/protobuf with a blocking client, configured by OpenTelemetry's
//! standard environment variables.
//!
//! `opentelemetry-otlp`'s own blocking client is `reqwest::blocking`, which
//! runs a tokio runtime on a hidden thread; [`UreqClient`] sends with
//! `ureq` from the batch processor's thread instead, with timeouts.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// How long an export may take, connection included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process on its way out waits for its last spans to be sent.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// The variables that name where spans go; without one, nothing is
/// exported.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Whether the environment names an endpoint and leaves the SDK enabled:
/// whether [`from_env`] builds a provider.
pub fn is_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    !disabled && ENDPOINT_VARIABLES.iter().any(|name| set(name))
}

// ANCHOR: from_env
/// A tracer provider from the environment, as OpenTelemetry's SDKs read
/// it, or `None` when `OTEL_SDK_DISABLED=true` or no endpoint is set:
///
/// - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
///   `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), and
///   `OTEL_EXPORTER_OTLP_HEADERS`;
/// - `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service is
///   `default_service` unless they name one);
/// - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
///
/// The resource also has `service.version` and a `service.instance.id`
/// that is new in every process, so each worker is told apart.
///
/// # Errors
///
/// The exporter cannot be built (an endpoint that is not a URL).
pub fn from_env(
    default_service: &str,
    service_version: &str,
) -> Result<Option<SdkTracerProvider>, String> {
    if !is_configured() {
        return Ok(None);
    }
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(UreqClient::new())
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new("service.version", service_version.to_owned()),
        KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
    ]);
    let named = set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if !named {
        resource = resource.with_service_name(default_service.to_owned());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}
// ANCHOR_END: from_env

// ANCHOR: client
/// OTLP's HTTP client, on `ureq`: blocking, which suits the batch
/// processor's own thread, and bounded by [`EXPORT_TIMEOUT`].
#[derive(Debug)]
pub struct UreqClient(ureq::Agent);

impl UreqClient {
    /// A client with the timeouts.
    pub fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(1)))
            .timeout_global(Some(EXPORT_TIMEOUT))
            .build()
            .new_agent();
        Self(agent)
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
        let response = self.0.run(Request::from_parts(parts, body.to_vec()))?;
        let (parts, mut body) = response.into_parts();
        let body = body.read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }
}
// ANCHOR_END: client
// ANCHOR_END: all
