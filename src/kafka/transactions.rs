//! Read-committed filtering of one fetch response, following the Java
//! consumer: the broker lists aborted transactions (producer id + first
//! offset) overlapping the fetched range; a transactional data batch is
//! dropped while its producer has an aborted transaction open at that point,
//! and the producer's ABORT marker closes it.
//!
//! `fetch::assemble` combines this with the markers present in the response,
//! because some brokers (Tansu) write markers but send an empty list.

use std::collections::{HashSet, VecDeque};

use super::record_batch::{BatchHeader, ControlType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    SkipControl,
    SkipAborted,
}

pub struct AbortedFilter {
    /// Not yet reached, sorted by first offset.
    pending: VecDeque<AbortedTxn>,
    /// Producers whose aborted transaction is open at the current position.
    aborted: HashSet<i64>,
}

impl AbortedFilter {
    pub fn new(mut txns: Vec<AbortedTxn>) -> Self {
        txns.sort_by_key(|t| t.first_offset);
        AbortedFilter {
            pending: txns.into(),
            aborted: HashSet::new(),
        }
    }

    /// Batches must be offered in offset order. `control` is the marker type
    /// for control batches (None for data batches).
    pub fn classify(&mut self, h: &BatchHeader, control: Option<ControlType>) -> Verdict {
        if h.has_producer_id() {
            while let Some(t) = self.pending.front() {
                if t.first_offset > h.last_offset() {
                    break;
                }
                self.aborted.insert(t.producer_id);
                self.pending.pop_front();
            }
            if h.is_control() {
                if control == Some(ControlType::Abort) {
                    self.aborted.remove(&h.producer_id);
                }
            } else if h.is_transactional() && self.aborted.contains(&h.producer_id) {
                return Verdict::SkipAborted;
            }
        }
        if h.is_control() {
            Verdict::SkipControl
        } else {
            Verdict::Deliver
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record_batch::Batches;
    use super::super::test_encoder::*;
    use super::*;
    use bytes::Bytes;

    /// Runs the filter over encoded batches; returns (delivered base offsets, verdicts).
    fn run(batches: Vec<Vec<u8>>, aborted: Vec<AbortedTxn>) -> Vec<(i64, Verdict)> {
        let mut f = AbortedFilter::new(aborted);
        Batches::new(Bytes::from(batches.concat()))
            .map(|b| {
                let b = b.unwrap();
                let ctl = b.header.is_control().then(|| b.control_type().unwrap());
                (b.header.base_offset, f.classify(&b.header, ctl))
            })
            .collect()
    }

    fn d(off: i64) -> Vec<Rec> {
        vec![Rec::kv(None, Some(format!("{off}").as_bytes()))]
    }

    #[test]
    fn interleaved_producers_commit_and_abort() {
        use Verdict::*;
        // P1 (id 1) aborts, P2 (id 2) commits, interleaved; a plain batch in between;
        // P1 then runs a second, committed transaction.
        let batches = vec![
            BatchSpec::data(0, d(0)).transactional(1).encode(),
            BatchSpec::data(1, d(1)).transactional(2).encode(),
            BatchSpec::data(2, d(2)).encode(),
            BatchSpec::data(3, d(3)).transactional(1).encode(),
            BatchSpec::control(4, 1, Marker::Abort).encode(),
            BatchSpec::data(5, d(5)).transactional(2).encode(),
            BatchSpec::control(6, 2, Marker::Commit).encode(),
            BatchSpec::data(7, d(7)).transactional(1).encode(),
            BatchSpec::control(8, 1, Marker::Commit).encode(),
            BatchSpec::data(9, d(9)).producer(1).encode(), // idempotent, not transactional
        ];
        let got = run(
            batches,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0,
            }],
        );
        assert_eq!(
            got,
            vec![
                (0, SkipAborted),
                (1, Deliver),
                (2, Deliver),
                (3, SkipAborted),
                (4, SkipControl),
                (5, Deliver),
                (6, SkipControl),
                (7, Deliver),
                (8, SkipControl),
                (9, Deliver),
            ]
        );
    }

    #[test]
    fn same_producer_aborts_twice_unsorted_list() {
        use Verdict::*;
        let batches = vec![
            BatchSpec::data(10, d(10)).transactional(5).encode(),
            BatchSpec::control(11, 5, Marker::Abort).encode(),
            BatchSpec::data(12, d(12)).transactional(5).encode(),
            BatchSpec::control(13, 5, Marker::Commit).encode(),
            BatchSpec::data(14, d(14)).transactional(5).encode(),
            BatchSpec::control(15, 5, Marker::Abort).encode(),
        ];
        let got = run(
            batches,
            vec![
                AbortedTxn {
                    producer_id: 5,
                    first_offset: 14,
                },
                AbortedTxn {
                    producer_id: 5,
                    first_offset: 10,
                },
            ],
        );
        let v: Vec<Verdict> = got.into_iter().map(|x| x.1).collect();
        assert_eq!(
            v,
            vec![
                SkipAborted,
                SkipControl,
                Deliver,
                SkipControl,
                SkipAborted,
                SkipControl
            ]
        );
    }

    #[test]
    fn no_aborted_list_delivers_all_data() {
        let batches = vec![
            BatchSpec::data(0, d(0)).transactional(3).encode(),
            BatchSpec::control(1, 3, Marker::Commit).encode(),
        ];
        let got = run(batches, vec![]);
        assert_eq!(got, vec![(0, Verdict::Deliver), (1, Verdict::SkipControl)]);
    }
}
