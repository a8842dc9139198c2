//! `Filter`: a validated `EventQuery`, in Rust terms.

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::args::{enum_value, int_arg, str_arg};
use crate::errors::{raise, CoreError, Kind};
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
                // A lone type (a str or an EventType member, both str) is taken as a list of
                // one, not iterated character by character.
                let items: Vec<Bound<'_, PyAny>> = if list.is_instance_of::<PyString>()
                    || list.is_instance(crate::pyrefs::enum_class(py)?)?
                {
                    vec![list]
                } else {
                    list.try_iter()
                        .map_err(|_| {
                            CoreError::new(
                                Kind::ArgumentType,
                                format!(
                                    "EventQuery.event_types must be a list of event types (or one type), not {}",
                                    list.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                                ),
                            )
                        })?
                        .collect::<PyResult<_>>()?
                };
                let known = &crate::pyrefs::event_types(py)?.by_value;
                let mut values = Vec::new();
                for item in &items {
                    let value = enum_value(item, "EventQuery.event_types[]")?;
                    if !known.contains_key(value.as_str()) {
                        return raise(Kind::InvalidArgument, unknown_type_message(&value, known.keys()));
                    }
                    values.push(value);
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
        let entity_type = match attr("entity_type")? {
            None => None,
            Some(v) => {
                let value = enum_value(&v, "EventQuery.entity_type")?;
                let known = &crate::pyrefs::entity_types(py)?.by_value;
                if !known.contains_key(value.as_str()) {
                    let mut names: Vec<&String> = known.keys().collect();
                    names.sort();
                    return raise(
                        Kind::InvalidArgument,
                        format!(
                            "EventQuery.entity_type: {value:?} is not an entity type, so the query could only \
                             match nothing; use an EntityType member or one of {names:?}"
                        ),
                    );
                }
                Some(value)
            }
        };
        Ok(Filter {
            entity_type,
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

/// Why `EventQuery.event_types` holding `name` is refused, with the closest known types.
fn unknown_type_message<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    // `STAGE_STARTED` (a member name) reads as `stage.started`.
    let normal = name.to_ascii_lowercase().replacen('_', ".", 1);
    let mut close: Vec<(usize, &String)> =
        known.map(|k| (edits(&normal, k), k)).filter(|(d, k)| *d <= 3.max(k.len() / 4)).collect();
    close.sort();
    let hint = if close.is_empty() {
        "use EventType members (EventType.STAGE_STARTED) or their values ('stage.started')".to_owned()
    } else {
        let names: Vec<String> = close.iter().take(3).map(|(_, k)| format!("{k:?}")).collect();
        format!("did you mean {}?", names.join(" or "))
    };
    format!(
        "EventQuery.event_types: {name:?} is not an event type, so the query could only match nothing; {hint}"
    )
}

/// Levenshtein distance (short strings only).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
