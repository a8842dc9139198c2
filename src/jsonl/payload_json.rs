//! A stored payload (msgpack) written as JSON, when JSON gives it back exactly:
//! maps with text keys, lists, text, integers (of any size), finite floats,
//! booleans and null. Anything else (bytes, datetimes, dates, UUIDs, decimals,
//! NaN and infinities, keys that are not text) makes it not plain: the caller
//! then writes the msgpack itself (`data_msgpack`).

use rmp::Marker;

use super::number::{bigint_decimal, push_float, push_int};
use super::text::push_str;
use crate::codec::{ext, MAX_DEPTH};

/// Why a payload was not written as JSON.
#[derive(Debug, PartialEq, Eq)]
pub enum NotJson {
    /// A value JSON cannot carry exactly: write the msgpack instead.
    NotPlain,
    /// The bytes are not a payload the codec wrote (the message says where).
    Corrupt(String),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotJson> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            NotJson::Corrupt(format!(
                "the payload ends inside a value (byte {} of {})",
                self.at,
                self.bytes.len()
            ))
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn uint(&mut self, n: usize) -> Result<u64, NotJson> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn text(&mut self, n: usize) -> Result<&'a str, NotJson> {
        let at = self.at;
        let raw = self.take(n)?;
        crate::codec::utf8(raw)
            .map_err(|_| NotJson::Corrupt(format!("text at byte {at} of the payload is not UTF-8")))
    }
}

/// Appends the JSON of the msgpack payload `bytes`, or says why it cannot; on
/// an error `out` may hold part of it (the caller truncates).
pub fn push_payload(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), NotJson> {
    let mut r = Reader { bytes, at: 0 };
    value(&mut r, out, 0, false)?;
    if r.at != bytes.len() {
        return Err(NotJson::Corrupt(format!("{} bytes follow the payload", bytes.len() - r.at)));
    }
    Ok(())
}

fn value(r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize, key: bool) -> Result<(), NotJson> {
    if depth > MAX_DEPTH {
        return Err(NotJson::Corrupt(format!("nesting deeper than {MAX_DEPTH} levels")));
    }
    let marker = Marker::from_u8(r.take(1)?[0]);
    let text_len = match marker {
        Marker::FixStr(n) => Some(n as usize),
        Marker::Str8 => Some(r.uint(1)? as usize),
        Marker::Str16 => Some(r.uint(2)? as usize),
        Marker::Str32 => Some(r.uint(4)? as usize),
        _ => None,
    };
    if let Some(n) = text_len {
        push_str(out, r.text(n)?);
        return Ok(());
    }
    if key {
        return Err(NotJson::NotPlain);
    }
    let int = |v: i128, out: &mut Vec<u8>| push_int(out, v);
    match marker {
        Marker::Null => out.extend_from_slice(b"null"),
        Marker::True => out.extend_from_slice(b"true"),
        Marker::False => out.extend_from_slice(b"false"),
        Marker::FixPos(v) => int(i128::from(v), out),
        Marker::FixNeg(v) => int(i128::from(v), out),
        Marker::U8 => int(i128::from(r.uint(1)?), out),
        Marker::U16 => int(i128::from(r.uint(2)?), out),
        Marker::U32 => int(i128::from(r.uint(4)?), out),
        Marker::U64 => int(i128::from(r.uint(8)?), out),
        Marker::I8 => int(i128::from(r.uint(1)? as u8 as i8), out),
        Marker::I16 => int(i128::from(r.uint(2)? as u16 as i16), out),
        Marker::I32 => int(i128::from(r.uint(4)? as u32 as i32), out),
        Marker::I64 => int(i128::from(r.uint(8)? as i64), out),
        Marker::F32 | Marker::F64 => {
            let x = if marker == Marker::F32 {
                f64::from(f32::from_bits(r.uint(4)? as u32))
            } else {
                f64::from_bits(r.uint(8)?)
            };
            if !x.is_finite() {
                return Err(NotJson::NotPlain);
            }
            push_float(out, x);
        }
        Marker::FixArray(_)
        | Marker::Array16
        | Marker::Array32
        | Marker::FixMap(_)
        | Marker::Map16
        | Marker::Map32 => {
            let map = matches!(marker, Marker::FixMap(_) | Marker::Map16 | Marker::Map32);
            let n = match marker {
                Marker::FixArray(n) | Marker::FixMap(n) => n as usize,
                Marker::Array16 | Marker::Map16 => r.uint(2)? as usize,
                _ => r.uint(4)? as usize,
            };
            out.push(if map { b'{' } else { b'[' });
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                if map {
                    value(r, out, depth + 1, true)?;
                    out.push(b':');
                }
                value(r, out, depth + 1, false)?;
            }
            out.push(if map { b'}' } else { b']' });
        }
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => {
            let n = match marker {
                Marker::FixExt1 => 1,
                Marker::FixExt2 => 2,
                Marker::FixExt4 => 4,
                Marker::FixExt8 => 8,
                Marker::FixExt16 => 16,
                Marker::Ext8 => r.uint(1)? as usize,
                Marker::Ext16 => r.uint(2)? as usize,
                _ => r.uint(4)? as usize,
            };
            let code = r.take(1)?[0] as i8;
            let body = r.take(n)?;
            if code != ext::BIGINT || body.is_empty() {
                return Err(NotJson::NotPlain);
            }
            out.extend_from_slice(bigint_decimal(body).as_bytes());
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => return Err(NotJson::NotPlain),
        _ => return Err(NotJson::Corrupt(format!("byte {} of the payload is no msgpack value", r.at - 1))),
    }
    Ok(())
}
