//! Timestamps: microseconds since the Unix epoch (UTC) <-> Python datetimes.
//!
//! Events store their instant as an integer so that range queries and ordering
//! are integer comparisons; the civil-calendar arithmetic below (Howard
//! Hinnant's algorithms) avoids a round-trip through floats, which would lose
//! microseconds.

use pyo3::prelude::*;
use pyo3::types::PyDateTime;

use crate::pyrefs;

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Wall-clock fields of a datetime, and its UTC offset in seconds if aware.
pub struct Fields {
    pub wall_micros: i64,
    pub offset_seconds: Option<i64>,
}

/// Read a `datetime.datetime` into wall-clock microseconds plus its offset.
pub fn datetime_fields(dt: &Bound<'_, PyAny>) -> PyResult<Fields> {
    let py = dt.py();
    let get = |name: &str| -> PyResult<i64> { dt.getattr(name)?.extract() };
    let days = days_from_civil(get("year")?, get("month")? as u32, get("day")? as u32);
    let wall_micros = days * MICROS_PER_DAY
        + (get("hour")? * 3600 + get("minute")? * 60 + get("second")?) * MICROS_PER_SEC
        + get("microsecond")?;
    let offset = dt.call_method0(pyo3::intern!(py, "utcoffset"))?;
    let offset_seconds = if offset.is_none() {
        None
    } else {
        let secs: i64 = offset.getattr("days")?.extract::<i64>()? * 86_400
            + offset.getattr("seconds")?.extract::<i64>()?;
        Some(secs)
    };
    Ok(Fields { wall_micros, offset_seconds })
}

/// The instant of a datetime in UTC microseconds; naive datetimes are taken as UTC.
pub fn utc_micros(dt: &Bound<'_, PyAny>) -> PyResult<i64> {
    let f = datetime_fields(dt)?;
    Ok(f.wall_micros - f.offset_seconds.unwrap_or(0) * MICROS_PER_SEC)
}

/// Build a datetime from wall-clock microseconds and an optional tzinfo.
pub fn datetime_from_wall<'py>(
    py: Python<'py>,
    wall_micros: i64,
    tzinfo: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let days = wall_micros.div_euclid(MICROS_PER_DAY);
    let rem = wall_micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / MICROS_PER_SEC;
    let micro = (rem % MICROS_PER_SEC) as u32;
    let tz = match tzinfo {
        Some(t) => Some(t.cast::<pyo3::types::PyTzInfo>()?.clone()),
        None => None,
    };
    let dt = PyDateTime::new(
        py,
        i32::try_from(y).map_err(|_| pyo3::exceptions::PyOverflowError::new_err("year out of range"))?,
        m as u8,
        d as u8,
        (secs / 3600) as u8,
        ((secs / 60) % 60) as u8,
        (secs % 60) as u8,
        micro,
        tz.as_ref(),
    )?;
    Ok(dt.into_any())
}

/// An aware UTC datetime for a count of UTC microseconds.
pub fn utc_datetime(py: Python<'_>, micros: i64) -> PyResult<Bound<'_, PyAny>> {
    let utc = pyrefs::utc(py)?;
    datetime_from_wall(py, micros, Some(utc))
}

/// Now, in UTC microseconds.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 365, 10_957, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}
