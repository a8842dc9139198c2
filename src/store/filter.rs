//! `Filter`: a validated `EventQuery`, in Rust terms.

use pyo3::prelude::*;

use crate::args::{enum_value, int_arg, str_arg};
use crate::errors::{raise, Kind};
use crate::time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderBy {
    #[default]
    Sequence,
    Timestamp,
}

/// Which records to read. `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub workflow_id: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Exclusive lower bound.
    pub from_sequence: Option<i64>,
    /// Inclusive upper bound.
    pub to_sequence: Option<i64>,
    /// Inclusive bounds, UTC microseconds.
    pub from_timestamp: Option<i64>,
    pub to_timestamp: Option<i64>,
    /// Exclusive lower bound on the entity version.
    pub from_version: Option<i64>,
    pub order_by: OrderBy,
    pub ascending: bool,
    pub limit: Option<i64>,
    pub offset: i64,
}

impl Filter {
    /// Everything, by ascending sequence.
    pub fn all() -> Filter {
        Filter { ascending: true, ..Default::default() }
    }

    /// Read an `EventQuery` (or any object with its attributes), checking every field.
    pub fn from_query(query: &Bound<'_, PyAny>, paged: bool) -> PyResult<Filter> {
        let py = query.py();
        let attr = |name: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
            let v = query.getattr(name).or_else(|_| {
                raise(
                    Kind::ArgumentType,
                    format!("query must be an EventQuery (it has no attribute {name:?})"),
                )
            })?;
            Ok(if v.is_none() { None } else { Some(v) })
        };
        let opt_int = |name: &str| -> PyResult<Option<i64>> {
            attr(name)?.map(|v| int_arg(&v, &format!("EventQuery.{name}"))).transpose()
        };
        let opt_ts = |name: &str| -> PyResult<Option<i64>> {
            match attr(name)? {
                None => Ok(None),
                Some(v) if v.is_instance(crate::pyrefs::datetime_class(py)?)? => {
                    Ok(Some(time::utc_micros(&v)?))
                }
                Some(_) => raise(Kind::ArgumentType, format!("EventQuery.{name} must be a datetime")),
            }
        };
        let event_types = match attr("event_types")? {
            None => None,
            Some(list) => {
                let mut values = Vec::new();
                for item in list.try_iter()? {
                    values.push(enum_value(&item?, "EventQuery.event_types[]")?);
                }
                // An empty list filters nothing, as in the reference.
                if values.is_empty() {
                    None
                } else {
                    Some(values)
                }
            }
        };
        let order_by = match attr("order_by")? {
            None => OrderBy::Sequence,
            Some(v) => match str_arg(&v, "EventQuery.order_by")?.as_str() {
                "sequence" => OrderBy::Sequence,
                "timestamp" => OrderBy::Timestamp,
                other => {
                    return raise(
                        Kind::InvalidArgument,
                        format!("EventQuery.order_by must be 'sequence' or 'timestamp', not {other:?}"),
                    )
                }
            },
        };
        let (limit, offset) = if paged {
            let limit = opt_int("limit")?;
            let offset = opt_int("offset")?.unwrap_or(0);
            if limit.is_some_and(|l| l < 0) {
                return raise(
                    Kind::InvalidArgument,
                    format!("EventQuery.limit must be >= 0, not {}", limit.unwrap_or(0)),
                );
            }
            if offset < 0 {
                return raise(Kind::InvalidArgument, format!("EventQuery.offset must be >= 0, not {offset}"));
            }
            (limit, offset)
        } else {
            (None, 0)
        };
        Ok(Filter {
            entity_type: attr("entity_type")?
                .map(|v| enum_value(&v, "EventQuery.entity_type"))
                .transpose()?,
            entity_id: attr("entity_id")?.map(|v| str_arg(&v, "EventQuery.entity_id")).transpose()?,
            workflow_id: attr("workflow_id")?.map(|v| str_arg(&v, "EventQuery.workflow_id")).transpose()?,
            event_types,
            from_sequence: opt_int("from_sequence")?,
            to_sequence: opt_int("to_sequence")?,
            from_timestamp: opt_ts("from_timestamp")?,
            to_timestamp: opt_ts("to_timestamp")?,
            from_version: None,
            order_by,
            ascending: match attr("ascending")? {
                None => true,
                Some(v) => v.is_truthy()?,
            },
            limit,
            offset,
        })
    }

    /// Whether `rec` passes every filter (used by the in-memory backend).
    pub fn matches(&self, rec: &crate::event::EventRecord) -> bool {
        fn eq(f: &Option<String>, v: &str) -> bool {
            f.as_deref().is_none_or(|f| f == v)
        }
        eq(&self.entity_type, &rec.entity_type)
            && eq(&self.entity_id, &rec.entity_id)
            && eq(&self.workflow_id, &rec.workflow_id)
            && self.event_types.as_ref().is_none_or(|ts| ts.iter().any(|t| t == rec.event_type))
            && self.from_sequence.is_none_or(|s| rec.sequence > s)
            && self.to_sequence.is_none_or(|s| rec.sequence <= s)
            && self.from_timestamp.is_none_or(|t| rec.timestamp_us >= t)
            && self.to_timestamp.is_none_or(|t| rec.timestamp_us <= t)
            && self.from_version.is_none_or(|v| rec.version > v)
    }
}
