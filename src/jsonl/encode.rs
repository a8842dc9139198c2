//! One stored event as one line of JSON (see the module doc of `jsonl`).

use super::base64;
use super::number::push_int;
use super::payload_json::{push_payload, NotJson};
use super::text::push_str;
use crate::errors::{CoreError, Kind};
use crate::fold::EventView;
use crate::time::IsoFormatter;

/// Writes events as lines; keeps the date formatting of the last timestamp.
#[derive(Default)]
pub struct LineWriter {
    iso: IsoFormatter,
}

fn push_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

impl LineWriter {
    /// Appends `event` and a newline to `out`. An event whose payload the codec
    /// did not write, or whose time no datetime holds, is an error naming it.
    pub fn push(&mut self, event: &EventView<'_>, out: &mut Vec<u8>) -> Result<(), CoreError> {
        let unreadable = |why: String| {
            CoreError::new(
                Kind::CorruptEvent,
                format!(
                    "event {} (sequence {}) cannot be exported: {why}. `stabilize-events check` lists \
                     every damaged event; export around it with --after-seq",
                    event.event_id, event.sequence
                ),
            )
        };
        let texts = |out: &mut Vec<u8>, fields: &[(&[u8], Option<&str>)]| {
            for (key, value) in fields {
                out.extend_from_slice(key);
                push_opt(out, *value);
            }
        };
        out.extend_from_slice(b"{\"sequence\":");
        push_int(out, i128::from(event.sequence));
        texts(
            out,
            &[(b",\"event_id\":", Some(event.event_id)), (b",\"event_type\":", Some(event.event_type))],
        );
        out.extend_from_slice(b",\"timestamp\":\"");
        let time = self.iso.format(event.timestamp_us).ok_or_else(|| {
            unreadable(format!("its time ({} us) is outside the years 1 to 9999", event.timestamp_us))
        })?;
        out.extend_from_slice(time.as_bytes());
        out.push(b'"');
        texts(
            out,
            &[
                (b",\"entity_type\":", Some(event.entity_type)),
                (b",\"entity_id\":", Some(event.entity_id)),
                (b",\"workflow_id\":", Some(event.workflow_id)),
            ],
        );
        out.extend_from_slice(b",\"version\":");
        push_int(out, i128::from(event.version));
        out.extend_from_slice(b",\"data\":");
        let data_at = out.len();
        match push_payload(event.data, out) {
            Ok(()) if out.get(data_at) == Some(&b'{') => {}
            Ok(()) => return Err(unreadable("its payload is not a map".into())),
            Err(NotJson::NotPlain) => {
                out.truncate(data_at - b"\"data\":".len());
                out.extend_from_slice(b"\"data_msgpack\":\"");
                base64::encode(event.data, out);
                out.push(b'"');
            }
            Err(NotJson::Corrupt(why)) => return Err(unreadable(why)),
        }
        texts(
            out,
            &[
                (b",\"metadata\":{\"correlation_id\":", Some(event.correlation_id)),
                (b",\"causation_id\":", event.causation_id),
                (b",\"actor\":", Some(event.actor)),
                (b",\"source_handler\":", event.source_handler),
            ],
        );
        out.extend_from_slice(b"},\"schema_version\":");
        push_int(out, i128::from(event.schema_version));
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}
