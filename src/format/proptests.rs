//! Property tests for the decoders: no input makes them panic, and the fast
//! Kill Bill path never gives an answer the checked path would not.

use bytes::Bytes;
use proptest::prelude::*;

use super::killbill_fast;
use super::killbill_usage::parse_checked;
use super::{Decoder, DedupeSource, FormatKind};

/// JSON fragments for each field: mostly valid values (so the fast path is
/// exercised, not only its refusals), then wrong types and edge cases.
fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        60 => "[a-z0-9/-]{1,12}".prop_map(|s| format!("{s:?}")),
        1 => Just(r#""""#.to_string()),
        1 => Just(r#"" ""#.to_string()),
        1 => Just(r#""a\"b\\c\u00e9""#.to_string()),
        1 => Just("null".to_string()),
        1 => Just("7".to_string()),
        1 => Just("[]".to_string()),
        1 => Just("{}".to_string()),
    ]
}

fn date_value() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => (2000u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60)
            .prop_map(|(y, m, d, h, s)| format!("\"{y:04}-{m:02}-{d:02}T{h:02}:00:{s:02}\"")),
        // Out-of-range parts: month 13, day 31 of a short month, hour 25, second 60.
        2 => (2000u32..2100, 1u32..14, 1u32..32, 0u32..26, 0u32..61)
            .prop_map(|(y, m, d, h, s)| format!("\"{y:04}-{m:02}-{d:02}T{h:02}:00:{s:02}\"")),
        10 => Just(r#""2026-11-01T10:00:00Z""#.to_string()),
        1 => Just(r#""2026-11-01T12:00:00+02:00""#.to_string()),
        1 => Just(r#""2026-11-01T10:00:00.123Z""#.to_string()),
        1 => Just(r#""2026-11-01""#.to_string()),
        1 => Just(r#""2026-11-01 10:00:00""#.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("1.5".to_string()),
        1 => Just("true".to_string()),
        1 => Just("null".to_string()),
    ]
}

fn amount_value() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => "-?[0-9]{1,10}(\\.[0-9]{1,6})?",
        2 => "-?[0-9]{1,45}(\\.[0-9]{1,45})?([eE][+-]?[0-9]{1,4})?",
        2 => "\"-?[0-9]{1,20}(\\.[0-9]{0,20})?\"",
        1 => Just(r#""NaN""#.to_string()),
        1 => Just("-0".to_string()),
        1 => Just("0.0".to_string()),
        1 => Just("true".to_string()),
        1 => Just("null".to_string()),
        1 => Just("[1]".to_string()),
    ]
}

/// A usage event made of the fragments above, with optional extra and
/// repeated fields, in a shuffled order.
fn usage_event() -> impl Strategy<Value = String> {
    let record = (date_value(), amount_value(), any::<bool>()).prop_map(|(d, a, extra)| {
        let extra = if extra { r#","x":{"y":[1,null]}"# } else { "" };
        format!(r#"{{"recordDate":{d},"amount":{a}{extra}}}"#)
    });
    let unit = (string_value(), prop::collection::vec(record, 1..4))
        .prop_map(|(t, rs)| format!(r#"{{"unitType":{t},"usageRecords":[{}]}}"#, rs.join(",")));
    let fields = (
        string_value(),
        string_value(),
        string_value(),
        prop::collection::vec(unit, 1..4),
        prop::option::weighted(0.2, string_value()),
    )
        .prop_map(|(sub, tid, ten, units, extra)| {
            let mut f = vec![
                format!(r#""subscriptionExternalKey":{sub}"#),
                format!(r#""trackingId":{tid}"#),
                format!(r#""tenantId":{ten}"#),
                format!(r#""unitUsageRecords":[{}]"#, units.join(",")),
            ];
            if let Some(e) = extra {
                // Either an unknown field, or a repeated known one.
                f.push(format!(r#""trackingId":{e}"#));
                f.push(format!(r#""extra":{e}"#));
            }
            f
        });
    (fields, any::<u64>()).prop_map(|(mut f, seed)| {
        // A cheap deterministic shuffle: field order must not matter.
        let n = f.len();
        for i in (1..n).rev() {
            f.swap(i, (seed as usize ^ i.wrapping_mul(2654435761)) % (i + 1));
        }
        format!("{{{}}}", f.join(","))
    })
}

fn agree(input: &[u8]) -> Result<(), TestCaseError> {
    let checked = parse_checked(input);
    // The key-only path accepts exactly what the full fast path accepts.
    prop_assert_eq!(
        killbill_fast::dedupe_key(input),
        killbill_fast::parse(input).map(|e| e.dedupe_key()),
        "{}",
        String::from_utf8_lossy(input)
    );
    if let Some(fast) = killbill_fast::parse(input) {
        prop_assert_eq!(
            Ok(&fast),
            checked.as_ref(),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_path_never_disagrees_on_generated_events(event in usage_event()) {
        agree(event.as_bytes())?;
    }

    #[test]
    fn fast_path_never_disagrees_on_mutated_events(
        event in usage_event(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = event.into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        agree(&bytes)?;
    }

    #[test]
    fn no_bytes_make_a_decoder_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
    ) {
        agree(&bytes)?;
        let value = Bytes::from(bytes);
        let key = key.map(Bytes::from);
        for decoder in [
            Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format),
            Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format).keep_usage(false),
            Decoder::new(FormatKind::Json, DedupeSource::Pointer("/a/0".into())),
            Decoder::new(FormatKind::Json, DedupeSource::KafkaKey),
            Decoder::new(FormatKind::Json, DedupeSource::None).with_max_record_bytes(64),
        ] {
            let _ = decoder.decode(key.as_ref(), Some(&value));
        }
    }
}

/// The agreement properties are only as good as the share of generated
/// events the fast path accepts: guard against a generator that drifts
/// into producing nothing it takes.
#[test]
fn generator_reaches_the_fast_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = usage_event();
    let mut fast = 0;
    for _ in 0..2000 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        if killbill_fast::parse(tree.current().as_bytes()).is_some() {
            fast += 1;
        }
    }
    assert!(
        fast >= 20,
        "fast path took only {fast} of 2000 generated events"
    );
    eprintln!("fast path took {fast} of 2000 generated events");
}
