//! The Python `Event` class: an immutable event whose fields are read from an
//! `EventRecord` on access, and whose payload is decoded only when first read.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::lazy::LazyObject;
use super::{EventMetadata, EventRecord};
use crate::args::{enum_value, int_arg, str_arg};
use crate::codec;
use crate::errors::{raise, CoreError, Kind};
use crate::{pyrefs, time};

const RAW_EVENT_TYPE: &str = "_raw_event_type";
const UNKNOWN_TYPE: &str = "unknown.event";
const CURRENT_SCHEMA_VERSION: i64 = 1;

/// An immutable record of one state change.
#[pyclass(frozen, module = "stabilize_events", name = "Event")]
pub struct Event {
    rec: Arc<EventRecord>,
    /// The payload object: given at construction, or decoded from `rec.data` on first access.
    data: LazyObject,
    metadata: LazyObject,
    timestamp: LazyObject,
}

/// Whether a stored type string reads back as `EventType.UNKNOWN`.
fn reads_as_unknown(py: Python<'_>, event_type: &str) -> PyResult<bool> {
    Ok(event_type == UNKNOWN_TYPE || !pyrefs::event_types(py)?.by_value.contains_key(event_type))
}

/// For a stored type string that reads back as `EventType.UNKNOWN`, keep the string in the
/// payload under `_raw_event_type` (an "unknown.event" row may already carry its original
/// type there).
fn keep_unknown_type(py: Python<'_>, event_type: &str, data: &Bound<'_, PyDict>) -> PyResult<()> {
    if reads_as_unknown(py, event_type)? && !data.contains(RAW_EVENT_TYPE)? {
        data.set_item(RAW_EVENT_TYPE, event_type)?;
    }
    Ok(())
}

/// The `EventType` member a stored type string reads as (`UNKNOWN` for one this build does
/// not know).
fn event_type_member<'py>(py: Python<'py>, event_type: &str) -> PyResult<Bound<'py, PyAny>> {
    let table = pyrefs::event_types(py)?;
    match table.by_value.get(event_type).or(table.unknown.as_ref()) {
        Some(m) => Ok(m.bind(py).clone()),
        None => raise(Kind::Store, "EventType has no UNKNOWN member"),
    }
}

/// The `EventType` member a stored row's type string reads as, for code that builds events
/// from stored rows of its own: a type this build does not know is `EventType.UNKNOWN`, its
/// string kept in ``data`` (changed in place) as a native store's read keeps it.
#[pyfunction]
pub fn stored_event_type<'py>(
    py: Python<'py>,
    event_type: &str,
    data: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    keep_unknown_type(py, event_type, data)?;
    event_type_member(py, event_type)
}

impl Event {
    /// An event read from a store: nothing is converted to Python yet.
    pub fn from_record(rec: Arc<EventRecord>) -> Event {
        Event { rec, data: LazyObject::new(), metadata: LazyObject::new(), timestamp: LazyObject::new() }
    }

    /// `read`, with its payload decoded now (a payload that cannot be decoded
    /// is left for `data` to report).
    pub fn read_decoded(py: Python<'_>, rec: Arc<EventRecord>) -> PyResult<Bound<'_, Event>> {
        let event = Event::from_record(rec);
        let _ = event.decoded_data(py);
        event.untracked(py)
    }

    /// A Python `Event` for a record read from a store (see `untracked`).
    pub fn read(py: Python<'_>, rec: Arc<EventRecord>) -> PyResult<Bound<'_, Event>> {
        Event::from_record(rec).untracked(py)
    }

    /// This event as a Python object left out of the cyclic garbage collector.
    ///
    /// Stores hand out events by the thousand (reads, and the resequenced
    /// copies an append returns), each of which the collector would walk again
    /// and again, and whose allocation would set off its collections. Such an
    /// event only reaches objects made before it (its record's decoded values,
    /// or the payload of the event it copies), which cannot point back at it;
    /// an application that stores the event inside its own `data` makes a
    /// cycle Python will not free.
    pub fn untracked(self, py: Python<'_>) -> PyResult<Bound<'_, Event>> {
        let event = Bound::new(py, self)?;
        // SAFETY: a live object we own; untracking only removes it from the GC's lists.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(event.as_ptr().cast()) };
        Ok(event)
    }

    pub fn record(&self) -> &Arc<EventRecord> {
        &self.rec
    }

    /// The same event under a new sequence, sharing the Python objects already built.
    pub fn resequenced(&self, py: Python<'_>, rec: Arc<EventRecord>) -> Event {
        Event {
            rec,
            data: LazyObject::with(self.data.get(py)),
            metadata: LazyObject::with(self.metadata.get(py)),
            timestamp: LazyObject::with(self.timestamp.get(py)),
        }
    }

    /// The record to store: the payload is (re-)encoded if Python holds it, since a
    /// dict may have been changed after construction.
    pub fn to_record(&self, py: Python<'_>) -> Result<EventRecord, CoreError> {
        let mut rec = EventRecord { data: Vec::new(), ..(*self.rec).clone() };
        match self.data.get(py) {
            Some(obj) => {
                if !obj.is_instance_of::<PyDict>() {
                    let tname = obj.get_type().qualname().map(|n| n.to_string()).unwrap_or_default();
                    return Err(CoreError::new(
                        Kind::Payload,
                        format!("data must be a dict, not {tname} (event {})", self.rec.event_id),
                    ));
                }
                let mut out = Vec::with_capacity(128);
                codec::encode::encode(&obj, &mut out).map_err(|e| {
                    CoreError::new(
                        Kind::Payload,
                        format!("{} (event {})", e.describe("data"), self.rec.event_id),
                    )
                })?;
                rec.data = out;
            }
            None => rec.data = self.rec.data.clone(),
        }
        Ok(rec)
    }

    fn data_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.decoded_data(py)
    }

    /// The payload, decoded from the record if not done yet.
    fn decoded_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.data.get_or_try_init(py, || {
            let obj = codec::decode::decode(py, &self.rec.data).map_err(|e| {
                CoreError::new(
                    Kind::CorruptEvent,
                    format!(
                        "payload of event {} (sequence {}) cannot be decoded: {}",
                        self.rec.event_id, self.rec.sequence, e.0
                    ),
                )
            })?;
            if !obj.is_instance_of::<PyDict>() {
                return Err(CoreError::new(
                    Kind::CorruptEvent,
                    format!(
                        "payload of event {} (sequence {}) is not a map",
                        self.rec.event_id, self.rec.sequence
                    ),
                )
                .into());
            }
            if let Ok(d) = obj.cast::<PyDict>() {
                keep_unknown_type(py, &self.rec.event_type, d)?;
            }
            Ok(obj)
        })
    }

    fn event_type_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        event_type_member(py, &self.rec.event_type)
    }

    fn entity_type_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match pyrefs::entity_types(py)?.by_value.get(self.rec.entity_type.as_str()) {
            Some(m) => Ok(m.bind(py).clone()),
            None => raise(
                Kind::CorruptEvent,
                format!(
                    "event {} (sequence {}) has unknown entity_type {:?}",
                    self.rec.event_id, self.rec.sequence, self.rec.entity_type
                ),
            ),
        }
    }

    fn metadata_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.metadata.get_or_try_init(py, || {
            let m = EventMetadata {
                correlation_id: self.rec.correlation_id.to_string(),
                causation_id: self.rec.causation_id.as_ref().map(|c| c.to_string()),
                actor: self.rec.actor.to_string(),
                source_handler: self.rec.source_handler.as_ref().map(|c| c.to_string()),
            };
            Ok(Bound::new(py, m)?.into_any())
        })
    }

    fn timestamp_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.timestamp.get_or_try_init(py, || Ok(time::utc_datetime(py, self.rec.timestamp_us)?.into_any()))
    }

    fn field_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let r = &self.rec;
        PyTuple::new(
            py,
            [
                PyString::new(py, &r.event_id).into_any(),
                self.event_type_object(py)?,
                self.timestamp_object(py)?,
                r.sequence.into_pyobject(py)?.into_any(),
                self.entity_type_object(py)?,
                PyString::new(py, &r.entity_id).into_any(),
                PyString::new(py, &r.workflow_id).into_any(),
                r.version.into_pyobject(py)?.into_any(),
                self.data_object(py)?,
                self.metadata_object(py)?,
                r.schema_version.into_pyobject(py)?.into_any(),
            ],
        )
    }
}

#[pymethods]
impl Event {
    #[new]
    #[pyo3(signature = (
        event_id=None, event_type=None, timestamp=None, sequence=None, entity_type=None,
        entity_id=None, workflow_id=None, version=None, data=None, metadata=None, schema_version=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        event_id: Option<&Bound<'_, PyAny>>,
        event_type: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
        sequence: Option<&Bound<'_, PyAny>>,
        entity_type: Option<&Bound<'_, PyAny>>,
        entity_id: Option<&Bound<'_, PyAny>>,
        workflow_id: Option<&Bound<'_, PyAny>>,
        version: Option<&Bound<'_, PyAny>>,
        data: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        schema_version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Event> {
        fn given<'py>(o: Option<&Bound<'py, PyAny>>) -> Option<Bound<'py, PyAny>> {
            o.filter(|v| !v.is_none()).cloned()
        }
        let text = |o: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<String> {
            given(o).map(|v| str_arg(&v, name)).transpose().map(Option::unwrap_or_default)
        };
        let int = |o: Option<&Bound<'_, PyAny>>, name: &str, default: i64| -> PyResult<i64> {
            given(o).map(|v| int_arg(&v, name)).transpose().map(|v| v.unwrap_or(default))
        };

        let data_obj = match given(data) {
            Some(d) => d,
            None => PyDict::new(py).into_any(),
        };
        let mut event_type_str = match given(event_type) {
            Some(t) => {
                let v = enum_value(&t, "event_type")?;
                // A string is the caller's own spelling: a typo must not become an UNKNOWN
                // event. A member of another enum (a newer Stabilize's) is taken as it is.
                if t.is_instance_of::<PyString>() && !pyrefs::event_types(py)?.by_value.contains_key(&v) {
                    return raise(
                        Kind::InvalidArgument,
                        format!(
                            "event_type {v:?} is not an event type; pass an EventType member or \
                             its value, such as EventType.STAGE_STARTED or \"stage.started\""
                        ),
                    );
                }
                v
            }
            None => "status.changed".to_owned(),
        };
        if event_type_str == UNKNOWN_TYPE {
            // Keep the original type of an event this build could not read.
            if let Ok(d) = data_obj.cast::<PyDict>() {
                if let Some(raw) = d.get_item(RAW_EVENT_TYPE)? {
                    if let Ok(raw) = raw.extract::<String>() {
                        event_type_str = raw;
                    }
                }
            }
        }
        let entity_type_str = match given(entity_type) {
            Some(t) => {
                let v = enum_value(&t, "entity_type")?;
                if !pyrefs::entity_types(py)?.by_value.contains_key(&v) {
                    return raise(
                        Kind::InvalidArgument,
                        format!("entity_type {v:?} is not one of workflow, stage, task"),
                    );
                }
                v
            }
            None => "workflow".to_owned(),
        };
        let (timestamp_us, timestamp_obj) = match given(timestamp) {
            Some(ts) => {
                if !ts.is_instance(pyrefs::datetime_class(py)?)? {
                    return raise(Kind::ArgumentType, "timestamp must be a datetime.datetime");
                }
                (time::utc_micros(&ts)?, None)
            }
            None => (time::now_micros(), None::<Py<PyAny>>),
        };
        let mut meta_obj = given(metadata);
        let meta = match &meta_obj {
            // A dict of EventMetadata's fields is taken as one (`event.metadata` is an EventMetadata).
            Some(m) if m.is_instance_of::<PyDict>() => {
                let meta = EventMetadata::from_fields(m.cast::<PyDict>()?)?;
                meta_obj = None;
                meta
            }
            Some(m) => EventMetadata::from_object(m)?,
            None => EventMetadata {
                correlation_id: String::new(),
                causation_id: None,
                actor: "system".to_owned(),
                source_handler: None,
            },
        };
        let rec = EventRecord {
            sequence: int(sequence, "sequence", 0)?,
            event_id: match given(event_id) {
                Some(id) => str_arg(&id, "event_id")?.into(),
                None => ulid::Ulid::generate().to_string().into(),
            },
            event_type: event_type_str.into(),
            timestamp_us,
            entity_type: entity_type_str.into(),
            entity_id: text(entity_id, "entity_id")?.into(),
            workflow_id: text(workflow_id, "workflow_id")?.into(),
            version: int(version, "version", 0)?,
            data: Vec::new(),
            correlation_id: meta.correlation_id.into(),
            causation_id: meta.causation_id.map(Into::into),
            actor: meta.actor.into(),
            source_handler: meta.source_handler.map(Into::into),
            schema_version: int(schema_version, "schema_version", CURRENT_SCHEMA_VERSION)?,
        };
        let data_unbound = data_obj.unbind();
        Ok(Event {
            rec: Arc::new(rec),
            data: LazyObject::with(Some(data_unbound.into_bound(py))),
            metadata: LazyObject::with(meta_obj),
            timestamp: LazyObject::with(timestamp_obj.map(|t| t.into_bound(py))),
        })
    }

    /// Unique id (a ULID, so ids sort by creation time).
    #[getter]
    fn event_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.rec.event_id)
    }

    /// What happened; `EventType.UNKNOWN` for a type this build does not know.
    #[getter]
    fn event_type<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.event_type_object(py)
    }

    /// When it happened, as an aware UTC datetime.
    #[getter]
    fn timestamp<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.timestamp_object(py)
    }

    /// Global position in the store (0 until appended).
    #[getter]
    fn sequence(&self) -> i64 {
        self.rec.sequence
    }

    /// The kind of entity the event is about.
    #[getter]
    fn entity_type<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.entity_type_object(py)
    }

    #[getter]
    fn entity_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.rec.entity_id)
    }

    #[getter]
    fn workflow_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.rec.workflow_id)
    }

    /// The entity's version after this event.
    #[getter]
    fn version(&self) -> i64 {
        self.rec.version
    }

    /// The payload, decoded on first access.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.data_object(py)
    }

    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.metadata_object(py)
    }

    #[getter]
    fn schema_version(&self) -> i64 {
        self.rec.schema_version
    }

    /// A copy of this event with another sequence number.
    fn with_sequence(&self, py: Python<'_>, sequence: &Bound<'_, PyAny>) -> PyResult<Event> {
        let seq = int_arg(sequence, "sequence")?;
        Ok(self.resequenced(py, Arc::new(self.rec.with_sequence(seq))))
    }

    /// The event as a plain dict: enum values, ISO timestamp, metadata dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let r = &self.rec;
        d.set_item("event_id", r.event_id.as_str())?;
        d.set_item("event_type", self.event_type_object(py)?.getattr("value")?)?;
        d.set_item("timestamp", self.timestamp_object(py)?.call_method0("isoformat")?)?;
        d.set_item("sequence", r.sequence)?;
        d.set_item("entity_type", r.entity_type.as_str())?;
        d.set_item("entity_id", r.entity_id.as_str())?;
        d.set_item("workflow_id", r.workflow_id.as_str())?;
        d.set_item("version", r.version)?;
        d.set_item("data", self.data_object(py)?)?;
        d.set_item("metadata", self.metadata_object(py)?.call_method0("to_dict")?)?;
        d.set_item("schema_version", r.schema_version)?;
        Ok(d)
    }

    /// An event from a dict as `to_dict` makes (ISO timestamps with or without `Z`).
    #[classmethod]
    fn from_dict<'py>(cls: &Bound<'py, PyType>, data: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let kwargs = PyDict::new(py);
        for key in [
            "event_id",
            "event_type",
            "sequence",
            "entity_type",
            "entity_id",
            "workflow_id",
            "version",
            "schema_version",
        ] {
            if let Some(v) = data.get_item(key)? {
                kwargs.set_item(key, v)?;
            }
        }
        if let Some(ts) = data.get_item("timestamp")? {
            if let Ok(text) = ts.extract::<String>() {
                let text = match text.strip_suffix('Z') {
                    Some(t) => format!("{t}+00:00"),
                    None => text,
                };
                kwargs.set_item(
                    "timestamp",
                    pyrefs::datetime_class(py)?.call_method1("fromisoformat", (text,))?,
                )?;
            } else if !ts.is_none() {
                kwargs.set_item("timestamp", ts)?;
            }
        }
        let payload = match data.get_item("data")? {
            Some(p) if !p.is_none() => p,
            _ => PyDict::new(py).into_any(),
        };
        if let Some(t) = data.get_item("event_type")? {
            let raw: String = enum_value(&t, "event_type")?;
            if reads_as_unknown(py, &raw)? {
                // Mirror the read path: unknown types keep their raw string in the payload.
                let copy = PyDict::new(py);
                if let Ok(p) = payload.cast::<PyDict>() {
                    copy.update(p.as_mapping())?;
                }
                if !copy.contains(RAW_EVENT_TYPE)? {
                    copy.set_item(RAW_EVENT_TYPE, &raw)?;
                }
                kwargs.set_item("event_type", UNKNOWN_TYPE)?;
                kwargs.set_item("data", copy)?;
            } else {
                kwargs.set_item("data", payload)?;
            }
        } else {
            kwargs.set_item("data", payload)?;
        }
        if let Some(m) = data.get_item("metadata")? {
            if let Ok(m) = m.cast::<PyDict>() {
                let meta = py.get_type::<EventMetadata>().call_method1("from_dict", (m,))?;
                kwargs.set_item("metadata", meta)?;
            }
        }
        cls.call((), Some(&kwargs))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<Event>() else {
            return Ok(py.NotImplemented());
        };
        let o = other.get();
        let (a, b) = (&*self.rec, &*o.rec);
        let same_head = a.sequence == b.sequence
            && a.event_id == b.event_id
            && a.event_type == b.event_type
            && a.timestamp_us == b.timestamp_us
            && a.entity_type == b.entity_type
            && a.entity_id == b.entity_id
            && a.workflow_id == b.workflow_id
            && a.version == b.version
            && a.schema_version == b.schema_version;
        let equal = same_head
            && self.metadata_object(py)?.eq(o.metadata_object(py)?)?
            && self.data_object(py)?.eq(o.data_object(py)?)?;
        Ok(pyo3::types::PyBool::new(py, equal).to_owned().into_any().unbind())
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        // Like a frozen dataclass: the hash of all fields (so a dict payload makes it unhashable).
        self.field_tuple(py)?.hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let head = |s: &str| s.chars().take(8).collect::<String>();
        Ok(format!(
            "Event(id={}..., type={}, entity={}/{}..., seq={})",
            head(&self.rec.event_id),
            self.event_type_object(py)?.getattr("value")?,
            self.rec.entity_type,
            head(&self.rec.entity_id),
            self.rec.sequence
        ))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        PyTuple::new(py, [slf.get_type().into_any(), slf.get().field_tuple(py)?.into_any()])
    }

    fn __setattr__(&self, name: &str, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(pyrefs::frozen("assign to", name))
    }

    fn __delattr__(&self, name: &str) -> PyResult<()> {
        Err(pyrefs::frozen("delete", name))
    }
}

/// The fields of an event, in constructor order (what a foreign event object must have).
pub const FIELDS: [&str; 11] = [
    "event_id",
    "event_type",
    "timestamp",
    "sequence",
    "entity_type",
    "entity_id",
    "workflow_id",
    "version",
    "data",
    "metadata",
    "schema_version",
];

/// Our `Event`, or an equivalent built from any object with the same fields
/// (such as Stabilize's own dataclass).
pub fn coerce_event<'py>(obj: &Bound<'py, PyAny>, position: Option<usize>) -> PyResult<Bound<'py, Event>> {
    if let Ok(e) = obj.cast::<Event>() {
        return Ok(e.clone());
    }
    let py = obj.py();
    if FIELDS.iter().all(|f| obj.hasattr(*f).unwrap_or(false)) {
        let kwargs = PyDict::new(py);
        for f in FIELDS {
            kwargs.set_item(f, obj.getattr(f)?)?;
        }
        return Ok(py.get_type::<Event>().call((), Some(&kwargs))?.cast_into::<Event>()?);
    }
    let what = match position {
        Some(i) => format!("events[{i}]"),
        None => "event".to_owned(),
    };
    let tname = obj.get_type().qualname().map(|n| n.to_string()).unwrap_or_default();
    raise(Kind::ArgumentType, format!("{what} must be an Event, not {tname}"))
}
