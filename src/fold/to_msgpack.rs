//! The msgpack of the dict `to_py` builds, written from the folded state
//! without Python objects: a snapshot saved this way needs no encoding of the
//! answer under the GIL (and decodes to a dict equal to it).

use super::state::{deferred_parts, Fields, Val, WorkflowState};
use crate::time::IsoFormatter;

impl WorkflowState {
    /// Stages and tasks in all: a measure of the state's size.
    pub fn entity_count(&self) -> usize {
        self.stages.items.len() + self.tasks.items.len()
    }

    /// Whether `to_msgpack` gives the state's bytes (it is None only for the rare states
    /// described there), checked without encoding.
    pub fn encodes_without_python(&self) -> bool {
        let deferred = |fields: &Fields| {
            fields.items.iter().any(|(_, v)| matches!(v, Val::Raw(raw) if deferred_parts(raw).is_some()))
        };
        self.context_tail.is_empty()
            && !self
                .top_fields()
                .iter()
                .any(|(_, v)| matches!(v, Val::Raw(raw) if deferred_parts(raw).is_some()))
            && !deferred(&self.context)
            && ![&self.stages, &self.tasks].iter().any(|e| e.items.iter().any(|(_, f)| deferred(f)))
    }

    /// The state as msgpack, shaped as `to_py`'s dict; None for the rare states
    /// whose dict only Python can build (context updates with keys that are not
    /// strings, a deferred addition), which are saved from the dict instead.
    pub fn to_msgpack(&self) -> Option<Vec<u8>> {
        if !self.context_tail.is_empty() {
            return None;
        }
        let mut out = Writer {
            buf: Vec::with_capacity(256 * (self.stages.items.len() + self.tasks.items.len() + 1)),
            iso: IsoFormatter::default(),
        };
        out.map_len(9);
        out.str("workflow_id");
        out.str(&self.workflow_id);
        for (key, value) in self.top_fields() {
            out.str(key);
            out.val(value, None)?;
        }
        out.str("context");
        out.fields(&self.context, None)?;
        for (key, entities) in [("stages", &self.stages), ("tasks", &self.tasks)] {
            out.str(key);
            out.map_len(entities.items.len());
            for (id, fields) in &entities.items {
                out.str(id);
                out.fields(fields, Some(id))?;
            }
        }
        Some(out.buf)
    }
}

struct Writer {
    buf: Vec<u8>,
    iso: IsoFormatter,
}

impl Writer {
    fn map_len(&mut self, n: usize) {
        // Writing to a Vec cannot fail.
        let _ = rmp::encode::write_map_len(&mut self.buf, u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn str(&mut self, text: &str) {
        let _ = rmp::encode::write_str(&mut self.buf, text);
    }

    fn fields(&mut self, fields: &Fields, id: Option<&str>) -> Option<()> {
        self.map_len(fields.items.len());
        for (key, value) in &fields.items {
            self.str(key);
            self.val(value, id)?;
        }
        Some(())
    }

    /// One kept value as `to_py` gives it; `id`: the entity's id, for `Val::Id`.
    fn val(&mut self, value: &Val, id: Option<&str>) -> Option<()> {
        match value {
            Val::Shared(raw) => self.buf.extend_from_slice(raw),
            Val::Raw(raw) if deferred_parts(raw).is_some() => return None,
            Val::Raw(raw) => self.buf.extend_from_slice(raw),
            Val::Time(micros) => {
                let text = self.iso.format(*micros)?;
                let _ = rmp::encode::write_str(&mut self.buf, text);
            }
            Val::Id => self.str(id?),
        }
        Some(())
    }
}
