//! `EventView`: one stored event, borrowed from a row or a record.

use crate::event::EventRecord;

/// The fields of an event as borrowed slices. Scans that only fold leave the
/// fields the fold does not read empty (`event_id` is always there).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventView<'a> {
    pub sequence: i64,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub timestamp_us: i64,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub workflow_id: &'a str,
    pub version: i64,
    pub data: &'a [u8],
    pub correlation_id: &'a str,
    pub causation_id: Option<&'a str>,
    pub actor: &'a str,
    pub source_handler: Option<&'a str>,
    pub schema_version: i64,
}

impl<'a> EventView<'a> {
    pub fn of(r: &'a EventRecord) -> Self {
        EventView {
            sequence: r.sequence,
            event_id: &r.event_id,
            event_type: &r.event_type,
            timestamp_us: r.timestamp_us,
            entity_type: &r.entity_type,
            entity_id: &r.entity_id,
            workflow_id: &r.workflow_id,
            version: r.version,
            data: &r.data,
            correlation_id: &r.correlation_id,
            causation_id: r.causation_id.as_deref(),
            actor: &r.actor,
            source_handler: r.source_handler.as_deref(),
            schema_version: r.schema_version,
        }
    }

    pub fn to_record(&self) -> EventRecord {
        EventRecord {
            sequence: self.sequence,
            event_id: self.event_id.to_owned(),
            event_type: self.event_type.to_owned(),
            timestamp_us: self.timestamp_us,
            entity_type: self.entity_type.to_owned(),
            entity_id: self.entity_id.to_owned(),
            workflow_id: self.workflow_id.to_owned(),
            version: self.version,
            data: self.data.to_vec(),
            correlation_id: self.correlation_id.to_owned(),
            causation_id: self.causation_id.map(str::to_owned),
            actor: self.actor.to_owned(),
            source_handler: self.source_handler.map(str::to_owned),
            schema_version: self.schema_version,
        }
    }
}
