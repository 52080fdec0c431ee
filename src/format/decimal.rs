//! An exact decimal amount, kept as the text it arrived in.
//!
//! Billing amounts must never pass through `f64` (0.1 + 0.2 ≠ 0.3); Kill Bill
//! takes a BigDecimal, so the canonical decimal text is all we need.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(String);

impl Decimal {
    /// Accepts JSON-number grammar: `-?digits(.digits)?([eE][+-]?digits)?`.
    pub fn parse(text: &str) -> Option<Decimal> {
        is_decimal(text).then(|| Decimal(text.to_string()))
    }

    /// Integer and fractional digit counts once any exponent is applied,
    /// ignoring leading zeros of the integer part and trailing zeros of the fraction.
    pub fn digits(&self) -> (i64, i64) {
        digits_of(&self.0)
    }

    /// Kill Bill keeps amounts in a fixed-precision column; a value far
    /// beyond any real usage is refused rather than truncated somewhere later.
    pub fn check_range(&self) -> Result<(), String> {
        if !in_range(&self.0) {
            return Err(format!(
                "{} is out of range (at most {MAX_INTEGER_DIGITS} integer and {MAX_FRACTION_DIGITS} fractional digits)",
                abbreviate(&self.0)
            ));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_negative(&self) -> bool {
        self.0.starts_with('-') && self.0.bytes().any(|c| matches!(c, b'1'..=b'9'))
    }
}

/// `Decimal::parse(text)` succeeds and `check_range` passes, without
/// building the `Decimal` (for decoders that only validate).
pub(super) fn is_valid_amount(text: &str) -> bool {
    is_decimal(text) && in_range(text)
}

fn in_range(text: &str) -> bool {
    let (int, frac) = digits_of(text);
    int <= MAX_INTEGER_DIGITS && frac <= MAX_FRACTION_DIGITS
}

fn is_decimal(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == int_start {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// One pass over the bytes (this runs for every amount of every record).
fn digits_of(text: &str) -> (i64, i64) {
    let b = text.as_bytes();
    let b = b.strip_prefix(b"-").unwrap_or(b);
    let (mantissa, exp) = match b.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(i) => (
            &b[..i],
            text.get(text.len() - (b.len() - i - 1)..)
                .and_then(|e| e.parse::<i64>().ok())
                .unwrap_or(i64::MAX / 4),
        ),
        None => (b, 0),
    };
    let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    let int_digits = int.len() - int.iter().take_while(|&&c| c == b'0').count();
    let frac_digits = frac.len() - frac.iter().rev().take_while(|&&c| c == b'0').count();
    if int_digits == 0 && frac_digits == 0 {
        return (0, 0);
    }
    let int_digits = int_digits as i64 + exp;
    let frac_digits = frac_digits as i64 - exp;
    (int_digits.max(0), frac_digits.max(0))
}

pub const MAX_INTEGER_DIGITS: i64 = 38;
pub const MAX_FRACTION_DIGITS: i64 = 38;

fn abbreviate(s: &str) -> String {
    if s.len() <= 40 {
        s.to_string()
    } else {
        format!("{}…({} chars)", &s[..32], s.len())
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn keeps_text_exactly() {
        for ok in [
            "0",
            "10",
            "-1.5",
            "12.345678",
            "0.10",
            "1e3",
            "1.5E-2",
            "123456789012345678901234567890.000001",
        ] {
            assert_eq!(Decimal::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_non_numbers() {
        for bad in [
            "", "-", "1.", ".5", "1e", "abc", "1.2.3", "NaN", "Infinity", " 1", "+1",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn range() {
        assert_eq!(Decimal::parse("00012.3400").unwrap().digits(), (2, 2));
        assert_eq!(Decimal::parse("1.5e3").unwrap().digits(), (4, 0));
        assert_eq!(Decimal::parse("-1.50e-2").unwrap().digits(), (0, 3));
        assert_eq!(Decimal::parse("-0.000").unwrap().digits(), (0, 0));
        assert_eq!(Decimal::parse("100").unwrap().digits(), (3, 0));
        assert_eq!(Decimal::parse("0.0100E+1").unwrap().digits(), (1, 1));
        assert_eq!(Decimal::parse("1e-7").unwrap().digits(), (0, 7));
        assert!(Decimal::parse("1e400").unwrap().check_range().is_err());
        assert!(Decimal::parse("1e-400").unwrap().check_range().is_err());
        assert!(
            Decimal::parse(&"9".repeat(39))
                .unwrap()
                .check_range()
                .is_err()
        );
        assert!(
            Decimal::parse("100000000000000000000000.000001")
                .unwrap()
                .check_range()
                .is_ok()
        );
        assert!(
            Decimal::parse("1e99999999999999999999")
                .unwrap()
                .check_range()
                .is_err()
        );
    }

    #[test]
    fn sign() {
        assert!(Decimal::parse("-0.01").unwrap().is_negative());
        assert!(!Decimal::parse("-0.0").unwrap().is_negative());
    }
}
