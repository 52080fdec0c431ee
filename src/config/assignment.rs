//! `[assignment]`: which partitions this instance consumes — fixed by
//! `static` config, or handed out at run time by a Kafka consumer `group`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::error::ConfigError;
use super::raw::RawAssignment;
use super::settings::{duration, human_duration};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Assignment {
    /// Partition `p` of every routed topic belongs to member `p % members`.
    Static { member: u32, members: u32 },
    /// Explicit partition lists per topic.
    Explicit {
        partitions: BTreeMap<String, Vec<i32>>,
    },
    /// Membership of a Kafka consumer group; tally's leader assigns.
    Group(GroupSettings),
}

/// `mode = "group"`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSettings {
    pub group_id: String,
    /// The coordinator expires a member it has not heard from for this long.
    #[serde(with = "human_duration")]
    pub session_timeout: Duration,
    #[serde(with = "human_duration")]
    pub heartbeat_interval: Duration,
    /// How long the coordinator waits for every member to rejoin.
    #[serde(with = "human_duration")]
    pub rebalance_timeout: Duration,
    /// How often offsets committed in the local store are also committed
    /// to the group (OffsetCommit), for lag tools and the next owner.
    #[serde(with = "human_duration")]
    pub offset_commit_interval: Duration,
}

impl Assignment {
    /// Whether this instance consumes `topic`/`partition` by config; None
    /// in group mode, where the group decides at run time.
    pub fn owns(&self, topic: &str, partition: i32) -> Option<bool> {
        match self {
            Assignment::Static { member, members } => {
                Some(partition >= 0 && (partition as u32) % members == *member)
            }
            Assignment::Explicit { partitions } => Some(
                partitions
                    .get(topic)
                    .is_some_and(|list| list.contains(&partition)),
            ),
            Assignment::Group(_) => None,
        }
    }

    pub fn group(&self) -> Option<&GroupSettings> {
        match self {
            Assignment::Group(g) => Some(g),
            _ => None,
        }
    }
}

/// Below this the fence margin (a heartbeat interval, at least 1 s) leaves
/// too little of the session to deliver in.
const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn validate_assignment(raw: Option<RawAssignment>) -> Result<Assignment, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Assignment::Static {
            member: 0,
            members: 1,
        });
    };
    match raw.mode.as_str() {
        "static" => validate_static(raw),
        "group" => validate_group(raw).map(Assignment::Group),
        other => Err(ConfigError::invalid(
            "assignment.mode",
            format!("unknown mode \"{other}\"; expected \"static\" or \"group\""),
        )),
    }
}

fn validate_static(raw: RawAssignment) -> Result<Assignment, ConfigError> {
    let group_keys = [
        ("group_id", raw.group_id.is_some()),
        ("session_timeout", raw.session_timeout.is_some()),
        ("heartbeat_interval", raw.heartbeat_interval.is_some()),
        ("rebalance_timeout", raw.rebalance_timeout.is_some()),
        (
            "offset_commit_interval",
            raw.offset_commit_interval.is_some(),
        ),
    ];
    if let Some((key, _)) = group_keys.iter().find(|(_, set)| *set) {
        return Err(ConfigError::invalid(
            format!("assignment.{key}"),
            "is for mode = \"group\"; remove it, or set mode = \"group\"",
        ));
    }
    if let Some(partitions) = raw.partitions {
        if raw.member.is_some() || raw.members.is_some() {
            return Err(ConfigError::invalid(
                "assignment.partitions",
                "use either `partitions` or `member`/`members`, not both",
            ));
        }
        for (topic, list) in &partitions {
            if list.iter().any(|p| *p < 0) {
                return Err(ConfigError::invalid(
                    format!("assignment.partitions.{topic}"),
                    "partition numbers are >= 0",
                ));
            }
        }
        return Ok(Assignment::Explicit { partitions });
    }
    let members = raw.members.unwrap_or(1);
    let member = raw.member.unwrap_or(0);
    if members == 0 {
        return Err(ConfigError::invalid("assignment.members", "must be >= 1"));
    }
    if member >= members {
        return Err(ConfigError::invalid(
            "assignment.member",
            format!("is {member} but must be below members ({members}); members count from 0"),
        ));
    }
    Ok(Assignment::Static { member, members })
}

fn validate_group(raw: RawAssignment) -> Result<GroupSettings, ConfigError> {
    let static_keys = [
        ("member", raw.member.is_some()),
        ("members", raw.members.is_some()),
        ("partitions", raw.partitions.is_some()),
    ];
    if let Some((key, _)) = static_keys.iter().find(|(_, set)| *set) {
        return Err(ConfigError::invalid(
            format!("assignment.{key}"),
            "is for mode = \"static\"; in a group the leader assigns the partitions: remove it",
        ));
    }
    let group_id = match raw.group_id {
        Some(g) if !g.trim().is_empty() => g,
        Some(_) => {
            return Err(ConfigError::invalid(
                "assignment.group_id",
                "must not be empty",
            ));
        }
        None => {
            return Err(ConfigError::invalid(
                "assignment.group_id",
                "mode = \"group\" needs a group_id, e.g. group_id = \"tally-usage\" \
                 (the same on every instance that shares the topics)",
            ));
        }
    };
    let get = |key: &str, value: &Option<String>| -> Result<Option<Duration>, ConfigError> {
        value
            .as_deref()
            .map(|v| duration(&format!("assignment.{key}"), v))
            .transpose()
    };
    let session_timeout =
        get("session_timeout", &raw.session_timeout)?.unwrap_or(Duration::from_secs(10));
    if session_timeout < MIN_SESSION_TIMEOUT {
        return Err(ConfigError::invalid(
            "assignment.session_timeout",
            format!(
                "must be at least {}: a member stops delivering one heartbeat interval before its session ends",
                humantime::format_duration(MIN_SESSION_TIMEOUT)
            ),
        ));
    }
    let heartbeat_interval = get("heartbeat_interval", &raw.heartbeat_interval)?
        .unwrap_or_else(|| (session_timeout / 3).min(Duration::from_secs(3)));
    if heartbeat_interval.is_zero() || heartbeat_interval * 3 > session_timeout {
        return Err(ConfigError::invalid(
            "assignment.heartbeat_interval",
            format!(
                "must be above 0 and at most a third of assignment.session_timeout ({}), \
                 so that one lost heartbeat does not cost the session",
                humantime::format_duration(session_timeout)
            ),
        ));
    }
    let rebalance_timeout = get("rebalance_timeout", &raw.rebalance_timeout)?
        .unwrap_or_else(|| session_timeout.max(Duration::from_secs(30)));
    if rebalance_timeout < session_timeout {
        return Err(ConfigError::invalid(
            "assignment.rebalance_timeout",
            format!(
                "must be at least assignment.session_timeout ({}): a member may take up to its \
                 session to stop its partitions before it rejoins",
                humantime::format_duration(session_timeout)
            ),
        ));
    }
    let offset_commit_interval = get("offset_commit_interval", &raw.offset_commit_interval)?
        .unwrap_or(Duration::from_secs(1));
    if offset_commit_interval.is_zero() {
        return Err(ConfigError::invalid(
            "assignment.offset_commit_interval",
            "must be greater than 0",
        ));
    }
    Ok(GroupSettings {
        group_id,
        session_timeout,
        heartbeat_interval,
        rebalance_timeout,
        offset_commit_interval,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Settings;
    use crate::config::settings::tests::MINIMAL;

    /// MINIMAL with a changelog (group mode requires one) and `assignment`.
    fn load(assignment: &str) -> Result<Settings, ConfigError> {
        let routes = MINIMAL.replace(
            "sink = \"file\"\n",
            "sink = \"file\"\nchangelog_topic = \"tally-changelog.usage\"\n",
        );
        let text = format!("{routes}\n[assignment]\n{assignment}\n");
        Settings::from_toml(&text, Path::new("t.toml"), None)
    }

    #[test]
    fn group_mode_requires_a_changelog_per_deduplicating_route() {
        let text = format!("{MINIMAL}\n[assignment]\nmode = \"group\"\ngroup_id = \"g\"\n");
        let e = Settings::from_toml(&text, Path::new("t.toml"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("routes[0].changelog_topic") && e.contains("required in group mode"),
            "{e}"
        );
        // A route without dedupe keeps no IDs: nothing to carry over.
        let none = text.replace(
            "format = \"killbill-usage\"",
            "format = \"json\"\ndedupe = \"none\"",
        );
        Settings::from_toml(&none, Path::new("t.toml"), None).unwrap();
    }

    fn err(assignment: &str) -> String {
        load(assignment).unwrap_err().to_string()
    }

    #[test]
    fn static_member_must_be_below_members() {
        let e = err("mode = \"static\"\nmember = 2\nmembers = 2");
        assert!(e.contains("assignment.member"), "{e}");
    }

    #[test]
    fn static_assignment_splits_partitions() {
        let a = Assignment::Static {
            member: 1,
            members: 3,
        };
        let owned: Vec<i32> = (0..7).filter(|p| a.owns("t", *p) == Some(true)).collect();
        assert_eq!(owned, vec![1, 4]);
    }

    #[test]
    fn group_mode_gets_defaults_and_check_prints_them() {
        let s = load("mode = \"group\"\ngroup_id = \"tally-usage\"").unwrap();
        let g = s.assignment.group().expect("group mode");
        assert_eq!(g.group_id, "tally-usage");
        assert_eq!(g.session_timeout, Duration::from_secs(10));
        assert_eq!(g.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(g.rebalance_timeout, Duration::from_secs(30));
        assert_eq!(g.offset_commit_interval, Duration::from_secs(1));
        assert_eq!(s.assignment.owns("stream.usagemetrics", 0), None);
        let text = toml::to_string_pretty(&s).unwrap();
        assert!(text.contains("mode = \"group\""), "{text}");
        assert!(text.contains("group_id = \"tally-usage\""), "{text}");
        assert!(text.contains("session_timeout = \"10s\""), "{text}");

        // A short session gets a heartbeat a third of it.
        let s = load("mode = \"group\"\ngroup_id = \"g\"\nsession_timeout = \"6s\"").unwrap();
        let g = s.assignment.group().unwrap();
        assert_eq!(g.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(g.rebalance_timeout, Duration::from_secs(30));
        let s = load("mode = \"group\"\ngroup_id = \"g\"\nsession_timeout = \"45s\"").unwrap();
        assert_eq!(
            s.assignment.group().unwrap().rebalance_timeout,
            Duration::from_secs(45)
        );
    }

    #[test]
    fn shipped_group_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/examples/group.toml");
        let s = Settings::load(&path).unwrap();
        let g = s.assignment.group().expect("group mode");
        assert_eq!(g.group_id, "tally-usage");
        assert_eq!(g.heartbeat_interval, Duration::from_secs(3));
    }

    #[test]
    fn group_mode_errors_name_the_key() {
        let cases = [
            ("mode = \"group\"", "assignment.group_id"),
            ("mode = \"group\"\ngroup_id = \" \"", "assignment.group_id"),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nmember = 0",
                "assignment.member",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nmembers = 2",
                "assignment.members",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\n[assignment.partitions]\nt = [0]",
                "assignment.partitions",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nsession_timeout = \"2s\"",
                "assignment.session_timeout",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nsession_timeout = \"soon\"",
                "assignment.session_timeout",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nsession_timeout = \"6s\"\nheartbeat_interval = \"3s\"",
                "assignment.heartbeat_interval",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nheartbeat_interval = \"0s\"",
                "assignment.heartbeat_interval",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\nrebalance_timeout = \"5s\"",
                "assignment.rebalance_timeout",
            ),
            (
                "mode = \"group\"\ngroup_id = \"g\"\noffset_commit_interval = \"0s\"",
                "assignment.offset_commit_interval",
            ),
            ("mode = \"static\"\ngroup_id = \"g\"", "assignment.group_id"),
            (
                "mode = \"static\"\nsession_timeout = \"10s\"",
                "assignment.session_timeout",
            ),
            ("mode = \"dynamic\"", "assignment.mode"),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert!(e.contains(&format!("`{key}`")), "{text:?}: {e}");
        }
    }
}
