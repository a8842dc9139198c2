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
            event_id: r.event_id.as_str(),
            event_type: r.event_type.as_str(),
            timestamp_us: r.timestamp_us,
            entity_type: r.entity_type.as_str(),
            entity_id: r.entity_id.as_str(),
            workflow_id: r.workflow_id.as_str(),
            version: r.version,
            data: &r.data,
            correlation_id: r.correlation_id.as_str(),
            causation_id: r.causation_id.as_deref(),
            actor: r.actor.as_str(),
            source_handler: r.source_handler.as_deref(),
            schema_version: r.schema_version,
        }
    }

    pub fn to_record(&self) -> EventRecord {
        EventRecord {
            sequence: self.sequence,
            event_id: self.event_id.into(),
            event_type: self.event_type.into(),
            timestamp_us: self.timestamp_us,
            entity_type: self.entity_type.into(),
            entity_id: self.entity_id.into(),
            workflow_id: self.workflow_id.into(),
            version: self.version,
            data: self.data.to_vec(),
            correlation_id: self.correlation_id.into(),
            causation_id: self.causation_id.map(Into::into),
            actor: self.actor.into(),
            source_handler: self.source_handler.map(Into::into),
            schema_version: self.schema_version,
        }
    }
}
