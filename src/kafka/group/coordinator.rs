//! A connection to one group's coordinator, found with FindCoordinator,
//! carrying the membership and offset requests of that group.
//!
//! Like every connection here it carries one request at a time and is
//! dropped on any transport error; NOT_COORDINATOR and
//! COORDINATOR_NOT_AVAILABLE also drop it so the next call finds the
//! coordinator again. Group error codes are returned as
//! `KafkaError::Broker` for the membership task to act on (see
//! [`needs_rejoin`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::super::client::ClusterClient;
use super::super::conn::BrokerConn;
use super::super::error::{self, KafkaError, Location};
use super::consumer_protocol::{ASSIGNOR, Assignment, PROTOCOL_TYPE, Subscription};
use super::{find_coordinator, heartbeat, join_group, offset_commit, offset_fetch, sync_group};

pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const MEMBER_ID_REQUIRED: i16 = 79;

/// Codes that mean "this membership or generation is over: join again".
pub fn needs_rejoin(code: i16) -> bool {
    matches!(
        code,
        ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID | REBALANCE_IN_PROGRESS | MEMBER_ID_REQUIRED
    )
}

/// Timeouts of one membership, as configured.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimeouts {
    pub session: Duration,
    pub rebalance: Duration,
}

/// What JoinGroup gave us; `members` is filled for the leader only.
#[derive(Debug, Clone)]
pub struct Generation {
    pub generation_id: i32,
    pub member_id: String,
    pub leader: String,
    pub members: Vec<(String, Subscription)>,
}

impl Generation {
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

pub struct GroupCoordinator {
    client: ClusterClient,
    group_id: String,
    conn: Option<BrokerConn>,
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

impl GroupCoordinator {
    pub fn new(client: ClusterClient, group_id: &str) -> Self {
        GroupCoordinator {
            client,
            group_id: group_id.to_string(),
            conn: None,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Address of the coordinator we are connected to, if connected.
    pub fn coordinator(&self) -> Option<&str> {
        self.conn.as_ref().map(BrokerConn::addr)
    }

    /// Takes fields, not `&self`: `&Self` is not `Send` (the connection is
    /// not `Sync`), and the membership task runs on a spawned task.
    async fn find(client: &ClusterClient, group_id: &str) -> Result<BrokerConn, KafkaError> {
        let mut any = client.connect_any().await?;
        let at = Location::broker(any.addr());
        let version = any.versions.pick(
            find_coordinator::API_KEY,
            find_coordinator::VERSIONS,
            "FindCoordinator",
            &at,
        )?;
        let body = find_coordinator::encode_request(group_id);
        let resp = any
            .request(
                find_coordinator::API_KEY,
                version,
                &body,
                "FindCoordinator",
                client.config().request_timeout,
            )
            .await?;
        let found = find_coordinator::parse_response(resp).map_err(|e| KafkaError::Protocol {
            at: at.clone(),
            reason: format!("FindCoordinator: {}", e.0),
        })?;
        if found.error_code != error::NONE {
            return Err(KafkaError::Broker {
                at,
                api: "FindCoordinator",
                code: found.error_code,
            });
        }
        if found.addr == any.addr() {
            return Ok(any);
        }
        client.open(&found.addr).await
    }

    /// One request to the coordinator (finding it first if needed).
    async fn call(
        &mut self,
        api_key: i16,
        ours: (i16, i16),
        api: &'static str,
        timeout: Duration,
        body: impl FnOnce(i16) -> Vec<u8>,
    ) -> Result<(Location, i16, Bytes), KafkaError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Self::find(&self.client, &self.group_id).await?,
        };
        let at = Location::broker(conn.addr());
        let version = conn.versions.pick(api_key, ours, api, &at)?;
        let resp = conn
            .request(api_key, version, &body(version), api, timeout)
            .await?;
        self.conn = Some(conn);
        Ok((at, version, resp))
    }

    /// Turns a response error code into a result, forgetting the
    /// coordinator when it moved.
    fn check(&mut self, at: Location, api: &'static str, code: i16) -> Result<(), KafkaError> {
        if code == error::NONE {
            return Ok(());
        }
        if matches!(code, COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR) {
            self.conn = None;
        }
        Err(KafkaError::Broker { at, api, code })
    }

    fn malformed(at: Location, api: &str, e: super::super::wire::WireError) -> KafkaError {
        KafkaError::Protocol {
            at,
            reason: format!("{api}: {}", e.0),
        }
    }

    /// JoinGroup with our one protocol. `member_id` is empty on the first
    /// join; a v4+ coordinator answering MEMBER_ID_REQUIRED is joined again
    /// at once with the id it assigned.
    pub async fn join(
        &mut self,
        member_id: &str,
        timeouts: GroupTimeouts,
        subscription: &Subscription,
    ) -> Result<Generation, KafkaError> {
        let protocols = [(ASSIGNOR, subscription.encode())];
        let mut member_id = member_id.to_string();
        // The coordinator holds JoinGroup until the rebalance completes.
        let timeout = timeouts.rebalance + self.client.config().request_timeout;
        for _ in 0..2 {
            let group_id = self.group_id.clone();
            let req = join_group::JoinRequest {
                group_id: &group_id,
                session_timeout_ms: ms(timeouts.session),
                rebalance_timeout_ms: ms(timeouts.rebalance),
                member_id: &member_id,
                protocol_type: PROTOCOL_TYPE,
                protocols: &protocols,
            };
            let (at, version, resp) = self
                .call(
                    join_group::API_KEY,
                    join_group::VERSIONS,
                    "JoinGroup",
                    timeout,
                    |v| join_group::encode_request(v, &req),
                )
                .await?;
            let joined = join_group::parse_response(version, resp)
                .map_err(|e| Self::malformed(at.clone(), "JoinGroup", e))?;
            if joined.error_code == MEMBER_ID_REQUIRED && !joined.member_id.is_empty() {
                member_id = joined.member_id;
                continue;
            }
            self.check(at.clone(), "JoinGroup", joined.error_code)?;
            let mut members = Vec::with_capacity(joined.members.len());
            for m in joined.members {
                let sub = Subscription::decode(m.metadata)
                    .map_err(|e| Self::malformed(at.clone(), "JoinGroup member metadata", e))?;
                members.push((m.member_id, sub));
            }
            return Ok(Generation {
                generation_id: joined.generation_id,
                member_id: joined.member_id,
                leader: joined.leader,
                members,
            });
        }
        Err(KafkaError::Broker {
            at: Location::broker(self.coordinator().unwrap_or("coordinator")),
            api: "JoinGroup",
            code: MEMBER_ID_REQUIRED,
        })
    }

    /// SyncGroup: the leader passes everyone's assignment, followers none.
    pub async fn sync(
        &mut self,
        generation: &Generation,
        assignments: &BTreeMap<String, Assignment>,
        rebalance_timeout: Duration,
    ) -> Result<Assignment, KafkaError> {
        let encoded: Vec<(String, Vec<u8>)> = assignments
            .iter()
            .map(|(m, a)| (m.clone(), a.encode()))
            .collect();
        let group_id = self.group_id.clone();
        let req = sync_group::SyncRequest {
            group_id: &group_id,
            generation_id: generation.generation_id,
            member_id: &generation.member_id,
            assignments: &encoded,
        };
        let timeout = rebalance_timeout + self.client.config().request_timeout;
        let (at, version, resp) = self
            .call(
                sync_group::API_KEY,
                sync_group::VERSIONS,
                "SyncGroup",
                timeout,
                |v| sync_group::encode_request(v, &req),
            )
            .await?;
        let (code, bytes) = sync_group::parse_response(version, resp)
            .map_err(|e| Self::malformed(at.clone(), "SyncGroup", e))?;
        self.check(at.clone(), "SyncGroup", code)?;
        Assignment::decode(bytes).map_err(|e| Self::malformed(at, "SyncGroup assignment", e))
    }

    pub async fn heartbeat(
        &mut self,
        generation_id: i32,
        member_id: &str,
    ) -> Result<(), KafkaError> {
        let group_id = self.group_id.clone();
        let timeout = self.client.config().request_timeout;
        let (at, _, resp) = self
            .call(
                heartbeat::HEARTBEAT_KEY,
                heartbeat::HEARTBEAT_VERSIONS,
                "Heartbeat",
                timeout,
                |v| heartbeat::encode_heartbeat(v, &group_id, generation_id, member_id),
            )
            .await?;
        let code = heartbeat::parse_response(resp)
            .map_err(|e| Self::malformed(at.clone(), "Heartbeat", e))?;
        self.check(at, "Heartbeat", code)
    }

    /// LeaveGroup: hand our partitions over now instead of after the
    /// session timeout.
    pub async fn leave(&mut self, member_id: &str) -> Result<(), KafkaError> {
        let group_id = self.group_id.clone();
        let timeout = self.client.config().request_timeout;
        let (at, _, resp) = self
            .call(
                heartbeat::LEAVE_KEY,
                heartbeat::LEAVE_VERSIONS,
                "LeaveGroup",
                timeout,
                |_| heartbeat::encode_leave(&group_id, member_id),
            )
            .await?;
        let code = heartbeat::parse_response(resp)
            .map_err(|e| Self::malformed(at.clone(), "LeaveGroup", e))?;
        self.check(at, "LeaveGroup", code)
    }

    /// OffsetCommit in `generation_id`; the first partition error fails the
    /// whole call (ILLEGAL_GENERATION for a fenced member).
    pub async fn commit(
        &mut self,
        generation_id: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), KafkaError> {
        let group_id = self.group_id.clone();
        let req = offset_commit::CommitRequest {
            group_id: &group_id,
            generation_id,
            member_id,
            offsets,
        };
        let timeout = self.client.config().request_timeout;
        let (at, version, resp) = self
            .call(
                offset_commit::API_KEY,
                offset_commit::VERSIONS,
                "OffsetCommit",
                timeout,
                |v| offset_commit::encode_request(v, &req),
            )
            .await?;
        let results = offset_commit::parse_response(version, resp)
            .map_err(|e| Self::malformed(at.clone(), "OffsetCommit", e))?;
        match results
            .into_iter()
            .find(|(_, _, code)| *code != error::NONE)
        {
            Some((topic, partition, code)) => self.check(
                Location::partition(at.broker.as_deref(), &topic, partition),
                "OffsetCommit",
                code,
            ),
            None => Ok(()),
        }
    }

    /// The group's committed offsets for these partitions; partitions the
    /// group has never committed are left out.
    pub async fn committed(
        &mut self,
        topics: &[(String, Vec<i32>)],
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let body = offset_fetch::encode_request(&self.group_id, topics);
        let timeout = self.client.config().request_timeout;
        let (at, version, resp) = self
            .call(
                offset_fetch::API_KEY,
                offset_fetch::VERSIONS,
                "OffsetFetch",
                timeout,
                |_| body,
            )
            .await?;
        let (code, parts) = offset_fetch::parse_response(version, resp)
            .map_err(|e| Self::malformed(at.clone(), "OffsetFetch", e))?;
        self.check(at.clone(), "OffsetFetch", code)?;
        let mut out = BTreeMap::new();
        for c in parts {
            if c.error_code != error::NONE {
                let at = Location::partition(at.broker.as_deref(), &c.topic, c.partition);
                self.check(at, "OffsetFetch", c.error_code)?;
            }
            if c.offset >= 0 {
                out.insert((c.topic, c.partition), c.offset);
            }
        }
        Ok(out)
    }
}
