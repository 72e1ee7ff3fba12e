// ANCHOR: all
//! The span queue: the batch processor a worker's pipeline uses, built for
//! a process whose request threads share few cores.
//!
//! It keeps the SDK's `BatchSpanProcessor` behaviour and settings
//! (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`,
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`): ended spans wait in a bounded queue,
//! one thread exports them in batches when a batch is full or the delay
//! has passed, a full queue drops what does not fit, and flush and
//! shutdown send everything queued. What differs is the queue.
//! The SDK's is a lock-free channel whose senders spin while the exporting
//! thread, preempted, holds a slot; with eight request threads on one core
//! that spinning took 8% of a loaded worker's time (one profile, `bench/stack.sh`).
//! Here the queue is a vector behind a mutex, held for a push by a request
//! thread and for a swap of vectors by the exporting thread, and a thread
//! that finds the mutex taken sleeps instead of spinning.
//!
//! ```
//! use opentelemetry::trace::{Tracer, TracerProvider as _};
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use turnstile_middleware::traces::queue::{QueueSettings, SpanQueue};
//!
//! let exported = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder()
//!     .with_span_processor(SpanQueue::new(exported.clone(), QueueSettings::default()))
//!     .build();
//! provider.tracer("demo").in_span("work", |_| {});
//! provider.force_flush().unwrap();
//! assert_eq!(exported.get_finished_spans().unwrap()[0].name, "work");
//! ```

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE_DEFAULT,
    OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT, OTEL_BSP_SCHEDULE_DELAY,
    OTEL_BSP_SCHEDULE_DELAY_DEFAULT, Span, SpanData, SpanExporter, SpanProcessor,
};

/// How long a flush waits for the exporting thread.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue's bounds and pace: OpenTelemetry's batch processor settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a span may wait before its batch is sent, full or not.
    pub schedule_delay: Duration,
    /// How many spans may wait; the ones beyond are dropped.
    pub max_queue_size: usize,
    /// How many spans one export sends at most.
    pub max_export_batch_size: usize,
}

impl Default for QueueSettings {
    /// The specification's defaults: 5 s, 2,048 spans, batches of 512.
    fn default() -> Self {
        Self {
            schedule_delay: OTEL_BSP_SCHEDULE_DELAY_DEFAULT,
            max_queue_size: OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT,
            max_export_batch_size: OTEL_BSP_MAX_EXPORT_BATCH_SIZE_DEFAULT,
        }
    }
}

impl QueueSettings {
    /// The defaults, overridden by the `OTEL_BSP_*` variables that are set.
    ///
    /// # Errors
    ///
    /// A variable that is not a positive whole number, by name.
    pub fn from_env() -> Result<Self, String> {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    /// The defaults, overridden by the variables `lookup` finds.
    fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let defaults = Self::default();
        let number = |name: &str| -> Result<Option<u64>, String> {
            match lookup(name).map(|value| value.trim().to_owned()) {
                Some(value) if !value.is_empty() => match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!("{name}={value}: expected a positive whole number")),
                },
                _ => Ok(None),
            }
        };
        let max_queue_size =
            number(OTEL_BSP_MAX_QUEUE_SIZE)?.map_or(defaults.max_queue_size, |n| n as usize);
        let max_export_batch_size = number(OTEL_BSP_MAX_EXPORT_BATCH_SIZE)?
            .map_or(defaults.max_export_batch_size, |n| n as usize);
        Ok(Self {
            schedule_delay: number(OTEL_BSP_SCHEDULE_DELAY)?
                .map_or(defaults.schedule_delay, Duration::from_millis),
            max_queue_size,
            // As the specification says: a batch is never larger than the queue.
            max_export_batch_size: max_export_batch_size.min(max_queue_size),
        })
    }
}

// ANCHOR: queue
/// The batch processor. See the [module docs](self).
#[derive(Debug)]
pub struct SpanQueue<E: SpanExporter + 'static> {
    shared: Arc<Shared<E>>,
    exporting: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared<E> {
    state: Mutex<State>,
    /// Wakes the exporting thread: a full batch, a flush, shutdown.
    work: Condvar,
    /// Wakes whoever waits for a flush or for the thread to stop.
    done: Condvar,
    /// Behind a mutex only so the provider can hand it the resource.
    exporter: Mutex<E>,
    settings: QueueSettings,
}

#[derive(Debug, Default)]
struct State {
    spans: Vec<SpanData>,
    dropped: u64,
    /// Flushes asked for, and the last one done: a flush waits until
    /// `flushed` reaches the number it was given.
    flushes_asked: u64,
    flushed: u64,
    shutting_down: bool,
    stopped: bool,
}

impl<E: SpanExporter + 'static> SpanQueue<E> {
    /// A queue that exports with `exporter`, from a thread of its own.
    ///
    /// # Panics
    ///
    /// When the thread cannot be started.
    pub fn new(exporter: E, settings: QueueSettings) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                spans: Vec::with_capacity(settings.max_export_batch_size),
                ..State::default()
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            exporter: Mutex::new(exporter),
            settings,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("turnstile-spans".into())
                .spawn(move || shared.export_until_shutdown())
                .expect("the span exporting thread starts")
        };
        Self {
            shared,
            exporting: Mutex::new(Some(thread)),
        }
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on `done` until `finished` holds, or `None` once `deadline`
    /// has passed.
    fn wait_done<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        deadline: Instant,
        finished: impl Fn(&State) -> bool,
    ) -> Option<MutexGuard<'a, State>> {
        while !finished(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(state)
    }
}

impl<E: SpanExporter> Shared<E> {
    fn export_until_shutdown(&self) {
        let settings = self.settings;
        // Two vectors take turns: the request threads fill one while this
        // thread exports the other, and neither is allocated again.
        let mut taken = Vec::with_capacity(settings.max_export_batch_size);
        let mut state = self.lock();
        loop {
            let deadline = Instant::now() + settings.schedule_delay;
            while state.spans.len() < settings.max_export_batch_size
                && state.flushes_asked == state.flushed
                && !state.shutting_down
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .work
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.spans, &mut taken);
            let flushing = state.flushes_asked;
            let last = state.shutting_down;
            drop(state);

            self.export(&mut taken);

            state = self.lock();
            state.flushed = flushing;
            if last {
                state.stopped = true;
                drop(state);
                self.done.notify_all();
                return;
            }
            self.done.notify_all();
        }
    }

    /// Sends `spans` in batches, leaving it empty. A failed export is
    /// the exporter's to report; its spans are not sent again.
    fn export(&self, spans: &mut Vec<SpanData>) {
        let exporter = self.exporter.lock().unwrap_or_else(PoisonError::into_inner);
        // Each span is moved once, into its batch; the vector keeps its
        // room for the next turn.
        let mut pending = spans.drain(..);
        loop {
            let batch: Vec<SpanData> = pending
                .by_ref()
                .take(self.settings.max_export_batch_size)
                .collect();
            if batch.is_empty() {
                return;
            }
            let _ = futures_executor::block_on(exporter.export(batch));
        }
    }
}
// ANCHOR_END: queue

impl<E: SpanExporter + 'static> SpanProcessor for SpanQueue<E> {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    // ANCHOR: on_end
    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let settings = self.shared.settings;
        let mut state = self.shared.lock();
        if state.shutting_down {
            return;
        }
        if state.spans.len() >= settings.max_queue_size {
            state.dropped += 1;
            return;
        }
        state.spans.push(span);
        let batch_full = state.spans.len() == settings.max_export_batch_size;
        drop(state);
        if batch_full {
            self.shared.work.notify_one();
        }
    }
    // ANCHOR_END: on_end

    fn force_flush(&self) -> OTelSdkResult {
        let mut state = self.shared.lock();
        if state.stopped {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        state.flushes_asked += 1;
        let asked = state.flushes_asked;
        self.shared.work.notify_one();
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        self.shared
            .wait_done(state, deadline, |state| {
                state.flushed >= asked || state.stopped
            })
            .map(drop)
            .ok_or(OTelSdkError::Timeout(FLUSH_TIMEOUT))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let Some(thread) = self
            .exporting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        state.shutting_down = true;
        self.shared.work.notify_one();
        // Past the deadline, the thread is left to finish on its own, or
        // with the process.
        let stopped = self
            .shared
            .wait_done(state, deadline, |state| state.stopped)
            .ok_or(OTelSdkError::Timeout(timeout))?;
        drop(stopped);
        let _ = thread.join();
        let left = deadline.saturating_duration_since(Instant::now());
        self.shared
            .exporter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown_with_timeout(left)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared
            .exporter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    fn provider(settings: QueueSettings) -> (SdkTracerProvider, InMemorySpanExporter) {
        let exported = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SpanQueue::new(exported.clone(), settings))
            .build();
        (provider, exported)
    }

    fn finished(exported: &InMemorySpanExporter) -> usize {
        exported.get_finished_spans().unwrap().len()
    }

    /// The spans exported once `count` have been, or after 10 s.
    fn wait_for(exported: &InMemorySpanExporter, count: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while finished(exported) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        finished(exported)
    }

    #[test]
    fn a_full_batch_is_sent_without_waiting_for_the_delay() {
        let (provider, exported) = provider(QueueSettings {
            schedule_delay: Duration::from_secs(600),
            max_queue_size: 100,
            max_export_batch_size: 10,
        });
        let tracer = provider.tracer("test");
        for _ in 0..10 {
            tracer.in_span("request", |_| {});
        }
        assert_eq!(wait_for(&exported, 10), 10);
    }

    #[test]
    fn the_delay_sends_a_batch_that_is_not_full() {
        let (provider, exported) = provider(QueueSettings {
            schedule_delay: Duration::from_millis(50),
            ..QueueSettings::default()
        });
        provider.tracer("test").in_span("request", |_| {});
        assert_eq!(wait_for(&exported, 1), 1);
    }

    #[test]
    fn flush_and_shutdown_send_every_queued_span_from_every_thread() {
        let exported = InMemorySpanExporter::default();
        let exporter = KeepsSpansAtShutdown {
            spans: exported.clone(),
            shut_down: Arc::default(),
        };
        let shut_down = Arc::clone(&exporter.shut_down);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SpanQueue::new(
                exporter,
                QueueSettings {
                    schedule_delay: Duration::from_secs(600),
                    max_queue_size: 10_000,
                    max_export_batch_size: 64,
                },
            ))
            .build();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let tracer = provider.tracer("test");
                scope.spawn(move || {
                    for _ in 0..500 {
                        tracer.in_span("request", |_| {});
                    }
                });
            }
        });
        provider.force_flush().unwrap();
        assert_eq!(finished(&exported), 4_000);
        provider.tracer("test").in_span("last", |_| {});
        provider.shutdown().unwrap();
        let spans = exported.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 4_001);
        assert_eq!(spans[4_000].name, "last");
        assert!(shut_down.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[test]
    fn a_full_queue_drops_and_counts_what_does_not_fit() {
        let exported = InMemorySpanExporter::default();
        let queue = Arc::new(SpanQueue::new(
            exported.clone(),
            QueueSettings {
                schedule_delay: Duration::from_secs(600),
                max_queue_size: 5,
                max_export_batch_size: 100,
            },
        ));
        let tracer = SdkTracerProvider::builder()
            .with_span_processor(SharedQueue(Arc::clone(&queue)))
            .build()
            .tracer("test");
        for _ in 0..8 {
            tracer.in_span("request", |_| {});
        }
        assert_eq!(queue.dropped(), 3);
        queue.force_flush().unwrap();
        assert_eq!(finished(&exported), 5);
    }

    #[test]
    fn settings_come_from_the_standard_variables_and_bad_ones_are_refused() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            QueueSettings::from_variables(move |name| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        };
        assert_eq!(from(&[]).unwrap(), QueueSettings::default());
        assert_eq!(
            from(&[
                (OTEL_BSP_SCHEDULE_DELAY, "250"),
                (OTEL_BSP_MAX_QUEUE_SIZE, "100"),
                (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "512"),
            ])
            .unwrap(),
            QueueSettings {
                schedule_delay: Duration::from_millis(250),
                max_queue_size: 100,
                max_export_batch_size: 100,
            }
        );
        assert_eq!(
            from(&[(OTEL_BSP_MAX_QUEUE_SIZE, "lots")]).unwrap_err(),
            "OTEL_BSP_MAX_QUEUE_SIZE=lots: expected a positive whole number"
        );
        assert!(from(&[(OTEL_BSP_SCHEDULE_DELAY, "0")]).is_err());
    }

    /// The in-memory exporter, except that shutting down keeps what it
    /// was given, for the test to count.
    #[derive(Debug)]
    struct KeepsSpansAtShutdown {
        spans: InMemorySpanExporter,
        shut_down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl SpanExporter for KeepsSpansAtShutdown {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.spans.export(batch).await
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            self.shut_down
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }

    /// A queue the test keeps a handle on after the provider has it.
    #[derive(Debug)]
    struct SharedQueue(Arc<SpanQueue<InMemorySpanExporter>>);

    impl SpanProcessor for SharedQueue {
        fn on_start(&self, span: &mut Span, cx: &Context) {
            self.0.on_start(span, cx);
        }
        fn on_end(&self, span: SpanData) {
            self.0.on_end(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            self.0.force_flush()
        }
        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.0.shutdown_with_timeout(timeout)
        }
    }
}
// ANCHOR_END: all
