//! Building the Python dict of a folded `WorkflowState` (the reference's
//! `WorkflowState.to_dict()`): kept msgpack values decoded, dicts of a shape
//! copied from a template, and acyclic dicts kept off the garbage collector.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::state::{deferred_parts, same_key, Fields, Val, WorkflowState, SHARED};
use crate::codec::decode;
use crate::errors::{CoreError, Kind};
use crate::gc_pause::GcPause;
use crate::time::IsoFormatter;

impl WorkflowState {
    /// The state as the reference's `WorkflowState.to_dict()` returns it.
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Thousands of acyclic dicts are built here: a collection pass in the
        // middle would only walk them for nothing.
        let _pause = GcPause::new(py);
        let mut build = Build {
            py,
            session: decode::session(),
            shapes: Shapes::default(),
            iso: IsoFormatter::default(),
            shared: Default::default(),
        };
        let d = PyDict::new(py);
        d.set_item("workflow_id", &self.workflow_id)?;
        let mut acyclic = true;
        for (key, value) in self.top_fields() {
            let (value, ok) = build.leaf(value, None)?;
            acyclic &= ok;
            d.set_item(key, value)?;
        }
        let (context, ok) = build.fields_dict(&self.context, None)?;
        acyclic &= ok;
        for raw in &self.context_tail {
            let (update, ok) = build.decode(raw)?;
            acyclic &= ok;
            // Validated as a map when kept, so a dict.
            context.update(update.cast::<PyDict>()?.as_mapping())?;
        }
        d.set_item("context", context)?;
        for (key, entities) in [("stages", &self.stages), ("tasks", &self.tasks)] {
            let out = PyDict::new(py);
            let mut all = true;
            for (id, f) in &entities.items {
                // One string serves as the key and as the entity's "id" field.
                let id_obj = pyo3::types::PyString::new(py, id);
                let (fields, ok) = build.fields_dict(f, Some(&id_obj))?;
                all &= ok;
                out.set_item(&id_obj, fields)?;
            }
            acyclic &= settle(&out, all, !entities.items.is_empty());
            d.set_item(key, out)?;
        }
        settle(&d, acyclic, true);
        Ok(d)
    }
}

/// What building one state's Python objects shares.
struct Build<'py> {
    py: Python<'py>,
    session: decode::Session,
    shapes: Shapes<'py>,
    iso: IsoFormatter,
    /// The Python objects of `SHARED`, made once per state.
    shared: [Option<Bound<'py, PyAny>>; SHARED.len()],
}

impl<'py> Build<'py> {
    /// One kept value as a Python object (a deferred addition is done here),
    /// and whether it is acyclic (see `decode::keep_off_collector`); `id` is
    /// the entity's id string, for `Val::Id`.
    fn leaf(
        &mut self,
        value: &Val,
        id: Option<&Bound<'py, pyo3::types::PyString>>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let py = self.py;
        let raw = match value {
            Val::Shared(raw) => match SHARED.iter().position(|s| s == raw) {
                Some(at) => {
                    let obj = match &self.shared[at] {
                        Some(obj) => obj.clone(),
                        None => {
                            let obj = self.decode(raw)?.0;
                            self.shared[at] = Some(obj.clone());
                            obj
                        }
                    };
                    return Ok((obj, true));
                }
                None => *raw,
            },
            Val::Raw(raw) => &raw[..],
            Val::Time(micros) => {
                let text = self.iso.format(*micros).ok_or_else(|| {
                    CoreError::new(
                        Kind::CorruptEvent,
                        format!("event time {micros} us is outside datetime's range"),
                    )
                })?;
                return Ok((pyo3::types::PyString::new(py, text).into_any(), true));
            }
            Val::Id => {
                let id =
                    id.ok_or_else(|| CoreError::new(Kind::CorruptEvent, "an entity id outside an entity"))?;
                return Ok((id.clone().into_any(), true));
            }
        };
        let (raw, add) = deferred_parts(raw).map_or((raw, None), |(base, n)| (base, Some(n)));
        let (value, acyclic) = self.decode(raw)?;
        match add {
            Some(n) => Ok((value.add(n)?, true)),
            None => Ok((value, acyclic)),
        }
    }

    fn decode(&mut self, raw: &[u8]) -> PyResult<(Bound<'py, PyAny>, bool)> {
        self.session.decode_acyclic(self.py, raw).map_err(|e| {
            PyErr::from(CoreError::new(
                Kind::CorruptEvent,
                format!("folded value cannot be decoded: {}", e.0),
            ))
        })
    }

    /// A stage's, task's or the context's fields as a dict; `id`: the entity's id string.
    fn fields_dict(
        &mut self,
        fields: &Fields,
        id: Option<&Bound<'py, pyo3::types::PyString>>,
    ) -> PyResult<(Bound<'py, PyDict>, bool)> {
        let (d, shape) = self.shapes.empty_dict(self.py, &mut self.session, fields)?;
        let (mut acyclic, mut holds_dict) = (true, false);
        for (i, (k, v)) in fields.items.iter().enumerate() {
            let (value, ok) = self.leaf(v, id)?;
            acyclic &= ok;
            holds_dict |= value.is_instance_of::<PyDict>();
            match shape {
                Some(s) => d.set_item(&self.shapes.shapes[s].key_objs[i], value)?,
                None => d.set_item(self.session.key(self.py, k), value)?,
            }
        }
        let acyclic = settle(&d, acyclic, holds_dict);
        Ok((d, acyclic))
    }
}

/// Untrack `dict` if it holds only acyclic values, one a dict (see
/// `decode::keep_off_collector`); say whether it is acyclic.
fn settle(dict: &Bound<'_, PyDict>, acyclic: bool, holds_dict: bool) -> bool {
    if acyclic && holds_dict {
        decode::keep_off_collector(dict);
    }
    acyclic
}

/// Thousands of stages and tasks share a few key sequences. For each such
/// shape a template dict (every key, values None) is kept and copied: a copy
/// takes all the keys in one allocation, and setting a key already present
/// only swaps its value, where building key by key allocated, grew and
/// rehashed every dict (a third of the time spent building a large state).
#[derive(Default)]
struct Shapes<'py> {
    shapes: Vec<Shape<'py>>,
}

type PyKey<'py> = Bound<'py, pyo3::types::PyString>;

struct Shape<'py> {
    keys: Vec<Cow<'static, str>>,
    key_objs: Vec<PyKey<'py>>,
    template: Bound<'py, PyDict>,
}

/// Shapes kept per state built; an unusual state with more builds the rest key by key.
const MAX_SHAPES: usize = 64;

impl<'py> Shapes<'py> {
    /// A dict to fill with `fields`: a copy of its shape's template, and the
    /// shape's index, whose `key_objs` are in order (None: an empty dict, fill
    /// it key by key).
    fn empty_dict(
        &mut self,
        py: Python<'py>,
        session: &mut decode::Session,
        fields: &Fields,
    ) -> PyResult<(Bound<'py, PyDict>, Option<usize>)> {
        let same = |shape: &Shape<'_>| {
            shape.keys.len() == fields.items.len()
                && shape.keys.iter().zip(&fields.items).all(|(a, (b, _))| same_key(a, b))
        };
        let found = match self.shapes.iter().position(same) {
            Some(i) => i,
            None if self.shapes.len() < MAX_SHAPES => {
                let template = PyDict::new(py);
                let mut key_objs = Vec::with_capacity(fields.items.len());
                for (k, _) in &fields.items {
                    let key = session.key(py, k);
                    template.set_item(&key, py.None())?;
                    key_objs.push(key);
                }
                let keys = fields.items.iter().map(|(k, _)| k.clone()).collect();
                self.shapes.push(Shape { keys, key_objs, template });
                self.shapes.len() - 1
            }
            None => return Ok((PyDict::new(py), None)),
        };
        Ok((self.shapes[found].template.copy()?, Some(found)))
    }
}
