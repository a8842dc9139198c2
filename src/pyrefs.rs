//! Python objects the core needs again and again (enum members, classes),
//! looked up once per interpreter and cached.

use rustc_hash::FxHashMap;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

/// Members of `stabilize_events.types.EventType`/`EntityType` keyed by value.
pub struct EnumTable {
    /// Fx-hashed: looked up for every event read, and the keys are our own enum values.
    pub by_value: FxHashMap<String, Py<PyAny>>,
    pub unknown: Option<Py<PyAny>>,
}

fn load_enum(py: Python<'_>, name: &str, unknown: Option<&str>) -> PyResult<EnumTable> {
    let cls = py.import("stabilize_events.types")?.getattr(name)?;
    let members = cls.getattr("__members__")?;
    let members = members.cast::<pyo3::types::PyMapping>()?;
    let mut by_value = FxHashMap::default();
    for item in members.values()?.iter() {
        let value: String = item.getattr("value")?.extract()?;
        by_value.insert(value, item.unbind());
    }
    let unknown = match unknown {
        Some(u) => by_value.get(u).map(|m| m.clone_ref(py)),
        None => None,
    };
    Ok(EnumTable { by_value, unknown })
}

static EVENT_TYPES: PyOnceLock<EnumTable> = PyOnceLock::new();
static ENTITY_TYPES: PyOnceLock<EnumTable> = PyOnceLock::new();

/// The `EventType` members, with `UNKNOWN` for values this build does not know.
pub fn event_types(py: Python<'_>) -> PyResult<&'static EnumTable> {
    EVENT_TYPES.get_or_try_init(py, || load_enum(py, "EventType", Some("unknown.event")))
}

/// The `EntityType` members.
pub fn entity_types(py: Python<'_>) -> PyResult<&'static EnumTable> {
    ENTITY_TYPES.get_or_try_init(py, || load_enum(py, "EntityType", None))
}

macro_rules! cached_class {
    ($fn_name:ident, $module:literal, $attr:literal) => {
        #[doc = concat!("`", $module, ".", $attr, "`, imported once.")]
        pub fn $fn_name(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
            static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            CELL.import(py, $module, $attr)
        }
    };
}

cached_class!(enum_class, "enum", "Enum");
cached_class!(uuid_class, "uuid", "UUID");
cached_class!(decimal_class, "decimal", "Decimal");
cached_class!(datetime_class, "datetime", "datetime");
cached_class!(date_class, "datetime", "date");
cached_class!(timezone_class, "datetime", "timezone");
cached_class!(timedelta_class, "datetime", "timedelta");
cached_class!(frozen_instance_error, "dataclasses", "FrozenInstanceError");

/// `datetime.timezone.utc`.
pub fn utc(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CELL.get_or_try_init(py, || Ok::<_, PyErr>(timezone_class(py)?.getattr("utc")?.unbind()))
        .map(|o| o.bind(py))
}

/// Keyword arguments dict `{k: v}` helper for the few Python calls that need one.
pub fn kwargs1<'py>(
    py: Python<'py>,
    key: &str,
    value: impl IntoPyObject<'py>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(key, value)?;
    Ok(d)
}

/// `dataclasses.FrozenInstanceError`, as a frozen dataclass raises it.
pub fn frozen(verb: &str, field: &str) -> PyErr {
    Python::attach(|py| match frozen_instance_error(py) {
        Ok(cls) => PyErr::from_type(cls.clone(), format!("cannot {verb} field '{field}'")),
        Err(e) => e,
    })
}
