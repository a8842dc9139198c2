//! Event queries in SQL: the statement for a `Filter`, and reading a row back
//! as an `EventView` (reporting a corrupt row by its sequence).

use rusqlite::types::Value;

use super::index_key::index_key;
use super::scan::Row;
use super::schema::COLUMNS;
use crate::errors::{CoreError, CoreResult, Kind};
use crate::fold::EventView;
use crate::store::filter::OrderBy;
use crate::store::Filter;

fn corrupt(sequence: i64, what: &str) -> CoreError {
    CoreError::new(Kind::CorruptEvent, format!("stored event at sequence {sequence} is corrupt: {what}"))
}

/// A borrowed view of a row selected with `COLUMNS` (`full`) or `FOLD_COLUMNS`.
pub fn row_to_view<'r>(row: &Row<'r>, full: bool) -> CoreResult<EventView<'r>> {
    let Some(sequence) = row.int(0) else {
        return Err(corrupt(0, "sequence is not an integer"));
    };
    let text = |i: i32, name: &str| -> CoreResult<&'r str> {
        match row.text(i) {
            Some(t) => crate::codec::utf8(t).map_err(|_| corrupt(sequence, &format!("{name} is not UTF-8"))),
            None => Err(corrupt(sequence, &format!("{name} is not text"))),
        }
    };
    let opt_text = |i: i32, name: &str| -> CoreResult<Option<&'r str>> {
        if row.is_null(i) {
            Ok(None)
        } else {
            text(i, name).map(Some)
        }
    };
    let int = |i: i32, name: &str| -> CoreResult<i64> {
        row.int(i).ok_or_else(|| corrupt(sequence, &format!("{name} is not an integer")))
    };
    let lean = EventView {
        sequence,
        event_id: text(1, "event_id")?,
        event_type: text(2, "event_type")?,
        timestamp_us: match int(3, "timestamp_us")? {
            // No datetime holds it: reading or replaying the event could only fail later.
            t if !crate::time::DATETIME_MICROS.contains(&t) => {
                return Err(corrupt(sequence, &format!("timestamp_us {t} is outside datetime's range")))
            }
            t => t,
        },
        entity_type: text(4, "entity_type")?,
        entity_id: text(5, "entity_id")?,
        data: row.blob(6).ok_or_else(|| corrupt(sequence, "data is not a blob"))?,
        schema_version: int(7, "schema_version")?,
        ..EventView::default()
    };
    if !full {
        return Ok(lean);
    }
    Ok(EventView {
        workflow_id: text(8, "workflow_id")?,
        version: int(9, "version")?,
        correlation_id: text(10, "correlation_id")?,
        causation_id: opt_text(11, "causation_id")?,
        actor: text(12, "actor")?,
        source_handler: opt_text(13, "source_handler")?,
        ..lean
    })
}

/// The query of `Backend::query`: every column, filtered, ordered and paged as `filter` says.
pub fn query_sql(filter: &Filter) -> (String, Vec<Value>) {
    let (mut sql, mut params) = where_clause(filter);
    let dir = if filter.ascending { "ASC" } else { "DESC" };
    match filter.order_by {
        OrderBy::Sequence => sql.push_str(&format!(" ORDER BY sequence {dir}")),
        OrderBy::Timestamp => sql.push_str(&format!(" ORDER BY timestamp_us {dir}, sequence {dir}")),
    }
    if filter.limit.is_some() || filter.offset > 0 {
        sql.push_str(" LIMIT ? OFFSET ?");
        params.push(Value::Integer(filter.limit.unwrap_or(-1)));
        params.push(Value::Integer(filter.offset));
    }
    (format!("SELECT {COLUMNS} FROM event_log{sql}"), params)
}

/// `WHERE ...` for a filter, with its parameters.
pub fn where_clause(filter: &Filter) -> (String, Vec<Value>) {
    let mut sql = String::from(" WHERE 1=1");
    let mut params: Vec<Value> = Vec::new();
    let eq = |col: &str, v: &Option<String>, sql: &mut String, params: &mut Vec<Value>| {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            params.push(Value::Text(v.clone()));
        }
    };
    // Workflow ids are found through their integer index key, then compared in full.
    let keyed = |id: &str, v: &Option<String>, sql: &mut String, params: &mut Vec<Value>| {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {id}_key = ? AND {id}_id = ?"));
            params.push(Value::Integer(index_key(v)));
            params.push(Value::Text(v.clone()));
        }
    };
    keyed("workflow", &filter.workflow_id, &mut sql, &mut params);
    eq("entity_id", &filter.entity_id, &mut sql, &mut params);
    eq("entity_type", &filter.entity_type, &mut sql, &mut params);
    if let Some(types) = &filter.event_types {
        sql.push_str(&format!(" AND event_type IN ({})", vec!["?"; types.len()].join(",")));
        params.extend(types.iter().map(|t| Value::Text(t.clone())));
    }
    // A row whose column is not an integer (corrupt) still matches, so that
    // reading it reports the corruption instead of silently leaving it out.
    let bounds: [(&str, &str, Option<i64>); 5] = [
        ("sequence", ">", filter.from_sequence),
        ("sequence", "<=", filter.to_sequence),
        ("timestamp_us", ">=", filter.from_timestamp),
        ("timestamp_us", "<=", filter.to_timestamp),
        ("version", ">", filter.from_version),
    ];
    for (column, cmp, value) in bounds {
        if let Some(v) = value {
            if column == "sequence" {
                sql.push_str(&format!(" AND {column} {cmp} ?"));
            } else {
                sql.push_str(&format!(" AND ({column} {cmp} ? OR typeof({column}) <> 'integer')"));
            }
            params.push(Value::Integer(v));
        }
    }
    (sql, params)
}
