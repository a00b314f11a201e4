//! Timestamp precision of a write request, as named by the v1 and v2 write APIs.

/// Unit of the timestamps in a write request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    Nanosecond,
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
}

impl Precision {
    /// Parses the `precision` query parameter of `/api/v2/write`.
    ///
    /// The empty string is not handled here: callers decide the default.
    pub fn from_v2_param(s: &str) -> Option<Precision> {
        match s {
            "ns" => Some(Precision::Nanosecond),
            "us" => Some(Precision::Microsecond),
            "ms" => Some(Precision::Millisecond),
            "s" => Some(Precision::Second),
            _ => None,
        }
    }

    /// Parses the `precision` query parameter of the v1 `/write` endpoint, which also
    /// knows the one-letter spellings and minutes and hours.
    pub fn from_v1_param(s: &str) -> Option<Precision> {
        match s {
            "n" | "ns" => Some(Precision::Nanosecond),
            "u" | "us" => Some(Precision::Microsecond),
            "ms" => Some(Precision::Millisecond),
            "s" => Some(Precision::Second),
            "m" => Some(Precision::Minute),
            "h" => Some(Precision::Hour),
            _ => None,
        }
    }

    /// Length of one unit in nanoseconds.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanosecond => 1,
            Precision::Microsecond => 1_000,
            Precision::Millisecond => 1_000_000,
            Precision::Second => 1_000_000_000,
            Precision::Minute => 60_000_000_000,
            Precision::Hour => 3_600_000_000_000,
        }
    }

    /// Canonical short name ("ns", "us", "ms", "s", "m", "h").
    pub fn as_v2_str(self) -> &'static str {
        match self {
            Precision::Nanosecond => "ns",
            Precision::Microsecond => "us",
            Precision::Millisecond => "ms",
            Precision::Second => "s",
            Precision::Minute => "m",
            Precision::Hour => "h",
        }
    }

    /// Truncates a nanosecond time to this precision and expresses it in units of this
    /// precision.
    ///
    /// Rounds toward negative infinity, as Go's `time.Time.Truncate` does for the
    /// server's receive time, so times before 1970 truncate the same way.
    pub fn from_nanos(self, ns: i64) -> i64 {
        ns.div_euclid(self.nanos_per_unit())
    }

    /// Scales a timestamp written in this precision to nanoseconds, or `None` if the
    /// product overflows `i64`.
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        value.checked_mul(self.nanos_per_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_params() {
        assert_eq!(Precision::from_v2_param("ns"), Some(Precision::Nanosecond));
        assert_eq!(Precision::from_v2_param("us"), Some(Precision::Microsecond));
        assert_eq!(Precision::from_v2_param("ms"), Some(Precision::Millisecond));
        assert_eq!(Precision::from_v2_param("s"), Some(Precision::Second));
        for bad in ["", "n", "u", "m", "h", "NS", "1ns"] {
            assert_eq!(Precision::from_v2_param(bad), None, "{bad}");
        }
    }

    #[test]
    fn v1_params() {
        let all = [
            ("n", Precision::Nanosecond),
            ("ns", Precision::Nanosecond),
            ("u", Precision::Microsecond),
            ("us", Precision::Microsecond),
            ("ms", Precision::Millisecond),
            ("s", Precision::Second),
            ("m", Precision::Minute),
            ("h", Precision::Hour),
        ];
        for (s, p) in all {
            assert_eq!(Precision::from_v1_param(s), Some(p));
        }
        assert_eq!(Precision::from_v1_param(""), None);
        assert_eq!(Precision::from_v1_param("d"), None);
    }

    #[test]
    fn names_and_units() {
        for p in [
            Precision::Nanosecond,
            Precision::Microsecond,
            Precision::Millisecond,
            Precision::Second,
            Precision::Minute,
            Precision::Hour,
        ] {
            assert_eq!(Precision::from_v1_param(p.as_v2_str()), Some(p));
        }
        assert_eq!(Precision::Hour.nanos_per_unit(), 3_600 * 1_000_000_000);
    }

    #[test]
    fn truncation_floors() {
        assert_eq!(Precision::Second.from_nanos(1_999_999_999), 1);
        assert_eq!(Precision::Second.from_nanos(-1), -1);
        assert_eq!(
            Precision::Millisecond.from_nanos(946_730_096_789_012_345),
            946_730_096_789
        );
        assert_eq!(Precision::Nanosecond.from_nanos(i64::MIN), i64::MIN);
    }

    #[test]
    fn scaling_detects_overflow() {
        assert_eq!(
            Precision::Second.to_nanos(9_223_372_036),
            Some(9_223_372_036_000_000_000)
        );
        assert_eq!(Precision::Second.to_nanos(9_223_372_037), None);
        assert_eq!(Precision::Hour.to_nanos(-2_562_048), None);
    }
}
