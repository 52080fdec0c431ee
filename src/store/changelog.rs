//! How far each source partition's changelog has been applied to this store
//! (tree `changelog_positions`), and what a restore hands the store. The
//! changelog itself — what it holds, why it is written after the sink's ack
//! and before the local commit — is described in `pipeline::changelog`.
//!
//! Key: the source partition (same encoding as `offsets`). Value: the next
//! changelog offset not yet applied (i64 BE) + the changelog topic it counts
//! in (u16 len + bytes): a position read from one topic means nothing in
//! another, so a renamed `changelog_topic` restores from its beginning.

use super::api::CommitBatch;
use super::codec::{DecodeResult, Reader, Writer};

pub(crate) const TREE_CHANGELOG: &str = "changelog_positions";

/// "Every changelog record of this source partition below `next_offset` in
/// `topic` is applied to this store."
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangelogMark {
    pub topic: String,
    pub next_offset: i64,
}

/// What one restore step applies: the IDs of changelog records read for one
/// source partition, the source offset they prove delivered, and the
/// changelog position reached — in one store transaction.
#[derive(Debug, Clone, Default)]
pub struct ChangelogRestore {
    /// The source partition (its route, topic and partition are those of every batch).
    pub route: String,
    pub topic: String,
    pub partition: i32,
    /// One per changelog record whose IDs are kept (records older than the
    /// store's retention contribute their offsets only).
    pub batches: Vec<CommitBatch>,
    /// When each batch was committed by the member that delivered it (so
    /// retention prunes it by its age, not by when it was restored).
    pub committed_at_ms: Vec<i64>,
    /// The highest committed source offset the records carry: the partition's
    /// offset moves forward to it (never back).
    pub next_offset: Option<i64>,
    /// The changelog position after these records. A restore is the
    /// partition's only writer while it runs, so this is recorded as is
    /// (also backwards: a changelog topic recreated smaller).
    pub mark: ChangelogMark,
}

pub(crate) fn encode_mark(m: &ChangelogMark) -> Vec<u8> {
    let mut w = Writer::with_capacity(10 + m.topic.len());
    w.i64(m.next_offset);
    w.bytes16(m.topic.as_bytes());
    w.buf
}

pub(crate) fn decode_mark(v: &[u8]) -> DecodeResult<ChangelogMark> {
    let mut r = Reader::new(v);
    let next_offset = r.i64("next_offset")?;
    let topic = r.str16("changelog topic")?;
    r.finish("changelog position")?;
    Ok(ChangelogMark { topic, next_offset })
}

/// Where one local commit's keys went: changelog records `first_offset` to
/// below `next_offset`, with no record of another writer between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangelogWrite {
    pub topic: String,
    pub first_offset: i64,
    pub next_offset: i64,
}

/// The position after a local commit that wrote `new`. Only a position a
/// restore established moves (a missing one means "never restored": the
/// next start reads from the beginning), only within the same topic, and
/// only when the commit's records start exactly at it: then every record
/// below the new position is applied here. A gap holds records another
/// writer put there after our restore — a dlq replay on another store, a
/// member cut off after its sink's ack recording its last IDs, the other
/// topic of a multi-topic route — which this store has not applied; the
/// position stays before them, so the next restore reads them.
pub(crate) fn after_commit(
    old: Option<ChangelogMark>,
    new: &ChangelogWrite,
) -> Option<ChangelogMark> {
    match old {
        Some(old)
            if old.topic == new.topic
                && old.next_offset == new.first_offset
                && new.next_offset > old.next_offset =>
        {
            Some(ChangelogMark {
                topic: new.topic.clone(),
                next_offset: new.next_offset,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(topic: &str, next_offset: i64) -> ChangelogMark {
        ChangelogMark {
            topic: topic.into(),
            next_offset,
        }
    }

    #[test]
    fn mark_round_trips_and_rejects_garbage() {
        let m = mark("tally-changelog.usage", 1 << 40);
        assert_eq!(decode_mark(&encode_mark(&m)).unwrap(), m);
        let v = encode_mark(&m);
        for cut in 0..v.len() {
            assert!(decode_mark(&v[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = v.clone();
        long.push(0);
        assert!(decode_mark(&long).is_err());
    }

    fn write(topic: &str, first_offset: i64, next_offset: i64) -> ChangelogWrite {
        ChangelogWrite {
            topic: topic.into(),
            first_offset,
            next_offset,
        }
    }

    #[test]
    fn a_commit_moves_only_a_restored_position_forward_in_its_topic() {
        assert_eq!(after_commit(None, &write("c", 3, 5)), None);
        assert_eq!(
            after_commit(Some(mark("c", 3)), &write("c", 3, 5)),
            Some(mark("c", 5))
        );
        assert_eq!(after_commit(Some(mark("c", 7)), &write("c", 3, 5)), None);
        assert_eq!(after_commit(Some(mark("old", 3)), &write("c", 3, 5)), None);
    }

    #[test]
    fn a_commit_does_not_move_the_position_over_records_another_writer_put_first() {
        // Offsets 3 and 4 are someone else's: the next restore must read them.
        assert_eq!(after_commit(Some(mark("c", 3)), &write("c", 5, 6)), None);
        // Our own next record continues from where we stopped.
        assert_eq!(
            after_commit(Some(mark("c", 6)), &write("c", 6, 8)),
            Some(mark("c", 8))
        );
    }
}
