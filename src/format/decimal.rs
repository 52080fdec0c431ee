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
            return None;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == frac_start {
                return None;
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
                return None;
            }
        }
        (i == b.len()).then(|| Decimal(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_negative(&self) -> bool {
        self.0.starts_with('-') && self.0.bytes().any(|c| matches!(c, b'1'..=b'9'))
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
    fn sign() {
        assert!(Decimal::parse("-0.01").unwrap().is_negative());
        assert!(!Decimal::parse("-0.0").unwrap().is_negative());
    }
}
