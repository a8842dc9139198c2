//! `WorkflowState` and the fold rules (those of the reference's `EventReplayer`).
//!
//! Every value kept is raw msgpack (`Raw`), so values of any type pass through
//! the fold untouched and decode to the same Python objects the payload holds.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rustc_hash::FxHashMap;

use super::EventView;
use crate::codec::decode;
use crate::codec::view::{self, ViewError, NIL};
use crate::time::{civil_from_days, MICROS_PER_DAY, MICROS_PER_SEC};

type Raw = Box<[u8]>;
type Result<T> = std::result::Result<T, ViewError>;

/// A map that remembers insertion order (the order Python dicts will show).
#[derive(Debug, Clone)]
struct OrderedMap<V> {
    index: FxHashMap<String, usize>,
    items: Vec<(String, V)>,
}

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap {
            index: FxHashMap::default(),
            items: Vec::new(),
        }
    }
}

impl<V> OrderedMap<V> {
    fn entry_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        let at = match self.index.get(key) {
            Some(&i) => i,
            None => {
                self.items.push((key.to_owned(), make()));
                self.index.insert(key.to_owned(), self.items.len() - 1);
                self.items.len() - 1
            }
        };
        &mut self.items[at].1
    }

    fn set(&mut self, key: &str, value: V) {
        match self.index.get(key) {
            Some(&i) => self.items[i].1 = value,
            None => {
                self.items.push((key.to_owned(), value));
                self.index.insert(key.to_owned(), self.items.len() - 1);
            }
        }
    }
}

impl OrderedMap<Raw> {
    fn put(&mut self, key: &str, value: &[u8]) {
        self.set(key, value.into());
    }

    fn get(&self, key: &str) -> Option<&Raw> {
        self.index.get(key).map(|&i| &self.items[i].1)
    }
}

/// Stage or task fields, in first-set order.
type Entry = OrderedMap<Raw>;

/// The payload of one event, with its map entries read once, on first need.
struct Payload<'a> {
    raw: &'a [u8],
    entries: Option<Vec<(&'a str, &'a [u8])>>,
}

impl<'a> Payload<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Payload { raw, entries: None }
    }

    /// `data.get(key)`: None when absent (a payload that is not a map has no keys).
    fn get(&mut self, key: &str) -> Result<Option<&'a [u8]>> {
        if self.entries.is_none() {
            self.entries = Some(view::map_entries(self.raw)?.unwrap_or_default());
        }
        Ok(self
            .entries
            .as_ref()
            .and_then(|e| e.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)))
    }

    /// `data.get(key, default)` as raw msgpack.
    fn get_or(&mut self, key: &str, default: &'static str) -> Result<Raw> {
        Ok(match self.get(key)? {
            Some(v) => v.into(),
            None => view::encode_str(default),
        })
    }

    fn get_or_nil(&mut self, key: &str) -> Result<&'a [u8]> {
        Ok(self.get(key)?.unwrap_or(NIL))
    }
}

/// A workflow's state as folded from its events.
#[derive(Debug, Clone)]
pub struct WorkflowState {
    workflow_id: String,
    status: Raw,
    application: Raw,
    name: Raw,
    start_time: Raw,
    end_time: Raw,
    context: OrderedMap<Raw>,
    stages: OrderedMap<Entry>,
    tasks: OrderedMap<Entry>,
}

/// `datetime.isoformat()` of an aware UTC datetime, as msgpack.
fn iso(micros: i64) -> Raw {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rem = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / MICROS_PER_SEC;
    let frac = rem % MICROS_PER_SEC;
    let mut text = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if frac != 0 {
        text.push_str(&format!(".{frac:06}"));
    }
    text.push_str("+00:00");
    view::encode_str(&text)
}

fn text(value: &'static str) -> Raw {
    view::encode_str(value)
}

impl WorkflowState {
    /// The empty state of a workflow no event has touched.
    pub fn new(workflow_id: &str) -> Self {
        WorkflowState {
            workflow_id: workflow_id.to_owned(),
            status: NIL.into(),
            application: NIL.into(),
            name: NIL.into(),
            start_time: NIL.into(),
            end_time: NIL.into(),
            context: OrderedMap::default(),
            stages: OrderedMap::default(),
            tasks: OrderedMap::default(),
        }
    }

    /// Fold one event in. Events of unknown entity or event types change nothing.
    pub fn apply(&mut self, ev: &EventView<'_>) -> Result<()> {
        let mut data = Payload::new(ev.data);
        match ev.entity_type {
            "workflow" => self.apply_workflow(ev, &mut data),
            "stage" => self.apply_stage(ev, &mut data),
            "task" => self.apply_task(ev, &mut data),
            _ => Ok(()),
        }
    }

    fn update_context(&mut self, data: &mut Payload<'_>) -> Result<()> {
        if let Some(ctx) = data.get("context")? {
            // A context that is not a mapping (None) updates nothing.
            for (k, v) in view::map_entries(ctx)?.unwrap_or_default() {
                self.context.put(k, v);
            }
        }
        Ok(())
    }

    fn apply_workflow(&mut self, ev: &EventView<'_>, data: &mut Payload<'_>) -> Result<()> {
        match ev.event_type {
            "workflow.created" => {
                self.application = data.get_or_nil("application")?.into();
                self.name = data.get_or_nil("name")?.into();
            }
            "workflow.started" => {
                self.start_time = iso(ev.timestamp_us);
                self.status = text("RUNNING");
                self.update_context(data)?;
            }
            "workflow.completed" => {
                self.end_time = iso(ev.timestamp_us);
                self.status = data.get_or("status", "SUCCEEDED")?;
            }
            "workflow.failed" => {
                self.end_time = iso(ev.timestamp_us);
                self.status = data.get_or("status", "TERMINAL")?;
            }
            "workflow.canceled" => {
                self.end_time = iso(ev.timestamp_us);
                self.status = text("CANCELED");
            }
            "workflow.paused" => self.status = text("PAUSED"),
            "workflow.resumed" => self.status = text("RUNNING"),
            "context.updated" => self.update_context(data)?,
            _ => {}
        }
        Ok(())
    }

    fn apply_stage(&mut self, ev: &EventView<'_>, data: &mut Payload<'_>) -> Result<()> {
        let mut made = Ok(());
        let stage = self.stages.entry_or_insert_with(ev.entity_id, || {
            let mut e = Entry::default();
            e.put("id", &view::encode_str(ev.entity_id));
            for key in ["ref_id", "type", "name"] {
                match data.get_or_nil(key) {
                    Ok(v) => e.put(key, v),
                    Err(err) => made = Err(err),
                }
            }
            e
        });
        made?;
        match ev.event_type {
            "stage.started" => {
                stage.put("status", &text("RUNNING"));
                stage.put("start_time", &iso(ev.timestamp_us));
            }
            "stage.completed" => {
                stage.put("status", &data.get_or("status", "SUCCEEDED")?);
                stage.put("end_time", &iso(ev.timestamp_us));
                if let Some(outputs) = data.get("outputs")? {
                    stage.put("outputs", outputs);
                }
            }
            "stage.suspended" => stage.put("status", &text("SUSPENDED")),
            "stage.resumed" => stage.put("status", &text("RUNNING")),
            "stage.failed" => {
                stage.put("status", &data.get_or("status", "TERMINAL")?);
                stage.put("end_time", &iso(ev.timestamp_us));
                stage.put("error", data.get_or_nil("error")?);
            }
            "stage.skipped" => {
                stage.put("status", &text("SKIPPED"));
                stage.put("skip_reason", data.get_or_nil("reason")?);
            }
            "stage.canceled" => stage.put("status", &text("CANCELED")),
            _ => {}
        }
        Ok(())
    }

    fn apply_task(&mut self, ev: &EventView<'_>, data: &mut Payload<'_>) -> Result<()> {
        let mut made = Ok(());
        let task = self.tasks.entry_or_insert_with(ev.entity_id, || {
            let mut e = Entry::default();
            e.put("id", &view::encode_str(ev.entity_id));
            for key in ["name", "stage_id"] {
                match data.get_or_nil(key) {
                    Ok(v) => e.put(key, v),
                    Err(err) => made = Err(err),
                }
            }
            e
        });
        made?;
        match ev.event_type {
            "task.started" => {
                task.put("status", &text("RUNNING"));
                task.put("start_time", &iso(ev.timestamp_us));
            }
            "task.completed" => {
                task.put("status", &data.get_or("status", "SUCCEEDED")?);
                task.put("end_time", &iso(ev.timestamp_us));
                if let Some(outputs) = data.get("outputs")? {
                    task.put("outputs", outputs);
                }
            }
            "task.failed" => {
                task.put("status", &data.get_or("status", "TERMINAL")?);
                task.put("end_time", &iso(ev.timestamp_us));
                task.put("error", data.get_or_nil("error")?);
            }
            "task.retried" => match data.get("retry_count")? {
                Some(count) => task.put("retry_count", count),
                None => {
                    // No count given: one more than before (a non-integer count restarts at 1).
                    let before = task
                        .get("retry_count")
                        .and_then(|r| view::as_i64(r))
                        .unwrap_or(0);
                    task.put("retry_count", &view::encode_int(before.saturating_add(1)));
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// The state as the reference's `WorkflowState.to_dict()` returns it.
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let leaf = |raw: &[u8]| -> PyResult<Bound<'py, PyAny>> {
            decode::decode(py, raw).map_err(|e| {
                crate::errors::CoreError::new(
                    crate::errors::Kind::CorruptEvent,
                    format!("folded value cannot be decoded: {}", e.0),
                )
                .into()
            })
        };
        let fields = |m: &OrderedMap<Raw>| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            for (k, v) in &m.items {
                d.set_item(k, leaf(v)?)?;
            }
            Ok(d)
        };
        let nested = |m: &OrderedMap<Entry>| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            for (k, v) in &m.items {
                d.set_item(k, fields(v)?)?;
            }
            Ok(d)
        };
        let d = PyDict::new(py);
        d.set_item("workflow_id", &self.workflow_id)?;
        d.set_item("status", leaf(&self.status)?)?;
        d.set_item("application", leaf(&self.application)?)?;
        d.set_item("name", leaf(&self.name)?)?;
        d.set_item("start_time", leaf(&self.start_time)?)?;
        d.set_item("end_time", leaf(&self.end_time)?)?;
        d.set_item("context", fields(&self.context)?)?;
        d.set_item("stages", nested(&self.stages)?)?;
        d.set_item("tasks", nested(&self.tasks)?)?;
        Ok(d)
    }

    /// A state from the msgpack of a dict shaped like `to_py`'s (a snapshot).
    pub fn from_msgpack(workflow_id: &str, raw: &[u8]) -> Result<Self> {
        let mut state = WorkflowState::new(workflow_id);
        let entries = view::map_entries(raw)?
            .ok_or_else(|| ViewError("snapshot state is not a map".into()))?;
        let fields = |raw: &[u8]| -> Result<Entry> {
            let mut e = Entry::default();
            for (k, v) in view::map_entries(raw)?.unwrap_or_default() {
                e.put(k, v);
            }
            Ok(e)
        };
        for (key, value) in entries {
            match key {
                "status" => state.status = value.into(),
                "application" => state.application = value.into(),
                "name" => state.name = value.into(),
                "start_time" => state.start_time = value.into(),
                "end_time" => state.end_time = value.into(),
                "context" => state.context = fields(value)?,
                "stages" | "tasks" => {
                    let target = if key == "stages" {
                        &mut state.stages
                    } else {
                        &mut state.tasks
                    };
                    for (id, entry) in view::map_entries(value)?.unwrap_or_default() {
                        target.set(id, fields(entry)?);
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }
}
