//! Msgpack extension type codes used for values plain msgpack cannot carry.
//!
//! Layouts (big-endian):
//! - `DATETIME`: i64 wall-clock microseconds since 1970-01-01, then, for an
//!   aware datetime, i32 UTC offset in seconds (8 or 12 bytes).
//! - `DATE`: i32 days since 1970-01-01.
//! - `UUID`: the 16 bytes of `UUID.bytes`.
//! - `DECIMAL`: `str(Decimal)` as UTF-8.
//! - `BIGINT`: an int outside the 64-bit range as little-endian two's
//!   complement (`int.to_bytes(n, "little", signed=True)`).

pub const DATETIME: i8 = 1;
pub const DATE: i8 = 2;
pub const UUID: i8 = 3;
pub const DECIMAL: i8 = 4;
pub const BIGINT: i8 = 5;
