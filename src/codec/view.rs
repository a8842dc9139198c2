//! Reading msgpack without building Python objects: skip over values, find a
//! key in a map, walk map entries. The replay fold works on these borrowed
//! slices and only hands the few values it keeps to Python at the end.

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewError(pub String);

type Result<T> = std::result::Result<T, ViewError>;

fn truncated<T>(at: usize) -> Result<T> {
    Err(ViewError(format!("truncated msgpack at byte {at}")))
}

fn read_be(buf: &[u8], at: usize, n: usize) -> Result<u64> {
    match buf.get(at..at + n) {
        Some(b) => Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)),
        None => truncated(at),
    }
}

/// The shape of the value starting at `at`: its header length, the byte length
/// of its inline body, and the number of nested values that follow.
#[inline(always)]
pub(super) fn header(buf: &[u8], at: usize) -> Result<(usize, usize, usize)> {
    // Small ints and short strings, most of what payloads hold, without the table.
    match buf.get(at) {
        Some(&(0x00..=0x7f | 0xe0..=0xff)) => Ok((1, 0, 0)),
        Some(&m @ 0xa0..=0xbf) => Ok((1, (m & 0x1f) as usize, 0)),
        _ => header_table(buf, at),
    }
}

fn header_table(buf: &[u8], at: usize) -> Result<(usize, usize, usize)> {
    let Some(&m) = buf.get(at) else {
        return truncated(at);
    };
    let len = |n: usize| read_be(buf, at + 1, n).map(|v| v as usize);
    Ok(match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
        0x80..=0x8f => (1, 0, 2 * (m & 0x0f) as usize),
        0x90..=0x9f => (1, 0, (m & 0x0f) as usize),
        0xa0..=0xbf => (1, (m & 0x1f) as usize, 0),
        0xc4 | 0xd9 => (2, len(1)?, 0),
        0xc5 | 0xda => (3, len(2)?, 0),
        0xc6 | 0xdb => (5, len(4)?, 0),
        0xc7 => (3, len(1)?, 0),
        0xc8 => (4, len(2)?, 0),
        0xc9 => (6, len(4)?, 0),
        0xca => (1, 4, 0),
        0xcb => (1, 8, 0),
        0xcc | 0xd0 => (1, 1, 0),
        0xcd | 0xd1 => (1, 2, 0),
        0xce | 0xd2 => (1, 4, 0),
        0xcf | 0xd3 => (1, 8, 0),
        0xd4 => (2, 1, 0),
        0xd5 => (2, 2, 0),
        0xd6 => (2, 4, 0),
        0xd7 => (2, 8, 0),
        0xd8 => (2, 16, 0),
        0xdc => (3, 0, len(2)?),
        0xdd => (5, 0, len(4)?),
        0xde => (3, 0, 2 * len(2)?),
        0xdf => (5, 0, 2 * len(4)?),
        0xc1 => return Err(ViewError(format!("invalid msgpack marker 0xc1 at byte {at}"))),
    })
}

/// The index just past the value starting at `at`.
#[inline(always)]
pub fn skip(buf: &[u8], at: usize) -> Result<usize> {
    // A value with nothing nested (a scalar, the usual case), without the counting loop.
    let (head, body, nested) = header(buf, at)?;
    if nested == 0 {
        let end = at + head + body;
        return if end <= buf.len() { Ok(end) } else { truncated(at) };
    }
    skip_nested(buf, at)
}

fn skip_nested(buf: &[u8], at: usize) -> Result<usize> {
    let mut pos = at;
    // Values still to skip; an explicit counter instead of recursion, so
    // hostile nesting cannot overflow the stack.
    let mut pending: usize = 1;
    while pending > 0 {
        let (head, body, nested) = header(buf, pos)?;
        pos = pos
            .checked_add(head + body)
            .filter(|&p| p <= buf.len())
            .ok_or_else(|| ViewError(format!("truncated msgpack at byte {pos}")))?;
        pending = pending - 1 + nested;
        if nested > buf.len() {
            return Err(ViewError(format!(
                "container of {nested} items at byte {at} is longer than the payload"
            )));
        }
    }
    Ok(pos)
}

/// The string at `at`, if the value there is one.
#[inline(always)]
fn str_at(buf: &[u8], at: usize) -> Result<Option<(&str, usize)>> {
    if let Some(&m @ 0xa0..=0xbf) = buf.get(at) {
        // A short string, as payload keys are: one bounds check, no table.
        let end = at + 1 + (m & 0x1f) as usize;
        let Some(text) = buf.get(at + 1..end) else { return truncated(at) };
        let text = crate::codec::utf8(text).map_err(|e| ViewError(format!("invalid UTF-8 key: {e}")))?;
        return Ok(Some((text, end)));
    }
    let (head, body, _) = header(buf, at)?;
    let m = buf[at];
    let is_str = matches!(m, 0xa0..=0xbf | 0xd9 | 0xda | 0xdb);
    let end = at + head + body;
    if end > buf.len() {
        return truncated(at);
    }
    if !is_str {
        return Ok(None);
    }
    let text =
        crate::codec::utf8(&buf[at + head..end]).map_err(|e| ViewError(format!("invalid UTF-8 key: {e}")))?;
    Ok(Some((text, end)))
}

/// A map's entries: (string key, raw value).
pub type Entries<'a> = Vec<(&'a str, &'a [u8])>;

/// Walk the map `raw` holds, passing each (string key, raw value) to `visit`
/// (entries with other keys, such as ints, are passed over); None if `raw` is
/// not a map, else whether every key was a string. `raw` must hold exactly
/// that one map.
fn walk_map<'a>(raw: &'a [u8], mut visit: impl FnMut(&'a str, &'a [u8])) -> Result<Option<bool>> {
    let Some(&m) = raw.first() else { return truncated(0) };
    let (head, n) = match m {
        0x80..=0x8f => (1, (m & 0x0f) as usize),
        0xde => (3, read_be(raw, 1, 2)? as usize),
        0xdf => (5, read_be(raw, 1, 4)? as usize),
        _ => return Ok(None),
    };
    let mut pos = head;
    let mut all_str = true;
    for _ in 0..n {
        let key = str_at(raw, pos)?;
        let value_at = match key {
            Some((_, end)) => end,
            None => skip(raw, pos)?,
        };
        let value_end = skip(raw, value_at)?;
        match key {
            Some((k, _)) => visit(k, &raw[value_at..value_end]),
            None => all_str = false,
        }
        pos = value_end;
    }
    if pos != raw.len() {
        return Err(ViewError(format!("{} trailing bytes after the map", raw.len() - pos)));
    }
    Ok(Some(all_str))
}

/// The entries of the map `raw` holds, as (key, raw value), and whether every
/// key was a string (entries with other keys are not in the list); None if
/// `raw` is not a map.
pub fn map_entries(raw: &[u8]) -> Result<Option<(Entries<'_>, bool)>> {
    let mut out = Vec::new();
    Ok(walk_map(raw, |k, v| out.push((k, v)))?.map(|all_str| (out, all_str)))
}

/// The raw values under the wanted `keys` (None: nothing wanted in that slot)
/// of the map `raw` holds, found in one pass; a repeated key gives its last
/// value. An error if `raw` is not exactly one map: an event payload always is.
pub fn lookup<'a, const N: usize>(raw: &'a [u8], keys: [Option<&str>; N]) -> Result<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    let is_map = walk_map(raw, |k, v| {
        for (want, slot) in keys.iter().zip(found.iter_mut()) {
            if *want == Some(k) {
                *slot = Some(v);
            }
        }
    })?;
    if is_map.is_none() {
        return Err(ViewError(format!("payload is not a map (marker 0x{:02x})", raw[0])));
    }
    Ok(found)
}

/// The integer `raw` holds, if it is one within 64 bits.
pub fn as_i64(raw: &[u8]) -> Option<i64> {
    let &m = raw.first()?;
    let be = |n: usize| read_be(raw, 1, n).ok();
    match m {
        0x00..=0x7f => Some(m as i64),
        0xe0..=0xff => Some((m as i8) as i64),
        0xcc => be(1).map(|v| v as i64),
        0xcd => be(2).map(|v| v as i64),
        0xce => be(4).map(|v| v as i64),
        0xcf => be(8).and_then(|v| i64::try_from(v).ok()),
        0xd0 => be(1).map(|v| (v as u8 as i8) as i64),
        0xd1 => be(2).map(|v| (v as u16 as i16) as i64),
        0xd2 => be(4).map(|v| (v as u32 as i32) as i64),
        0xd3 => be(8).map(|v| v as i64),
        _ => None,
    }
}

/// msgpack for a string.
pub fn encode_str(text: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(text.len() + 5);
    let _ = rmp::encode::write_str(&mut out, text);
    out.into_boxed_slice()
}

/// msgpack for an integer.
pub fn encode_int(value: i64) -> Box<[u8]> {
    let mut out = Vec::with_capacity(9);
    let _ = rmp::encode::write_sint(&mut out, value);
    out.into_boxed_slice()
}

/// msgpack nil.
pub const NIL: &[u8] = &[0xc0];

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
        for (k, v) in entries {
            rmp::encode::write_str(&mut out, k).unwrap();
            out.extend_from_slice(v);
        }
        out
    }

    #[test]
    fn finds_keys_and_skips_nested_values() {
        let inner = map(&[("x", &encode_int(7)), ("msg", &encode_str("hi"))]);
        let outer =
            map(&[("outputs", &inner), ("status", &encode_str("SUCCEEDED")), ("n", &encode_int(-300))]);
        let [status, outputs, missing, n, unwanted] =
            lookup(&outer, [Some("status"), Some("outputs"), Some("missing"), Some("n"), None]).unwrap();
        assert_eq!(status, Some(&encode_str("SUCCEEDED")[..]));
        assert_eq!(outputs, Some(&inner[..]));
        assert_eq!((missing, unwanted), (None, None));
        assert_eq!(as_i64(n.unwrap()), Some(-300));
        assert_eq!(skip(&outer, 0).unwrap(), outer.len());
        assert_eq!(map_entries(&encode_int(1)).unwrap(), None);
        // An int key is passed over, and said to have been.
        let mixed = [0x82, 0x01, 0xa1, b'a', 0xa1, b'k', 0x02];
        assert_eq!(map_entries(&mixed).unwrap(), Some((vec![("k", &[0x02u8][..])], false)));
        assert_eq!(map_entries(&outer).unwrap().map(|(e, all_str)| (e.len(), all_str)), Some((3, true)));
        // A payload that is not a map, or has bytes after it, is an error, not "no keys".
        assert!(lookup(&encode_int(1), [Some("status")]).is_err());
        assert!(lookup(&[0xc1], [Some("status")]).is_err());
        let mut trailing = outer.clone();
        trailing.push(0xc0);
        assert!(lookup(&trailing, [Some("status")]).is_err());
    }

    #[test]
    fn rejects_truncated_and_hostile_input() {
        let outer = map(&[("status", &encode_str("SUCCEEDED"))]);
        assert!(lookup(&outer[..outer.len() - 2], [Some("status")]).is_err());
        // An array claiming 2^32-1 items in 5 bytes.
        assert!(skip(&[0xdd, 0xff, 0xff, 0xff, 0xff], 0).is_err());
        // Deep nesting is walked without recursion.
        let deep: Vec<u8> = std::iter::repeat_n(0x91u8, 100_000).chain([0xc0]).collect();
        assert_eq!(skip(&deep, 0).unwrap(), deep.len());
        assert!(skip(&[0xc1], 0).is_err());
    }
}
