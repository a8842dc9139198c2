//! `EventRecord`: one stored event as plain Rust data, with its payload still
//! msgpack-encoded. Stores and the replay fold deal only in records; a Python
//! `Event` is built from one only when Python asks for it.

/// One event as stored. Strings are owned so a record can cross threads freely.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRecord {
    pub sequence: i64,
    pub event_id: String,
    pub event_type: String,
    /// Instant in microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub entity_type: String,
    pub entity_id: String,
    pub workflow_id: String,
    pub version: i64,
    /// The payload (`Event.data`) as msgpack; empty when the payload lives only as a Python object.
    pub data: Vec<u8>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: String,
    pub source_handler: Option<String>,
    pub schema_version: i64,
}

impl EventRecord {
    /// The same record under another sequence.
    pub fn with_sequence(&self, sequence: i64) -> EventRecord {
        EventRecord {
            sequence,
            ..self.clone()
        }
    }
}
