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

/// The instants a Python `datetime` can hold (years 1 to 9999), in µs since the epoch.
pub const DATETIME_MICROS: std::ops::RangeInclusive<i64> = -62_135_596_800_000_000..=253_402_300_799_999_999;

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

/// Writes `datetime.isoformat()` of aware UTC instants
/// (`2024-03-01T12:00:00.123456+00:00`; no fraction when it is zero). The date
/// part is kept from one call to the next: a workflow's instants mostly fall
/// on one day.
pub struct IsoFormatter {
    day: Option<i64>,
    buf: [u8; 32],
}

impl Default for IsoFormatter {
    fn default() -> Self {
        IsoFormatter { day: None, buf: *b"0000-00-00T00:00:00.000000+00:00" }
    }
}

impl IsoFormatter {
    /// The text of the instant `micros` (µs since the epoch); None outside
    /// `DATETIME_MICROS`.
    pub fn format(&mut self, micros: i64) -> Option<&str> {
        if !DATETIME_MICROS.contains(&micros) {
            return None;
        }
        let day = micros.div_euclid(MICROS_PER_DAY);
        let rem = micros.rem_euclid(MICROS_PER_DAY);
        if self.day != Some(day) {
            let (year, month, date) = civil_from_days(day);
            let year = year as u32;
            self.two(0, year / 100);
            self.two(2, year % 100);
            self.two(5, month);
            self.two(8, date);
            self.day = Some(day);
        }
        let secs = (rem / MICROS_PER_SEC) as u32;
        let frac = (rem % MICROS_PER_SEC) as u32;
        self.two(11, secs / 3600);
        self.two(14, secs / 60 % 60);
        self.two(17, secs % 60);
        let end = if frac == 0 {
            19
        } else {
            self.buf[19] = b'.';
            self.two(20, frac / 10_000);
            self.two(22, frac / 100 % 100);
            self.two(24, frac % 100);
            26
        };
        self.buf[end..end + 6].copy_from_slice(b"+00:00");
        crate::codec::utf8(&self.buf[..end + 6]).ok()
    }

    fn two(&mut self, at: usize, n: u32) {
        self.buf[at] = b'0' + (n / 10) as u8;
        self.buf[at + 1] = b'0' + (n % 10) as u8;
    }
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
    let year =
        i32::try_from(y).map_err(|_| pyo3::exceptions::PyOverflowError::new_err("year out of range"))?;
    let (hour, minute, second) = ((secs / 3600) as i32, ((secs / 60) % 60) as i32, (secs % 60) as i32);
    if let Some(capi) = datetime_capi(py) {
        let tz_ptr = tzinfo.map_or(unsafe { pyo3::ffi::Py_None() }, |t| t.as_ptr());
        // SAFETY: the constructor of the datetime C API, with valid fields and a
        // borrowed tzinfo (or None); it returns a new reference or NULL with an error set.
        let raw = unsafe {
            (capi.datetime_from_date_and_time)(
                year,
                m as i32,
                d as i32,
                hour,
                minute,
                second,
                micro as i32,
                tz_ptr,
                capi.datetime_type,
            )
        };
        // SAFETY: as above; NULL becomes the pending Python error.
        return unsafe { Bound::from_owned_ptr_or_err(py, raw) };
    }
    let tz = match tzinfo {
        Some(t) => Some(t.cast::<pyo3::types::PyTzInfo>()?.clone()),
        None => None,
    };
    let dt = PyDateTime::new(
        py,
        year,
        m as u8,
        d as u8,
        hour as u8,
        minute as u8,
        second as u8,
        micro,
        tz.as_ref(),
    )?;
    Ok(dt.into_any())
}

/// The leading part of CPython's `PyDateTime_CAPI` (`datetime.h`), whose layout
/// is stable: fields are only ever appended. Under the limited API PyO3 builds
/// datetimes by calling the class; the capsule's constructor is several times
/// faster, and event timestamps are built by the million.
#[repr(C)]
struct DateTimeCapi {
    date_type: *mut pyo3::ffi::PyTypeObject,
    datetime_type: *mut pyo3::ffi::PyTypeObject,
    time_type: *mut pyo3::ffi::PyTypeObject,
    delta_type: *mut pyo3::ffi::PyTypeObject,
    tzinfo_type: *mut pyo3::ffi::PyTypeObject,
    timezone_utc: *mut pyo3::ffi::PyObject,
    date_from_date:
        unsafe extern "C" fn(i32, i32, i32, *mut pyo3::ffi::PyTypeObject) -> *mut pyo3::ffi::PyObject,
    #[allow(clippy::type_complexity)]
    datetime_from_date_and_time: unsafe extern "C" fn(
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        i32,
        *mut pyo3::ffi::PyObject,
        *mut pyo3::ffi::PyTypeObject,
    ) -> *mut pyo3::ffi::PyObject,
}

/// The capsule, imported once; None if it cannot be (then the class is called).
fn datetime_capi(py: Python<'_>) -> Option<&'static DateTimeCapi> {
    static CAPI: pyo3::sync::PyOnceLock<usize> = pyo3::sync::PyOnceLock::new();
    let address = *CAPI.get_or_init(py, || {
        // SAFETY: PyCapsule_Import is part of the stable ABI; the name is CPython's.
        let ptr = unsafe { pyo3::ffi::PyCapsule_Import(c"datetime.datetime_CAPI".as_ptr(), 0) };
        if ptr.is_null() {
            // SAFETY: clear the ImportError so the fallback path starts clean.
            unsafe { pyo3::ffi::PyErr_Clear() };
        }
        ptr as usize
    });
    // SAFETY: the capsule points at a static struct that lives as long as the interpreter.
    (address != 0).then(|| unsafe { &*(address as *const DateTimeCapi) })
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
    fn isoformat_as_python_writes_it() {
        let cases = [
            (0, "1970-01-01T00:00:00+00:00"),
            (1_709_294_400_123_456, "2024-03-01T12:00:00.123456+00:00"),
            (1_709_294_399_000_001, "2024-03-01T11:59:59.000001+00:00"),
            (-1, "1969-12-31T23:59:59.999999+00:00"),
            (253_402_300_799_999_999, "9999-12-31T23:59:59.999999+00:00"),
        ];
        let mut iso = IsoFormatter::default();
        for (micros, text) in cases {
            assert_eq!(iso.format(micros), Some(text), "{micros}");
            assert_eq!(IsoFormatter::default().format(micros), Some(text), "{micros}, alone");
        }
        // A fraction, then none: the fraction's bytes do not stay.
        assert_eq!(iso.format(1_709_294_400_000_000), Some("2024-03-01T12:00:00+00:00"));
        assert_eq!(iso.format(253_402_300_800_000_000), None, "year 10000");
        assert_eq!(iso.format(-62_135_596_800_000_000), Some("0001-01-01T00:00:00+00:00"));
        assert_eq!(iso.format(-62_135_596_800_000_001), None, "year 0");
    }

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
