//! How many replicas must confirm a write (`WAIT`) on each master of a
//! Redis Cluster. The operator asks for `--cluster-replica-acks N`; a
//! master that has fewer replicas connected right now (its old master died
//! and nothing replaced it yet) can never give N. By default such a master
//! is asked for the replicas it has: an acknowledged write can only be
//! undone by promoting a replica that lacks it, and a master without
//! replicas has none to promote. `--cluster-replica-acks-strict` refuses
//! writes there instead (503 until a replica is back).

use std::sync::RwLock;

/// The replicas each master has connected, by slot range, as the cluster's
/// topology last said; and the policy.
#[derive(Debug)]
pub struct ReplicaAcks {
    want: u32,
    strict: bool,
    masters: RwLock<Vec<Master>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Master {
    addr: String,
    slots: Vec<(u16, u16)>,
    replicas: u32,
}

impl ReplicaAcks {
    pub fn new(want: u32, strict: bool) -> Self {
        Self {
            want,
            strict,
            masters: RwLock::new(Vec::new()),
        }
    }

    /// The configured number (0: the master alone is trusted).
    pub fn wanted(&self) -> u32 {
        self.want
    }

    /// Replicas a write to `slot` must wait for: the configured number, or
    /// (not strict) fewer when its master has fewer connected. `None`: no
    /// `WAIT` at all.
    pub fn for_slot(&self, slot: u16) -> Option<u32> {
        if self.want == 0 {
            return None;
        }
        if self.strict {
            return Some(self.want);
        }
        let masters = self.masters.read().expect("replicas lock");
        let have = masters
            .iter()
            .find(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map_or(self.want, |m| m.replicas);
        (have > 0).then_some(have.min(self.want))
    }

    /// Takes the topology from `CLUSTER NODES` output. Returns the masters
    /// (address, replicas connected) whose count changed below the wanted
    /// number, to be logged.
    pub fn update(&self, cluster_nodes: &str) -> Vec<(String, u32)> {
        let fresh = parse_nodes(cluster_nodes);
        let mut masters = self.masters.write().expect("replicas lock");
        let short: Vec<(String, u32)> = fresh
            .iter()
            .filter(|m| m.replicas < self.want)
            .filter(|m| {
                !masters
                    .iter()
                    .any(|old| old.addr == m.addr && old.replicas == m.replicas)
            })
            .map(|m| (m.addr.clone(), m.replicas))
            .collect();
        let unreplicated = fresh.iter().filter(|m| m.replicas < self.want).count();
        metrics::gauge!("holdfast_cluster_masters_short_of_replicas").set(unreplicated as f64);
        *masters = fresh;
        short
    }
}

/// Masters serving slots, with their connected, healthy replicas. A line of
/// `CLUSTER NODES`: `id addr flags master-id ping pong epoch link slot...`.
fn parse_nodes(text: &str) -> Vec<Master> {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8)
        .collect();
    let failed = |flags: &str| flags.split(',').any(|f| f == "fail" || f == "fail?");
    lines
        .iter()
        .filter(|f| f[2].split(',').any(|x| x == "master") && !failed(f[2]) && f.len() > 8)
        .map(|f| {
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| {
                    let (a, b) = s.split_once('-').unwrap_or((s, s));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            let replicas = lines
                .iter()
                .filter(|r| r[3] == f[0] && !failed(r[2]) && r[7] == "connected")
                .count() as u32;
            Master {
                addr: f[1].split('@').next().unwrap_or(f[1]).to_owned(),
                slots,
                replicas,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a failover: 21003 took over 10923-16383 and its old master
    /// 21002 is gone, so it has no replica.
    const AFTER_FAILOVER: &str = "\
1536 127.0.0.1:21000@31000 myself,master - 0 1 1 connected 0-5460
61ec 127.0.0.1:21001@31001 master - 0 1 2 connected 5461-10922
6a88 127.0.0.1:21002@31002 master,fail - 1 1 3 disconnected
70c3 127.0.0.1:21003@31003 master - 0 1 7 connected 10923-16383
ec76 127.0.0.1:21005@31005 slave 61ec 0 1 2 connected
f94d 127.0.0.1:21004@31004 slave 1536 0 1 1 connected
";

    #[test]
    fn a_master_without_replicas_is_asked_for_none_unless_strict() {
        let acks = ReplicaAcks::new(1, false);
        assert_eq!(acks.for_slot(12_000), Some(1), "unknown topology: as asked");
        let short = acks.update(AFTER_FAILOVER);
        assert_eq!(short, vec![("127.0.0.1:21003".to_owned(), 0)]);
        assert_eq!(acks.for_slot(0), Some(1));
        assert_eq!(acks.for_slot(5_461), Some(1));
        assert_eq!(acks.for_slot(12_000), None, "no replica to wait for");
        assert!(acks.update(AFTER_FAILOVER).is_empty(), "logged once");
        let strict = ReplicaAcks::new(1, true);
        strict.update(AFTER_FAILOVER);
        assert_eq!(strict.for_slot(12_000), Some(1));
    }

    #[test]
    fn never_more_than_asked_and_none_when_zero_is_asked() {
        let acks = ReplicaAcks::new(2, false);
        acks.update(AFTER_FAILOVER);
        assert_eq!(acks.for_slot(0), Some(1), "one connected of two asked");
        let none = ReplicaAcks::new(0, true);
        assert_eq!(none.for_slot(0), None);
    }

    #[test]
    fn a_failing_or_disconnected_replica_does_not_count() {
        let text = "\
a 127.0.0.1:1@2 master - 0 1 1 connected 0-16383
b 127.0.0.1:3@4 slave,fail? a 0 1 1 connected
c 127.0.0.1:5@6 slave a 0 1 1 disconnected
";
        let acks = ReplicaAcks::new(1, false);
        acks.update(text);
        assert_eq!(acks.for_slot(7), None);
    }
}
