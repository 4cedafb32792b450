//! `gateway xdp replay`: pcap files through the real program, JSON lines out.

use std::{path::Path, process::Command};

use gateway::{
    hello::{ClientHello, Ext},
    pcap::write_pcap,
};
use gateway_common::version;
use gateway_tests::{require_root, segment};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn replay(args: &[&str]) -> (bool, Vec<Value>, String) {
    require_root("BPF_PROG_TEST_RUN in `gateway xdp replay`");
    let out = Command::new(GATEWAY)
        .args(["xdp", "replay"])
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, frames: &[Vec<u8>]) -> String {
    let path = dir.join(name);
    write_pcap(std::fs::File::create(&path).unwrap(), frames).unwrap();
    path.display().to_string()
}

fn tempdir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-replay-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn replay_prints_one_json_object_per_packet() {
    let dir = tempdir("json");
    let mut tls13 = ClientHello::legacy(version::TLS1_2, Some("Api.Example.com"));
    tls13
        .extensions
        .as_mut()
        .unwrap()
        .push(Ext::SupportedVersions(vec![version::TLS1_3]));
    let frames = vec![
        segment(ClientHello::legacy(version::TLS1_0, Some("old.example.com")).record()).build(),
        segment(tls13.record()).build(),
        segment(ClientHello::legacy(version::TLS1_2, Some("api.example.com")).record()).build(),
        segment(b"GET / HTTP/1.1\r\n\r\n".to_vec()).build(),
    ];
    let file = write(&dir, "mixed.pcap", &frames);
    let (ok, lines, stderr) = replay(&["--host-min-tls", "api.example.com=1.3", &file]);
    assert!(ok, "{stderr}");
    let expected = [
        json!({"file": file, "packet": 1, "verdict": "drop", "reason": "below_min_tls1_0", "sni": "old.example.com", "max_version": "1.0"}),
        json!({"file": file, "packet": 2, "verdict": "pass", "reason": "allowed", "sni": "api.example.com", "max_version": "1.3"}),
        json!({"file": file, "packet": 3, "verdict": "drop", "reason": "below_min_tls1_2", "sni": "api.example.com", "max_version": "1.2"}),
        json!({"file": file, "packet": 4, "verdict": "pass", "reason": "not_tls", "sni": null, "max_version": null}),
    ];
    assert_eq!(lines, expected);

    // The same capture under a 1.0 zone minimum and only port 8443 inspected.
    let (ok, lines, _) = replay(&["--zone-min-tls", "1.0", &file]);
    assert!(ok);
    assert_eq!(lines[0]["verdict"], "pass");
    let (ok, lines, _) = replay(&["--port", "8443", &file]);
    assert!(ok);
    assert!(
        lines.iter().all(|l| l["reason"] == "other_port"),
        "{lines:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A whole connection: SYN, then the stream cut at `cuts`, every frame of one flow.
fn connection(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut syn = segment(Vec::new());
    syn.flags = gateway::frame::flags::SYN;
    syn.sport = 40000; // every file reuses the same flow: files must not share state
    syn.seq = 1000;
    let mut frames = vec![syn.build()];
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(stream.len());
    for w in bounds.windows(2) {
        let mut f = syn.clone();
        f.flags = gateway::frame::flags::PSH | gateway::frame::flags::ACK;
        f.seq = 1001 + w[0] as u32;
        f.payload = stream[w[0]..w[1]].to_vec();
        frames.push(f.build());
    }
    frames
}

#[test]
fn replay_reassembles_each_captured_connection() {
    let dir = tempdir("split");
    let mut h = ClientHello::legacy(version::TLS1_0, Some("old.example.com"));
    h.extensions.as_mut().unwrap().push(Ext::padding(2000));
    let stream = gateway::hello::records(&h.message(), version::TLS1_0, 700);
    let two = write(&dir, "two.pcap", &connection(&stream, &[1448]));
    let many = write(
        &dir,
        "many.pcap",
        &connection(&stream, &[1, 2, 3, 5, 9, 44, 1448]),
    );
    let (ok, lines, stderr) = replay(&[&two, &many]);
    assert!(ok, "{stderr}");
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    let mut want = vec!["tcp_control", "hello_partial", "below_min_tls1_0"];
    want.extend(["tcp_control"].iter().chain(&["hello_partial"; 7]));
    want.push("below_min_tls1_0");
    assert_eq!(reasons, want, "{lines:?}");
    let refused = lines.iter().filter(|l| l["verdict"] == "drop");
    for l in refused {
        assert_eq!(l["sni"], "old.example.com");
        assert_eq!(l["max_version"], "1.0");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn replay_errors_are_clear_and_exit_non_zero() {
    let dir = tempdir("errors");
    let good = write(&dir, "good.pcap", &[segment(vec![1, 2, 3]).build()]);
    let missing = dir.join("missing.pcap").display().to_string();
    let (ok, lines, stderr) = replay(&[&good, &missing]);
    assert!(!ok);
    assert_eq!(lines.len(), 1, "the readable file is still replayed");
    assert!(
        stderr.contains("missing.pcap") && stderr.contains("cannot open"),
        "{stderr}"
    );

    let not_pcap = dir.join("text.pcap");
    std::fs::write(&not_pcap, "this is not a capture").unwrap();
    let (ok, _, stderr) = replay(&[not_pcap.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("text.pcap"), "{stderr}");

    // A capture of link type 101 (raw IP) instead of Ethernet.
    let mut raw = std::fs::read(&good).unwrap();
    raw[20..24].copy_from_slice(&101u32.to_le_bytes());
    let raw_path = dir.join("raw.pcap");
    std::fs::write(&raw_path, raw).unwrap();
    let (ok, _, stderr) = replay(&[raw_path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("link type") && stderr.contains("101"),
        "{stderr}"
    );

    let (ok, _, stderr) = replay(&["--zone-min-tls", "1.4", &good]);
    assert!(!ok);
    assert!(stderr.contains("1.4"), "{stderr}");
    let (ok, _, stderr) = replay(&["--host-min-tls", "api.example.com", &good]);
    assert!(!ok);
    assert!(stderr.contains("HOST=VERSION"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
