//! Reading a large query on two threads: as two halves, or streamed.
//!
//! Reading rows out of SQLite is most of what a large read costs, and needs
//! neither the GIL nor the other rows. So once a query proves large (its
//! first rows fill a first read), the rest is read with a second thread:
//!
//! - `query`, as two halves: at the first part's density, if at least
//!   `SPLIT_MIN` more rows are to come, the sequences left between the last
//!   row read and the last row matching are cut in two, and a second thread
//!   reads the lower half while this one reads the upper half. Smaller rests
//!   are read here in one go: starting a thread costs tens to hundreds of
//!   microseconds, and two threads on shared cores may run no faster than one.
//! - `query_streamed`, in order: a second thread reads the rest and hands its
//!   rows over a chunk at a time, so this thread can work on the rows read
//!   (decode their payloads, say) while the rest are being read.
//!
//! A store opened with `split_reads=False` reads every query on one thread.
//!
//! Each part is read at its own snapshot, later than the first read's. That
//! is the same result as one read at the latest part's snapshot: rows are
//! never changed and every commit adds sequences above all those stored, so
//! every row up to the last matching sequence found is already there,
//! unchanged, for an earlier part to find; the last part reads on to
//! whatever is newest.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::filter::OrderBy;
use super::{Backend, Filter};
use crate::errors::{CoreError, CoreResult, Kind};
use crate::event::EventRecord;

/// Rows read before deciding a query is large; a smaller result is read as one.
pub const FIRST_PART: i64 = 2048;
/// Rows expected after the first part for the rest to be read in two halves.
const SPLIT_MIN: f64 = 8192.0;
/// `FIRST_PART` of a streamed read: its second thread overlaps work that
/// would follow the read anyway, so it pays for smaller results.
pub const STREAM_FIRST_PART: i64 = 512;
/// Rows a streamed read hands over at a time: work on them starts soon after
/// they are read, and handing them over costs next to nothing per row.
const CHUNK: usize = 256;

/// A large query's first read: its first `first_part` rows, and the query for
/// the rest, or None when the query is read in one go (all its rows are in the
/// first), for it cannot be read on two threads (by ascending sequence, so
/// that the parts follow one another) or matches fewer rows.
fn first_part(
    backend: &dyn Backend,
    filter: &Filter,
    first_part: i64,
) -> CoreResult<(Vec<Arc<EventRecord>>, Option<Filter>)> {
    let splits = backend.parallel_reads_pay()
        && filter.order_by == OrderBy::Sequence
        && filter.ascending
        && filter.limit.is_none_or(|n| n > first_part);
    if !splits {
        return Ok((backend.query(filter)?, None));
    }
    let first = backend.query(&Filter { limit: Some(first_part), ..filter.clone() })?;
    let read_last = match first.last() {
        Some(last) if first.len() as i64 == first_part => last.sequence,
        _ => return Ok((first, None)),
    };
    // The same filter after the last row read, without the offset already skipped.
    let rest = Filter {
        from_sequence: Some(read_last),
        limit: filter.limit.map(|n| n - first_part),
        offset: 0,
        ..filter.clone()
    };
    Ok((first, Some(rest)))
}

/// The records matching `filter`, as `Backend::query` returns them, read in
/// two halves at once where the backend gains from it and the result is large.
pub fn query(backend: &dyn Backend, filter: &Filter) -> CoreResult<Vec<Arc<EventRecord>>> {
    let (mut records, rest) = first_part(backend, filter, FIRST_PART)?;
    let Some(rest) = rest else { return Ok(records) };
    let read_last = records[records.len() - 1].sequence;
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

/// What `query_streamed` hands its consumer: the rows read so far, and for a
/// large read, the chunks of the rest as a second thread reads them.
pub struct Streamed<'r> {
    /// The rows read before the rest (all of them when `rest` is None).
    pub first: Vec<Arc<EventRecord>>,
    /// Whether the read is large: its first `STREAM_FIRST_PART` rows filled the first read.
    pub large: bool,
    /// The rest's chunks, in order, until the channel closes. (A Mutex only to make the
    /// receiver shareable with code that lets the GIL go; nothing else takes it.)
    pub rest: Option<&'r Mutex<Receiver<Vec<Arc<EventRecord>>>>>,
}

/// The records matching `filter`, as `Backend::query` returns them, handed to
/// `consume` once, in order: all of them, or for a large read (its first
/// `STREAM_FIRST_PART` rows fill the first read), those rows and the chunks
/// of the rest, read on a second thread while `consume` works on the rows
/// before them. A read error of the rest is returned once `consume` is done.
pub fn query_streamed(
    backend: &dyn Backend,
    filter: &Filter,
    consume: &mut (dyn FnMut(Streamed<'_>) + Send),
) -> CoreResult<()> {
    let (mut first, rest) = first_part(backend, filter, STREAM_FIRST_PART)?;
    let Some(rest) = rest else {
        consume(Streamed { first, large: false, rest: None });
        return Ok(());
    };
    let (sender, chunks) = std::sync::mpsc::channel::<Vec<Arc<EventRecord>>>();
    let chunks = Mutex::new(chunks);
    std::thread::scope(|scope| {
        let read_rest = |sender: Sender<_>| {
            let mut chunk = Vec::with_capacity(CHUNK);
            backend.query_each(&rest, &mut |record| {
                chunk.push(record);
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    sender.send(full).map_err(|_| {
                        CoreError::new(Kind::Store, "the reader of a streamed query went away")
                    })?;
                }
                Ok(())
            })?;
            if !chunk.is_empty() {
                // The receiver outlives this thread: it is dropped after the join below.
                let _ = sender.send(chunk);
            }
            Ok(())
        };
        let spawned = std::thread::Builder::new()
            .name("stabilize-read".into())
            .spawn_scoped(scope, move || read_rest(sender));
        match spawned {
            Ok(thread) => {
                // `consume` reads the chunks until the thread is done and its sender dropped.
                consume(Streamed { first, large: true, rest: Some(&chunks) });
                thread.join().unwrap_or_else(|_| {
                    Err(CoreError::new(Kind::Store, "the thread reading the rest of a query panicked"))
                })
            }
            // No thread to be had (a process limit, say): the rest is read here.
            Err(_) => {
                first.extend(backend.query(&rest)?);
                consume(Streamed { first, large: true, rest: None });
                Ok(())
            }
        }
    })
}
