//! `[assignment] mode = "group"`: the membership loop. Join the group
//! (tally's leader assigns), run one worker per owned partition, heartbeat
//! on the membership's own coordinator connection while they deliver, mirror
//! the local store's offsets to the group, and on a rebalance revoke every
//! partition before joining again.
//!
//! **Eager, not cooperative.** Every partition is stopped before JoinGroup,
//! even one the sticky assignor will hand straight back. Keeping a retained
//! partition running through the rebalance would be safe only if no other
//! member could be given it meanwhile, but the leader may move it for
//! balance and the new owner learns that from its SyncGroup answer at the
//! same moment we learn it from ours — both would deliver it for a moment.
//! Kafka's cooperative protocol closes that gap with a second rebalance
//! (revoke in one generation, assign in the next); tally does not implement
//! it, so a rebalance pauses all of a member's partitions for its duration.
//!
//! **Fencing.** The session deadline ([`GroupMember::fence_deadline`], one
//! heartbeat interval before the coordinator could expire us) is shared with
//! the workers through a [`Fence`] per generation: no sink call starts after
//! it, and a call still running then is abandoned. The workers read it
//! themselves, so a stuck coordinator connection or a frozen process cannot
//! make them deliver past it. A member whose deadline passed rejoins as a new
//! generation rather than resuming; offsets are committed to the group only
//! in a live generation (`GroupMember::commit` refuses otherwise).
//!
//! **Offsets.** The local store stays the source of truth: the group gets
//! the store's durable offsets every `offset_commit_interval` and at revoke,
//! never ahead of them. A partition taken over starts from the newer of the
//! store's offset and the group's (see `PartitionWorker::start_offset`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout_at};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::classify::{FailureClass, classify_group};
use super::fence::Fence;
use super::worker::PartitionWorker;
use super::{RouteCtx, Shared, log_stats, warn_topic_unusable};
use crate::admin::views::GroupView;
use crate::config::{GroupSettings, Settings};
use crate::kafka::KafkaError;
use crate::kafka::group::{Beat, GroupMember, GroupTimeouts, MemberSettings, TopicPartitions};

/// After the fence deadline, how long revoked workers get to wind down
/// (release keys, return) before they are aborted.
const WIND_DOWN: Duration = Duration::from_secs(2);

type Tp = (String, i32);

/// Why the steady state ended.
enum Exit {
    Shutdown,
    /// A rebalance (or our partitions changed): revoke, mirror, rejoin.
    Rejoin(String),
    /// The session deadline passed unconfirmed: revoke without mirroring.
    Fenced(String),
    Fatal(KafkaError),
}

struct Running {
    stop: CancellationToken,
    /// The offset the group has for the partition (-1: none yet).
    mirrored: i64,
}

struct Membership<'a> {
    group: &'a GroupSettings,
    settings: &'a Settings,
    shared: &'a Arc<Shared>,
    routes: &'a BTreeMap<String, Arc<RouteCtx>>,
    workers: &'a mut JoinSet<Tp>,
    member: GroupMember,
    topics: Vec<String>,
    running: BTreeMap<Tp, Running>,
    /// This generation's fence (a fresh one per generation).
    fence: Fence,
    /// Partition counts of the subscribed topics at the last join.
    counts: BTreeMap<String, usize>,
    view: GroupView,
}

/// Runs the membership until shutdown; then it has drained, mirrored and
/// left. A group failure that retrying cannot fix (a refused session timeout,
/// another client's protocol in the group, no access to it, TLS/SASL) is
/// recorded in `shared` and stops the daemon.
pub(super) async fn run(
    settings: &Settings,
    group: &GroupSettings,
    shared: &Arc<Shared>,
    routes: &BTreeMap<String, Arc<RouteCtx>>,
    workers: &mut JoinSet<Tp>,
) {
    let mut topics = settings.all_topics();
    topics.sort();
    topics.dedup();
    let member = GroupMember::new(
        shared.client.clone(),
        &group.group_id,
        topics.clone(),
        MemberSettings {
            timeouts: GroupTimeouts {
                session: group.session_timeout,
                rebalance: group.rebalance_timeout,
            },
            heartbeat_interval: group.heartbeat_interval,
        },
    );
    let mut m = Membership {
        group,
        settings,
        shared,
        routes,
        workers,
        member,
        topics,
        running: BTreeMap::new(),
        fence: Fence::closed(),
        counts: BTreeMap::new(),
        view: GroupView {
            group_id: group.group_id.clone(),
            generation: -1,
            state: "joining".into(),
            ..GroupView::default()
        },
    };
    let mut rebalance_from = Instant::now();
    let mut first = true;
    loop {
        m.publish_view("joining");
        if let Err(e) = m.join().await {
            return m.finish(e).await;
        }
        if !m.start_partitions().await {
            // The group's offsets are unknown: starting without them could
            // re-send what another member delivered. Join again.
            m.revoke(false).await;
            m.member.forget_generation();
            continue;
        }
        let took = rebalance_from.elapsed();
        let metrics = &shared.live.metrics.group;
        metrics.last_rebalance.set(took.as_secs_f64());
        if !first {
            metrics.rebalances.inc();
            m.view.rebalances += 1;
        }
        first = false;
        m.view.last_rebalance_seconds = Some(took.as_secs_f64());
        m.publish_view("stable");
        tracing::info!(
            group = %group.group_id, generation = m.view.generation,
            partitions = m.running.len(), took = ?took, "group assignment running"
        );

        let exit = m.steady().await;
        rebalance_from = Instant::now();
        match exit {
            Exit::Shutdown => return m.finish(None).await,
            Exit::Rejoin(why) => {
                tracing::info!(group = %group.group_id, generation = m.view.generation,
                    "rebalance ({why}): stopping every partition before rejoining");
                // What we owned stays in our subscription: the sticky
                // assignor hands it back where balance allows.
                m.revoke(true).await;
            }
            Exit::Fenced(why) => {
                shared.live.metrics.group.fenced.inc();
                tracing::warn!(group = %group.group_id, generation = m.view.generation,
                    "fenced ({why}): the session may be over, so no sink call starts for the owned \
                     partitions; they are released and the member joins again");
                m.revoke(false).await;
                // Another member may own them by now: claim nothing.
                m.member.forget_generation();
            }
            Exit::Fatal(e) => return m.finish(Some(e)).await,
        }
    }
}

impl Membership<'_> {
    /// Join (retrying transient failures) and start this generation's fence.
    /// Err(None): shutdown while joining; Err(Some(e)): not retryable.
    async fn join(&mut self) -> Result<(), Option<KafkaError>> {
        let pipeline = &self.shared.pipeline;
        let mut backoff = Backoff::new(pipeline.retry_initial, pipeline.retry_max);
        loop {
            let cancel = self.shared.cancel.clone();
            let attempt = async {
                self.counts = self.partition_counts().await?;
                self.member.join().await.map(|_| ())
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return Err(None),
                r = attempt => r,
            };
            match result {
                Ok(()) => break,
                Err(e) if classify_group(&e) == FailureClass::Halt => return Err(Some(e)),
                Err(e) => {
                    self.shared.live.set_broker_connected(false);
                    let delay = backoff.next_delay();
                    tracing::warn!(group = %self.group.group_id, retry_in = ?delay, "cannot join the group: {e}");
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(None),
                        _ = sleep(delay) => {}
                    }
                }
            }
        }
        self.shared.live.set_broker_connected(true);
        self.fence = Fence::closed();
        self.fence.set(self.member.fence_deadline());
        Ok(())
    }

    /// Partition counts of the subscribed topics (warning about missing ones).
    async fn partition_counts(&self) -> Result<BTreeMap<String, usize>, KafkaError> {
        let md = self.shared.client.metadata(&self.topics).await?;
        let mut counts = BTreeMap::new();
        for topic in &self.topics {
            match md.topics.get(topic) {
                Some(tm) if tm.error.is_none() => {
                    counts.insert(topic.clone(), tm.partitions.len());
                }
                tm => warn_topic_unusable(topic, tm),
            }
        }
        Ok(counts)
    }

    /// Reads the group's offsets for the new assignment and starts a
    /// worker per partition. False when the offsets cannot be read before
    /// the session deadline.
    async fn start_partitions(&mut self) -> bool {
        let owned: TopicPartitions = self.member.owned().clone();
        if owned.is_empty() {
            return true;
        }
        let wanted: Vec<(String, Vec<i32>)> = owned.clone().into_iter().collect();
        let committed = loop {
            let Some(deadline) = self.member.fence_deadline() else {
                return false;
            };
            match timeout_at(deadline, self.member.committed(&wanted)).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) if !self.member.fenced() => {
                    tracing::warn!(group = %self.group.group_id, "cannot read the group's committed offsets (retrying): {e}");
                    tokio::select! {
                        _ = self.shared.cancel.cancelled() => return false,
                        _ = sleep(Duration::from_millis(200)) => {}
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(group = %self.group.group_id, "cannot read the group's committed offsets: {e}");
                    return false;
                }
                Err(_) => return false,
            }
        };
        for (topic, partitions) in owned {
            let Some(ctx) = self.routes.get(&topic) else {
                tracing::warn!(topic, "assigned a topic no route consumes; ignored");
                continue;
            };
            for partition in partitions {
                let key = (topic.clone(), partition);
                let group_committed = committed.get(&key).copied();
                let stop = self.shared.cancel.child_token();
                let worker = PartitionWorker {
                    shared: Arc::clone(self.shared),
                    live: self.shared.live.register(&ctx.name, &topic, partition),
                    route: Arc::clone(ctx),
                    topic: Arc::from(topic.as_str()),
                    partition,
                    stop: stop.clone(),
                    fence: self.fence.clone(),
                    group_committed,
                };
                let k = key.clone();
                self.workers.spawn(async move {
                    worker.run().await;
                    k
                });
                self.running.insert(
                    key,
                    Running {
                        stop,
                        mirrored: group_committed.unwrap_or(-1),
                    },
                );
            }
        }
        true
    }

    /// Heartbeats, offset mirroring and metadata checks until something
    /// ends the generation.
    async fn steady(&mut self) -> Exit {
        let ticker = |every: Duration| {
            let mut t = interval(every);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        let mut heartbeat = ticker(self.group.heartbeat_interval);
        let mut mirror = ticker(self.group.offset_commit_interval);
        let mut metadata = ticker(self.settings.kafka.metadata_refresh);
        let mut stats = ticker(Duration::from_secs(30));
        // Every interval's first tick is immediate: we just joined.
        heartbeat.tick().await;
        mirror.tick().await;
        metadata.tick().await;
        stats.tick().await;
        loop {
            let cancel = self.shared.cancel.clone();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Exit::Shutdown,
                _ = heartbeat.tick() => {
                    if let Some(exit) = self.heartbeat().await {
                        return exit;
                    }
                }
                _ = mirror.tick() => {
                    if let Some(exit) = self.mirror().await {
                        return exit;
                    }
                }
                _ = metadata.tick() => match self.partition_counts().await {
                    Ok(counts) if counts != self.counts => {
                        return Exit::Rejoin("the subscribed topics' partitions changed".into());
                    }
                    Ok(_) => self.shared.live.set_broker_connected(true),
                    Err(e) => tracing::warn!("cannot fetch metadata: {e}"),
                },
                _ = stats.tick() => {
                    let unique: BTreeMap<&str, &Arc<RouteCtx>> =
                        self.routes.values().map(|r| (&*r.name, r)).collect();
                    unique.values().for_each(|ctx| log_stats(ctx));
                }
                Some(done) = self.workers.join_next(), if !self.workers.is_empty() => {
                    // A worker that ended on its own (a failed partition, or
                    // fenced) is not restarted until the partition is assigned
                    // again; it stays in `running` so its offsets are mirrored.
                    if let Err(e) = done {
                        tracing::error!("partition worker crashed: {e}");
                    }
                }
            }
        }
    }

    /// One heartbeat, bounded by the session deadline.
    async fn heartbeat(&mut self) -> Option<Exit> {
        let Some(deadline) = self.member.fence_deadline() else {
            return Some(Exit::Rejoin("not in a generation".into()));
        };
        match timeout_at(deadline, self.member.heartbeat()).await {
            Err(_) => Some(Exit::Fenced(
                "no heartbeat answered before the session deadline".into(),
            )),
            // Answered, but after the workers may have seen the fence close.
            Ok(Ok(_)) if Instant::now() >= deadline => Some(Exit::Fenced(
                "the heartbeat was answered after the session deadline".into(),
            )),
            Ok(Ok(Beat::Alive)) => {
                self.fence.set(self.member.fence_deadline());
                self.shared.live.set_broker_connected(true);
                None
            }
            Ok(Ok(Beat::Rejoin(e))) => Some(Exit::Rejoin(e.to_string())),
            Ok(Err(e)) if classify_group(&e) == FailureClass::Halt => Some(Exit::Fatal(e)),
            Ok(Err(e)) => {
                tracing::warn!(group = %self.group.group_id, "heartbeat failed (retrying until the session deadline): {e}");
                None
            }
        }
    }

    /// Commits the store's offsets of the running partitions to the group
    /// where they moved on. Some(exit) when the generation is over.
    async fn mirror(&mut self) -> Option<Exit> {
        let due = self.due_offsets().await;
        if due.is_empty() {
            return None;
        }
        let deadline = self.member.fence_deadline()?;
        match timeout_at(deadline, self.member.commit(&due)).await {
            Ok(Ok(())) => {
                for (topic, partition, offset) in due {
                    if let Some(r) = self.running.get_mut(&(topic, partition)) {
                        r.mirrored = offset;
                    }
                }
                // An accepted commit proves the session alive, like a heartbeat.
                self.fence.set(self.member.fence_deadline());
                None
            }
            Ok(Err(e)) if e.code().is_some_and(crate::kafka::group::needs_rejoin) => {
                Some(Exit::Rejoin(format!("offset commit: {e}")))
            }
            Ok(Err(e)) => {
                tracing::warn!(group = %self.group.group_id, "cannot commit offsets to the group (retrying): {e}");
                None
            }
            Err(_) => Some(Exit::Fenced(
                "no offset commit answered before the session deadline".into(),
            )),
        }
    }

    /// (topic, partition, store offset) where the store is past the group.
    async fn due_offsets(&self) -> Vec<(String, i32, i64)> {
        let keys: Vec<(Tp, i64)> = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.mirrored))
            .collect();
        let store = Arc::clone(&self.shared.store);
        let read = tokio::task::spawn_blocking(move || {
            keys.into_iter()
                .filter_map(|((topic, partition), mirrored)| {
                    match store.offset(&topic, partition) {
                        Ok(Some(e)) if e.next_offset > mirrored => {
                            Some((topic, partition, e.next_offset))
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::warn!(topic, partition, "cannot read the stored offset: {e}");
                            None
                        }
                    }
                })
                .collect()
        })
        .await;
        read.unwrap_or_else(|e| {
            tracing::error!("offset read task failed: {e}");
            Vec::new()
        })
    }

    /// Stops every partition and waits for its worker: in-flight sink calls
    /// finish or are abandoned at the fence; on shutdown the wait is also
    /// bounded by `drain_timeout`, and heartbeats keep the session alive
    /// meanwhile. Then, if `mirror` and the session is live, the group gets
    /// the final offsets.
    async fn revoke(&mut self, mirror: bool) {
        self.publish_view("revoking");
        for r in self.running.values() {
            r.stop.cancel();
        }
        let drain_until = self
            .shared
            .cancel
            .is_cancelled()
            .then(|| Instant::now() + self.shared.pipeline.drain_timeout);
        let mut heartbeat = interval(self.group.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut beating = true;
        while !self.workers.is_empty() {
            let fence_until = self.member.fence_deadline().unwrap_or_else(Instant::now) + WIND_DOWN;
            let until = drain_until.map_or(fence_until, |d| d.min(fence_until));
            tokio::select! {
                done = self.workers.join_next() => {
                    if let Some(Err(e)) = done {
                        tracing::error!("partition worker crashed: {e}");
                    }
                }
                _ = heartbeat.tick(), if beating => match self.heartbeat().await {
                    None => {}
                    // A rebalance or a lost session: nothing extends the deadline now.
                    Some(_) => beating = false,
                },
                _ = tokio::time::sleep_until(until) => {
                    tracing::error!(
                        group = %self.group.group_id, workers = self.workers.len(),
                        "partition workers still running after the session deadline: aborted \
                         (their uncommitted records are re-sent by the next owner)"
                    );
                    self.workers.abort_all();
                    while self.workers.join_next().await.is_some() {}
                }
            }
        }
        self.fence.set(None);
        if mirror && !self.member.fenced() {
            match self.mirror().await {
                None | Some(Exit::Shutdown) => {}
                Some(Exit::Rejoin(why) | Exit::Fenced(why)) => tracing::info!(
                    group = %self.group.group_id,
                    "final offsets not committed to the group ({why}); the next owner starts \
                     from the group's last committed offsets and may re-send up to {:?} of deliveries",
                    self.group.offset_commit_interval
                ),
                Some(Exit::Fatal(e)) => {
                    tracing::warn!("final offsets not committed to the group: {e}")
                }
            }
        }
        let revoked: Vec<Tp> = std::mem::take(&mut self.running).into_keys().collect();
        for (topic, partition) in &revoked {
            self.shared.live.unregister(topic, *partition);
        }
        if !revoked.is_empty() {
            tracing::info!(group = %self.group.group_id, generation = self.view.generation,
                partitions = %describe(&revoked), "partitions revoked");
        }
    }

    /// Shutdown (or a fatal error, which stops the daemon): drain, mirror,
    /// leave the group so the partitions move at once.
    async fn finish(&mut self, fatal: Option<KafkaError>) {
        if let Some(e) = fatal {
            let doing = format!(
                "cannot take part in group {}{}",
                self.group.group_id,
                hint(&e)
            );
            self.shared.kafka_failed(&doing, e);
        }
        let live = !self.member.fenced();
        self.revoke(live).await;
        let leave =
            tokio::time::timeout(self.settings.kafka.request_timeout, self.member.leave()).await;
        match leave {
            Ok(Ok(())) => {
                tracing::info!(group = %self.group.group_id, "left the group: partitions move to the other members now")
            }
            Ok(Err(e)) => tracing::warn!(group = %self.group.group_id,
                "LeaveGroup failed ({e}); the partitions move once the session times out"),
            Err(_) => tracing::warn!(group = %self.group.group_id,
                "LeaveGroup timed out; the partitions move once the session times out"),
        }
        self.publish_view("left");
    }

    fn publish_view(&mut self, state: &str) {
        let v = self.member.view();
        let in_generation = matches!(state, "stable" | "revoking");
        self.view.member_id = v.member_id;
        self.view.generation = if in_generation { v.generation_id } else { -1 };
        self.view.leader = in_generation && v.leader;
        self.view.members = v.members.filter(|_| in_generation);
        self.view.owned = if in_generation {
            v.owned
        } else {
            TopicPartitions::new()
        };
        self.view.state = state.to_string();
        self.shared.live.set_group(self.view.clone());
    }
}

/// `topic:[0,1,2]` lists, for logs.
fn describe(tps: &[Tp]) -> String {
    let mut by: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for (t, p) in tps {
        by.entry(t.as_str()).or_default().insert(*p);
    }
    by.iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{t}:[{}]", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What to do about a group error that stops the daemon.
fn hint(e: &KafkaError) -> &'static str {
    match e.code() {
        Some(23) => {
            " (another client in this group uses a different protocol or assignor: \
             give tally its own assignment.group_id)"
        }
        Some(26) => {
            " (the broker refuses assignment.session_timeout: keep it within the broker's \
             group.min.session.timeout.ms and group.max.session.timeout.ms)"
        }
        Some(30) => {
            " (the credentials may not use this group: grant access to assignment.group_id)"
        }
        _ => "",
    }
}
