//! One member of a tally group: join + sync (assigning with our sticky
//! assignor when we lead), heartbeats, the session deadline that fences
//! us, and offset commits that are never sent with a stale generation.
//!
//! The session clock starts when a request that the coordinator answered
//! successfully was *sent*: the coordinator received it no earlier, so
//! `sent + session_timeout` is never later than the coordinator's own
//! expiry. Stopping `margin` before that instant means our partitions are
//! quiet before anyone else can be given them.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::super::client::ClusterClient;
use super::super::error::{KafkaError, Location};
use super::assignor::assign;
use super::consumer_protocol::{Subscription, TopicPartitions};
use super::coordinator::{
    Generation, GroupCoordinator, GroupTimeouts, UNKNOWN_MEMBER_ID, needs_rejoin,
};

/// Join attempts in a row that may end in a rejoin code before `join` gives up.
const MAX_REJOINS: usize = 5;

#[derive(Debug, Clone, Copy)]
pub struct MemberSettings {
    pub timeouts: GroupTimeouts,
    pub heartbeat_interval: Duration,
}

impl MemberSettings {
    /// How long before the coordinator's expiry we stop: one heartbeat
    /// interval, at least a second.
    pub fn fence_margin(&self) -> Duration {
        self.heartbeat_interval.max(Duration::from_secs(1))
    }
}

/// What `heartbeat` found.
#[derive(Debug)]
pub enum Beat {
    Alive,
    /// The generation is over (rebalance, or we were expelled): stop the
    /// owned partitions, commit what was acknowledged, then `join` again.
    Rejoin(KafkaError),
}

/// The group as this member sees it, for `tally offsets` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberView {
    pub group_id: String,
    pub member_id: String,
    /// -1 while not in a generation.
    pub generation_id: i32,
    pub leader: bool,
    /// Members of the generation, as the leader's assignment counted them.
    pub members: Option<u32>,
    pub owned: TopicPartitions,
}

pub struct GroupMember {
    client: ClusterClient,
    coordinator: GroupCoordinator,
    settings: MemberSettings,
    topics: Vec<String>,
    member_id: String,
    generation: Option<Generation>,
    owned: TopicPartitions,
    members: Option<u32>,
    /// Send time of the last request the coordinator accepted in this generation.
    alive_since: Option<Instant>,
}

impl GroupMember {
    pub fn new(
        client: ClusterClient,
        group_id: &str,
        topics: Vec<String>,
        settings: MemberSettings,
    ) -> Self {
        GroupMember {
            coordinator: GroupCoordinator::new(client.clone(), group_id),
            client,
            settings,
            topics,
            member_id: String::new(),
            generation: None,
            owned: TopicPartitions::new(),
            members: None,
            alive_since: None,
        }
    }

    pub fn view(&self) -> MemberView {
        MemberView {
            group_id: self.coordinator.group_id().to_string(),
            member_id: self.member_id.clone(),
            generation_id: self.generation.as_ref().map_or(-1, |g| g.generation_id),
            leader: self.generation.as_ref().is_some_and(Generation::is_leader),
            members: self.members,
            owned: self.owned.clone(),
        }
    }

    /// Partitions owned in the current generation (empty when fenced).
    pub fn owned(&self) -> &TopicPartitions {
        &self.owned
    }

    /// The instant after which we must not deliver or commit for our
    /// partitions; None while not in a generation.
    pub fn fence_deadline(&self) -> Option<Instant> {
        let since = self.alive_since?;
        let session = self.settings.timeouts.session;
        Some(since + session.saturating_sub(self.settings.fence_margin()))
    }

    /// True when our session may be over as far as we can tell: not in a
    /// generation, or too long since the coordinator last heard from us.
    pub fn fenced(&self) -> bool {
        self.fence_deadline()
            .is_none_or(|deadline| Instant::now() >= deadline)
    }

    /// Drops the generation (after fencing or before rejoining): nothing is
    /// owned until the next `join`.
    pub fn forget_generation(&mut self) {
        self.generation = None;
        self.alive_since = None;
        self.owned.clear();
        self.members = None;
    }

    /// Joins (or rejoins) and syncs; returns the partitions now owned.
    /// The caller must have stopped every partition it owned before.
    pub async fn join(&mut self) -> Result<&TopicPartitions, KafkaError> {
        // What we owned last helps the leader keep partitions in place.
        let subscription = Subscription {
            topics: self.topics.clone(),
            owned: std::mem::take(&mut self.owned),
        };
        self.forget_generation();
        let mut last = None;
        for _ in 0..MAX_REJOINS {
            match self.join_once(&subscription).await {
                Ok(()) => return Ok(&self.owned),
                Err(e) if e.code().is_some_and(needs_rejoin) => {
                    if e.code() == Some(UNKNOWN_MEMBER_ID) {
                        self.member_id.clear();
                    }
                    tracing::debug!(group = self.coordinator.group_id(), "rejoining: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Invalid("group join gave up".into())))
    }

    async fn join_once(&mut self, subscription: &Subscription) -> Result<(), KafkaError> {
        let generation = self
            .coordinator
            .join(&self.member_id, self.settings.timeouts, subscription)
            .await?;
        self.member_id = generation.member_id.clone();
        let plan = if generation.is_leader() {
            let members: BTreeMap<String, Subscription> =
                generation.members.iter().cloned().collect();
            let mut wanted: Vec<String> = members
                .values()
                .flat_map(|s| s.topics.iter().cloned())
                .collect();
            wanted.sort();
            wanted.dedup();
            let md = self.client.metadata(&wanted).await?;
            let counts: BTreeMap<String, i32> = md
                .topics
                .iter()
                .filter(|(_, t)| t.error.is_none())
                .map(|(name, t)| (name.clone(), t.partitions.len() as i32))
                .collect();
            assign(&members, &counts)
        } else {
            BTreeMap::new()
        };
        // The clock starts at SyncGroup, not JoinGroup: the coordinator can
        // hold a JoinGroup for most of a session while others rejoin.
        let sent = Instant::now();
        let mine = self
            .coordinator
            .sync(&generation, &plan, self.settings.timeouts.rebalance)
            .await?;
        tracing::info!(
            group = self.coordinator.group_id(),
            generation = generation.generation_id,
            member = %generation.member_id,
            leader = generation.is_leader(),
            partitions = mine.partitions.values().map(Vec::len).sum::<usize>(),
            "joined group"
        );
        self.owned = mine.partitions;
        self.members = mine.members;
        self.generation = Some(generation);
        self.alive_since = Some(sent);
        Ok(())
    }

    /// One heartbeat. Transport and coordinator errors are returned for the
    /// caller to retry; the session clock keeps running meanwhile.
    pub async fn heartbeat(&mut self) -> Result<Beat, KafkaError> {
        let Some(g) = &self.generation else {
            return Ok(Beat::Rejoin(self.not_in_generation("Heartbeat")));
        };
        let (generation_id, member_id) = (g.generation_id, g.member_id.clone());
        let sent = Instant::now();
        match self.coordinator.heartbeat(generation_id, &member_id).await {
            Ok(()) => {
                self.alive_since = Some(sent);
                Ok(Beat::Alive)
            }
            Err(e) if e.code().is_some_and(needs_rejoin) => Ok(Beat::Rejoin(e)),
            Err(e) => Err(e),
        }
    }

    /// Mirrors offsets to the group in the current generation. Refused here,
    /// without asking the coordinator, once the session may be over.
    pub async fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), KafkaError> {
        if self.fenced() {
            return Err(self.not_in_generation("OffsetCommit"));
        }
        let Some(g) = &self.generation else {
            return Err(self.not_in_generation("OffsetCommit"));
        };
        let (generation_id, member_id) = (g.generation_id, g.member_id.clone());
        let sent = Instant::now();
        self.coordinator
            .commit(generation_id, &member_id, offsets)
            .await?;
        // An accepted commit also proves the membership alive.
        self.alive_since = Some(sent);
        Ok(())
    }

    /// The group's committed offsets for these partitions.
    pub async fn committed(
        &mut self,
        topics: &[(String, Vec<i32>)],
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        self.coordinator.committed(topics).await
    }

    /// Leaves the group so our partitions move at once.
    pub async fn leave(&mut self) -> Result<(), KafkaError> {
        self.forget_generation();
        if self.member_id.is_empty() {
            return Ok(());
        }
        let member_id = std::mem::take(&mut self.member_id);
        self.coordinator.leave(&member_id).await
    }

    fn not_in_generation(&self, api: &'static str) -> KafkaError {
        KafkaError::Broker {
            at: Location::broker(self.coordinator.coordinator().unwrap_or("coordinator")),
            api,
            code: super::coordinator::ILLEGAL_GENERATION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaConfig;

    fn member(session: u64, heartbeat: u64) -> GroupMember {
        GroupMember::new(
            ClusterClient::new(KafkaConfig::new(vec!["127.0.0.1:1".into()])),
            "g",
            vec!["t".into()],
            MemberSettings {
                timeouts: GroupTimeouts {
                    session: Duration::from_secs(session),
                    rebalance: Duration::from_secs(session),
                },
                heartbeat_interval: Duration::from_secs(heartbeat),
            },
        )
    }

    #[tokio::test]
    async fn fenced_one_margin_before_the_session_ends() {
        let mut m = member(10, 3);
        assert!(m.fenced(), "no generation yet");
        m.generation = Some(Generation {
            generation_id: 1,
            member_id: "m".into(),
            leader: "m".into(),
            members: vec![],
        });
        let ago = |ms| Instant::now().checked_sub(Duration::from_millis(ms));
        m.alive_since = ago(6_500);
        assert!(!m.fenced());
        m.alive_since = ago(7_000);
        assert!(m.fenced(), "10 s session - 3 s margin");
        // Fenced members do not even ask the coordinator.
        let e = m.commit(&[("t".into(), 0, 1)]).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(super::super::coordinator::ILLEGAL_GENERATION)
        );
        m.forget_generation();
        assert!(m.owned().is_empty() && m.view().generation_id == -1);
    }
}
