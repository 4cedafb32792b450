//! The fleet lab itself: a real three-member etcd cluster that the gateway
//! namespaces reach over their own veths, that survives losing its leader,
//! and that a partition cuts one node off from. Needs root (fails otherwise).

use std::time::{Duration, Instant};

use gateway_tests::fleet::{FleetLab, MEMBERS, eventually};

/// etcdctl flags that make an unreachable cluster fail fast.
const FAST: [&str; 2] = ["--dial-timeout=1s", "--command-timeout=2s"];

#[test]
fn the_lab_cluster_elects_a_leader_and_survives_losing_it() {
    gateway_tests::require_root("the fleet lab's namespaces and etcd cluster");
    let started = Instant::now();
    let mut lab = FleetLab::create(3).expect("create the fleet lab");
    eprintln!("lab up in {:?}", started.elapsed());

    // A node reaches every member over its own etcd veth.
    lab.etcdctl_in_node(2, &["put", "/probe", "v1"])
        .expect("put from node 2");
    let got = lab
        .etcdctl_in_node(2, &["get", "/probe", "--print-value-only"])
        .expect("get from node 2");
    assert_eq!(got.trim(), "v1", "node 2 reads back its write");
    for m in 1..=MEMBERS {
        let one = lab
            .etcd_endpoints_for(2)
            .split(',')
            .nth(m - 1)
            .unwrap()
            .to_string();
        let out = lab
            .in_node(2, "etcdctl")
            .args(["--endpoints", &one, "endpoint", "health"])
            .output()
            .expect("run etcdctl in node 2");
        assert!(
            out.status.success(),
            "node 2 reaches member n{m} at {one}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(lab.get_raw("/probe").unwrap().as_deref(), Some("v1"));
    assert_eq!(lab.get_raw("/absent").unwrap(), None);
    lab.put_raw("/empty", "").unwrap();
    assert_eq!(lab.get_raw("/empty").unwrap().as_deref(), Some(""));

    // Losing the leader: the other two elect another and keep taking writes.
    let leader = lab.wait_leader(Duration::from_secs(5)).expect("a leader");
    eprintln!("leader is n{leader}; killing it");
    lab.kill_member(leader).unwrap();
    assert!(!lab.member_running(leader));
    let killed = Instant::now();
    eventually(Duration::from_secs(5), || {
        lab.put_raw("/after-leader", "v2")
    })
    .expect("a put through the survivors within 5 s of killing the leader");
    eprintln!(
        "survivors took a write {:?} after the kill",
        killed.elapsed()
    );
    let next = lab
        .wait_leader(Duration::from_secs(5))
        .expect("a new leader");
    assert_ne!(next, leader, "a survivor leads");
    assert_eq!(lab.get_raw("/after-leader").unwrap().as_deref(), Some("v2"));

    // A partition cuts node 1 off from etcd; node 3 is untouched.
    lab.partition(1).unwrap();
    let cut = lab.etcdctl_in_node(1, &[&FAST[..], &["put", "/from-1", "x"]].concat());
    assert!(
        cut.is_err(),
        "node 1 still reaches etcd while partitioned: {cut:?}"
    );
    eventually(Duration::from_secs(5), || {
        lab.etcdctl_in_node(3, &[&FAST[..], &["put", "/from-3", "y"]].concat())
    })
    .expect("node 3 writes while node 1 is partitioned");
    lab.heal(1).unwrap();
    eventually(Duration::from_secs(5), || {
        lab.etcdctl_in_node(1, &[&FAST[..], &["put", "/from-1", "z"]].concat())
    })
    .expect("node 1 writes again once healed");
    assert_eq!(lab.get_raw("/from-1").unwrap().as_deref(), Some("z"));

    // The killed member comes back on its data and catches up.
    lab.start_member(leader).expect("restart the killed member");
    assert!(lab.member_running(leader));
    let members: Vec<String> = (1..=MEMBERS).map(|m| format!("n{m}")).collect();
    let listed = lab.etcdctl(&["member", "list"]).unwrap();
    assert!(
        members
            .iter()
            .all(|n| listed.contains(&format!(", started, {n}, "))),
        "all three members are started: {listed}"
    );

    // A cold start: every member stopped, then started one at a time (the
    // first has no quorum until the second is up).
    let stopping = Instant::now();
    for m in 1..=MEMBERS {
        lab.stop_member(m).expect("stop a member");
        assert!(!lab.member_running(m));
    }
    eprintln!("stopped all members in {:?}", stopping.elapsed());
    assert!(
        lab.put_raw("/while-down", "x").is_err(),
        "no member, no write"
    );
    for m in 1..=MEMBERS {
        lab.start_member(m)
            .expect("start a member of a stopped cluster");
    }
    lab.wait_leader(Duration::from_secs(10))
        .expect("a leader after the cold start");
    eventually(Duration::from_secs(5), || {
        lab.put_raw("/after-restart", "v3")
    })
    .expect("a write after the cold start");
    assert_eq!(
        lab.get_raw("/probe").unwrap().as_deref(),
        Some("v1"),
        "data survived"
    );

    let rev = lab.compact_to_latest().expect("compact");
    assert!(rev > 0, "compacted at revision {rev}");
    assert_eq!(
        lab.compact_to_latest().unwrap(),
        rev,
        "compacting again is a no-op"
    );
    eprintln!("compacted at revision {rev}; total {:?}", started.elapsed());
}
