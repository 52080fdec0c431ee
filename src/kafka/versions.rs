//! ApiVersions (api key 18): what the broker supports, and picking the
//! highest version both sides implement.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use super::error::{self, KafkaError, Location};
use super::wire::Reader;

pub const API_KEY: i16 = 18;
/// v0..=2 share an empty request body; v3 is flexible. A broker that does
/// not know v2 answers in v0 format with UNSUPPORTED_VERSION and its ranges.
pub const REQUEST_VERSION: i16 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersions {
    ranges: BTreeMap<i16, (i16, i16)>,
}

impl ApiVersions {
    pub fn range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.ranges.get(&api_key).copied()
    }

    /// Highest version in both our range and the broker's.
    pub fn pick(
        &self,
        api_key: i16,
        ours: (i16, i16),
        api: &'static str,
        at: &Location,
    ) -> Result<i16, KafkaError> {
        let unsupported = |theirs: String| KafkaError::UnsupportedVersion {
            at: at.clone(),
            api,
            ours_min: ours.0,
            ours_max: ours.1,
            theirs,
        };
        let (min, max) = self
            .range(api_key)
            .ok_or_else(|| unsupported("none".into()))?;
        let v = ours.1.min(max);
        if v < ours.0 || v < min {
            return Err(unsupported(format!("{min}..={max}")));
        }
        Ok(v)
    }

    #[cfg(test)]
    pub fn with(ranges: &[(i16, i16, i16)]) -> Self {
        ApiVersions {
            ranges: ranges.iter().map(|&(k, a, b)| (k, (a, b))).collect(),
        }
    }
}

impl fmt::Display for ApiVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(k, (a, b))| format!("{k}:{a}-{b}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

pub fn parse_response(body: Bytes, addr: &str) -> Result<ApiVersions, KafkaError> {
    let bad = |reason: String| KafkaError::Protocol {
        at: Location::broker(addr),
        reason,
    };
    let mut r = Reader::new(body);
    let code = r.i16("error_code").map_err(|e| bad(e.0))?;
    if code != error::NONE && code != error::UNSUPPORTED_VERSION {
        return Err(KafkaError::Broker {
            at: Location::broker(addr),
            api: "ApiVersions",
            code,
        });
    }
    let n = r
        .array_len(6, "api_keys")
        .map_err(|e| bad(e.0))?
        .unwrap_or(0);
    let mut ranges = BTreeMap::new();
    for _ in 0..n {
        let key = r.i16("api_key").map_err(|e| bad(e.0))?;
        let min = r.i16("min_version").map_err(|e| bad(e.0))?;
        let max = r.i16("max_version").map_err(|e| bad(e.0))?;
        ranges.insert(key, (min, max));
    }
    // throttle_time_ms follows in v1+; not needed.
    Ok(ApiVersions { ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_common_version() {
        let v = ApiVersions::with(&[(1, 0, 16), (3, 0, 5), (2, 6, 9)]);
        let at = Location::broker("b:1");
        assert_eq!(v.pick(1, (4, 11), "Fetch", &at).unwrap(), 11);
        assert_eq!(v.pick(3, (1, 8), "Metadata", &at).unwrap(), 5);
        let e = v.pick(2, (2, 5), "ListOffsets", &at).unwrap_err();
        assert!(
            e.to_string().contains("6..=9") && e.to_string().contains("b:1"),
            "{e}"
        );
        assert!(v.pick(99, (0, 1), "X", &at).is_err());
        let old = ApiVersions::with(&[(1, 0, 3)]);
        assert!(old.pick(1, (4, 11), "Fetch", &at).is_err());
    }

    #[test]
    fn parses_v0_and_v2_bodies() {
        let mut b = vec![0u8, 0, 0, 0, 0, 2];
        b.extend_from_slice(&[0, 1, 0, 0, 0, 13, 0, 3, 0, 0, 0, 12]);
        let v = parse_response(Bytes::from(b.clone()), "b").unwrap();
        assert_eq!(v.range(1), Some((0, 13)));
        b.extend_from_slice(&[0, 0, 0, 0]); // throttle
        assert_eq!(
            parse_response(Bytes::from(b), "b").unwrap().range(3),
            Some((0, 12))
        );
    }
}
