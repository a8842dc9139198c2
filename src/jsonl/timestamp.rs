//! Reading an event's `timestamp` (ISO 8601 with a UTC offset, as
//! `datetime.fromisoformat` reads it) into UTC microseconds. Writing uses
//! `time::IsoFormatter`.

use crate::time::{days_from_civil, DATETIME_MICROS, MICROS_PER_SEC};

fn digits(text: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = text.get(at..at + n)?;
    part.iter()
        .all(u8::is_ascii_digit)
        .then(|| part.iter().fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0')))
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.f{1,6}]]` then `Z` or `±HH:MM[:SS]` (or `±HHMM`), as UTC
/// microseconds; the error says what is wrong, for the message naming the line.
pub fn parse(text: &str) -> Result<i64, String> {
    let t = text.as_bytes();
    let bad = || format!("'timestamp' {text:?} is not an ISO 8601 time such as 2024-03-01T12:00:00.5+00:00");
    let year = digits(t, 0, 4).ok_or_else(bad)?;
    let month = digits(t, 5, 2).filter(|_| t[4] == b'-').ok_or_else(bad)?;
    let day = digits(t, 8, 2).filter(|_| t[7] == b'-').ok_or_else(bad)?;
    if !matches!(t.get(10), Some(b'T' | b' ')) {
        return Err(if t.len() == 10 { format!("'timestamp' {text:?} has no time of day") } else { bad() });
    }
    let hour = digits(t, 11, 2).ok_or_else(bad)?;
    let minute = digits(t, 14, 2).filter(|_| t[13] == b':').ok_or_else(bad)?;
    let mut at = 16;
    let mut second = 0;
    let mut micros = 0;
    if t.get(at) == Some(&b':') {
        second = digits(t, at + 1, 2).ok_or_else(bad)?;
        at += 3;
        if matches!(t.get(at), Some(b'.' | b',')) {
            let n = t[at + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 || n > 6 {
                return Err(bad());
            }
            micros = digits(t, at + 1, n).ok_or_else(bad)? * 10i64.pow(6 - n as u32);
            at += 1 + n;
        }
    }
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 0,
    };
    if year < 1 || !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return Err(format!("'timestamp' {text:?} is not a valid date and time"));
    }
    let offset = match t.get(at) {
        None => return Err(format!("'timestamp' {text:?} has no UTC offset (add +00:00 for UTC)")),
        Some(b'Z') if at + 1 == t.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits(t, at + 1, 2).ok_or_else(bad)?;
            let colon = t.get(at + 3) == Some(&b':');
            let minutes = digits(t, at + 3 + usize::from(colon), 2).ok_or_else(bad)?;
            let mut end = at + 5 + usize::from(colon);
            let mut seconds = 0;
            if colon && t.get(end) == Some(&b':') {
                seconds = digits(t, end + 1, 2).ok_or_else(bad)?;
                end += 3;
            }
            if end != t.len() || hours > 23 || minutes > 59 || seconds > 59 {
                return Err(bad());
            }
            let s = hours * 3600 + minutes * 60 + seconds;
            if sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let wall = ((days * 24 + hour) * 60 + minute) * 60 + second;
    let utc = (wall - offset) * MICROS_PER_SEC + micros;
    if !DATETIME_MICROS.contains(&utc) {
        return Err(format!("'timestamp' {text:?} is outside the years 1 to 9999 in UTC"));
    }
    Ok(utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::IsoFormatter;

    #[test]
    fn reads_what_isoformat_writes() {
        for micros in [0, 1_709_294_400_123_456, -1, 253_402_300_799_999_999, 1_709_294_400_000_000] {
            let text = IsoFormatter::default().format(micros).unwrap().to_owned();
            assert_eq!(parse(&text), Ok(micros), "{text}");
        }
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse("1970-01-01 00:00:00.5Z"), Ok(500_000));
        assert_eq!(parse("1969-12-31T19:00:00-0500"), Ok(0));
        assert!(parse("2024-03-01T12:00:00").unwrap_err().contains("no UTC offset"));
        assert!(parse("2024-02-30T12:00:00+00:00").is_err());
        assert!(parse("yesterday").is_err());
    }
}
