//! JSON Lines of events: the format of `stabilize-events export` and `import`.
//!
//! One event per line, fields in this order: `sequence`, `event_id`, `event_type`,
//! `timestamp` (ISO 8601 with its UTC offset), `entity_type`, `entity_id`, `workflow_id`,
//! `version`, then `data` (the payload as JSON when JSON gives it back exactly) or
//! `data_msgpack` (base64 of the stored msgpack otherwise), `metadata` and `schema_version`.
//!
//! - `number`: floats as Python's `repr` writes them, and integers of any size.
//! - `text`: JSON strings, escaped as Python's `json` does (plus U+2028 and U+2029).
//! - `base64`: the standard alphabet, strict on reading.
//! - `timestamp`: UTC microseconds to and from ISO 8601.
//! - `payload_json`: a stored msgpack payload as JSON, when it is plain.
//! - `parser`: a JSON reader that turns a payload into msgpack as it reads it.
//! - `encode` / `decode`: one event record to a line, and a line back.
//! - `reader`: a file's lines read into events a chunk at a time, on a thread of its own.
//! - `sqlite_target`: writing decoded events into an SQLite file with their own sequences.
//! - `python`: the functions and class Python calls.

pub mod base64;
pub mod decode;
pub mod encode;
pub mod number;
pub mod parser;
pub mod payload_json;
pub mod python;
pub mod reader;
pub mod sqlite_target;
pub mod text;
pub mod timestamp;
