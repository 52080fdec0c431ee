//! tally's sticky, balanced assignor, run by the group leader: partitions
//! move only when they must.
//!
//! 1. Every member keeps the partitions it owned that still exist, that it
//!    still subscribes to and that no earlier member (by id) claimed too.
//! 2. Counts are capped at the balanced quota (floor or ceil of
//!    partitions / members; the ceil slots go to whoever owns most already,
//!    so the fewest partitions move); the excess is released.
//! 3. Released and unowned partitions go, one at a time, to the eligible
//!    member with the fewest partitions.
//!
//! Balance within one holds when all members subscribe to the same topics,
//! which is how tally instances sharing a group are configured; with mixed
//! subscriptions step 3 still balances greedily.

use std::collections::{BTreeMap, BTreeSet};

use super::consumer_protocol::{Assignment, Subscription, TopicPartitions};

type Tp = (String, i32);

/// `partitions`: topic -> partition count, from metadata. Returns an
/// assignment for every member (possibly empty).
pub fn assign(
    members: &BTreeMap<String, Subscription>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let subscribed = |m: &str, topic: &str| {
        members
            .get(m)
            .is_some_and(|s| s.topics.iter().any(|t| t == topic))
    };
    let exists = |(t, p): &Tp| partitions.get(t).is_some_and(|n| *p >= 0 && *p < *n);
    let all: BTreeSet<Tp> = partitions
        .iter()
        .filter(|(t, _)| members.keys().any(|m| subscribed(m, t)))
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
        .collect();

    // 1. keep valid previous ownership, first claim wins.
    let mut owner: BTreeMap<Tp, String> = BTreeMap::new();
    let mut owned: BTreeMap<String, Vec<Tp>> =
        members.keys().map(|m| (m.clone(), vec![])).collect();
    for (m, sub) in members {
        for (t, ps) in &sub.owned {
            for p in ps {
                let tp = (t.clone(), *p);
                if exists(&tp) && subscribed(m, t) && !owner.contains_key(&tp) {
                    owner.insert(tp.clone(), m.clone());
                    owned.entry(m.clone()).or_default().push(tp);
                }
            }
        }
    }

    // 2. cap at the quota; ceil slots to the members owning most.
    if !members.is_empty() {
        let floor = all.len() / members.len();
        let mut ceil_slots = all.len() % members.len();
        let mut by_size: Vec<&String> = members.keys().collect();
        by_size.sort_by_key(|m| std::cmp::Reverse(owned.get(*m).map_or(0, Vec::len)));
        for m in by_size {
            let Some(list) = owned.get_mut(m) else {
                continue;
            };
            let quota = if ceil_slots > 0 && list.len() > floor {
                ceil_slots -= 1;
                floor + 1
            } else {
                floor
            };
            list.sort();
            while list.len() > quota {
                if let Some(tp) = list.pop() {
                    owner.remove(&tp);
                }
            }
        }
    }

    // 3. hand out the rest to the least loaded eligible member.
    for tp in &all {
        if owner.contains_key(tp) {
            continue;
        }
        let pick = owned
            .iter()
            .filter(|(m, _)| subscribed(m, &tp.0))
            .min_by_key(|(m, list)| (list.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = pick {
            owner.insert(tp.clone(), m.clone());
            owned.entry(m).or_default().push(tp.clone());
        }
    }

    owned
        .into_iter()
        .map(|(m, list)| {
            let mut partitions = TopicPartitions::new();
            for (t, p) in list {
                partitions.entry(t).or_default().push(p);
            }
            for ps in partitions.values_mut() {
                ps.sort_unstable();
            }
            let count = u32::try_from(members.len()).ok();
            (
                m,
                Assignment {
                    partitions,
                    members: count,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sub(topics: &[&str], owned: &[(&str, &[i32])]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned
                .iter()
                .map(|(t, ps)| (t.to_string(), ps.to_vec()))
                .collect(),
        }
    }

    fn count(a: &Assignment) -> usize {
        a.partitions.values().map(Vec::len).sum()
    }

    #[test]
    fn fresh_group_is_balanced_and_a_join_moves_only_what_it_must() {
        let parts: BTreeMap<String, i32> = [("t".to_string(), 8)].into();
        let first = assign(&[("a".to_string(), sub(&["t"], &[]))].into(), &parts);
        assert_eq!(first["a"].partitions["t"], (0..8).collect::<Vec<_>>());

        let a_owned = first["a"].partitions["t"].clone();
        let members = [
            ("a".to_string(), sub(&["t"], &[("t", &a_owned)])),
            ("b".to_string(), sub(&["t"], &[])),
        ]
        .into();
        let second = assign(&members, &parts);
        assert_eq!(second["a"].partitions["t"], vec![0, 1, 2, 3]);
        assert_eq!(second["b"].partitions["t"], vec![4, 5, 6, 7]);

        // b dies: a takes everything back, keeping its own.
        let third = assign(
            &[("a".to_string(), sub(&["t"], &[("t", &[0, 1, 2, 3])]))].into(),
            &parts,
        );
        assert_eq!(count(&third["a"]), 8);
    }

    #[test]
    fn double_claims_and_vanished_partitions_are_resolved() {
        let parts: BTreeMap<String, i32> = [("t".to_string(), 2)].into();
        let members = [
            ("a".to_string(), sub(&["t"], &[("t", &[0, 1, 5])])),
            ("b".to_string(), sub(&["t"], &[("t", &[0]), ("gone", &[0])])),
        ]
        .into();
        let got = assign(&members, &parts);
        assert_eq!(count(&got["a"]) + count(&got["b"]), 2);
        assert_eq!(got["a"].partitions["t"], vec![0]);
        assert_eq!(got["b"].partitions["t"], vec![1]);
        assert!(!got["b"].partitions.contains_key("gone"));
    }

    #[test]
    fn unsubscribed_topics_are_never_assigned() {
        let parts: BTreeMap<String, i32> = [("t".to_string(), 2), ("u".to_string(), 2)].into();
        let members = [
            ("a".to_string(), sub(&["t"], &[("u", &[0])])),
            ("b".to_string(), sub(&["t", "u"], &[])),
        ]
        .into();
        let got = assign(&members, &parts);
        assert!(!got["a"].partitions.contains_key("u"));
        assert_eq!(got["b"].partitions["u"], vec![0, 1]);
    }

    /// Partition counts per topic, and per member (topic index, partition)
    /// pairs it claims to own.
    type Scenario = (BTreeMap<String, i32>, Vec<Vec<(u8, i32)>>);

    /// Members with the same subscriptions and arbitrary (possibly
    /// overlapping, stale) previous ownership.
    fn scenario() -> impl Strategy<Value = Scenario> {
        (
            proptest::collection::vec(1i32..10, 1..4),
            proptest::collection::vec(proptest::collection::vec((0u8..4, 0i32..12), 0..12), 1..6),
        )
            .prop_map(|(counts, owned)| {
                let parts = counts
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("t{i}"), *n))
                    .collect();
                (parts, owned)
            })
    }

    proptest! {
        #[test]
        fn every_partition_once_balanced_and_sticky((parts, owned) in scenario()) {
            let topics: Vec<&str> = parts.keys().map(String::as_str).collect();
            let members: BTreeMap<String, Subscription> = owned
                .iter()
                .enumerate()
                .map(|(i, list)| {
                    let mut o = TopicPartitions::new();
                    for (t, p) in list {
                        o.entry(format!("t{t}")).or_default().push(*p);
                    }
                    (format!("m{i}"), Subscription {
                        topics: topics.iter().map(|t| t.to_string()).collect(),
                        owned: o,
                    })
                })
                .collect();
            let got = assign(&members, &parts);
            prop_assert_eq!(got.len(), members.len());

            // Every partition exactly once.
            let mut seen = BTreeMap::new();
            for (m, a) in &got {
                for (t, ps) in &a.partitions {
                    for p in ps {
                        prop_assert!(seen.insert((t.clone(), *p), m.clone()).is_none());
                    }
                }
            }
            let total: i32 = parts.values().sum();
            prop_assert_eq!(seen.len(), total as usize);

            // Balanced within one.
            let counts: Vec<usize> = got.values().map(count).collect();
            let (lo, hi) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            prop_assert!(hi - lo <= 1, "counts {:?}", counts);

            // Sticky: the number kept equals the best any balanced
            // assignment could keep, given what was validly owned.
            let mut claimed = BTreeSet::new();
            let mut valid: Vec<usize> = vec![];
            let mut kept = 0;
            for (m, sub) in &members {
                let mut n = 0;
                for (t, ps) in &sub.owned {
                    for p in ps {
                        let tp = (t.clone(), *p);
                        if parts.get(t).is_some_and(|c| *p < *c) && claimed.insert(tp.clone()) {
                            n += 1;
                            if seen.get(&tp) == Some(m) {
                                kept += 1;
                            }
                        }
                    }
                }
                valid.push(n);
            }
            valid.sort_unstable_by(|a, b| b.cmp(a));
            let floor = total as usize / members.len();
            let mut ceil_slots = total as usize % members.len();
            let mut best = 0;
            for v in valid {
                let quota = if ceil_slots > 0 && v > floor { ceil_slots -= 1; floor + 1 } else { floor };
                best += v.min(quota);
            }
            prop_assert_eq!(kept, best);
        }
    }
}
