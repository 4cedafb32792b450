//! Fleet mode with real parts: a three-member etcd cluster and three gateways,
//! each in its own namespace with XDP on its veth, serving real TLS clients.
//! A change made through any node must be in force on every node (terminator
//! and XDP map), survive the etcd leader's death, and wait out quorum loss,
//! partitions and compaction; a node must start from its local copy with etcd
//! down, refuse a revision that does not decode or does not compile, and
//! answer a change etcd never received with a quick 503 that says it was not made.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use gateway_tests::fleet_gateway::{Fleet, until};
use serde_json::json;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const NODES: [usize; 3] = [1, 2, 3];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Refused in XDP: a TLS 1.2 hello for a 1.3-only hostname fails, and the
/// node's drop counter shows the kernel did it.
fn refused_in_xdp(fleet: &Fleet, k: usize, host: &str) -> bool {
    let drops = |f: &Fleet| {
        f.metric(k, "gateway_xdp_packets_total", &[("verdict", "drop")])
            .unwrap()
    };
    let before = drops(fleet);
    !fleet.tls12_handshakes(k, host) && drops(fleet) > before
}

#[test]
fn a_change_through_any_node_is_in_force_everywhere_even_as_the_etcd_leader_dies() {
    let mut fleet = Fleet::start(GATEWAY.as_ref(), 3).expect("start the fleet");
    propagation(&fleet);
    member_loss(&mut fleet);
}

#[test]
fn the_fleet_rides_out_quorum_loss_partitions_compaction_and_bad_rows() {
    let mut fleet = Fleet::start(GATEWAY.as_ref(), 3).expect("start the fleet");
    fleet.add_host(1, "kept.fleet.test").unwrap();
    fleet.converged(&NODES, Duration::from_secs(10)).unwrap();
    leadership_moves(&mut fleet);
    quorum_loss(&mut fleet);
    partition(&fleet);
    compaction(&mut fleet);
    bad_rows(&fleet);
    rules_that_do_not_compile(&fleet);
    cold_start(&mut fleet);
}

/// Propagation: from the API's answer on one node to the last node's install.
fn propagation(fleet: &Fleet) {
    let mut lags = Vec::new();
    for i in 0..30 {
        let via = NODES[i % 3];
        let name = format!("p{i}.fleet.test");
        fleet.add_host(via, &name).expect("add a hostname");
        let acked = Instant::now();
        for k in NODES {
            let seen = until(Duration::from_secs(5), || {
                fleet.has_host(k, &name).unwrap_or(false)
            });
            assert!(
                seen.is_some(),
                "{name} (added via node {via}) never reached node {k}"
            );
        }
        lags.push(acked.elapsed());
    }
    lags.sort();
    println!(
        "propagation to all 3 nodes: p50 {:?}, p99 {:?} (30 changes)",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99)
    );
    // Private keys reach etcd only sealed.
    let rows = fleet
        .lab
        .etcdctl(&["get", "--prefix", "/gateway/config/"])
        .unwrap();
    assert!(
        !rows.contains("PRIVATE KEY"),
        "a private key in the clear in etcd"
    );
    assert!(rows.contains("AES-256-GCM"), "sealed keys in etcd");
    for k in NODES {
        assert_eq!(
            fleet.request(k, "p0.fleet.test"),
            200,
            "node {k} serves p0 over TLS 1.3"
        );
        assert!(
            refused_in_xdp(fleet, k, "p29.fleet.test"),
            "node {k}'s XDP map has p29's minimum"
        );
    }
}

/// Member loss: kill -9 the etcd leader during a stream of 200 changes,
/// while clients keep asking every node.
fn member_loss(fleet: &mut Fleet) {
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients = {
        let (probe, stop) = (fleet.prober(), stop.clone());
        let (served, failed) = (served.clone(), failed.clone());
        thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k = k % 3 + 1;
                let ok = probe.request(k, "p0.fleet.test") == 200;
                let counter = if ok { &served } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut killed = None;
    for i in 0..200 {
        if i == 60 {
            let leader = fleet.lab.leader().expect("an etcd leader");
            fleet.lab.kill_member(leader).expect("kill the leader");
            killed = Some((leader, Instant::now()));
            continue;
        }
        let via = NODES[i % 3];
        let name = format!("s{i}.fleet.test");
        if let Err(e) = fleet.add_host(via, &name) {
            panic!("change {i} through node {via} was not acknowledged: {e:#}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    clients.join().unwrap();
    let (leader, at) = killed.unwrap();
    println!(
        "member loss: leader n{leader} killed; 199 changes acknowledged, {} requests served, \
         {} failed ({:?} since the kill)",
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        at.elapsed()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "clients saw errors");
    assert!(served.load(Ordering::Relaxed) > 0);
    let revision = fleet
        .converged(&NODES, Duration::from_secs(20))
        .expect("the nodes converge");
    for k in NODES {
        for i in (0..200).filter(|i| *i != 60) {
            assert!(
                fleet.has_host(k, &format!("s{i}.fleet.test")).unwrap(),
                "node {k} lost change {i}"
            );
        }
    }
    println!("every node at revision {revision} with all 199 changes");
}

/// Adds `host` through node `k`, which must refuse it with a 503 marked stale
/// that says the change was not made (not that its outcome is unknown); how
/// long the answer took.
fn refused_as_not_made(fleet: &Fleet, k: usize, host: &str) -> Duration {
    let asked = Instant::now();
    let (status, body, marked) = fleet
        .call(
            k,
            "POST",
            &format!("zones/{}/custom_hostnames", fleet.zone),
            Some(&json!({"hostname": host})),
        )
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(marked, "answers say the node is stale: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("etcd") && message.contains("nothing was changed"),
        "the 503 says the change was not made: {body}"
    );
    assert!(
        !message.contains("cannot tell"),
        "a change never sent to etcd is not of unknown outcome: {body}"
    );
    took
}

/// One node does the periodic work; when it stops, another takes over
/// once its lease ends.
fn leadership_moves(fleet: &mut Fleet) {
    let leaders = |f: &Fleet| -> Vec<String> {
        f.nodes(1)
            .unwrap_or_default()
            .iter()
            .filter(|n| n["leader"] == true)
            .map(|n| n["node"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(until(Duration::from_secs(10), || leaders(fleet).len() == 1).is_some());
    let first: usize = leaders(fleet)[0][2..].parse().unwrap();
    let survivor = if first == 1 { 2 } else { 1 };
    fleet.stop_node(first).unwrap();
    let took_over = until(Duration::from_secs(20), || {
        fleet.nodes(survivor).is_ok_and(|n| {
            let on: Vec<_> = n.iter().filter(|n| n["leader"] == true).collect();
            on.len() == 1 && on[0]["node"] != format!("gw{first}")
        })
    });
    assert!(took_over.is_some(), "no node took the periodic work over");
    fleet.start_node(first).unwrap();
    fleet.converged(&NODES, Duration::from_secs(10)).unwrap();
}

/// Quorum loss: two members stopped.
fn quorum_loss(fleet: &mut Fleet) {
    let leader = fleet.lab.leader().unwrap();
    let others: Vec<usize> = (1..=3).filter(|m| *m != leader).collect();
    fleet.lab.stop_member(leader).unwrap();
    fleet.lab.stop_member(others[0]).unwrap();
    let stale = until(Duration::from_secs(15), || {
        NODES.iter().all(|&k| {
            fleet
                .metric(k, "gateway_config_stale_seconds", &[])
                .unwrap_or(0.0)
                > 0.0
        })
    });
    assert!(stale.is_some(), "the nodes never noticed etcd lost quorum");
    // The first change after the loss: its read fails before the commit is
    // sent, so it is refused without waiting out the 10 s budget (at the
    // latest once the node has lost etcd for 3 s), and said not to be made.
    let took = refused_as_not_made(fleet, 2, "lost.fleet.test");
    println!("quorum loss: the first change answered 503 in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the first change after quorum loss took {took:?} to be refused; node 2's log:\n{}",
        fleet.lab.log("gw2")
    );
    // Once the node has lost etcd for 3 s, a change is refused at once.
    thread::sleep(Duration::from_secs(3));
    let took = refused_as_not_made(fleet, 2, "lost.fleet.test");
    println!("quorum loss: a change 3 s later answered 503 in {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "a node stale for 3 s took {took:?} to refuse a change"
    );
    let first = fleet
        .metric(3, "gateway_config_stale_seconds", &[])
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert!(
        fleet
            .metric(3, "gateway_config_stale_seconds", &[])
            .unwrap()
            > first,
        "the stale gauge grows"
    );
    for k in NODES {
        assert_eq!(
            fleet.request(k, "kept.fleet.test"),
            200,
            "node {k} serves the last policy"
        );
    }
    fleet.lab.start_member(leader).unwrap();
    fleet.lab.start_member(others[0]).unwrap();
    let back = until(Duration::from_secs(20), || {
        fleet.add_host(2, "after.fleet.test").is_ok()
    });
    assert!(
        back.is_some(),
        "writes never resumed after quorum came back"
    );
    fleet.converged(&NODES, Duration::from_secs(20)).unwrap();
    for k in NODES {
        assert!(fleet.has_host(k, "after.fleet.test").unwrap());
        assert!(
            !fleet.has_host(k, "lost.fleet.test").unwrap(),
            "a refused write was queued"
        );
    }
}

/// Partition: node 3 loses etcd; changes meanwhile reach it when it heals.
fn partition(fleet: &Fleet) {
    let reconnects = |f: &Fleet| {
        f.metric(3, "gateway_config_watch_reconnects_total", &[])
            .unwrap()
    };
    let before = reconnects(fleet);
    fleet.lab.partition(3).unwrap();
    assert!(
        until(Duration::from_secs(15), || fleet
            .metric(3, "gateway_config_stale_seconds", &[])
            .unwrap()
            > 0.0)
        .is_some()
    );
    let gone = fleet.add_host(1, "gone.fleet.test").unwrap();
    fleet.add_host(1, "during.fleet.test").unwrap();
    fleet
        .ok(
            1,
            "DELETE",
            &format!("zones/{}/custom_hostnames/{gone}", fleet.zone),
            None,
        )
        .unwrap();
    assert!(!fleet.has_host(3, "during.fleet.test").unwrap());
    fleet.lab.heal(3).unwrap();
    fleet
        .converged(&NODES, Duration::from_secs(20))
        .expect("node 3 catches up");
    assert!(fleet.has_host(3, "during.fleet.test").unwrap());
    assert!(
        !fleet.has_host(3, "gone.fleet.test").unwrap(),
        "node 3 missed the delete"
    );
    assert!(reconnects(fleet) > before, "the watch was made again");
}

/// Compaction past a partitioned node's revision: it reads everything again.
/// A restart after compaction re-reads too.
fn compaction(fleet: &mut Fleet) {
    fleet.lab.partition(3).unwrap();
    assert!(
        until(Duration::from_secs(15), || fleet
            .metric(3, "gateway_config_stale_seconds", &[])
            .unwrap()
            > 0.0)
        .is_some()
    );
    fleet.add_host(1, "compacted.fleet.test").unwrap();
    fleet.lab.compact_to_latest().unwrap();
    fleet.lab.heal(3).unwrap();
    fleet
        .converged(&NODES, Duration::from_secs(20))
        .expect("node 3 re-reads");
    assert!(fleet.has_host(3, "compacted.fleet.test").unwrap());
    assert!(
        fleet.lab.log("gw3").contains("compacted past revision"),
        "{}",
        fleet.lab.log("gw3")
    );

    fleet.stop_node(2).unwrap();
    fleet.add_host(1, "while-down.fleet.test").unwrap();
    fleet.lab.compact_to_latest().unwrap();
    fleet.start_node(2).unwrap();
    fleet.converged(&NODES, Duration::from_secs(20)).unwrap();
    assert!(fleet.has_host(2, "while-down.fleet.test").unwrap());
}

/// A row that does not decode, written straight into etcd: refused by every
/// node, which keeps its last good configuration and says why.
fn bad_rows(fleet: &Fleet) {
    let key = "/gateway/config/hostnames/hand-written".to_string();
    fleet.lab.put_raw(&key, "{\"id\": 1}").unwrap();
    let reported = until(Duration::from_secs(10), || {
        fleet.nodes(1).is_ok_and(|n| {
            n.len() == 3
                && n.iter()
                    .all(|n| n["error"].as_str().is_some_and(|e| e.contains(&key[16..])))
        })
    });
    assert!(reported.is_some(), "{:?}", fleet.nodes(1));
    for k in NODES {
        assert_eq!(
            fleet.request(k, "kept.fleet.test"),
            200,
            "node {k} keeps serving"
        );
        assert!(
            fleet
                .metric(k, "gateway_config_refused_total", &[])
                .unwrap()
                >= 1.0
        );
    }
    fleet.lab.etcdctl(&["del", &key]).unwrap();
    fleet.converged(&NODES, Duration::from_secs(10)).unwrap();
    // Reports are written at most once a second.
    let cleared = until(Duration::from_secs(10), || {
        fleet
            .nodes(1)
            .is_ok_and(|n| n.iter().all(|n| n["error"].is_null()))
    });
    assert!(cleared.is_some(), "the error clears: {:?}", fleet.nodes(1));
}

/// A rules row that decodes but does not compile, written straight into etcd:
/// every node keeps serving its last good revision, counts the refusal and
/// reports the row and the compile error; once the row is mended, every node
/// puts the mended rule in force.
fn rules_that_do_not_compile(fleet: &Fleet) {
    let key = "/gateway/config/settings/rules";
    let kept_rules = fleet.lab.get_raw(key).unwrap().expect("a rules row");
    fleet.add_host(1, "ruled.fleet.test").unwrap();
    fleet.converged(&NODES, Duration::from_secs(10)).unwrap();
    let refused = |k| {
        fleet
            .metric(k, "gateway_config_refused_total", &[])
            .unwrap()
    };
    let before: Vec<f64> = NODES.iter().map(|&k| refused(k)).collect();
    let rule = |expression: &str| {
        json!([{"id": "hand-ruled", "description": "", "expression": expression,
                "action": "block", "enabled": true}])
        .to_string()
    };
    fleet.lab.put_raw(key, &rule("http.host eq")).unwrap();
    let reported = until(Duration::from_secs(10), || {
        fleet.nodes(1).is_ok_and(|n| {
            n.len() == 3
                && n.iter().all(|n| {
                    n["error"].as_str().is_some_and(|e| {
                        e.contains("\"settings/rules\"") && e.contains("rule \"hand-ruled\"")
                    })
                })
        })
    });
    assert!(
        reported.is_some(),
        "every node names the row and the compile error: {:?}",
        fleet.nodes(1)
    );
    for (i, k) in NODES.into_iter().enumerate() {
        assert!(
            refused(k) > before[i],
            "node {k} counts the refusal in gateway_config_refused_total"
        );
        assert_eq!(
            fleet.request(k, "ruled.fleet.test"),
            200,
            "node {k} keeps serving its last good revision (no rule)"
        );
    }
    fleet
        .lab
        .put_raw(key, &rule("http.host eq \"ruled.fleet.test\""))
        .unwrap();
    fleet.converged(&NODES, Duration::from_secs(10)).unwrap();
    for k in NODES {
        let blocked = until(Duration::from_secs(5), || {
            fleet.request(k, "ruled.fleet.test") == 403
        });
        assert!(blocked.is_some(), "node {k} puts the mended rule in force");
        assert_eq!(fleet.request(k, "kept.fleet.test"), 200, "node {k}");
    }
    let cleared = until(Duration::from_secs(10), || {
        fleet
            .nodes(1)
            .is_ok_and(|n| n.iter().all(|n| n["error"].is_null()))
    });
    assert!(cleared.is_some(), "the error clears: {:?}", fleet.nodes(1));
    fleet.lab.put_raw(key, &kept_rules).unwrap();
    fleet.converged(&NODES, Duration::from_secs(10)).unwrap();
}

/// Cold start with etcd down: node 2 serves from its local copy.
fn cold_start(fleet: &mut Fleet) {
    fleet.stop_node(2).unwrap();
    for m in 1..=3 {
        fleet.lab.stop_member(m).unwrap();
    }
    fleet.start_node(2).unwrap();
    assert!(
        fleet.lab.log("gw2").contains("serving the local copy"),
        "{}",
        fleet.lab.log("gw2")
    );
    assert_eq!(
        fleet.request(2, "while-down.fleet.test"),
        200,
        "served from the copy"
    );
    let (status, _, marked) = fleet
        .call(
            2,
            "GET",
            &format!("zones/{}/custom_hostnames", fleet.zone),
            None,
        )
        .unwrap();
    assert_eq!((status, marked), (200, true), "reads work, marked stale");
    // The node has not heard from etcd since it started (its 5 s wait for
    // etcd included): a change right after the start is refused at once.
    let stale = fleet
        .metric(2, "gateway_config_stale_seconds", &[])
        .unwrap();
    assert!(
        stale >= 5.0,
        "stale since the process started, not since its wait for etcd ended: {stale} s"
    );
    let took = refused_as_not_made(fleet, 2, "cold.fleet.test");
    println!("cold start without etcd: a change answered 503 in {took:?} (stale {stale} s)");
    assert!(
        took < Duration::from_secs(1),
        "a node cold-started without etcd took {took:?} to refuse a change"
    );
    for m in 1..=3 {
        fleet.lab.start_member(m).unwrap();
    }
    fleet
        .converged(&NODES, Duration::from_secs(30))
        .expect("everything converges after restore");
}
