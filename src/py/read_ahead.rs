//! Reading a large result while decoding its payloads: the rows stream in from
//! a second thread (`store::split_read::query_streamed`) and each chunk is
//! made into `Event`s, payloads decoded, while the next is being read.

use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::event::{Event, EventRecord};
use crate::store::{split_read, Backend, Filter};

/// `sys.getswitchinterval()`: how long Python's own loop holds the GIL before offering it.
fn switch_interval(py: Python<'_>) -> PyResult<Duration> {
    let seconds: f64 = py.import("sys")?.call_method0("getswitchinterval")?.extract()?;
    Ok(Duration::from_secs_f64(seconds.max(0.0)))
}

/// Reads `filter`'s events, the rows of a large read streamed from a second
/// thread and their payloads decoded as they arrive.
pub fn read_ahead(py: Python<'_>, backend: &dyn Backend, filter: Filter) -> PyResult<Vec<Py<Event>>> {
    let switch_interval = switch_interval(py)?;
    let mut events: Vec<Py<Event>> = Vec::new();
    let mut failed: Option<PyErr> = None;
    py.detach(|| {
        split_read::query_streamed(backend, &filter, &mut |rows| {
            Python::attach(|py| {
                let mut build = |chunk: Vec<Arc<EventRecord>>| {
                    for r in chunk {
                        let event = if rows.large { Event::read_decoded(py, r) } else { Event::read(py, r) };
                        match event {
                            Ok(event) => events.push(event.unbind()),
                            Err(e) => {
                                failed.get_or_insert(e);
                            }
                        }
                    }
                };
                let mut held_since = Instant::now();
                build(rows.first);
                let Some(rest) = rows.rest else { return };
                // Only this loop locks the receiver (the mutex just makes it Sync), so a poisoned lock means nothing.
                let receiver = || rest.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    let ready = receiver().try_recv();
                    let chunk = match ready {
                        Ok(chunk) => chunk,
                        Err(TryRecvError::Disconnected) => break,
                        // Wait for the reader with the GIL let go.
                        Err(TryRecvError::Empty) => {
                            let next = py.detach(|| receiver().recv());
                            held_since = Instant::now();
                            match next {
                                Ok(chunk) => chunk,
                                Err(_) => break,
                            }
                        }
                    };
                    // As Python's own loop does: after holding the GIL for the switch
                    // interval, let it go once, so that a thread waiting that long takes it.
                    if held_since.elapsed() >= switch_interval {
                        py.detach(|| ());
                        held_since = Instant::now();
                    }
                    build(chunk);
                }
            })
        })
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(events),
    }
}
