//! Checking, without Python, that stored msgpack decodes.
//!
//! The replay fold keeps raw slices of payload values and decodes them only
//! when it builds the final state. A value the decoder would refuse must be
//! caught when its event is folded, so the error can name the event and
//! `skip_corrupt` can leave the whole event out. `validate` accepts what
//! `decode` accepts (the fuzzer in `fuzz/` compares the two through replay).

use super::view::{header, ViewError};
use super::{ext, utf8, MAX_DEPTH};
use crate::time::civil_from_days;

type Result<T> = std::result::Result<T, ViewError>;

fn bad<T>(what: String) -> Result<T> {
    Err(ViewError(what))
}

/// Ok if `raw` holds exactly one value that `decode` turns into Python.
pub fn validate(raw: &[u8]) -> Result<()> {
    // A lone small int or short string, most of what the fold keeps: no walk.
    match *raw {
        [0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3] => return Ok(()),
        [m @ 0xa0..=0xbf, ref text @ ..] if text.len() == (m & 0x1f) as usize => {
            return utf8(text).map(|_| ()).map_err(|e| ViewError(format!("invalid UTF-8 in string: {e}")));
        }
        _ => {}
    }
    let mut c = Checker { buf: raw, pos: 0 };
    c.item(0, false)?;
    if c.pos != raw.len() {
        return bad(format!("{} trailing bytes after the value", raw.len() - c.pos));
    }
    Ok(())
}

struct Checker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Checker<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bad(format!("truncated at byte {} (wanted {n} more)", self.pos)),
        }
    }

    /// Check the value at the cursor; `key` when it is a map key (must be hashable).
    fn item(&mut self, depth: usize, key: bool) -> Result<()> {
        // The value's shape comes from the one marker table, `view::header`.
        let (head, body, nested) = header(self.buf, self.pos)?;
        let m = self.buf[self.pos];
        let header_bytes = self.take(head)?;
        match m {
            0xa0..=0xbf | 0xd9..=0xdb => {
                let raw = self.take(body)?;
                utf8(raw).map(|_| ()).map_err(|e| ViewError(format!("invalid UTF-8 in string: {e}")))
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                // The extension type code is the header's last byte.
                let code = header_bytes[head - 1] as i8;
                let payload = self.take(body)?;
                check_ext(code, payload)
            }
            0x80..=0x8f | 0x90..=0x9f | 0xdc..=0xdf => {
                let pairs = matches!(m, 0x80..=0x8f | 0xde | 0xdf);
                if key {
                    return bad(format!("a {} used as a map key", if pairs { "map" } else { "list" }));
                }
                if depth >= MAX_DEPTH {
                    return bad(format!("nesting deeper than {MAX_DEPTH} levels"));
                }
                if nested > self.buf.len() - self.pos {
                    return bad(format!(
                        "container of {nested} items at byte {} is longer than the payload",
                        self.pos
                    ));
                }
                for i in 0..nested {
                    self.item(depth + 1, pairs && i % 2 == 0)?;
                }
                Ok(())
            }
            _ => self.take(body).map(|_| ()),
        }
    }
}

/// Check an extension value as `decode` would build it.
fn check_ext(code: i8, p: &[u8]) -> Result<()> {
    let n = p.len();
    let be64 = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    let year_ok = |days: i64| (1..=9999).contains(&civil_from_days(days).0);
    let ok = match code {
        ext::DATETIME if n == 8 || n == 12 => {
            let wall = be64(&p[..8]);
            let offset_ok = n == 8 || {
                let off = i32::from_be_bytes(p[8..12].try_into().unwrap_or([0; 4]));
                off.unsigned_abs() < 86_400
            };
            offset_ok && year_ok(wall.div_euclid(86_400_000_000))
        }
        ext::DATE if n == 4 => year_ok(i32::from_be_bytes(p.try_into().unwrap_or([0; 4])) as i64),
        ext::UUID if n == 16 => true,
        ext::DECIMAL => std::str::from_utf8(p).is_ok_and(decimal_text),
        ext::BIGINT => true,
        _ => return bad(format!("unknown extension type {code} of {n} bytes")),
    };
    if ok {
        Ok(())
    } else {
        bad(format!("extension type {code} holds a value out of range"))
    }
}

/// Whether `decimal.Decimal(text)` accepts `text` (the forms `str(Decimal)`
/// writes, plus the spellings Decimal itself reads: case, spaces, `_`).
fn decimal_text(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = t.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return true;
    }
    if let Some(payload) = lower.strip_prefix("snan").or_else(|| lower.strip_prefix("nan")) {
        return payload.bytes().all(|b| b.is_ascii_digit());
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let digits = |s: &str| {
        !s.is_empty()
            && !s.starts_with('_')
            && !s.ends_with('_')
            && !s.contains("__")
            && s.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() || digits(int))
                && (frac.is_empty() || digits(frac))
                && !(int.is_empty() && frac.is_empty())
        }
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::{decimal_text, validate};

    #[test]
    fn accepts_plain_values_and_refuses_bad_ones() {
        assert!(validate(&[0x81, 0xa1, b'a', 0x01]).is_ok());
        assert!(validate(&[0xa2, 0xff, 0xfe]).is_err(), "invalid UTF-8");
        assert!(validate(&[0x81, 0x90, 0x01]).is_err(), "list as a key");
        assert!(validate(&[0xd4, 77, 0]).is_err(), "unknown extension");
        assert!(validate(&[0x01, 0x02]).is_err(), "trailing bytes");
        let mut deep = vec![0x91; 300];
        deep.push(0xc0);
        assert!(validate(&deep).is_err(), "too deep");
    }

    #[test]
    fn decimal_spellings() {
        for ok in ["1", "-1.50", "1E+5", ".5", "5.", "NaN", "-sNaN12", "Infinity", "-inf", " 1_000 "] {
            assert!(decimal_text(ok), "{ok}");
        }
        for no in ["", ".", "abc", "1e", "1__0", "_1", "1.2.3", "nan1x"] {
            assert!(!decimal_text(no), "{no}");
        }
    }
}
