//! Reading a large query as two halves, on two threads.
//!
//! Reading rows out of SQLite is most of what a large read costs, and needs
//! neither the GIL nor the other half's rows. So once a query proves large
//! (its first `FIRST_PART` rows fill the first read, and at their density
//! at least `SPLIT_MIN` more are to come), the sequences left between the
//! last row read and the last row matching are cut in two: a second thread
//! reads the lower half while this one reads the upper half. Smaller rests
//! are read here in one go: starting a thread costs 30-200 us on this VM,
//! and its two cores together run two threads only 1.0-2x as fast as one.
//!
//! Each half is read at its own snapshot, later than the first read's. That
//! is the same result as one read at the upper half's snapshot: rows are never
//! changed and every commit adds sequences above all those stored, so every
//! row up to the last matching sequence found is already there, unchanged,
//! for the lower half to find; the upper half reads on to whatever is newest.

use std::sync::Arc;

use super::filter::OrderBy;
use super::{Backend, Filter};
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::EventRecord;

/// Rows read before deciding a query is large; a smaller result is read as one.
const FIRST_PART: i64 = 2048;
/// Rows expected after the first part for the rest to be read in two halves.
const SPLIT_MIN: f64 = 8192.0;

/// The records matching `filter`, as `Backend::query` returns them, read in
/// two halves at once where the backend gains from it and the result is large.
pub fn query(backend: &dyn Backend, filter: &Filter) -> CoreResult<Vec<Arc<EventRecord>>> {
    let splits = backend.parallel_reads_pay()
        && filter.order_by == OrderBy::Sequence
        && filter.ascending
        && filter.limit.is_none_or(|n| n > FIRST_PART);
    if !splits {
        return backend.query(filter);
    }
    let mut records = backend.query(&Filter { limit: Some(FIRST_PART), ..filter.clone() })?;
    let read_last = match records.last() {
        Some(last) if records.len() as i64 == FIRST_PART => last.sequence,
        _ => return Ok(records),
    };
    // The rest: the same filter after the last row read, without the offset already skipped.
    let rest = Filter {
        from_sequence: Some(read_last),
        limit: filter.limit.map(|n| n - FIRST_PART),
        offset: 0,
        ..filter.clone()
    };
    let newest = Filter { ascending: false, limit: Some(1), ..rest.clone() };
    let last = match backend.query(&newest) {
        Ok(found) => match found.first() {
            Some(r) => r.sequence,
            None => return Ok(records),
        },
        // The newest row cannot be read (corrupt, say): read on in order, so that the
        // error names the first bad row, as one read would.
        Err(_) => {
            records.extend(backend.query(&rest)?);
            return Ok(records);
        }
    };
    // Sequences are unique, so the first part's span bounds how densely the rest can match.
    let density = FIRST_PART as f64 / (read_last - records[0].sequence + 1) as f64;
    let expected = ((last - read_last) as f64 * density).min(rest.limit.map_or(f64::MAX, |n| n as f64));
    if expected < SPLIT_MIN {
        records.extend(backend.query(&rest)?);
        return Ok(records);
    }
    let middle = read_last + (last - read_last) / 2;
    let lower =
        Filter { to_sequence: Some(rest.to_sequence.map_or(middle, |t| t.min(middle))), ..rest.clone() };
    let upper = Filter { from_sequence: Some(middle), ..rest };
    let (low, high) = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("stabilize-read".into())
            .spawn_scoped(scope, || backend.query(&lower));
        let high = backend.query(&upper);
        let low = match spawned {
            Ok(thread) => thread.join().unwrap_or_else(|_| {
                Err(CoreError::new(Kind::Store, "the thread reading the lower half of a query panicked"))
            }),
            // No thread to be had (a process limit, say): the lower half is read here too.
            Err(_) => backend.query(&lower),
        };
        (low, high)
    });
    records.extend(low?);
    records.extend(high?);
    if let Some(limit) = filter.limit {
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(records)
}
