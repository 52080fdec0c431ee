//! Group APIs against the real broker (Tansu), checked through
//! confluent-kafka's view of the group (describe + committed offsets).
//! Needs TALLY_TEST_BROKER, TALLY_TEST_PYTHON and TALLY_TEST_KAFKA_TOOL
//! (scripts/test.sh sets them).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use super::super::{ClusterClient, KafkaConfig};
use super::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is unset: group broker tests need the test rig (scripts/test.sh sets it)")
    })
}

fn kafka_tool(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env("TALLY_TEST_PYTHON"))
        .arg(env("TALLY_TEST_KAFKA_TOOL"))
        .args(args)
        .args(["--broker", &env("TALLY_TEST_BROKER")])
        .output()
        .expect("run kafka_tool.py");
    assert!(
        out.status.success(),
        "kafka_tool {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kafka_tool prints JSON")
}

fn client() -> ClusterClient {
    let mut cfg = KafkaConfig::new(vec![env("TALLY_TEST_BROKER")]);
    cfg.request_timeout = Duration::from_secs(10);
    cfg.connect_timeout = Duration::from_secs(5);
    ClusterClient::new(cfg)
}

const TIMEOUTS: GroupTimeouts = GroupTimeouts {
    session: Duration::from_secs(10),
    rebalance: Duration::from_secs(15),
};

/// Join + sync as one member; the leader assigns with our assignor.
async fn join_and_sync(
    gc: &mut GroupCoordinator,
    member_id: &str,
    sub: &Subscription,
    parts: &BTreeMap<String, i32>,
) -> Result<(Generation, Assignment), crate::kafka::KafkaError> {
    let generation = gc.join(member_id, TIMEOUTS, sub).await?;
    let plan = if generation.is_leader() {
        assign(&generation.members.iter().cloned().collect(), parts)
    } else {
        BTreeMap::new()
    };
    let mine = gc.sync(&generation, &plan, TIMEOUTS.rebalance).await?;
    Ok((generation, mine))
}

#[tokio::test]
async fn one_member_joins_commits_and_tools_see_the_group() {
    let topic = format!("tally-group-{:016x}", fastrand::u64(..));
    let group = format!("tally-g-{:016x}", fastrand::u64(..));
    kafka_tool(&["create-topic", "--topic", &topic, "--partitions", "4"]);
    let parts: BTreeMap<String, i32> = [(topic.clone(), 4)].into();
    let sub = Subscription {
        topics: vec![topic.clone()],
        owned: TopicPartitions::new(),
    };

    let mut gc = GroupCoordinator::new(client(), &group);
    let (generation, mine) = join_and_sync(&mut gc, "", &sub, &parts)
        .await
        .expect("join + sync");
    assert!(generation.is_leader());
    assert!(!generation.member_id.is_empty());
    assert_eq!(mine.partitions[&topic], vec![0, 1, 2, 3]);
    gc.heartbeat(generation.generation_id, &generation.member_id)
        .await
        .expect("heartbeat");

    let offsets: Vec<(String, i32, i64)> =
        (0..4).map(|p| (topic.clone(), p, 10 + p as i64)).collect();
    gc.commit(generation.generation_id, &generation.member_id, &offsets)
        .await
        .expect("commit");
    let committed = gc
        .committed(&[(topic.clone(), vec![0, 1, 2, 3])])
        .await
        .expect("offset fetch");
    assert_eq!(committed.len(), 4);
    assert_eq!(committed[&(topic.clone(), 3)], 13);

    // A stale generation is fenced.
    let stale = gc
        .commit(
            generation.generation_id - 1,
            &generation.member_id,
            &offsets,
        )
        .await
        .expect_err("stale generation must be refused");
    assert!(
        stale.code().is_some_and(needs_rejoin),
        "stale commit: {stale}"
    );

    // confluent-kafka sees the group and reads our committed offsets.
    // (Tansu 0.6's DescribeGroups lists no members and reports a member id
    // as the protocol, so assignments cannot be checked through it.)
    let seen = kafka_tool(&[
        "group",
        "--group",
        &group,
        "--topic",
        &topic,
        "--partitions",
        "4",
    ]);
    assert_eq!(seen["state"], "ConsumerGroupState.STABLE", "{seen}");
    assert_eq!(
        seen["committed"],
        serde_json::json!({"0": 10, "1": 11, "2": 12, "3": 13}),
        "{seen}"
    );

    gc.leave(&generation.member_id).await.expect("leave");
    let after = gc
        .heartbeat(generation.generation_id, &generation.member_id)
        .await
        .expect_err("heartbeat after leaving");
    assert!(after.code().is_some_and(needs_rejoin), "{after}");
}

#[tokio::test]
async fn second_member_triggers_a_sticky_rebalance() {
    let topic = format!("tally-group-{:016x}", fastrand::u64(..));
    let group = format!("tally-g-{:016x}", fastrand::u64(..));
    kafka_tool(&["create-topic", "--topic", &topic, "--partitions", "8"]);
    let parts: BTreeMap<String, i32> = [(topic.clone(), 8)].into();
    let fresh = Subscription {
        topics: vec![topic.clone()],
        owned: TopicPartitions::new(),
    };

    let mut a = GroupCoordinator::new(client(), &group);
    let (gen_a, first) = join_and_sync(&mut a, "", &fresh, &parts)
        .await
        .expect("a joins");
    assert_eq!(first.partitions[&topic].len(), 8);

    // b joins; a learns of the rebalance from its heartbeat and rejoins
    // announcing what it owns.
    let b_task = {
        let (group, parts, fresh) = (group.clone(), parts.clone(), fresh.clone());
        tokio::spawn(async move {
            let mut b = GroupCoordinator::new(client(), &group);
            join_and_sync(&mut b, "", &fresh, &parts)
                .await
                .map(|r| (b, r))
        })
    };
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        match a.heartbeat(gen_a.generation_id, &gen_a.member_id).await {
            Ok(()) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(()) => panic!("no rebalance signalled within 30 s"),
            Err(e) => {
                assert_eq!(e.code(), Some(REBALANCE_IN_PROGRESS), "{e}");
                break;
            }
        }
    }
    let owned_a = Subscription {
        topics: vec![topic.clone()],
        owned: first.partitions.clone(),
    };
    let (gen_a2, second_a) = join_and_sync(&mut a, &gen_a.member_id, &owned_a, &parts)
        .await
        .expect("a rejoins");
    let (_b, (gen_b, second_b)) = b_task.await.expect("b task").expect("b joins");
    let rebalance = started.elapsed();
    eprintln!("rebalance with a second member took {rebalance:?}");

    assert_eq!(gen_a2.generation_id, gen_b.generation_id);
    assert!(gen_a2.generation_id > gen_a.generation_id);
    let mut all: Vec<i32> = second_a.partitions[&topic].clone();
    all.extend(&second_b.partitions[&topic]);
    all.sort_unstable();
    assert_eq!(all, (0..8).collect::<Vec<_>>());
    assert_eq!(second_a.partitions[&topic].len(), 4);
    assert_eq!(second_b.partitions[&topic].len(), 4);

    // The old generation is fenced for commits.
    let stale = a
        .commit(
            gen_a.generation_id,
            &gen_a.member_id,
            &[(topic.clone(), 0, 1)],
        )
        .await
        .expect_err("commit with the previous generation");
    assert!(stale.code().is_some_and(needs_rejoin), "{stale}");
    a.leave(&gen_a2.member_id).await.expect("a leaves");
}

/// A member that stops heartbeating (a network cut) fences itself before
/// the coordinator gives its partitions to the other member, and cannot
/// commit afterwards.
#[tokio::test]
async fn silent_member_is_fenced_before_its_partitions_move() {
    let topic = format!("tally-group-{:016x}", fastrand::u64(..));
    let group = format!("tally-g-{:016x}", fastrand::u64(..));
    kafka_tool(&["create-topic", "--topic", &topic, "--partitions", "8"]);
    let settings = MemberSettings {
        timeouts: GroupTimeouts {
            session: Duration::from_secs(6),
            rebalance: Duration::from_secs(10),
        },
        heartbeat_interval: Duration::from_secs(1),
    };
    let mut a = GroupMember::new(client(), &group, vec![topic.clone()], settings);
    assert_eq!(a.join().await.expect("a joins")[&topic].len(), 8);

    let b_task = {
        let (group, topic) = (group.clone(), topic.clone());
        tokio::spawn(async move {
            let mut b = GroupMember::new(client(), &group, vec![topic], settings);
            b.join().await?;
            Ok::<_, crate::kafka::KafkaError>(b)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "no rebalance for b");
        match a.heartbeat().await.expect("heartbeat") {
            Beat::Alive => tokio::time::sleep(settings.heartbeat_interval).await,
            Beat::Rejoin(_) => break,
        }
    }
    assert_eq!(a.join().await.expect("a rejoins")[&topic].len(), 4);
    let mut b = b_task.await.expect("b task").expect("b joins");
    assert_eq!(b.owned()[&topic].len(), 4);
    assert!(!a.fenced());
    a.commit(&[(topic.clone(), 0, 5)]).await.expect("a commits");

    // a goes silent; b keeps its session and waits for the rebalance.
    let silent_from = std::time::Instant::now();
    let fence_at = a.fence_deadline().expect("a has a deadline");
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        assert!(std::time::Instant::now() < deadline, "a was never expelled");
        match b.heartbeat().await.expect("heartbeat") {
            Beat::Alive => tokio::time::sleep(settings.heartbeat_interval).await,
            Beat::Rejoin(_) => break,
        }
    }
    let owned = b.join().await.expect("b rejoins alone").clone();
    let moved_at = tokio::time::Instant::now();
    eprintln!(
        "a silent for {:?} before its partitions moved to b; a fenced itself {:?} before that",
        silent_from.elapsed(),
        moved_at.saturating_duration_since(fence_at)
    );
    assert_eq!(owned[&topic].len(), 8);
    assert!(fence_at < moved_at, "a was still live when b took over");
    assert!(a.fenced());
    let refused = a
        .commit(&[(topic.clone(), 0, 6)])
        .await
        .expect_err("a fenced member must not commit");
    assert!(refused.code().is_some_and(needs_rejoin), "{refused}");
    match a.heartbeat().await.expect("heartbeat") {
        Beat::Rejoin(_) => {}
        Beat::Alive => panic!("an expelled member's heartbeat was accepted"),
    }
    b.leave().await.expect("b leaves");
}
