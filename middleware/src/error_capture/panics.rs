//! A panic's stack as Sentry shows it. The failure boundary in
//! `turnstile-core` has [`take`] walk the stack where the panic happened,
//! when the layer will report it; naming its frames costs a millisecond or
//! so, and tens of milliseconds the first time in a process, so it is done
//! here, only for a report.

use std::any::Any;

use backtrace::Backtrace;
use sentry::integrations::backtrace::backtrace_to_stacktrace;
use sentry::protocol::Stacktrace;

/// Takes the stack on the panicking thread, without naming its frames.
pub(super) fn take() -> Box<dyn Any + Send + Sync> {
    Box::new(Backtrace::new_unresolved())
}

/// The stack [`take`] took, its frames named, the panic machinery's cut.
pub(super) fn stacktrace(stack: &(dyn Any + Send + Sync)) -> Option<Stacktrace> {
    let mut stack = stack.downcast_ref::<Backtrace>()?.clone();
    stack.resolve();
    let stack = trim(backtrace_to_stacktrace(&stack)?);
    (!stack.frames.is_empty()).then_some(stack)
}

/// Frames are outermost first; everything from the panic's entry inwards
/// (formatting, the hooks, the backtrace capture) says nothing about the
/// application. `std::panicking::catch_unwind` and its kin sit outside the
/// application's frames and stay.
fn trim(mut stack: Stacktrace) -> Stacktrace {
    let entry = |function: &str| {
        function.starts_with("core::panicking::")
            || function.starts_with("std::panicking::begin_panic")
            || function.starts_with("std::panicking::rust_panic_with_hook")
            || function.starts_with("std::rt::begin_panic")
            || function.contains("__rust_end_short_backtrace")
            || function.ends_with("rust_begin_unwind")
    };
    let first_inside = stack
        .frames
        .iter()
        .position(|frame| frame.function.as_deref().is_some_and(entry));
    if let Some(index) = first_inside {
        stack.frames.truncate(index);
    }
    stack
}

#[cfg(test)]
mod tests {
    use sentry::protocol::Frame;

    use super::*;

    fn frame(function: &str) -> Frame {
        Frame {
            function: Some(function.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn the_panic_machinery_is_cut_from_the_stack() {
        let stack = Stacktrace {
            frames: vec![
                frame("std::rt::lang_start"),
                frame("std::panicking::catch_unwind"),
                frame("my_app::handler"),
                frame("std::panicking::begin_panic"),
                frame("std::sys::backtrace::__rust_end_short_backtrace"),
                frame("turnstile_middleware::error_capture::panics::install_hook"),
            ],
            ..Default::default()
        };
        let functions: Vec<_> = trim(stack)
            .frames
            .into_iter()
            .filter_map(|frame| frame.function)
            .collect();
        assert_eq!(
            functions,
            [
                "std::rt::lang_start",
                "std::panicking::catch_unwind",
                "my_app::handler"
            ]
        );
    }
}
