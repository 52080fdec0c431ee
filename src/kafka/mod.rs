//! Kafka client: tally's own consume path (Metadata, ListOffsets, Fetch with
//! a RecordBatch v2 decoder) and a producer built on rskafka.
