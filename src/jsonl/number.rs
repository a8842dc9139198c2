//! Numbers as Python's `json` writes and reads them: floats in `repr` form
//! (shortest round trip; exponent form below 1e-4 and from 1e16), integers of
//! any size (outside 64 bits the codec's `BIGINT` extension: little-endian
//! two's complement, as `int.to_bytes(n, "little", signed=True)`).

/// Appends the decimal digits of `v`.
pub fn push_int(out: &mut Vec<u8>, v: i128) {
    let mut buf = [0u8; 40];
    let mut at = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    out.extend_from_slice(&buf[at..]);
}

/// `x` (finite) as Python's `repr(float)`: `1.0`, `0.0001`, `1e-05`, `1e+16`, `-0.0`.
pub fn push_float(out: &mut Vec<u8>, x: f64) {
    // `{:e}` gives the shortest digits that read back as `x`: `d[.ddd]e[-]N`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    if negative {
        out.push(b'-');
    }
    // The value is 0.DIGITS x 10^point.
    let point = exp + 1;
    let n = digits.len() as i32;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(&digits);
        } else if point >= n {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', (point - n) as usize));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[point as usize..]);
        }
    } else {
        out.push(digits[0]);
        if n > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = point - 1;
        out.extend_from_slice(format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()).as_bytes());
    }
}

/// Divides the little-endian base-2^32 magnitude `limbs` by `d` in place; returns the remainder.
fn div_small(limbs: &mut [u32], d: u32) -> u32 {
    let mut rem: u64 = 0;
    for limb in limbs.iter_mut().rev() {
        let cur = (rem << 32) | u64::from(*limb);
        *limb = (cur / u64::from(d)) as u32;
        rem = cur % u64::from(d);
    }
    rem as u32
}

/// Negates the little-endian two's complement integer in `bytes`: invert, add one.
fn negate(bytes: &mut [u8]) {
    let mut carry = true;
    for b in bytes {
        *b = !*b;
        if carry {
            let (v, c) = b.overflowing_add(1);
            *b = v;
            carry = c;
        }
    }
}

/// The decimal digits of the two's complement integer in `bytes` (little-endian).
pub fn bigint_decimal(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        negate(&mut magnitude);
    }
    let mut limbs: Vec<u32> =
        magnitude.chunks(4).map(|c| c.iter().rev().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))).collect();
    let mut groups = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        groups.push(div_small(&mut limbs, 1_000_000_000));
    }
    let mut text = String::from(if negative { "-" } else { "" });
    match groups.split_last() {
        None => text.push('0'),
        Some((first, rest)) => {
            text.push_str(&first.to_string());
            for g in rest.iter().rev() {
                text.push_str(&format!("{g:09}"));
            }
        }
    }
    text
}

/// An integer written in decimal (`-`? digits) as the codec's `BIGINT` bytes:
/// `int.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)`.
pub fn decimal_bigint(text: &str) -> Vec<u8> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let mut limbs: Vec<u32> = vec![0];
    for chunk in digits.as_bytes().chunks(9) {
        let mut scale: u64 = 1;
        let mut value: u64 = 0;
        for &b in chunk {
            scale *= 10;
            value = value * 10 + u64::from(b - b'0');
        }
        let mut carry = value;
        for limb in &mut limbs {
            let cur = u64::from(*limb) * scale + carry;
            *limb = cur as u32;
            carry = cur >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 {
        bytes.pop();
    }
    let top = bytes[bytes.len() - 1];
    let bits = (bytes.len() - 1) * 8 + (8 - top.leading_zeros() as usize);
    bytes.resize(bits / 8 + 1, 0);
    if negative {
        negate(&mut bytes);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut out = Vec::new();
        push_float(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_in_decimal() {
        for v in [0i128, 7, -7, i128::from(i64::MIN), i128::from(u64::MAX)] {
            let mut out = Vec::new();
            push_int(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn floats_read_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (3.5, "3.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456.789, "123456.789"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1, "0.1"),
            (-2.5e-7, "-2.5e-07"),
        ];
        for (x, want) in cases {
            assert_eq!(float(x), want, "{x:e}");
        }
    }

    #[test]
    fn big_integers_go_both_ways() {
        // 2**80 and -(2**80), as Python's to_bytes gives them.
        let mut pos = vec![0u8; 10];
        pos.push(1);
        assert_eq!(bigint_decimal(&pos), "1208925819614629174706176");
        assert_eq!(decimal_bigint("1208925819614629174706176"), pos);
        let neg = decimal_bigint("-1208925819614629174706176");
        assert_eq!(bigint_decimal(&neg), "-1208925819614629174706176");
        assert_eq!(neg.len(), 11);
        assert_eq!(decimal_bigint("-128"), vec![0x80, 0xff]);
        assert_eq!(decimal_bigint("18446744073709551616"), {
            let mut v = vec![0u8; 8];
            v.push(1);
            v
        });
    }
}
