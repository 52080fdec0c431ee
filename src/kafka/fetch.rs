//! Fetch (api key 1, v4..=11, non-flexible): request encoding, response
//! parsing, and turning one partition's response into committed records.

use std::collections::HashMap;

use bytes::Bytes;

use super::record_batch::{
    BatchHeader, Batches, ConsumedRecord, ControlType, DecodeError, TruncatedTail,
};
use super::transactions::{AbortedFilter, AbortedTxn, Verdict};
use super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 1;
/// v4 brings isolation level and aborted transactions; v12 goes flexible.
pub const MIN_VERSION: i16 = 4;
pub const MAX_VERSION: i16 = 11;

const READ_COMMITTED: i8 = 1;

/// What one fetch produced for the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Data records of committed or non-transactional batches, in offset
    /// order, all >= the requested offset.
    pub records: Vec<ConsumedRecord>,
    /// Where to fetch next: past the last complete batch seen (control and
    /// aborted batches included); the requested offset if none was complete.
    pub next_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Bytes of record data the records keep alive: the response's record
    /// set, plus the decompressed data of compressed batches.
    pub bytes: usize,
    pub control_records_skipped: u64,
    pub aborted_records_skipped: u64,
}

pub struct FetchParams<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: i32,
    pub max_wait_ms: i32,
}

pub fn encode_request(version: i16, p: &FetchParams<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(-1) // replica id: a consumer
        .i32(p.max_wait_ms)
        .i32(1) // min bytes: answer as soon as anything is there
        .i32(p.max_bytes)
        .i8(READ_COMMITTED);
    if version >= 7 {
        w.i32(0).i32(-1); // no fetch session: full fetch every time
    }
    w.array_len(1).string(p.topic).array_len(1).i32(p.partition);
    if version >= 9 {
        w.i32(-1); // current leader epoch unknown
    }
    w.i64(p.offset);
    if version >= 5 {
        w.i64(-1); // log start offset: followers only
    }
    w.i32(p.max_bytes);
    if version >= 7 {
        w.array_len(0); // forgotten topics
    }
    if version >= 11 {
        w.string(""); // rack id
    }
    w.buf
}

/// One partition's part of a fetch response.
#[derive(Debug, Clone, Default)]
pub struct PartitionData {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub aborted: Vec<AbortedTxn>,
    pub records: Bytes,
}

/// Parsed response: the request-level error code (v7+) and our partition, if present.
pub struct Response {
    pub error_code: i16,
    pub partition: Option<PartitionData>,
}

pub fn parse_response(
    version: i16,
    body: Bytes,
    topic: &str,
    partition: i32,
) -> WireResult<Response> {
    let mut r = Reader::new(body);
    let _throttle = r.i32("throttle_time_ms")?;
    let mut error_code = 0;
    if version >= 7 {
        error_code = r.i16("error_code")?;
        let _session = r.i32("session_id")?;
    }
    let mut found = None;
    let n_topics = r.array_len(4, "responses")?.unwrap_or(0);
    for _ in 0..n_topics {
        let name = r.string("topic")?;
        let n_parts = r.array_len(4, "partitions")?.unwrap_or(0);
        for _ in 0..n_parts {
            let index = r.i32("partition_index")?;
            let mut p = PartitionData {
                error_code: r.i16("error_code")?,
                high_watermark: r.i64("high_watermark")?,
                last_stable_offset: r.i64("last_stable_offset")?,
                ..Default::default()
            };
            p.log_start_offset = if version >= 5 {
                r.i64("log_start_offset")?
            } else {
                -1
            };
            if let Some(n) = r.array_len(16, "aborted_transactions")? {
                p.aborted.reserve(n);
                for _ in 0..n {
                    let producer_id = r.i64("producer_id")?;
                    let first_offset = r.i64("first_offset")?;
                    p.aborted.push(AbortedTxn {
                        producer_id,
                        first_offset,
                    });
                }
            }
            if version >= 11 {
                let _preferred_read_replica = r.i32("preferred_read_replica")?;
            }
            p.records = r.nullable_bytes("records")?.unwrap_or_default();
            if name == topic && index == partition {
                found = Some(p);
            }
        }
    }
    Ok(Response {
        error_code,
        partition: found,
    })
}

/// How to decide a transactional data batch whose marker is not in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecided {
    /// Stop before it: wait for (or fetch further to reach) its marker.
    Stop,
    /// Trust the broker's aborted-transactions list (Java consumer semantics).
    TrustBroker,
}

/// What `assemble` saw beyond the records it returns.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub truncated: Option<TruncatedTail>,
    /// Base offset of the transactional batch we stopped at, undecided.
    pub undecided_at: Option<i64>,
    /// One past the last complete batch in the response.
    pub end_offset: i64,
}

/// Decodes and filters one partition's records.
///
/// A transactional data batch is decided by the next COMMIT/ABORT marker of
/// its producer in the same response; this works on every broker (Tansu
/// writes markers but sends no aborted-transactions list). Without a
/// marker, the broker's aborted list can only say "aborted"; otherwise
/// `undecided` chooses. A decode error after some complete batches returns
/// those (the next fetch starts at the bad batch and reports its offset).
pub fn assemble(
    offset: i64,
    data: PartitionData,
    undecided: Undecided,
) -> Result<(Fetched, Seen), DecodeError> {
    let mut out = Fetched {
        next_offset: offset,
        bytes: data.records.len(),
        high_watermark: data.high_watermark,
        last_stable_offset: data.last_stable_offset,
        ..Default::default()
    };
    let mut seen = Seen {
        end_offset: offset,
        ..Default::default()
    };

    // Frame everything first: deciding a batch needs the batches after it.
    let mut batches = Vec::new();
    let mut controls = Vec::new();
    let mut failure = None;
    let mut framing = Batches::new(data.records);
    for item in &mut framing {
        let framed = item.and_then(|b| {
            let ctl = if b.header.is_control() {
                Some(b.control_type()?)
            } else {
                None
            };
            Ok((b, ctl))
        });
        match framed {
            Ok((b, ctl)) => {
                seen.end_offset = seen
                    .end_offset
                    .max(b.header.last_offset().saturating_add(1));
                batches.push(b);
                controls.push(ctl);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    seen.truncated = framing.truncated;

    // Backwards: the next transaction marker of each producer after each batch.
    let mut fate: Vec<Option<ControlType>> = vec![None; batches.len()];
    let mut next_marker: HashMap<i64, ControlType> = HashMap::new();
    for i in (0..batches.len()).rev() {
        let h = &batches[i].header;
        match controls[i] {
            Some(t @ (ControlType::Abort | ControlType::Commit)) => {
                next_marker.insert(h.producer_id, t);
            }
            Some(ControlType::Other(_)) => {}
            None if h.is_transactional() => fate[i] = next_marker.get(&h.producer_id).copied(),
            None => {}
        }
    }

    // Sized once: most batches are delivered whole.
    out.records
        .reserve(batches.iter().map(|b| b.capacity_hint()).sum());
    let mut filter = AbortedFilter::new(data.aborted);
    for (i, batch) in batches.iter().enumerate() {
        let h = &batch.header;
        // Batches before `offset` still go through the filter: their
        // markers change which producers are aborted later on.
        let broker_verdict = filter.classify(h, controls[i]);
        let verdict = match (broker_verdict, fate[i]) {
            (Verdict::SkipControl, _) => Verdict::SkipControl,
            (_, Some(ControlType::Abort)) => Verdict::SkipAborted,
            (_, Some(_)) => Verdict::Deliver,
            (Verdict::SkipAborted, None) => Verdict::SkipAborted,
            (Verdict::Deliver, None)
                if !h.is_transactional() || undecided == Undecided::TrustBroker =>
            {
                Verdict::Deliver
            }
            (Verdict::Deliver, None) => {
                if h.last_offset() >= offset {
                    seen.undecided_at = Some(h.base_offset);
                    return Ok((out, seen));
                }
                Verdict::Deliver // wholly before `offset`: nothing of it is returned anyway
            }
        };
        match verdict {
            Verdict::Deliver => {
                let before = out.records.len();
                if let Err(e) = batch.records_into(offset, &mut out.records) {
                    return fail(out, seen, e, offset);
                }
                if batch.is_compressed() {
                    out.bytes += out.records[before..]
                        .iter()
                        .map(ConsumedRecord::data_len)
                        .sum::<usize>();
                }
            }
            Verdict::SkipControl => out.control_records_skipped += count_from(h, offset),
            Verdict::SkipAborted => out.aborted_records_skipped += count_from(h, offset),
        }
        out.next_offset = out.next_offset.max(h.last_offset().saturating_add(1));
    }
    match failure {
        Some(e) => fail(out, seen, e, offset),
        None => Ok((out, seen)),
    }
}

fn fail(
    out: Fetched,
    seen: Seen,
    e: DecodeError,
    offset: i64,
) -> Result<(Fetched, Seen), DecodeError> {
    if out.next_offset > offset {
        tracing::debug!(offset = ?e.offset, reason = %e.reason, "stopping fetch at undecodable batch");
        Ok((
            out,
            Seen {
                truncated: None,
                ..seen
            },
        ))
    } else {
        Err(e)
    }
}

/// Records of a skipped batch at or after `offset`.
fn count_from(h: &BatchHeader, offset: i64) -> u64 {
    let n = i64::from(h.record_count);
    let n = if h.base_offset >= offset {
        n
    } else {
        n.min(h.last_offset() - offset + 1)
    };
    n.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::super::compression::Codec;
    use super::super::test_encoder::*;
    use super::*;

    fn vals(f: &Fetched) -> Vec<(i64, String)> {
        f.records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"<null>")).into_owned(),
                )
            })
            .collect()
    }

    fn data(batches: Vec<Vec<u8>>, aborted: Vec<AbortedTxn>) -> PartitionData {
        PartitionData {
            high_watermark: 100,
            last_stable_offset: 100,
            aborted,
            records: Bytes::from(batches.concat()),
            ..Default::default()
        }
    }

    fn recs(base: i64, n: i64) -> Vec<Rec> {
        (base..base + n)
            .map(|o| Rec::kv(None, Some(format!("v{o}").as_bytes())))
            .collect()
    }

    #[test]
    fn committed_only_and_next_offset_covers_skipped() {
        let batches = vec![
            BatchSpec::data(0, recs(0, 2)).encode(),
            BatchSpec::data(2, recs(2, 3))
                .transactional(7)
                .codec(Codec::Gzip)
                .encode(),
            BatchSpec::data(5, recs(5, 2)).transactional(8).encode(),
            BatchSpec::control(7, 7, Marker::Abort).encode(),
            BatchSpec::control(8, 8, Marker::Commit).encode(),
        ];
        let (f, tail) = assemble(
            0,
            data(
                batches,
                vec![AbortedTxn {
                    producer_id: 7,
                    first_offset: 2,
                }],
            ),
            Undecided::Stop,
        )
        .unwrap();
        assert!(tail.truncated.is_none() && tail.undecided_at.is_none());
        assert_eq!(
            vals(&f),
            vec![
                (0, "v0".into()),
                (1, "v1".into()),
                (5, "v5".into()),
                (6, "v6".into())
            ]
        );
        assert_eq!(f.aborted_records_skipped, 3);
        assert_eq!(f.control_records_skipped, 2);
        assert_eq!(f.next_offset, 9);
        assert_eq!(f.high_watermark, 100);
    }

    #[test]
    fn bytes_count_the_response_and_decompressed_batches() {
        let batches = vec![
            BatchSpec::data(0, recs(0, 2)).encode(),
            BatchSpec::data(2, recs(2, 2)).codec(Codec::Gzip).encode(),
        ];
        let response = batches.iter().map(Vec::len).sum::<usize>();
        let (f, _) = assemble(0, data(batches, vec![]), Undecided::Stop).unwrap();
        let decompressed: usize = f.records[2..].iter().map(ConsumedRecord::data_len).sum();
        assert!(decompressed > 0);
        assert_eq!(f.bytes, response + decompressed);
    }

    #[test]
    fn requested_offset_inside_a_batch() {
        let batches = vec![
            BatchSpec::data(10, recs(10, 5)).encode(),
            BatchSpec::data(15, recs(15, 1)).encode(),
        ];
        let (f, _) = assemble(13, data(batches, vec![]), Undecided::Stop).unwrap();
        assert_eq!(
            f.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![13, 14, 15]
        );
        assert_eq!(f.next_offset, 16);
    }

    #[test]
    fn marker_before_requested_offset_still_closes_the_abort() {
        // Producer 3 aborted at 0..=1; fetching from 2 must not drop its later committed batch.
        let batches = vec![
            BatchSpec::data(0, recs(0, 1)).transactional(3).encode(),
            BatchSpec::control(1, 3, Marker::Abort).encode(),
            BatchSpec::data(2, recs(2, 1)).transactional(3).encode(),
            BatchSpec::control(3, 3, Marker::Commit).encode(),
        ];
        let (f, _) = assemble(
            2,
            data(
                batches,
                vec![AbortedTxn {
                    producer_id: 3,
                    first_offset: 0,
                }],
            ),
            Undecided::Stop,
        )
        .unwrap();
        assert_eq!(vals(&f), vec![(2, "v2".into())]);
        assert_eq!(
            f.aborted_records_skipped, 0,
            "skipped records below the requested offset are not counted"
        );
        assert_eq!(f.control_records_skipped, 1);
        assert_eq!(f.next_offset, 4);
    }

    #[test]
    fn partial_trailing_batch_does_not_advance() {
        let a = BatchSpec::data(0, recs(0, 2)).encode();
        let b = BatchSpec::data(2, recs(2, 2)).encode();
        let mut blob = a.clone();
        blob.extend_from_slice(&b[..b.len() / 2]);
        let (f, tail) = assemble(0, data(vec![blob], vec![]), Undecided::Stop).unwrap();
        assert_eq!(f.next_offset, 2);
        assert_eq!(f.records.len(), 2);
        assert_eq!(tail.truncated.unwrap().declared_size, Some(b.len()));
        // Only a partial batch: nothing complete, offset unchanged.
        let (f, tail) = assemble(
            2,
            data(vec![b[..b.len() / 2].to_vec()], vec![]),
            Undecided::Stop,
        )
        .unwrap();
        assert_eq!((f.next_offset, f.records.len()), (2, 0));
        assert!(tail.truncated.is_some());
    }

    #[test]
    fn corrupt_batch_after_good_ones_returns_the_good_ones() {
        let a = BatchSpec::data(0, recs(0, 2)).encode();
        let mut b = BatchSpec::data(2, recs(2, 2)).encode();
        let n = b.len();
        b[n - 1] ^= 0xff;
        let (f, _) = assemble(0, data(vec![a, b.clone()], vec![]), Undecided::Stop).unwrap();
        assert_eq!((f.next_offset, f.records.len()), (2, 2));
        let err = assemble(2, data(vec![b], vec![]), Undecided::Stop).unwrap_err();
        assert_eq!(err.offset, Some(2));
    }

    #[test]
    fn markers_decide_without_an_aborted_list() {
        // Tansu: markers in the log, empty aborted_transactions.
        let batches = vec![
            BatchSpec::data(0, recs(0, 2)).transactional(1).encode(),
            BatchSpec::data(2, recs(2, 2)).transactional(2).encode(),
            BatchSpec::data(4, recs(4, 1)).encode(),
            BatchSpec::control(5, 1, Marker::Abort).encode(),
            BatchSpec::control(6, 2, Marker::Commit).encode(),
        ];
        let (f, seen) = assemble(0, data(batches, vec![]), Undecided::Stop).unwrap();
        assert_eq!(
            vals(&f),
            vec![(2, "v2".into()), (3, "v3".into()), (4, "v4".into())]
        );
        assert_eq!(
            (
                f.aborted_records_skipped,
                f.control_records_skipped,
                f.next_offset
            ),
            (2, 2, 7)
        );
        assert_eq!(seen.undecided_at, None);
    }

    #[test]
    fn undecided_transaction_stops_delivery_before_it() {
        let batches = vec![
            BatchSpec::data(0, recs(0, 2)).encode(),
            BatchSpec::data(2, recs(2, 2)).transactional(9).encode(),
            BatchSpec::data(4, recs(4, 1)).encode(),
        ];
        let (f, seen) = assemble(0, data(batches.clone(), vec![]), Undecided::Stop).unwrap();
        assert_eq!(vals(&f), vec![(0, "v0".into()), (1, "v1".into())]);
        assert_eq!(
            (f.next_offset, seen.undecided_at, seen.end_offset),
            (2, Some(2), 5)
        );
        // From the undecided batch itself: nothing, offset unchanged.
        let (f, seen) = assemble(2, data(batches[1..].to_vec(), vec![]), Undecided::Stop).unwrap();
        assert_eq!(
            (f.records.len(), f.next_offset, seen.undecided_at),
            (0, 2, Some(2))
        );
        // The broker's list is trusted only when asked to.
        let (f, _) = assemble(
            2,
            data(batches[1..].to_vec(), vec![]),
            Undecided::TrustBroker,
        )
        .unwrap();
        assert_eq!((f.records.len(), f.next_offset), (3, 5));
        let aborted = vec![AbortedTxn {
            producer_id: 9,
            first_offset: 2,
        }];
        let (f, seen) = assemble(2, data(batches[1..].to_vec(), aborted), Undecided::Stop).unwrap();
        assert_eq!(
            (f.records.len(), f.aborted_records_skipped, f.next_offset),
            (1, 2, 5)
        );
        assert_eq!(
            seen.undecided_at, None,
            "the broker's abort list decides without a marker"
        );
    }

    #[test]
    fn request_layout_v4_and_v11() {
        let p = FetchParams {
            topic: "t",
            partition: 3,
            offset: 42,
            max_bytes: 1000,
            max_wait_ms: 500,
        };
        let v4 = encode_request(4, &p);
        // replica, wait, min, max, isolation, [topic "t", [partition, offset, partition max]]
        assert_eq!(v4.len(), 4 + 4 + 4 + 4 + 1 + 4 + 2 + 1 + 4 + 4 + 8 + 4);
        assert_eq!(v4[16], 1, "read_committed");
        let v11 = encode_request(11, &p);
        // + session id/epoch, leader epoch, log start, forgotten topics, rack id
        assert_eq!(v11.len(), v4.len() + 8 + 4 + 8 + 4 + 2);
    }

    #[test]
    fn parse_response_v11() {
        let mut w = Writer::new();
        w.i32(0).i16(0).i32(0); // throttle, error, session
        w.array_len(1).string("t").array_len(2);
        for p in [0, 3] {
            w.i32(p).i16(0).i64(10).i64(9).i64(0);
            w.array_len(1).i64(77).i64(5);
            w.i32(-1);
            w.i32(3).raw(b"abc");
        }
        let r = parse_response(11, Bytes::from(w.buf), "t", 3).unwrap();
        let p = r.partition.unwrap();
        assert_eq!((p.high_watermark, p.last_stable_offset), (10, 9));
        assert_eq!(
            p.aborted,
            vec![AbortedTxn {
                producer_id: 77,
                first_offset: 5
            }]
        );
        assert_eq!(&p.records[..], b"abc");
    }
}
