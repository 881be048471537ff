//! Panics counted on `/metrics` and written to the log.
//!
//! A panic does not always end the process: tokio catches one in a request
//! task (the client sees its connection drop), and one in a shard group's
//! thread ends that thread while the node keeps answering for the others.
//! Either way something is broken, and it must be visible to an operator
//! rather than only on a stderr nobody reads. [`install`] adds a
//! process-wide hook that increments `paxsql_panics_total`, logs the panic
//! through `tracing` (thread, place, message), and then runs the hook that
//! was there before (Rust's default prints the message and, with
//! `RUST_BACKTRACE`, the backtrace).
//!
//! The hook is installed first thing in `main`, so panics are logged in
//! every subcommand; they are counted once the Prometheus recorder is in
//! place ([`describe`] then shows the counter at 0 until one happens).

use std::panic::PanicHookInfo;

/// The counter of panics since the process started.
pub const PANICS_TOTAL: &str = "paxsql_panics_total";

/// Installs the hook in front of the one in place.
pub fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        record(info);
        previous(info);
    }));
}

/// Describes the counter and shows it at 0, so that a scrape tells "no
/// panic" from "not reported". Call after the recorder is installed.
pub fn describe() {
    metrics::describe_counter!(
        PANICS_TOTAL,
        "Panics in any thread of this process since it started (each is also logged)"
    );
    metrics::counter!(PANICS_TOTAL).increment(0);
}

/// Counts and logs one panic. (A panic in here would abort the process,
/// as any panic while panicking does.)
fn record(info: &PanicHookInfo<'_>) {
    metrics::counter!(PANICS_TOTAL).increment(1);
    let thread = std::thread::current();
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    tracing::error!(
        thread = thread.name().unwrap_or("<unnamed>"),
        %location,
        what = %message(info),
        "panic"
    );
}

/// The panic's message, when it is text (`panic!` with or without arguments).
fn message<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not text)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use std::panic::catch_unwind;
    use std::sync::{Arc, Mutex, Once};

    /// The text the panics of this thread's closure were logged as.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_caught_panic_is_counted_and_logged() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(install);
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        metrics::with_local_recorder(&recorder, || {
            tracing::subscriber::with_default(subscriber, || {
                describe();
                assert!(
                    handle.render().contains("paxsql_panics_total 0"),
                    "{}",
                    handle.render()
                );
                let caught = catch_unwind(|| panic!("boom {}", 42));
                assert!(caught.is_err());
                let caught = catch_unwind(|| std::panic::panic_any(7_u8));
                assert!(caught.is_err());
            })
        });
        let rendered = handle.render();
        assert!(rendered.contains("paxsql_panics_total 2"), "{rendered}");
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("what=boom 42"), "{log}");
        assert!(log.contains("panics.rs:"), "{log}");
        assert!(log.contains("not text"), "{log}");
    }
}
