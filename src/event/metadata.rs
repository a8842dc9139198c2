//! `EventMetadata`: who and what caused an event (correlation, causation, actor, handler).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::errors::{CoreError, Kind};
use crate::pyrefs;

/// Tracing metadata carried by every event; immutable, hashable, comparable.
#[pyclass(frozen, module = "stabilize_events", name = "EventMetadata")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventMetadata {
    #[pyo3(get)]
    pub correlation_id: String,
    #[pyo3(get)]
    pub causation_id: Option<String>,
    #[pyo3(get)]
    pub actor: String,
    #[pyo3(get)]
    pub source_handler: Option<String>,
}

fn opt_str(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<String>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => Ok(Some(crate::args::str_arg(o, name)?)),
    }
}

impl EventMetadata {
    /// Read any object with the four attributes (ours, or Stabilize's own dataclass).
    pub fn from_object(obj: &Bound<'_, PyAny>) -> PyResult<EventMetadata> {
        if let Ok(ours) = obj.cast::<EventMetadata>() {
            return Ok(ours.get().clone());
        }
        let attr = |n: &str| {
            obj.getattr(n).map_err(|_| {
                CoreError::new(
                    Kind::ArgumentType,
                    format!(
                        "metadata must be an EventMetadata or a dict of its fields, not {} (it has no {n}): \
                         pass metadata=EventMetadata(correlation_id=...) or metadata={{\"correlation_id\": ...}}",
                        obj.get_type().name().map(|t| t.to_string()).unwrap_or_default()
                    ),
                )
            })
        };
        Ok(EventMetadata {
            correlation_id: crate::args::str_arg(&attr("correlation_id")?, "metadata.correlation_id")?,
            causation_id: opt_str(Some(&attr("causation_id")?), "metadata.causation_id")?,
            actor: crate::args::str_arg(&attr("actor")?, "metadata.actor")?,
            source_handler: opt_str(Some(&attr("source_handler")?), "metadata.source_handler")?,
        })
    }

    /// Metadata from a dict given as `Event(metadata=...)`: only EventMetadata's fields, a
    /// missing one defaulted as `from_dict` does.
    pub fn from_fields(data: &Bound<'_, PyDict>) -> PyResult<EventMetadata> {
        const FIELDS: [&str; 4] = ["correlation_id", "causation_id", "actor", "source_handler"];
        for key in data.keys() {
            let known = key.extract::<&str>().ok().filter(|k| FIELDS.contains(k));
            if known.is_none() {
                return Err(CoreError::new(
                    Kind::InvalidArgument,
                    format!(
                        "metadata has an unknown key {}: an event's metadata dict holds only {}",
                        key.repr()?,
                        FIELDS.join(", ")
                    ),
                )
                .into());
            }
        }
        let actor = opt_str(data.get_item("actor")?.as_ref(), "metadata[\"actor\"]")?;
        Ok(EventMetadata {
            correlation_id: opt_str(
                data.get_item("correlation_id")?.as_ref(),
                "metadata[\"correlation_id\"]",
            )?
            .unwrap_or_default(),
            causation_id: opt_str(data.get_item("causation_id")?.as_ref(), "metadata[\"causation_id\"]")?,
            actor: actor.unwrap_or_else(|| "system".to_owned()),
            source_handler: opt_str(
                data.get_item("source_handler")?.as_ref(),
                "metadata[\"source_handler\"]",
            )?,
        })
    }

    fn repr_str(py: Python<'_>, s: &Option<String>) -> PyResult<String> {
        match s {
            None => Ok("None".to_owned()),
            Some(s) => Ok(PyString::new(py, s).repr()?.to_string()),
        }
    }
}

#[pymethods]
impl EventMetadata {
    #[new]
    #[pyo3(signature = (correlation_id, causation_id=None, actor=None, source_handler=None))]
    fn new(
        correlation_id: &Bound<'_, PyAny>,
        causation_id: Option<&Bound<'_, PyAny>>,
        actor: Option<&Bound<'_, PyAny>>,
        source_handler: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(EventMetadata {
            correlation_id: crate::args::str_arg(correlation_id, "correlation_id")?,
            causation_id: opt_str(causation_id, "causation_id")?,
            actor: opt_str(actor, "actor")?.unwrap_or_else(|| "system".to_owned()),
            source_handler: opt_str(source_handler, "source_handler")?,
        })
    }

    /// The metadata as a plain dict (the storage layout of the reference).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("correlation_id", &self.correlation_id)?;
        d.set_item("causation_id", &self.causation_id)?;
        d.set_item("actor", &self.actor)?;
        d.set_item("source_handler", &self.source_handler)?;
        Ok(d)
    }

    /// Metadata from a dict as `to_dict` makes; missing keys take the defaults.
    #[classmethod]
    fn from_dict(_cls: &Bound<'_, pyo3::types::PyType>, data: &Bound<'_, PyDict>) -> PyResult<Self> {
        let correlation = data.get_item("correlation_id")?;
        Ok(EventMetadata {
            correlation_id: match correlation {
                Some(c) if !c.is_none() => crate::args::str_arg(&c, "correlation_id")?,
                _ => String::new(),
            },
            causation_id: opt_str(data.get_item("causation_id")?.as_ref(), "causation_id")?,
            actor: opt_str(data.get_item("actor")?.as_ref(), "actor")?.unwrap_or_else(|| "system".to_owned()),
            source_handler: opt_str(data.get_item("source_handler")?.as_ref(), "source_handler")?,
        })
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        match other.cast::<EventMetadata>() {
            Ok(o) => Ok(pyo3::types::PyBool::new(py, self == o.get()).to_owned().into_any().unbind()),
            Err(_) => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish() >> 1
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "EventMetadata(correlation_id={}, causation_id={}, actor={}, source_handler={})",
            Self::repr_str(py, &Some(self.correlation_id.clone()))?,
            Self::repr_str(py, &self.causation_id)?,
            Self::repr_str(py, &Some(self.actor.clone()))?,
            Self::repr_str(py, &self.source_handler)?,
        ))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let m = slf.get();
        let args =
            (m.correlation_id.clone(), m.causation_id.clone(), m.actor.clone(), m.source_handler.clone());
        PyTuple::new(py, [slf.get_type().into_any(), args.into_pyobject(py)?.into_any()])
    }

    fn __setattr__(&self, name: &str, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(pyrefs::frozen("assign to", name))
    }

    fn __delattr__(&self, name: &str) -> PyResult<()> {
        Err(pyrefs::frozen("delete", name))
    }
}
