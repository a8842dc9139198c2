//! A JSON reader for one line of an import. Scalars are read as values; a
//! payload (`data`) is written straight into msgpack as it is read, in the
//! codec's forms (so it decodes to what `json.loads` would give): integers
//! outside 64 bits as `BIGINT`, `NaN`/`Infinity` accepted as Python reads them.
//! Errors name the column and what was expected there.

use std::borrow::Cow;

use rmp::encode as mp;

use super::number::decimal_bigint;
use crate::codec::{ext, MAX_DEPTH};

/// A value read where the caller wants one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// An integer outside 64 bits, as written.
    BigInt(&'a str),
    Float(f64),
    Bool(bool),
    Null,
    List,
    Object,
}

impl Scalar<'_> {
    /// The value as Python's `repr` shows it (containers by kind), for messages.
    pub fn shown(&self) -> String {
        match self {
            Scalar::Str(s) if s.contains('\'') && !s.contains('"') => format!("\"{s}\""),
            Scalar::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Scalar::Int(v) => v.to_string(),
            Scalar::BigInt(v) => (*v).to_owned(),
            Scalar::Float(v) => format!("{v:?}"),
            Scalar::Bool(true) => "True".into(),
            Scalar::Bool(false) => "False".into(),
            Scalar::Null => "None".into(),
            Scalar::List => "a list".into(),
            Scalar::Object => "an object".into(),
        }
    }
}

/// Writes the length `n` of a map (or list) into the byte `out[header]` kept for it, making
/// room when `n` needs more than that byte (16 or more).
fn set_len(out: &mut Vec<u8>, header: usize, n: usize, map: bool) {
    if n < 16 {
        // fixmap / fixarray
        out[header] = if map { 0x80 } else { 0x90 } | n as u8;
        return;
    }
    let mut len = Vec::with_capacity(5);
    if map {
        mp::write_map_len(&mut len, n as u32).ok();
    } else {
        mp::write_array_len(&mut len, n as u32).ok();
    }
    out.splice(header..header + 1, len);
}

/// The high bit of each byte of `word` that is `"`, `\\` or a control character (below
/// 0x20), each of which ends the plain run of a string. The lowest bit set is exact (bytes
/// after it may be marked falsely, by a borrow): it marks the first such byte.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero (below 0x20 for `below`) where its high bit comes out set.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    zero(word ^ (ONES * b'"' as u64)) | zero(word ^ (ONES * b'\\' as u64)) | below
}

pub struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str) -> Self {
        Parser { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    pub fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.bytes().get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// "expected WHAT at column N" (columns count characters from 1).
    pub fn expected(&self, what: &str) -> String {
        let column = self.text[..self.at.min(self.text.len())].chars().count() + 1;
        let found = match self.bytes().get(self.at) {
            None => "the line ends".to_owned(),
            Some(_) => format!("found {:?}", self.text[self.at..].chars().next().unwrap_or(' ')),
        };
        format!("expected {what} at column {column}, {found}")
    }

    pub fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// Nothing but spaces left.
    pub fn end(&mut self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.expected("the end of the line")),
        }
    }

    /// Reads the members of an object (its `{` already read), calling `member` with each
    /// key, the parser then standing at the value, which `member` must read.
    pub fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), String>,
    ) -> Result<usize, String> {
        let mut n = 0;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(0);
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.expected("a key in double quotes"));
            }
            let key = self.string()?;
            self.expect(b':', "':'")?;
            member(self, key)?;
            n += 1;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(n);
                }
                _ => return Err(self.expected("',' or '}'")),
            }
        }
    }

    /// A string (at its opening quote), unescaped.
    pub fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.expect(b'"', "'\"'")?;
        let bytes = self.bytes();
        let start = self.at;
        // Fast path: no escapes. Eight bytes at a time up to the first that ends the plain run,
        // then byte by byte.
        while let Some(word) = bytes.get(self.at..self.at + 8) {
            let special = special_bytes(u64::from_le_bytes(word.try_into().unwrap_or_default()));
            if special != 0 {
                self.at += special.trailing_zeros() as usize / 8;
                break;
            }
            self.at += 8;
        }
        while let Some(&b) = bytes.get(self.at) {
            match b {
                b'"' => {
                    self.at += 1;
                    return Ok(Cow::Borrowed(&self.text[start..self.at - 1]));
                }
                b'\\' => break,
                0..0x20 => return Err(self.expected("no control character inside a string")),
                _ => self.at += 1,
            }
        }
        let mut owned = String::from(&self.text[start..self.at]);
        loop {
            let Some(&b) = bytes.get(self.at) else {
                return Err(self.expected("the end of the string"));
            };
            match b {
                b'"' => {
                    self.at += 1;
                    return Ok(Cow::Owned(owned));
                }
                b'\\' => {
                    let escaped = bytes.get(self.at + 1).copied();
                    self.at += 2;
                    let c = match escaped {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => {
                            self.at -= 1;
                            return Err(
                                self.expected("an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")
                            );
                        }
                    };
                    owned.push(c);
                }
                0..0x20 => return Err(self.expected("no control character inside a string")),
                _ => {
                    let run = bytes[self.at..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
                    let end = run.map_or(bytes.len(), |n| self.at + n);
                    owned.push_str(&self.text[self.at..end]);
                    self.at = end;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let part = self.bytes().get(self.at..self.at + 4).filter(|p| p.iter().all(u8::is_ascii_hexdigit));
        let Some(part) = part else {
            return Err(self.expected("four hex digits after \\u"));
        };
        let v = u32::from_str_radix(std::str::from_utf8(part).unwrap_or("0"), 16).unwrap_or(0);
        self.at += 4;
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code =
            if (0xd800..0xdc00).contains(&first) && self.bytes().get(self.at..self.at + 2) == Some(b"\\u") {
                self.at += 2;
                let second = self.hex4()?;
                if !(0xdc00..0xe000).contains(&second) {
                    return Err(format!(
                        "\\u{first:04x} is half of a character (a lone surrogate), which text cannot hold"
                    ));
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            } else {
                first
            };
        char::from_u32(code).ok_or_else(|| {
            format!("\\u{code:04x} is half of a character (a lone surrogate), which text cannot hold")
        })
    }

    fn number(&mut self) -> Result<Scalar<'a>, String> {
        let bytes = self.bytes();
        let start = self.at;
        let mut i = self.at;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        if bytes[i..].starts_with(b"Infinity") {
            self.at = i + 8;
            return Ok(Scalar::Float(if i > start { f64::NEG_INFINITY } else { f64::INFINITY }));
        }
        let digits = |i: &mut usize| {
            let from = *i;
            while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        let whole = digits(&mut i);
        if whole == 0 || (whole > 1 && bytes[i - whole] == b'0') {
            self.at = start;
            return Err(self.expected("a JSON value"));
        }
        let mut integer = true;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            integer = false;
            if digits(&mut i) == 0 {
                self.at = i;
                return Err(self.expected("a digit after '.'"));
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            integer = false;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                self.at = i;
                return Err(self.expected("a digit in the exponent"));
            }
        }
        self.at = i;
        let text = &self.text[start..i];
        if !integer {
            return text.parse().map(Scalar::Float).map_err(|_| format!("{text} is not a number"));
        }
        Ok(match text.parse::<i64>() {
            Ok(v) => Scalar::Int(v),
            Err(_) => Scalar::BigInt(text),
        })
    }

    fn word(&mut self, word: &str) -> bool {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    /// One value; containers are read through (checked) and reported by kind.
    pub fn scalar(&mut self) -> Result<Scalar<'a>, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Scalar::Str),
            Some(b'[') => {
                self.transcode(&mut Vec::new(), 0)?;
                Ok(Scalar::List)
            }
            Some(b'{') => {
                self.transcode(&mut Vec::new(), 0)?;
                Ok(Scalar::Object)
            }
            Some(b'-' | b'0'..=b'9' | b'I') => self.number(),
            _ if self.word("true") => Ok(Scalar::Bool(true)),
            _ if self.word("false") => Ok(Scalar::Bool(false)),
            _ if self.word("null") => Ok(Scalar::Null),
            _ if self.word("NaN") => Ok(Scalar::Float(f64::NAN)),
            _ => Err(self.expected("a JSON value")),
        }
    }

    /// Reads one value and appends it to `out` as msgpack.
    pub fn transcode(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the payload nests deeper than {MAX_DEPTH} levels"));
        }
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                let header = out.len();
                out.push(0);
                let n = self.members(|p, key| {
                    mp::write_str(out, &key).ok();
                    p.transcode(out, depth + 1)
                })?;
                set_len(out, header, n, true);
            }
            Some(b'[') => {
                self.at += 1;
                let header = out.len();
                out.push(0);
                let mut n = 0;
                if self.peek() == Some(b']') {
                    self.at += 1;
                } else {
                    loop {
                        self.transcode(out, depth + 1)?;
                        n += 1;
                        match self.peek() {
                            Some(b',') => self.at += 1,
                            Some(b']') => {
                                self.at += 1;
                                break;
                            }
                            _ => return Err(self.expected("',' or ']'")),
                        }
                    }
                }
                set_len(out, header, n, false);
            }
            _ => match self.scalar()? {
                Scalar::Str(s) => {
                    mp::write_str(out, &s).ok();
                }
                Scalar::Int(v) => {
                    mp::write_sint(out, v).ok();
                }
                Scalar::BigInt(text) => match text.parse::<u64>() {
                    Ok(v) => {
                        mp::write_uint(out, v).ok();
                    }
                    Err(_) => {
                        let body = decimal_bigint(text);
                        mp::write_ext_meta(out, body.len() as u32, ext::BIGINT).ok();
                        out.extend_from_slice(&body);
                    }
                },
                Scalar::Float(v) => {
                    mp::write_f64(out, v).ok();
                }
                Scalar::Bool(v) => {
                    mp::write_bool(out, v).ok();
                }
                Scalar::Null => {
                    mp::write_nil(out).ok();
                }
                Scalar::List | Scalar::Object => unreachable!("containers are read above"),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `b` ends the plain run of a string.
    fn special(b: u8) -> bool {
        b == b'"' || b == b'\\' || b < 0x20
    }

    #[test]
    fn special_bytes_marks_the_first_special_byte_of_a_word() {
        for at in 0..8 {
            for b in 0..=255u8 {
                // Plain bytes before `b`, and special ones after it (which may be marked falsely).
                let mut word = [b'a', 0xc3, 0xa9, b'~', b' ', 0x7f, 0xff, b'Z'];
                word[at] = b;
                for later in word.iter_mut().skip(at + 1) {
                    *later = [b'"', b'\\', 0x00, 0x1f][usize::from(b) % 4];
                }
                let found = special_bytes(u64::from_le_bytes(word));
                let first = (found != 0).then(|| found.trailing_zeros() as usize / 8);
                let expected = word.iter().position(|&c| special(c));
                assert_eq!(first, expected, "byte {b:#04x} at {at}");
            }
        }
    }

    #[test]
    fn a_string_with_escapes_and_controls_past_its_first_words() {
        fn read(text: &str) -> Result<Cow<'_, str>, String> {
            Parser::new(text).string()
        }
        assert_eq!(read(r#""0123456789abcdef""#).unwrap(), "0123456789abcdef");
        assert_eq!(read(r#""0123456789\nabcdef""#).unwrap(), "0123456789\nabcdef");
        assert_eq!(read(r#""01234567""#).unwrap(), "01234567");
        let err = read("\"0123456789a\tb\"").unwrap_err();
        assert!(err.contains("no control character inside a string at column 13"), "{err}");
        let err = read(r#""0123456789abcdef"#).unwrap_err();
        assert!(err.contains("the end of the string") || err.contains("line ends"), "{err}");
    }
}
