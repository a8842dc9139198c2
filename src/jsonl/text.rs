//! JSON strings as Python's `json.dumps(..., ensure_ascii=False)` writes them,
//! with U+2028 and U+2029 escaped too: some tools break lines on them.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Which bytes start something to escape: controls, `"`, `\\`, and 0xE2 (the first byte of
/// U+2028 and U+2029, checked further there).
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0xe2] = true;
    table
};

/// Appends `s` as a quoted JSON string.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(n) = bytes[start..].iter().position(|&b| SPECIAL[b as usize]) {
        let i = start + n;
        out.extend_from_slice(&bytes[start..i]);
        let b = bytes[i];
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0xe2 if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) => {
                out.extend_from_slice(if bytes[i + 2] == 0xa8 { b"\\u2028" } else { b"\\u2029" });
                start = i + 3;
            }
            0xe2 => out.push(b),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_python_json_does() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\n\x00\x1f\x7f é ✓ \u{2028}\u{2029}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0000\\u001f\x7f é ✓ \\u2028\\u2029\""
        );
    }
}
