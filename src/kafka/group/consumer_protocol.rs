//! The "consumer" protocol's member metadata and assignment bytes (the
//! layout of Kafka's ConsumerProtocolSubscription/Assignment), so standard
//! tools (`kafka-consumer-groups --describe`) can read a tally group.
//!
//! We write version 1 (subscription v1 adds the partitions a member owns,
//! which the sticky assignor needs) and read any version, ignoring fields
//! added after v1.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const PROTOCOL_TYPE: &str = "consumer";
/// Our assignor's name in JoinGroup; every member must offer it.
pub const ASSIGNOR: &str = "tally-sticky";
const VERSION: i16 = 1;

/// topic -> partitions, sorted.
pub type TopicPartitions = BTreeMap<String, Vec<i32>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// What this member owned in the generation it last completed.
    pub owned: TopicPartitions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub partitions: TopicPartitions,
    /// How many members the tally leader assigned to, so every member can
    /// report the group's size. Carried in the assignment's user_data (a
    /// 4-byte count); None when absent.
    pub members: Option<u32>,
}

fn write_topic_partitions(w: &mut Writer, tp: &TopicPartitions) {
    w.array_len(tp.len());
    for (topic, parts) in tp {
        w.string(topic).array_len(parts.len());
        for p in parts {
            w.i32(*p);
        }
    }
}

fn read_topic_partitions(r: &mut Reader, what: &str) -> WireResult<TopicPartitions> {
    let mut out = TopicPartitions::new();
    let n = r.array_len(6, what)?.unwrap_or(0);
    for _ in 0..n {
        let topic = r.string("topic")?;
        let np = r.array_len(4, "partitions")?.unwrap_or(0);
        let entry: &mut Vec<i32> = out.entry(topic).or_default();
        for _ in 0..np {
            entry.push(r.i32("partition")?);
        }
        entry.sort_unstable();
        entry.dedup();
    }
    Ok(out)
}

impl Subscription {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i16(VERSION).array_len(self.topics.len());
        for t in &self.topics {
            w.string(t);
        }
        w.null_bytes(); // user_data
        write_topic_partitions(&mut w, &self.owned);
        w.buf
    }

    pub fn decode(b: Bytes) -> WireResult<Subscription> {
        let mut r = Reader::new(b);
        let version = r.i16("subscription version")?;
        let n = r.array_len(2, "topics")?.unwrap_or(0);
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            topics.push(r.string("topic")?);
        }
        let _user_data = r.nullable_bytes("user_data")?;
        let owned = if version >= 1 {
            read_topic_partitions(&mut r, "owned_partitions")?
        } else {
            TopicPartitions::new()
        };
        Ok(Subscription { topics, owned })
    }
}

impl Assignment {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i16(VERSION);
        write_topic_partitions(&mut w, &self.partitions);
        match self.members {
            Some(n) => w.bytes(&n.to_be_bytes()),
            None => w.null_bytes(),
        };
        w.buf
    }

    /// An empty byte string is what the coordinator hands a member the
    /// leader gave nothing: no partitions.
    pub fn decode(b: Bytes) -> WireResult<Assignment> {
        if b.is_empty() {
            return Ok(Assignment::default());
        }
        let mut r = Reader::new(b);
        let _version = r.i16("assignment version")?;
        let partitions = read_topic_partitions(&mut r, "assigned_partitions")?;
        // Another assignor's user_data (or none) is not a member count.
        let members = match r.nullable_bytes("user_data") {
            Ok(Some(b)) => <[u8; 4]>::try_from(&b[..]).ok().map(u32::from_be_bytes),
            _ => None,
        };
        Ok(Assignment {
            partitions,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_bytes_match_the_consumer_protocol_layout() {
        let s = Subscription {
            topics: vec!["ab".into()],
            owned: [("ab".to_string(), vec![3])].into(),
        };
        let fixture: &[u8] = &[
            0, 1, // version 1
            0, 0, 0, 1, 0, 2, b'a', b'b', // topics ["ab"]
            0xff, 0xff, 0xff, 0xff, // user_data null
            0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0, 1, 0, 0, 0, 3, // owned ab:[3]
        ];
        assert_eq!(s.encode(), fixture);
        assert_eq!(
            Subscription::decode(Bytes::from_static(fixture)).unwrap(),
            s
        );
        // v0 (no owned partitions), as older Java consumers send it.
        let v0: &[u8] = &[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0];
        let d = Subscription::decode(Bytes::from_static(v0)).unwrap();
        assert_eq!(d.topics, vec!["t".to_string()]);
        assert!(d.owned.is_empty());
    }

    #[test]
    fn assignment_bytes_roundtrip_and_tolerate_newer_versions() {
        let a = Assignment {
            partitions: [("t".to_string(), vec![0, 2])].into(),
            members: None,
        };
        let fixture: &[u8] = &[
            0, 1, // version
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // t:[0,2]
            0xff, 0xff, 0xff, 0xff, // user_data null
        ];
        assert_eq!(a.encode(), fixture);
        let mut newer = fixture.to_vec();
        newer[1] = 3;
        newer.extend_from_slice(&[9, 9, 9]);
        assert_eq!(Assignment::decode(Bytes::from(newer)).unwrap(), a);
        assert_eq!(
            Assignment::decode(Bytes::new()).unwrap(),
            Assignment::default()
        );
        assert!(Assignment::decode(Bytes::from_static(&[0, 1, 0, 0, 0, 9])).is_err());
    }

    #[test]
    fn assignment_carries_the_member_count_in_user_data() {
        let a = Assignment {
            partitions: [("t".to_string(), vec![1])].into(),
            members: Some(3),
        };
        let bytes = a.encode();
        assert_eq!(&bytes[bytes.len() - 8..], &[0, 0, 0, 4, 0, 0, 0, 3]);
        assert_eq!(Assignment::decode(Bytes::from(bytes)).unwrap(), a);
    }
}
