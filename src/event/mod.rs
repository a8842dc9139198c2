//! The event model: the plain Rust row (`EventRecord`) that stores, replay and
//! the codec work on, and the Python classes `Event` and `EventMetadata`.

mod lazy;
mod metadata;
mod py_event;
mod record;
mod rows;

pub use metadata::EventMetadata;
pub use py_event::{coerce_event, stored_event_type, Event, FIELDS};
pub use record::{EventRecord, Text};
pub use rows::events_from_rows;
