//! Consumer-group membership through Kafka's group coordinator, with our
//! own encodings (non-flexible versions) of the group APIs, the standard
//! "consumer" protocol bytes, and tally's own sticky assignor.

pub mod assignor;
pub mod consumer_protocol;
mod coordinator;
mod find_coordinator;
mod heartbeat;
mod join_group;
mod member;
mod offset_commit;
mod offset_fetch;
mod sync_group;

#[cfg(test)]
mod broker_tests;

pub use assignor::assign;
pub use consumer_protocol::{ASSIGNOR, Assignment, PROTOCOL_TYPE, Subscription, TopicPartitions};
pub use coordinator::{
    Generation, GroupCoordinator, GroupTimeouts, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID, needs_rejoin,
};
pub use member::{Beat, GroupMember, MemberSettings, MemberView};
