//! `EventRecord`: one stored event as plain Rust data, with its payload still
//! msgpack-encoded. Stores and the replay fold deal only in records; a Python
//! `Event` is built from one only when Python asks for it.

/// Short strings stored inline (up to 24 bytes): reading a row allocates for
/// the payload and the event id, not for every field.
pub type Text = compact_str::CompactString;

/// One event as stored. Strings are owned so a record can cross threads freely.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRecord {
    pub sequence: i64,
    pub event_id: Text,
    pub event_type: Text,
    /// Instant in microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub entity_type: Text,
    pub entity_id: Text,
    pub workflow_id: Text,
    pub version: i64,
    /// The payload (`Event.data`) as msgpack; empty when the payload lives only as a Python object.
    pub data: Vec<u8>,
    pub correlation_id: Text,
    pub causation_id: Option<Text>,
    pub actor: Text,
    pub source_handler: Option<Text>,
    pub schema_version: i64,
}

impl EventRecord {
    /// The same record under another sequence.
    pub fn with_sequence(&self, sequence: i64) -> EventRecord {
        EventRecord { sequence, ..self.clone() }
    }
}
