//! Writes the seed corpora of the hello targets (`hello`, `hello_stream`,
//! `xdp_differential`) under `gateway-user/fuzz/corpus/TARGET/`:
//!
//! `cargo run --release --manifest-path gateway-user/fuzz/Cargo.toml --example seeds`
//!
//! The hellos come from the builder (`ClientHello::modern` / `legacy`, GREASE,
//! padding to browser size, a post-quantum key share, more extensions than the
//! filter walks, long SNIs, several records, SSL 2.0 format) and from real
//! clients: `openssl s_client` at each version, captured from a listener on
//! 127.0.0.1 (skipped, with a note, where `openssl` is missing). The stream
//! targets get the same hellos behind headers (`common/stream_input.rs`) that
//! cut them where a parser is most fragile (inside the record header, the
//! handshake header, the SNI, one byte at a time), with and without a SYN, in
//! both modes, on each wire, with retransmissions and reordering.
//!
//! Every file is named for what it holds, so running it again rewrites the
//! same files (the real hellos' random bytes change).

#[path = "../fuzz_targets/common/stream_input.rs"]
mod stream_input;

use std::{
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway::hello::{ClientHello, Ext, records, sslv2_hello};
use gateway_common::version;
use stream_input::{Header, event};

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let hellos = hellos();
    let mut streams = Vec::new();
    let dir = root.join("hello");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, payload) in &hellos {
        std::fs::write(dir.join(name), payload).expect("write a seed");
    }
    for (name, stream) in stream_hellos(&hellos) {
        for (how, header) in headers(&stream) {
            streams.push((format!("{name}.{how}"), header.input(&stream)));
        }
    }
    for target in ["hello_stream", "xdp_differential"] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, input) in &streams {
            std::fs::write(dir.join(name), input).expect("write a seed");
        }
    }
    println!(
        "{} hello seeds, {} stream seeds per stream target, under {}",
        hellos.len(),
        streams.len(),
        root.display()
    );
}

/// A padding extension that brings the hello's message to about `size` bytes.
fn padded(mut h: ClientHello, size: usize) -> ClientHello {
    let len = h.message().len();
    if let Some(exts) = h.extensions.as_mut().filter(|_| len + 4 < size) {
        exts.push(Ext::padding(size - len - 4));
    }
    h
}

/// Payloads for `hello`: (file name, bytes of one TCP segment).
fn hellos() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let names = [
        "api.test",
        "API.Test",
        "old.test",
        "x.y.z.test",
        "X.Y.Z.TEST",
        "unknown.test",
    ];
    for name in names {
        out.push((format!("modern-{name}"), ClientHello::modern(name).record()));
    }
    let versions = [
        ("ssl3", version::SSL3),
        ("tls10", version::TLS1_0),
        ("tls11", version::TLS1_1),
        ("tls12", version::TLS1_2),
    ];
    for (v, wire) in versions {
        for name in ["old.test", "x.y.z.test", "api.test", "unknown.test"] {
            out.push((
                format!("legacy-{v}-{name}"),
                ClientHello::legacy(wire, Some(name)).record(),
            ));
        }
        out.push((
            format!("legacy-{v}-no-sni"),
            ClientHello::legacy(wire, None).record(),
        ));
        let mut bare = ClientHello::legacy(wire, None);
        bare.extensions = None;
        out.push((format!("legacy-{v}-no-extensions"), bare.record()));
    }
    let with_versions = |name: &str, versions: Vec<u16>| {
        let mut h = ClientHello::modern(name);
        for e in h.extensions.iter_mut().flatten() {
            if let Ext::SupportedVersions(v) = e {
                *v = versions.clone();
            }
        }
        h
    };
    out.push((
        "versions-tls11-tls10-grease".into(),
        with_versions("old.test", vec![0x7a7a, version::TLS1_1, version::TLS1_0]).record(),
    ));
    out.push((
        "versions-tls12-api".into(),
        with_versions("api.test", vec![version::TLS1_2]).record(),
    ));
    out.push((
        "versions-only-grease".into(),
        with_versions("a.test", vec![0x0a0a]).record(),
    ));
    out.push((
        "versions-draft".into(),
        with_versions("api.test", vec![0x7f1c, version::TLS1_2]).record(),
    ));
    // SNI after supported_versions, as some clients send it.
    let mut late = ClientHello::legacy(version::TLS1_0, None);
    late.extensions = Some(vec![
        Ext::SupportedVersions(vec![version::TLS1_1, version::TLS1_0]),
        Ext::padding(300),
        Ext::sni("x.y.z.test"),
    ]);
    out.push(("sni-after-versions".into(), late.record()));
    for size in [512, 2000] {
        out.push((
            format!("modern-padded-{size}"),
            padded(ClientHello::modern("api.test"), size).record(),
        ));
        out.push((
            format!("legacy-tls10-padded-{size}"),
            padded(
                ClientHello::legacy(version::TLS1_0, Some("unknown.test")),
                size,
            )
            .record(),
        ));
    }
    let mut pq = ClientHello::modern("old.test");
    if let Some(exts) = pq.extensions.as_mut() {
        exts.retain(|e| !matches!(e, Ext::Raw(51, _)));
        exts.push(Ext::key_share(1216));
    }
    out.push(("post-quantum-key-share".into(), pq.record()));
    let mut huge = ClientHello::legacy(version::TLS1_0, None);
    if let Some(exts) = huge.extensions.as_mut() {
        exts.insert(0, Ext::padding(4500));
        exts.push(Ext::sni("old.test"));
    }
    out.push(("message-over-payload-cap".into(), huge.record()));
    let mut many = ClientHello::legacy(version::TLS1_1, None);
    if let Some(exts) = many.extensions.as_mut() {
        exts.extend((0..70).map(|i| Ext::Raw(0x4000 + i, Vec::new())));
        exts.push(Ext::sni("x.y.z.test"));
    }
    out.push(("70-extensions".into(), many.record()));
    for len in [255, 256] {
        let name: String = (0..len)
            .map(|i| if i % 3 == 0 { 'A' } else { 'a' })
            .collect();
        out.push((
            format!("sni-{len}-bytes"),
            ClientHello::legacy(version::TLS1_2, Some(&name)).record(),
        ));
    }
    let mut twice = ClientHello::modern("api.test");
    if let Some(exts) = twice.extensions.as_mut() {
        exts.push(Ext::sni("old.test"));
    }
    out.push(("sni-twice".into(), twice.record()));
    let msg = ClientHello::legacy(version::TLS1_0, Some("old.test")).message();
    out.push(("records-7".into(), records(&msg, version::TLS1_0, 7)));
    out.push(("records-1".into(), records(&msg, version::TLS1_2, 1)));
    let msg = ClientHello::modern("api.test").message();
    out.push((
        "modern-records-100".into(),
        records(&msg, version::TLS1_0, 100),
    ));
    out.push(("sslv2-ssl2".into(), sslv2_hello(version::SSL2)));
    out.push(("sslv2-tls10".into(), sslv2_hello(version::TLS1_0)));
    out.extend(real_hellos());
    out
}

/// The streams of the stream targets: some of the hellos, and streams that
/// only a flow has (a hello followed by more records, two hellos, a stream
/// longer than the filter keeps).
fn stream_hellos(hellos: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let keep = [
        "modern-api.test",
        "modern-X.Y.Z.TEST",
        "legacy-tls10-old.test",
        "legacy-tls11-api.test",
        "legacy-ssl3-no-sni",
        "legacy-tls12-no-extensions",
        "versions-tls11-tls10-grease",
        "sni-after-versions",
        "modern-padded-2000",
        "legacy-tls10-padded-2000",
        "post-quantum-key-share",
        "message-over-payload-cap",
        "70-extensions",
        "sni-twice",
        "records-7",
        "modern-records-100",
        "sslv2-ssl2",
        "sslv2-tls10",
    ];
    let mut out: Vec<(String, Vec<u8>)> = hellos
        .iter()
        .filter(|(name, _)| keep.contains(&name.as_str()) || name.starts_with("openssl"))
        .cloned()
        .collect();
    let old = ClientHello::legacy(version::TLS1_0, Some("unknown.test")).record();
    let modern = ClientHello::modern("api.test").record();
    let mut ccs = old.clone();
    ccs.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    out.push(("legacy-then-change-cipher-spec".into(), ccs));
    out.push((
        "modern-then-legacy".into(),
        [modern.clone(), old.clone()].concat(),
    ));
    out.push(("legacy-then-modern".into(), [old, modern].concat()));
    let msg = padded(ClientHello::legacy(version::TLS1_1, Some("api.test")), 1600).message();
    out.push(("over-stream-cap".into(), records(&msg, version::TLS1_0, 1)));
    out
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Headers for one stream: (what they do, header).
fn headers(stream: &[u8]) -> Vec<(&'static str, Header)> {
    use stream_input::{DROP, PAD, SYN, TIMESTAMPS, V6, VLAN};
    let len = stream.len().min(stream_input::MAX_STREAM);
    let at = |positions: &[usize]| {
        let mut cuts = [0u16; stream_input::CUTS];
        for (c, &p) in cuts.iter_mut().zip(positions) {
            *c = p.min(len.saturating_sub(1)) as u16;
        }
        cuts
    };
    // The SNI's middle, else the middle of the stream.
    let sni = [
        b"api.test".as_slice(),
        b"old.test",
        b"x.y.z.test",
        b"X.Y.Z.TEST",
        b"unknown.test",
    ]
    .iter()
    .find_map(|n| find(stream, n).map(|i| i + n.len() / 2))
    .unwrap_or(len / 2);
    let versions = find(stream, &[0, 43]).map_or(len / 3, |i| i + 5);
    let h = |flags: u8, isn: u32, cuts: [u16; stream_input::CUTS], events: [[u8; 4]; 4]| Header {
        flags,
        isn,
        cuts,
        events,
    };
    let none = [[0u8; 4]; 4];
    let one_event = |e: [u8; 4]| [e, [0; 4], [0; 4], [0; 4]];
    vec![
        ("whole", h(0, 1000, [0; 8], none)),
        ("whole-syn", h(SYN, 1000, [0; 8], none)),
        ("record-header", h(SYN, 7, at(&[1, 3, 5]), none)),
        ("handshake-header", h(0, 7, at(&[6, 9]), none)),
        ("ssl2-header", h(SYN, 7, at(&[8]), none)),
        ("sni-middle", h(SYN | V6, 0xffff_fff0, at(&[sni]), none)),
        ("versions", h(TIMESTAMPS, 99, at(&[versions, sni]), none)),
        (
            "ones",
            h(
                SYN | PAD,
                5,
                at(&[
                    sni - 3,
                    sni - 2,
                    sni - 1,
                    sni,
                    sni + 1,
                    sni + 2,
                    sni + 3,
                    sni + 4,
                ]),
                none,
            ),
        ),
        (
            "every-1448",
            h(
                SYN | VLAN,
                3,
                at(&[1448, 2896, 4344, 5792, 7240, 8688]),
                none,
            ),
        ),
        (
            "drop-mode",
            h(
                SYN | DROP,
                11,
                at(&[sni]),
                one_event([event::DUPLICATE, 1, 0, 0]),
            ),
        ),
        (
            "duplicate",
            h(0, 11, at(&[sni]), one_event([event::DUPLICATE, 1, 0, 0])),
        ),
        (
            "swap",
            h(SYN, 11, at(&[20, sni]), one_event([event::SWAP, 0, 0, 0])),
        ),
        (
            "lose",
            h(SYN, 11, at(&[20, sni]), one_event([event::LOSE, 1, 0, 0])),
        ),
        (
            "repacketised",
            h(
                SYN,
                11,
                at(&[sni]),
                one_event([event::REPACKETISED, 1, 0, 40]),
            ),
        ),
        (
            "changed",
            h(SYN, 11, at(&[sni]), one_event([event::CHANGED, 2, 0, 9])),
        ),
        (
            "ack-syn-rst",
            h(
                SYN | V6 | VLAN | TIMESTAMPS,
                0x8000_0000,
                at(&[30, sni]),
                [
                    [event::ACK, 1, 0, 0],
                    [event::RST, 2, 1, 0],
                    [event::SYN, 3, 0, 0],
                    [event::DUPLICATE, 0, 9, 0],
                ],
            ),
        ),
    ]
}

/// ClientHellos of `openssl s_client` at each version, captured on loopback.
fn real_hellos() -> Vec<(String, Vec<u8>)> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("note: no openssl here, so no real hellos among the seeds");
        return Vec::new();
    }
    let mut out = Vec::new();
    for (flag, name) in [
        ("-tls1", "old.test"),
        ("-tls1_1", "x.y.z.test"),
        ("-tls1_2", "api.test"),
        ("-tls1_2", "unknown.test"),
        ("-tls1_3", "api.test"),
    ] {
        match capture(&["-servername", name, flag, "-cipher", "DEFAULT:@SECLEVEL=0"]) {
            Some(hello) => out.push((format!("openssl{flag}-{name}"), hello)),
            None => eprintln!("note: openssl s_client {flag} sent no hello"),
        }
    }
    if let Some(hello) = capture(&["-noservername", "-tls1_2"]) {
        out.push(("openssl-tls1_2-no-sni".into(), hello));
    }
    out
}

/// The bytes `openssl s_client ARGS` sends up to the end of the record that
/// completes its ClientHello (`None` if it sent none within 10 s).
fn capture(args: &[&str]) -> Option<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = listener.local_addr().ok()?.port();
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    listener.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while Instant::now() < deadline && got.is_none() {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).ok()?;
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                while hello_end(&bytes).is_none() {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    }
                }
                got = hello_end(&bytes).map(|end| bytes[..end].to_vec());
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

/// The end of the record that completes the first handshake message, once
/// `stream` holds it.
fn hello_end(stream: &[u8]) -> Option<usize> {
    let (mut pos, mut hs) = (0, Vec::new());
    while let Some(h) = stream.get(pos..pos + 5) {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let body = stream.get(pos + 5..pos + 5 + len)?;
        hs.extend_from_slice(body);
        pos += 5 + len;
        if hs.len() >= 4 {
            let msg = 4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if hs.len() >= msg {
                return Some(pos);
            }
        }
    }
    None
}
