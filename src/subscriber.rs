//! The binary's `tracing` subscriber: the application's events go to the
//! error log, each request's event to the access log.
//!
//! It is installed once, in the arbiter, before any worker is forked, and
//! holds no thread and no open file of its own: the access log's buffers
//! and flushing thread are built in each worker that logs
//! ([`turnstile_core::PerProcess`]), so every worker inherits a working
//! subscriber.
//!
//! The application's events are filtered by `RUST_LOG` when it is set
//! (`info,my_app=debug`), by `--log-level` otherwise.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level as TracingLevel, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::{Layer, Registry};

use crate::config::Config;
use crate::middleware::request_log::{self, AccessLog, Output, RequestLog};
use crate::middleware::traces::{ProcessTracer, export, tracing_opentelemetry};
use crate::server::error_log::{self, Level};

/// Installs the subscriber for `config`; `rust_log` is `RUST_LOG`.
///
/// # Errors
///
/// `RUST_LOG` cannot be parsed, the access log cannot be opened, or a
/// subscriber was installed already.
pub fn install(config: &Config, rust_log: Option<String>) -> Result<(), String> {
    error_log::set_level(config.log_level);
    let events = match rust_log.as_deref().map(str::trim) {
        Some(directives) if !directives.is_empty() => directives
            .parse::<Targets>()
            .map_err(|e| format!("invalid RUST_LOG {directives:?}: {e}"))?,
        _ => Targets::new().with_default(level_filter(config.log_level)),
    };
    // Request events belong to the access log alone.
    let events = NotAccess(events.with_target(request_log::TARGET, LevelFilter::OFF));

    let access_log = if config.middleware.contains(&"request_log") {
        let output = Output::parse(&config.access_log);
        output
            .check()
            .map_err(|e| format!("cannot open the access log {}: {e}", config.access_log))?;
        let access_log = AccessLog::new(config.access_log_format.clone(), output);
        Some(access_log.with_filter(RequestLog::events()))
    } else {
        None
    };
    // ANCHOR: bridge
    // The application's `tracing` spans become OpenTelemetry spans, children
    // of the request's, when spans are exported at all.
    let spans = (config.middleware.contains(&"tracing") && export::is_configured()).then(|| {
        // The spans the log level lets through, as for the error log.
        tracing_opentelemetry::layer()
            .with_tracer(ProcessTracer)
            .with_filter(events.clone())
    });
    let subscriber = Registry::default()
        .with(ErrorLog.with_filter(events))
        .with(access_log)
        .with(spans);
    // ANCHOR_END: bridge
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())
}

/// The application's events as `RUST_LOG` or `--log-level` choose, without
/// the access log's, which it refuses by their target alone: every request
/// has one, and each layer's filter is asked about it again.
#[derive(Clone, Debug)]
struct NotAccess(Targets);

impl<S> Filter<S> for NotAccess {
    fn enabled(&self, metadata: &Metadata<'_>, context: &Context<'_, S>) -> bool {
        metadata.target() != request_log::TARGET
            && <Targets as Filter<S>>::enabled(&self.0, metadata, context)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.target() == request_log::TARGET {
            return Interest::never();
        }
        <Targets as Filter<S>>::callsite_enabled(&self.0, metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        <Targets as Filter<S>>::max_level_hint(&self.0)
    }
}

fn level_filter(level: Level) -> LevelFilter {
    match level {
        Level::Debug => LevelFilter::DEBUG,
        Level::Info => LevelFilter::INFO,
        Level::Warning => LevelFilter::WARN,
        Level::Error | Level::Critical => LevelFilter::ERROR,
    }
}

/// Writes events to the error log as Gunicorn writes its lines:
/// `[date] [pid] [LEVEL] target: message key=value …`.
struct ErrorLog;

impl<S: Subscriber> Layer<S> for ErrorLog {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            TracingLevel::ERROR => Level::Error,
            TracingLevel::WARN => Level::Warning,
            TracingLevel::INFO => Level::Info,
            _ => Level::Debug,
        };
        let mut line = Line::default();
        event.record(&mut line);
        error_log::write_unfiltered(
            level,
            format_args!("{}: {}{}", metadata.target(), line.message, line.fields),
        );
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
