//! Wall-clock instants as mcp-guard writes them everywhere: RFC 3339, UTC, nanoseconds.
//!
//! One type for the kernel events, the proxy's call records, the store and file names, so every
//! timestamp a user compares was written the same way.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chrono::{DateTime, Local, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A wall-clock instant: nanoseconds since the Unix epoch, UTC.
///
/// JSON: RFC 3339 with nanoseconds (`2026-11-23T20:15:03.123456789Z`); humans get local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// RFC 3339, UTC, nanoseconds.
    ///
    /// Written digit by digit: the proxy stamps every call twice, and chrono's general formatter
    /// cost more than the rest of a call's bookkeeping. (Every `i64` of nanoseconds falls in the
    /// years 1677 to 2262, so the year always has four digits, as chrono writes it.)
    pub fn rfc3339(self) -> String {
        const NANOS: i64 = 1_000_000_000;
        let secs = self.0.div_euclid(NANOS);
        let nanos = self.0.rem_euclid(NANOS);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let second_of_day = secs.rem_euclid(86_400);
        let mut out = *b"0000-00-00T00:00:00.000000000Z";
        put_digits(&mut out[0..4], year);
        put_digits(&mut out[5..7], month);
        put_digits(&mut out[8..10], day);
        put_digits(&mut out[11..13], second_of_day / 3600);
        put_digits(&mut out[14..16], second_of_day / 60 % 60);
        put_digits(&mut out[17..19], second_of_day % 60);
        put_digits(&mut out[20..29], nanos);
        // Only ASCII digits and separators: valid UTF-8, so the fallback is never taken.
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    /// Parses RFC 3339 (any offset, any sub-second precision).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = DateTime::parse_from_rfc3339(s).ok()?;
        t.timestamp_nanos_opt().map(Self)
    }

    /// This instant in the machine's local time zone.
    pub fn local(self) -> DateTime<Local> {
        self.utc().with_timezone(&Local)
    }

    /// This instant in UTC.
    pub fn utc(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }

    /// `d` earlier (saturating).
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(nanos))
    }

    /// `d` later (saturating).
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// Signed nanoseconds from `earlier` to `self`.
    pub fn nanos_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `v` (non-negative) as decimal digits filling `out`, zero-padded on the left.
fn put_digits(out: &mut [u8], mut v: i64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    #[test]
    fn formats_rfc3339_with_nanoseconds_in_utc() {
        assert_eq!(
            Timestamp::from_unix_nanos(0).rfc3339(),
            "1970-01-01T00:00:00.000000000Z"
        );
        let leap_day = Timestamp::from_unix_nanos(1_709_210_096_000_000_123);
        assert_eq!(leap_day.rfc3339(), "2024-02-29T12:34:56.000000123Z");
        assert_eq!(
            Timestamp::parse_rfc3339(&leap_day.rfc3339()),
            Some(leap_day)
        );
    }

    #[test]
    fn rfc3339_matches_chrono_across_the_whole_range() {
        let chrono = |t: Timestamp| t.utc().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut cases = vec![
            i64::MIN,
            i64::MAX,
            -1,
            0,
            1,
            951_782_400_000_000_000,    // 2000-02-29
            4_107_542_399_999_999_999,  // 2100-02-28T23:59:59.999999999
            -2_203_891_200_000_000_001, // just before 1900-03-01
        ];
        // A deterministic spread over the range (a linear congruential walk).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            cases.push(x.cast_signed());
        }
        for n in cases {
            let t = Timestamp::from_unix_nanos(n);
            assert_eq!(t.rfc3339(), chrono(t), "{n}");
        }
    }
}
