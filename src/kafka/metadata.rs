//! Metadata (api key 3, v1..=8, non-flexible): brokers, topics, partition leaders.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::error::{self, ErrorKind};
use super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 3;
/// v0 treats an empty topic list as "all topics" (v1+ uses null); v9 is flexible.
pub const VERSIONS: (i16, i16) = (1, 8);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// node id -> "host:port"
    pub brokers: BTreeMap<i32, String>,
    pub topics: BTreeMap<String, TopicMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Kafka error code for the topic (e.g. 3 = unknown topic), None if fine.
    pub error: Option<i16>,
    pub partitions: BTreeMap<i32, PartitionMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Node id of the leader; -1 while there is none.
    pub leader: i32,
    pub error: Option<i16>,
}

impl TopicMetadata {
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error.map(error::code_kind)
    }
}

pub fn encode_request(version: i16, topics: &[String]) -> Vec<u8> {
    let mut w = Writer::new();
    if topics.is_empty() {
        w.null_array(); // all topics
    } else {
        w.array_len(topics.len());
        for t in topics {
            w.string(t);
        }
    }
    if version >= 4 {
        w.bool(false); // never auto-create: a typo must not make a topic
    }
    if version >= 8 {
        w.bool(false).bool(false); // authorized operations: not needed
    }
    w.buf
}

/// "host:port", bracketing IPv6 literals so the result parses as an address.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub fn parse_response(version: i16, body: Bytes) -> WireResult<ClusterMetadata> {
    let mut r = Reader::new(body);
    if version >= 3 {
        let _throttle = r.i32("throttle_time_ms")?;
    }
    let mut md = ClusterMetadata::default();
    let n = r.array_len(10, "brokers")?.unwrap_or(0);
    for _ in 0..n {
        let node = r.i32("node_id")?;
        let host = r.string("host")?;
        let port = r.i32("port")?;
        let _rack = r.nullable_string("rack")?;
        md.brokers.insert(node, host_port(&host, port));
    }
    if version >= 2 {
        let _cluster_id = r.nullable_string("cluster_id")?;
    }
    let _controller = r.i32("controller_id")?;
    let n = r.array_len(9, "topics")?.unwrap_or(0);
    for _ in 0..n {
        let code = r.i16("topic error_code")?;
        let name = r.string("topic name")?;
        let _internal = r.bool("is_internal")?;
        let mut topic = TopicMetadata {
            error: (code != 0).then_some(code),
            ..Default::default()
        };
        let np = r.array_len(18, "partitions")?.unwrap_or(0);
        for _ in 0..np {
            let code = r.i16("partition error_code")?;
            let index = r.i32("partition_index")?;
            let leader = r.i32("leader_id")?;
            if version >= 7 {
                let _epoch = r.i32("leader_epoch")?;
            }
            skip_i32_array(&mut r, "replica_nodes")?;
            skip_i32_array(&mut r, "isr_nodes")?;
            if version >= 5 {
                skip_i32_array(&mut r, "offline_replicas")?;
            }
            topic.partitions.insert(
                index,
                PartitionMetadata {
                    leader,
                    error: (code != 0).then_some(code),
                },
            );
        }
        if version >= 8 {
            let _ops = r.i32("topic_authorized_operations")?;
        }
        md.topics.insert(name, topic);
    }
    Ok(md)
}

fn skip_i32_array(r: &mut Reader, what: &str) -> WireResult<()> {
    let n = r.array_len(4, what)?.unwrap_or(0);
    for _ in 0..n {
        r.i32(what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_v8() {
        let mut w = Writer::new();
        w.i32(0); // throttle
        w.array_len(2);
        w.i32(1).string("h1").i32(9092).nullable_string(None);
        w.i32(2).string("::1").i32(9093).nullable_string(Some("r"));
        w.nullable_string(Some("c")).i32(1);
        w.array_len(2);
        w.i16(0).string("t").bool(false).array_len(1);
        w.i16(0)
            .i32(0)
            .i32(2)
            .i32(5)
            .array_len(1)
            .i32(2)
            .array_len(1)
            .i32(2)
            .array_len(0);
        w.i32(0);
        w.i16(3).string("missing").bool(false).array_len(0).i32(0);
        w.i32(0);
        let md = parse_response(8, Bytes::from(w.buf)).unwrap();
        assert_eq!(md.brokers[&1], "h1:9092");
        assert_eq!(md.brokers[&2], "[::1]:9093");
        assert_eq!(md.topics["t"].partitions[&0].leader, 2);
        assert_eq!(md.topics["missing"].error, Some(3));
        assert_eq!(
            md.topics["missing"].error_kind(),
            Some(ErrorKind::Transient)
        );
    }

    #[test]
    fn empty_topic_list_means_all() {
        assert_eq!(encode_request(1, &[]), vec![0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            encode_request(8, &["ab".into()]),
            vec![0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0]
        );
    }
}
