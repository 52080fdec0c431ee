//! Property tests for the decoders: no input makes them panic, and the fast
//! paths (Kill Bill, json) never give an answer the serde_json-based paths
//! would not.

use bytes::Bytes;
use proptest::prelude::*;

use super::killbill_usage::parse_checked;
use super::{Decoder, DedupeSource, FormatKind};
use super::{json, killbill_fast};

/// JSON fragments for each field: mostly valid values (so the fast path is
/// exercised, not only its refusals), then wrong types and edge cases.
fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        60 => "[a-z0-9/-]{1,12}".prop_map(|s| format!("{s:?}")),
        // Any printable text, multi-byte UTF-8 included, as JSON writes it.
        10 => "\\PC{1,20}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
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

/// Any JSON text, mostly valid: nested objects and arrays of strings with
/// and without escapes, numbers of every shape, literals; an `id` member
/// is likely at the top level and under `m`.
fn json_doc() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => "[a-z0-9]{0,8}".prop_map(|s| format!("\"{s}\"")),
        1 => Just(r#""a\"b\\c\u00e9\ud83d\ude00""#.to_string()),
        1 => Just(r#""\ud800""#.to_string()),
        3 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,4})?",
        1 => "-?[0-9]{1,3}[eE][+-]?[0-9]{1,3}",
        1 => Just("true".to_string()),
        1 => Just("null".to_string()),
    ];
    let value = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (prop_oneof![Just("id".to_string()), "[a-z]{1,3}"], inner),
                0..4
            )
            .prop_map(|m| {
                let members: Vec<String> =
                    m.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    });
    let id = prop_oneof![
        6 => "[a-z0-9]{0,8}".prop_map(|s| format!("\"{s}\"")),
        3 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,2})?",
        1 => value.clone(),
    ];
    let members = prop::collection::vec(
        (
            prop_oneof![Just("id".to_string()), Just("m".to_string()), "[a-z]{1,3}"],
            value,
        ),
        0..4,
    );
    (members, id, any::<prop::sample::Index>()).prop_map(|(m, id, at)| {
        let mut members: Vec<String> = m.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        members.insert(at.index(members.len() + 1), format!("\"id\":{id}"));
        format!("{{{}}}", members.join(","))
    })
}

/// The json format's fast paths against serde_json alone.
fn json_agrees(input: &[u8]) -> Result<(), TestCaseError> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Ok(());
    };
    if json::is_fast_object(text) {
        prop_assert!(
            serde_json::from_str::<serde_json::Value>(text).is_ok(),
            "cursor accepted what serde_json refuses: {}",
            text
        );
    }
    for pointer in ["/id", "/m/id"] {
        let dedupe = DedupeSource::Pointer(pointer.into());
        let compiled = json::Pointer::compile(&dedupe);
        let fast = json::parse(input, &dedupe, compiled.as_ref(), None);
        let slow = json::parse(input, &dedupe, None, None);
        prop_assert_eq!(fast, slow, "{} at {}", text, pointer);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn json_fast_paths_never_disagree_on_generated_documents(doc in json_doc()) {
        json_agrees(doc.as_bytes())?;
    }

    #[test]
    fn json_fast_paths_never_disagree_on_mutated_documents(
        doc in json_doc(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = doc.into_bytes();
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
        json_agrees(&bytes)?;
    }
}

/// Guard against a generator that drifts into documents the fast pointer
/// path never takes (the agreement property would then test nothing).
#[test]
fn json_generator_reaches_the_fast_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = json_doc();
    let dedupe = DedupeSource::Pointer("/id".into());
    let Some(pointer) = json::Pointer::compile(&dedupe) else {
        panic!("pointer does not compile");
    };
    let mut fast = 0;
    for _ in 0..2000 {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        if json::fast_pointer_key(&tree.current(), &pointer.tokens).is_some() {
            fast += 1;
        }
    }
    assert!(
        fast >= 100,
        "fast path took only {fast} of 2000 generated documents"
    );
}
