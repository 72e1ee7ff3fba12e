//! Where a panic happened. `catch_unwind` hands back only the payload, by
//! which time the stack that panicked is gone; a panic hook runs before the
//! unwinding, so it records the place (and, when a report will be sent,
//! the stack) for the layer to pick up on the same thread.

use std::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

use backtrace::Backtrace;
use sentry::integrations::backtrace::backtrace_to_stacktrace;
use sentry::protocol::Stacktrace;

/// What the hook recorded of the last panic inside the layer's call.
#[derive(Debug)]
pub(super) struct PanicSite {
    /// `file:line:column`.
    pub(super) location: String,
    /// The stack at the panic, not yet symbolised.
    stack: Option<Backtrace>,
}

impl PanicSite {
    /// The stack as Sentry shows it, the panic machinery's frames cut.
    /// Symbolising costs a millisecond or so, and tens of milliseconds the
    /// first time in a process: it is done only for a report.
    pub(super) fn stacktrace(&self) -> Option<Stacktrace> {
        let mut stack = self.stack.clone()?;
        stack.resolve();
        let stack = trim(backtrace_to_stacktrace(&stack)?);
        (!stack.frames.is_empty()).then_some(stack)
    }
}

/// Inside the layer's call: `Some(whether to take the stack)`.
#[derive(Clone, Copy)]
struct Catching(Option<bool>);

thread_local! {
    static CATCHING: Cell<Catching> = const { Cell::new(Catching(None)) };
    static SITE: RefCell<Option<PanicSite>> = const { RefCell::new(None) };
}

// ANCHOR: hook
/// Installs the hook, once per process. It records, then hands over to the
/// hook that was there before (by default, the message on standard error).
pub(super) fn install_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let next = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if let Catching(Some(wants_stack)) = CATCHING.with(Cell::get) {
                let location = info
                    .location()
                    .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
                // Walking the stack is cheap; naming its frames is left
                // for when a report is made.
                let stack = wants_stack.then(Backtrace::new_unresolved);
                SITE.with(|site| *site.borrow_mut() = Some(PanicSite { location, stack }));
            }
            next(info);
        }));
    });
}

// ANCHOR_END: hook

/// Runs `call` with the hook recording; a nested layer's call restores the
/// outer one's state as it returns.
pub(super) fn catching<R>(wants_stack: bool, call: impl FnOnce() -> R) -> R {
    let outer = CATCHING.with(|catching| catching.replace(Catching(Some(wants_stack))));
    SITE.with(|site| site.borrow_mut().take());
    let result = call();
    CATCHING.with(|catching| catching.set(outer));
    result
}

/// The site of the panic the last [`catching`] call caught, if it panicked.
pub(super) fn take_site() -> Option<PanicSite> {
    SITE.with(|site| site.borrow_mut().take())
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

    #[test]
    fn a_panic_outside_the_layer_is_not_recorded() {
        install_hook();
        let _ = std::panic::catch_unwind(|| panic!("outside"));
        assert!(take_site().is_none());
        let _ = catching(false, || std::panic::catch_unwind(|| panic!("inside")));
        let site = take_site().expect("recorded");
        assert!(site.location.contains("panics.rs"), "{}", site.location);
        assert!(site.stacktrace().is_none());
    }
}
