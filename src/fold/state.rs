//! `WorkflowState` and the fold rules (those of the reference's `EventReplayer`).
//!
//! Every value kept is raw msgpack, so values of any type pass through the
//! fold untouched and decode to the same Python objects the payload holds.
//! The layout is chosen for speed: stage and task fields sit in small vectors
//! searched linearly, constant values and field names are static (no
//! allocation), and entities are found through one hash table of indexes.

use std::borrow::Cow;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rustc_hash::FxBuildHasher;

use super::EventView;
use crate::codec::decode;
use crate::codec::validate::validate;
use crate::codec::view::{self, ViewError, NIL};
use crate::errors::{CoreError, Kind};
use crate::time::{civil_from_days, MICROS_PER_DAY, MICROS_PER_SEC};

/// A kept value: raw msgpack, static for the fold's own constants.
type Val = Cow<'static, [u8]>;
type Result<T> = std::result::Result<T, ViewError>;

// msgpack fixstr encodings of the statuses the rules write.
const RUNNING: &[u8] = b"\xa7RUNNING";
const SUCCEEDED: &[u8] = b"\xa9SUCCEEDED";
const TERMINAL: &[u8] = b"\xa8TERMINAL";
const CANCELED: &[u8] = b"\xa8CANCELED";
const PAUSED: &[u8] = b"\xa6PAUSED";
const SUSPENDED: &[u8] = b"\xa9SUSPENDED";
const SKIPPED: &[u8] = b"\xa7SKIPPED";

/// Fields of a stage or task in first-set order (a handful: linear search wins).
#[derive(Debug, Clone, Default)]
struct Fields {
    items: Vec<(Cow<'static, str>, Val)>,
}

impl Fields {
    fn position(&self, key: &str) -> Option<usize> {
        self.items.iter().position(|(k, _)| k == key)
    }

    fn put(&mut self, key: &'static str, value: Val) {
        match self.position(key) {
            Some(i) => self.items[i].1 = value,
            None => self.items.push((Cow::Borrowed(key), value)),
        }
    }

    fn put_owned(&mut self, key: &str, value: Val) {
        match self.position(key) {
            Some(i) => self.items[i].1 = value,
            None => self.items.push((Cow::Owned(key.to_owned()), value)),
        }
    }

    fn get(&self, key: &str) -> Option<&Val> {
        self.position(key).map(|i| &self.items[i].1)
    }
}

/// Entities by id, in first-seen order.
#[derive(Debug, Clone, Default)]
struct Entities {
    table: HashTable<usize>,
    items: Vec<(Box<str>, Fields)>,
}

impl Entities {
    /// The entity `id`, created by `make` on first sight.
    fn get_or_insert_with(&mut self, id: &str, make: impl FnOnce() -> Result<Fields>) -> Result<&mut Fields> {
        let hash = FxBuildHasher.hash_one(id);
        let items = &self.items;
        let found = self.table.find(hash, |&i| &*items[i].0 == id).copied();
        let at = match found {
            Some(i) => i,
            None => {
                let fields = make()?;
                self.items.push((id.into(), fields));
                let i = self.items.len() - 1;
                let items = &self.items;
                self.table.insert_unique(hash, i, |&j| FxBuildHasher.hash_one(&*items[j].0));
                i
            }
        };
        Ok(&mut self.items[at].1)
    }

    fn set(&mut self, id: &str, fields: Fields) -> Result<()> {
        *self.get_or_insert_with(id, || Ok(Fields::default()))? = fields;
        Ok(())
    }
}

/// A workflow's state as folded from its events.
#[derive(Debug, Clone)]
pub struct WorkflowState {
    workflow_id: String,
    status: Val,
    application: Val,
    name: Val,
    start_time: Val,
    end_time: Val,
    context: Fields,
    stages: Entities,
    tasks: Entities,
}

/// `datetime.isoformat()` of an aware UTC datetime, as msgpack (str8: it can be 32 bytes).
fn iso(micros: i64) -> Val {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rem = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Outside datetime's range; never produced by a real timestamp.
        return Cow::Owned(view::encode_str(&format!("{year}-{month:02}-{day:02}")).into_vec());
    }
    let secs = rem / MICROS_PER_SEC;
    let frac = rem % MICROS_PER_SEC;
    let mut out = Vec::with_capacity(33);
    out.extend_from_slice(&[0xd9, 0]); // str8 marker; the length is set below
    let num = |n: i64, width: usize, out: &mut Vec<u8>| {
        for i in (0..width).rev() {
            out.push(b'0' + ((n / 10i64.pow(i as u32)) % 10) as u8);
        }
    };
    num(year, 4, &mut out);
    out.push(b'-');
    num(month as i64, 2, &mut out);
    out.push(b'-');
    num(day as i64, 2, &mut out);
    out.push(b'T');
    num(secs / 3600, 2, &mut out);
    out.push(b':');
    num((secs / 60) % 60, 2, &mut out);
    out.push(b':');
    num(secs % 60, 2, &mut out);
    if frac != 0 {
        out.push(b'.');
        num(frac, 6, &mut out);
    }
    out.extend_from_slice(b"+00:00");
    out[1] = (out.len() - 2) as u8;
    Cow::Owned(out)
}

/// A kept copy of `raw`; the statuses the rules themselves write (and nil)
/// are shared statics rather than one allocation per event.
/// A value that would not decode is refused here, while its event is known.
fn owned(raw: &[u8]) -> Result<Val> {
    const SHARED: [&[u8]; 8] = [NIL, RUNNING, SUCCEEDED, TERMINAL, CANCELED, PAUSED, SUSPENDED, SKIPPED];
    match SHARED.iter().find(|s| **s == raw) {
        Some(shared) => Ok(Cow::Borrowed(shared)),
        None => {
            validate(raw)?;
            Ok(Cow::Owned(raw.to_vec()))
        }
    }
}

/// An event's payload, read (once) only if a rule looks inside it.
struct Payload<'a> {
    raw: &'a [u8],
    map: Option<view::MapView<'a>>,
}

impl<'a> Payload<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Payload { raw, map: None }
    }

    /// `data.get(key)`.
    fn get(&mut self, key: &str) -> Result<Option<&'a [u8]>> {
        if self.map.is_none() {
            self.map = Some(view::MapView::parse(self.raw)?);
        }
        Ok(self.map.as_ref().and_then(|m| m.get(key)))
    }
}

/// `data.get(key)` as a kept value (nil when absent).
fn get_or_nil(data: &mut Payload<'_>, key: &str) -> Result<Val> {
    data.get(key)?.map_or(Ok(Cow::Borrowed(NIL)), owned)
}

/// `data.get(key, default)` as a kept value.
fn get_or(data: &mut Payload<'_>, key: &str, default: &'static [u8]) -> Result<Val> {
    data.get(key)?.map_or(Ok(Cow::Borrowed(default)), owned)
}

/// Private extension type for "base + n" where base is not a 64-bit int
/// (a float, a bool, a huge int): Python does the addition when the state is
/// built, as the reference's `retry_count + 1` would.
const DEFERRED_ADD: i8 = 99;

/// `before + 1` as a kept value (`before` absent counts as 0).
fn increment(before: Option<&[u8]>) -> Val {
    let Some(raw) = before else { return Cow::Owned(view::encode_int(1).into_vec()) };
    if let Some(n) = view::as_i64(raw).and_then(|n| n.checked_add(1)) {
        return Cow::Owned(view::encode_int(n).into_vec());
    }
    let (base, n) = match deferred_parts(raw) {
        Some((base, n)) => (base, n + 1),
        None => (raw, 1),
    };
    let mut payload = n.to_be_bytes().to_vec();
    payload.extend_from_slice(base);
    let mut out = Vec::with_capacity(payload.len() + 6);
    let _ = rmp::encode::write_ext_meta(&mut out, payload.len() as u32, DEFERRED_ADD);
    out.extend_from_slice(&payload);
    Cow::Owned(out)
}

/// (base, n) of a deferred addition made by `increment`.
fn deferred_parts(raw: &[u8]) -> Option<(&[u8], i64)> {
    let (head, len) = match *raw.first()? {
        0xc7 => (3, *raw.get(1)? as usize),
        0xc8 => (4, u16::from_be_bytes([*raw.get(1)?, *raw.get(2)?]) as usize),
        0xc9 => (6, u32::from_be_bytes(raw.get(1..5)?.try_into().ok()?) as usize),
        0xd7 => (2, 8),
        0xd8 => (2, 16),
        _ => return None,
    };
    let code = *raw.get(head - 1)? as i8;
    let body = raw.get(head..head + len)?;
    if code != DEFERRED_ADD || body.len() < 8 {
        return None;
    }
    Some((&body[8..], i64::from_be_bytes(body[..8].try_into().ok()?)))
}

fn id_field(id: &str) -> Val {
    Cow::Owned(view::encode_str(id).into_vec())
}

impl WorkflowState {
    /// The empty state of a workflow no event has touched.
    pub fn new(workflow_id: &str) -> Self {
        let nil = || Cow::Borrowed(NIL);
        WorkflowState {
            workflow_id: workflow_id.to_owned(),
            status: nil(),
            application: nil(),
            name: nil(),
            start_time: nil(),
            end_time: nil(),
            context: Fields::default(),
            stages: Entities::default(),
            tasks: Entities::default(),
        }
    }

    /// Fold one event in. Events of unknown entity or event types change nothing.
    pub fn apply(&mut self, ev: &EventView<'_>) -> Result<()> {
        match ev.entity_type {
            "workflow" => self.apply_workflow(ev),
            "stage" => self.apply_stage(ev),
            "task" => self.apply_task(ev),
            _ => Ok(()),
        }
    }

    fn update_context(&mut self, data: &mut Payload<'_>) -> Result<()> {
        if let Some(ctx) = data.get("context")? {
            // A context that is not a mapping (None) updates nothing.
            for (k, v) in view::map_entries(ctx)?.unwrap_or_default() {
                self.context.put_owned(k, owned(v)?);
            }
        }
        Ok(())
    }

    fn apply_workflow(&mut self, ev: &EventView<'_>) -> Result<()> {
        let mut data = Payload::new(ev.data);
        match ev.event_type {
            // Each rule reads the payload before it changes anything.
            "workflow.created" => {
                let (application, name) =
                    (get_or_nil(&mut data, "application")?, get_or_nil(&mut data, "name")?);
                (self.application, self.name) = (application, name);
            }
            "workflow.started" => {
                self.update_context(&mut data)?;
                self.start_time = iso(ev.timestamp_us);
                self.status = Cow::Borrowed(RUNNING);
            }
            "workflow.completed" => {
                self.status = get_or(&mut data, "status", SUCCEEDED)?;
                self.end_time = iso(ev.timestamp_us);
            }
            "workflow.failed" => {
                self.status = get_or(&mut data, "status", TERMINAL)?;
                self.end_time = iso(ev.timestamp_us);
            }
            "workflow.canceled" => {
                self.end_time = iso(ev.timestamp_us);
                self.status = Cow::Borrowed(CANCELED);
            }
            "workflow.paused" => self.status = Cow::Borrowed(PAUSED),
            "workflow.resumed" => self.status = Cow::Borrowed(RUNNING),
            "context.updated" => self.update_context(&mut data)?,
            _ => {}
        }
        Ok(())
    }

    fn apply_stage(&mut self, ev: &EventView<'_>) -> Result<()> {
        let mut data = Payload::new(ev.data);
        let stage = self.stages.get_or_insert_with(ev.entity_id, || {
            let mut f = Fields::default();
            f.put("id", id_field(ev.entity_id));
            f.put("ref_id", get_or_nil(&mut data, "ref_id")?);
            f.put("type", get_or_nil(&mut data, "type")?);
            f.put("name", get_or_nil(&mut data, "name")?);
            Ok(f)
        })?;
        match ev.event_type {
            "stage.started" => {
                stage.put("status", Cow::Borrowed(RUNNING));
                stage.put("start_time", iso(ev.timestamp_us));
            }
            "stage.completed" => {
                let status = get_or(&mut data, "status", SUCCEEDED)?;
                let outputs = data.get("outputs")?.map(owned).transpose()?;
                stage.put("status", status);
                stage.put("end_time", iso(ev.timestamp_us));
                if let Some(outputs) = outputs {
                    stage.put("outputs", outputs);
                }
            }
            "stage.suspended" => stage.put("status", Cow::Borrowed(SUSPENDED)),
            "stage.resumed" => stage.put("status", Cow::Borrowed(RUNNING)),
            "stage.failed" => {
                let (status, error) =
                    (get_or(&mut data, "status", TERMINAL)?, get_or_nil(&mut data, "error")?);
                stage.put("status", status);
                stage.put("end_time", iso(ev.timestamp_us));
                stage.put("error", error);
            }
            "stage.skipped" => {
                let reason = get_or_nil(&mut data, "reason")?;
                stage.put("status", Cow::Borrowed(SKIPPED));
                stage.put("skip_reason", reason);
            }
            "stage.canceled" => stage.put("status", Cow::Borrowed(CANCELED)),
            _ => {}
        }
        Ok(())
    }

    fn apply_task(&mut self, ev: &EventView<'_>) -> Result<()> {
        let mut data = Payload::new(ev.data);
        let task = self.tasks.get_or_insert_with(ev.entity_id, || {
            let mut f = Fields::default();
            f.put("id", id_field(ev.entity_id));
            f.put("name", get_or_nil(&mut data, "name")?);
            f.put("stage_id", get_or_nil(&mut data, "stage_id")?);
            Ok(f)
        })?;
        match ev.event_type {
            "task.started" => {
                task.put("status", Cow::Borrowed(RUNNING));
                task.put("start_time", iso(ev.timestamp_us));
            }
            "task.completed" => {
                let status = get_or(&mut data, "status", SUCCEEDED)?;
                let outputs = data.get("outputs")?.map(owned).transpose()?;
                task.put("status", status);
                task.put("end_time", iso(ev.timestamp_us));
                if let Some(outputs) = outputs {
                    task.put("outputs", outputs);
                }
            }
            "task.failed" => {
                let (status, error) =
                    (get_or(&mut data, "status", TERMINAL)?, get_or_nil(&mut data, "error")?);
                task.put("status", status);
                task.put("end_time", iso(ev.timestamp_us));
                task.put("error", error);
            }
            "task.retried" => match data.get("retry_count")? {
                Some(count) => task.put("retry_count", owned(count)?),
                None => {
                    // No count given: one more than before.
                    let next = increment(task.get("retry_count").map(|v| &**v));
                    task.put("retry_count", next);
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// The state as the reference's `WorkflowState.to_dict()` returns it.
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Thousands of acyclic dicts are built here: a collection pass in the
        // middle would only walk them for nothing.
        let _pause = GcPause::new();
        let mut session = decode::session();
        let d = PyDict::new(py);
        d.set_item("workflow_id", &self.workflow_id)?;
        let mut acyclic = true;
        for (key, value) in [
            ("status", &self.status),
            ("application", &self.application),
            ("name", &self.name),
            ("start_time", &self.start_time),
            ("end_time", &self.end_time),
        ] {
            let (value, ok) = leaf(py, &mut session, value)?;
            acyclic &= ok;
            d.set_item(key, value)?;
        }
        let mut shapes = Shapes::default();
        let (context, ok) = fields_dict(py, &mut session, &mut shapes, &self.context, None)?;
        acyclic &= ok;
        d.set_item("context", context)?;
        for (key, entities) in [("stages", &self.stages), ("tasks", &self.tasks)] {
            let out = PyDict::new(py);
            let mut all = true;
            for (id, f) in &entities.items {
                // One string serves as the key and as the entity's "id" field.
                let id_obj = pyo3::types::PyString::new(py, id);
                let (fields, ok) = fields_dict(py, &mut session, &mut shapes, f, Some((id, &id_obj)))?;
                all &= ok;
                out.set_item(&id_obj, fields)?;
            }
            acyclic &= settle(&out, all, !entities.items.is_empty());
            d.set_item(key, out)?;
        }
        settle(&d, acyclic, true);
        Ok(d)
    }

    /// A state from the msgpack of a dict shaped like `to_py`'s (a snapshot).
    pub fn from_msgpack(workflow_id: &str, raw: &[u8]) -> Result<Self> {
        let mut state = WorkflowState::new(workflow_id);
        let entries =
            view::map_entries(raw)?.ok_or_else(|| ViewError("snapshot state is not a map".into()))?;
        let fields = |raw: &[u8]| -> Result<Fields> {
            let mut f = Fields::default();
            for (k, v) in view::map_entries(raw)?.unwrap_or_default() {
                f.put_owned(k, owned(v)?);
            }
            Ok(f)
        };
        for (key, value) in entries {
            match key {
                "status" => state.status = owned(value)?,
                "application" => state.application = owned(value)?,
                "name" => state.name = owned(value)?,
                "start_time" => state.start_time = owned(value)?,
                "end_time" => state.end_time = owned(value)?,
                "context" => state.context = fields(value)?,
                "stages" | "tasks" => {
                    let target = if key == "stages" { &mut state.stages } else { &mut state.tasks };
                    for (id, entry) in view::map_entries(value)?.unwrap_or_default() {
                        target.set(id, fields(entry)?)?;
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }
}

/// One kept value as a Python object (a deferred addition is done here).
/// One kept value as a Python object (a deferred addition is done here), and
/// whether it is acyclic (see `decode::keep_off_collector`).
fn leaf<'py>(
    py: Python<'py>,
    session: &mut decode::Session,
    raw: &[u8],
) -> PyResult<(Bound<'py, PyAny>, bool)> {
    let (raw, add) = deferred_parts(raw).map_or((raw, None), |(base, n)| (base, Some(n)));
    let (value, acyclic) = session.decode_acyclic(py, raw).map_err(|e| {
        PyErr::from(CoreError::new(Kind::CorruptEvent, format!("folded value cannot be decoded: {}", e.0)))
    })?;
    match add {
        Some(n) => Ok((value.add(n)?, true)),
        None => Ok((value, acyclic)),
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

/// Whether `raw` is the msgpack string `text`.
fn is_str(raw: &[u8], text: &str) -> bool {
    match raw.first() {
        Some(&m @ 0xa0..=0xbf) => (m & 0x1f) as usize == text.len() && &raw[1..] == text.as_bytes(),
        Some(0xd9) => raw.get(1).is_some_and(|&n| n as usize == text.len()) && &raw[2..] == text.as_bytes(),
        _ => false,
    }
}

/// A stage's, task's or the context's fields as a dict; `id` is reused for an
/// "id" field that holds the same string.
fn fields_dict<'py>(
    py: Python<'py>,
    session: &mut decode::Session,
    shapes: &mut Shapes<'py>,
    fields: &Fields,
    id: Option<(&str, &Bound<'py, pyo3::types::PyString>)>,
) -> PyResult<(Bound<'py, PyDict>, bool)> {
    let (d, keys) = shapes.empty_dict(py, session, fields)?;
    let (mut acyclic, mut holds_dict) = (true, false);
    for (i, (k, v)) in fields.items.iter().enumerate() {
        let (value, ok) = match id {
            Some((text, obj)) if k == "id" && is_str(v, text) => (obj.clone().into_any(), true),
            _ => leaf(py, session, v)?,
        };
        acyclic &= ok;
        holds_dict |= value.is_instance_of::<PyDict>();
        match keys {
            Some(keys) => d.set_item(&keys[i], value)?,
            None => d.set_item(session.key(py, k), value)?,
        }
    }
    let acyclic = settle(&d, acyclic, holds_dict);
    Ok((d, acyclic))
}

/// Thousands of stages and tasks share a few key sequences. For each such
/// shape a template dict (every key, values None) is kept and copied: a copy
/// takes all the keys in one allocation, and setting a key already present
/// only swaps its value, where building key by key allocated, grew and
/// rehashed every dict (W4: a third of the time spent building the answer).
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
    /// A dict to fill with `fields`: a copy of its shape's template, with the
    /// template's keys in order (None: an empty dict, fill it key by key).
    fn empty_dict(
        &mut self,
        py: Python<'py>,
        session: &mut decode::Session,
        fields: &Fields,
    ) -> PyResult<(Bound<'py, PyDict>, Option<&[PyKey<'py>]>)> {
        let same = |shape: &Shape<'_>| {
            shape.keys.len() == fields.items.len()
                && shape.keys.iter().zip(&fields.items).all(|(a, (b, _))| a == b)
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
        let shape = &self.shapes[found];
        Ok((shape.template.copy()?, Some(&shape.key_objs)))
    }
}

/// Pauses Python's cyclic garbage collector while alive (if it was running).
pub struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    pub fn new() -> Self {
        // SAFETY: called with the GIL held (from `to_py`); these only flip a flag.
        let was_enabled = unsafe { pyo3::ffi::PyGC_Disable() } != 0;
        GcPause { was_enabled }
    }
}

impl Default for GcPause {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: as above; the GIL is still held when the guard drops.
            unsafe {
                pyo3::ffi::PyGC_Enable();
            }
        }
    }
}
