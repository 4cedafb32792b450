//! Helpers for the lab tests of hellos split over several TCP segments or TLS
//! records (`tests/tests/xdp_split_lab.rs`).
//!
//! - [`send_chunks`]: a real TCP client in the client namespace that sends given
//!   byte chunks as separate segments (TCP_NODELAY, one write per chunk with a
//!   pause between them) and reports how the connection ended and how fast;
//!   [`send_chunks_from`] does it from a given client port.
//!   Segmentation is requested, not assumed: the tests check it with the
//!   filter's `hello_partial` counter (one per segment before the deciding one).
//! - [`set_client_segmentation_offload`]: checksum, TSO and GSO on or off on the
//!   client's veth, so that a write larger than the MSS leaves as MSS-sized
//!   segments rather than one super-packet.
//! - [`Capture`]: `tcpdump` on the client's veth, and [`client_hellos`], which
//!   reads the capture back and says, for each connection to port 443, how many
//!   TCP segments and TLS records its ClientHello took and what it offered.
//! - [`server_sockets`]: what `ss` shows in the server namespace for one client port.

use std::{
    collections::BTreeMap,
    fs,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::lab::{IFACE, Lab, metric, run};

/// Turns checksum offload, TSO and GSO on or off on the client's veth. Off, a
/// write larger than the MSS leaves as several MSS-sized segments and every
/// checksum is complete.
pub fn set_client_segmentation_offload(lab: &Lab, on: bool) -> anyhow::Result<()> {
    let state = if on { "on" } else { "off" };
    run(lab
        .in_client("ethtool")
        .args(["-K", IFACE, "tx", state, "tso", state, "gso", state]))?;
    Ok(())
}

/// What the client's `ethtool -k` says about segmentation and checksums.
pub fn client_offload_state(lab: &Lab) -> String {
    let out = lab
        .in_client("ethtool")
        .args(["-k", IFACE])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| {
            l.starts_with("tx-checksumming")
                || l.starts_with("tcp-segmentation-offload")
                || l.starts_with("generic-segmentation-offload")
        })
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Splits `bytes` into chunks of the given sizes; what is left is one last chunk.
pub fn chunks(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &n in sizes {
        if rest.is_empty() {
            break;
        }
        let n = n.min(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

/// How a [`send_chunks`] connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The read failed with ECONNRESET.
    Reset,
    /// The read returned end of file.
    Eof,
    /// The server answered with this many bytes (read once).
    Data(usize),
    /// Nothing came within the wait.
    TimedOut,
    /// Another error (its description).
    Error(String),
}

/// What a [`send_chunks`] client saw.
#[derive(Debug, Clone)]
pub struct ChunkedRun {
    /// The client's local port (to find the flow in `ss` and captures).
    pub local_port: u16,
    /// How many writes (chunks) were made.
    pub writes: usize,
    /// How the connection ended.
    pub end: End,
    /// From the start of the last write to the end.
    pub after_last_write: Duration,
    /// From connect to the end.
    pub total: Duration,
}

/// Connects from the client namespace to `server`, sends each chunk with its
/// own write (TCP_NODELAY, `pause` between writes so that the stack does not
/// cork them together), then reads once, waiting at most `wait`.
pub fn send_chunks(
    lab: &Lab,
    server: SocketAddr,
    chunks: Vec<Vec<u8>>,
    pause: Duration,
    wait: Duration,
) -> anyhow::Result<ChunkedRun> {
    send_chunks_from(lab, None, server, chunks, pause, wait)
}

/// [`send_chunks`] from a given client port (`None`: any), as a client whose
/// ports came round would.
pub fn send_chunks_from(
    lab: &Lab,
    local_port: Option<u16>,
    server: SocketAddr,
    chunks: Vec<Vec<u8>>,
    pause: Duration,
    wait: Duration,
) -> anyhow::Result<ChunkedRun> {
    lab.in_client_thread(move || -> anyhow::Result<ChunkedRun> {
        let start = Instant::now();
        let mut s = connect_from(local_port, server).with_context(|| match local_port {
            Some(port) => format!("connect to {server} from port {port}"),
            None => format!("connect to {server}"),
        })?;
        s.set_nodelay(true)?;
        let local_port = s.local_addr()?.port();
        // Let the handshake's last ACK go first, so that the first chunk is a
        // segment of its own.
        thread::sleep(pause);
        let mut last_write = Instant::now();
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                thread::sleep(pause);
            }
            last_write = Instant::now();
            s.write_all(chunk)
                .with_context(|| format!("write {i} of {}", chunks.len()))?;
        }
        s.set_read_timeout(Some(wait))?;
        let mut buf = [0u8; 16384];
        let end = match s.read(&mut buf) {
            Ok(0) => End::Eof,
            Ok(n) => End::Data(n),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => End::Reset,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                End::TimedOut
            }
            Err(e) => End::Error(e.to_string()),
        };
        let after_last_write = last_write.elapsed();
        Ok(ChunkedRun {
            local_port,
            writes: chunks.len(),
            end,
            after_last_write,
            total: start.elapsed(),
        })
    })?
}

/// A blocking TCP connection to `server` (within 3 s), from `local_port` if
/// given (bound with `SO_REUSEADDR`).
fn connect_from(local_port: Option<u16>, server: SocketAddr) -> std::io::Result<TcpStream> {
    let limit = Duration::from_secs(3);
    let Some(port) = local_port else {
        return TcpStream::connect_timeout(&server, limit);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = match server {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        let any: std::net::IpAddr = match server {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        socket.bind(SocketAddr::new(any, port))?;
        tokio::time::timeout(limit, socket.connect(server))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))?
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// `ss -tan` lines in the server namespace for TCP sockets whose peer port is
/// `client_port` (any state, listeners excluded): empty once the socket is gone.
pub fn server_sockets(lab: &Lab, client_port: u16) -> anyhow::Result<String> {
    let out = run(lab.in_server("ss").args([
        "-tanH",
        "state",
        "all",
        &format!("( dport = :{client_port} )"),
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A running `tcpdump` on the client's veth, writing a pcap file.
pub struct Capture {
    name: String,
    /// The pcap file.
    pub path: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i gw0 -U --immediate-mode -w FILE 'tcp port 443'` in the client namespace
    /// and waits until it listens.
    pub fn start(lab: &mut Lab, name: &str) -> anyhow::Result<Capture> {
        let path = lab.dir.join(format!("{name}.pcap"));
        let mut cmd = lab.in_client("tcpdump");
        cmd.args(["-i", IFACE, "-n", "-U", "--immediate-mode", "-s", "0", "-w"])
            .arg(&path)
            .args(["tcp", "port", "443"]);
        lab.spawn(name, cmd)?;
        lab.wait_for(name, Duration::from_secs(10), |lab| {
            lab.log(name).contains("listening on")
        })?;
        Ok(Capture {
            name: name.to_string(),
            path,
        })
    }

    /// Stops the capture (tcpdump flushes on SIGTERM) and returns the file's bytes.
    pub fn stop(self, lab: &mut Lab) -> anyhow::Result<Vec<u8>> {
        // Give the last packets a moment to be written.
        thread::sleep(Duration::from_millis(200));
        lab.stop(&self.name)?;
        fs::read(&self.path).with_context(|| format!("read {}", self.path.display()))
    }
}

/// A ClientHello found in a capture.
#[derive(Debug, Clone, Default)]
pub struct CapturedHello {
    /// The client's port.
    pub client_port: u16,
    /// TCP segments (distinct sequence ranges) that carried bytes of the hello.
    pub segments: usize,
    /// TLS records the hello was carried in.
    pub records: usize,
    /// Length of the handshake message (header included).
    pub message_len: usize,
    /// The size of every segment that carried hello bytes, in stream order.
    pub segment_sizes: Vec<usize>,
    /// `legacy_version`.
    pub legacy_version: u16,
    /// The server_name, if any.
    pub sni: Option<String>,
    /// supported_groups, in order.
    pub groups: Vec<u16>,
    /// Groups of the key_share entries, in order.
    pub key_shares: Vec<u16>,
    /// supported_versions, in order.
    pub versions: Vec<u16>,
    /// Stream offset (record headers included) just past the bytes the filter
    /// needs to decide: the later of the `server_name` and `supported_versions`
    /// extensions, or the end of the hello when one of them is missing.
    pub decisive_end: usize,
}

impl CapturedHello {
    /// Whether the filter can decide from the first segment alone (it then
    /// counts the hello as decided from one segment, not as split).
    pub fn decidable_from_first_segment(&self) -> bool {
        self.records == 1
            && self
                .segment_sizes
                .first()
                .is_some_and(|&n| self.decisive_end <= n)
    }
}

/// X25519MLKEM768's code point (draft-ietf-tls-ecdhe-mlkem).
pub const X25519_MLKEM768: u16 = 0x11ec;

/// Every complete ClientHello sent to port 443 in a pcap capture (Ethernet,
/// IPv4 or IPv6), one per connection, in the order the connections began.
pub fn client_hellos(pcap: &[u8]) -> anyhow::Result<Vec<CapturedHello>> {
    // Per client flow: its ISN (from the SYN) and its data segments by offset.
    struct Flow {
        order: usize,
        isn: Option<u32>,
        segments: BTreeMap<u32, Vec<u8>>,
    }
    let mut flows: BTreeMap<(Vec<u8>, u16), Flow> = BTreeMap::new();
    for frame in pcap_frames(pcap)? {
        let Some(seg) = tcp_segment(frame) else {
            continue;
        };
        if seg.dport != 443 {
            continue;
        }
        let n = flows.len();
        let flow = flows.entry((seg.src, seg.sport)).or_insert(Flow {
            order: n,
            isn: None,
            segments: BTreeMap::new(),
        });
        if seg.syn {
            flow.isn = Some(seg.seq);
        } else if !seg.payload.is_empty() {
            flow.segments.entry(seg.seq).or_insert(seg.payload);
        }
    }
    let mut flows: Vec<_> = flows.into_iter().collect();
    flows.sort_by_key(|(_, f)| f.order);
    let mut out = Vec::new();
    for ((_, port), flow) in flows {
        let Some(isn) = flow.isn else { continue };
        // The stream from its first byte, and which segment each range came from.
        let mut stream = Vec::new();
        let mut ranges = Vec::new();
        let mut by_offset: Vec<(u32, &Vec<u8>)> = flow
            .segments
            .iter()
            .map(|(seq, p)| (seq.wrapping_sub(isn.wrapping_add(1)), p))
            .collect();
        by_offset.sort_by_key(|(off, _)| *off);
        for (off, payload) in by_offset {
            let off = off as usize;
            if off > stream.len() || off > 1 << 20 {
                break; // a gap: the capture missed something
            }
            let end = off + payload.len();
            if end > stream.len() {
                stream.extend_from_slice(&payload[stream.len() - off..]);
                ranges.push((off, end));
            }
        }
        if let Some((mut hello, used)) = parse_records(&stream) {
            hello.segment_sizes = ranges
                .iter()
                .filter(|&&(start, _)| start < used)
                .map(|&(start, end)| end.min(used) - start)
                .collect();
            hello.segments = hello.segment_sizes.len();
            hello.client_port = port;
            out.push(hello);
        }
    }
    Ok(out)
}

/// Takes the hello out of its records; also returns the stream bytes they took.
fn parse_records(stream: &[u8]) -> Option<(CapturedHello, usize)> {
    let mut pos = 0;
    let mut msg = Vec::new();
    let mut records = 0;
    // (offset in the message, offset in the stream) where each record's body starts.
    let mut starts = Vec::new();
    loop {
        let hdr = stream.get(pos..pos + 5)?;
        if hdr[0] != 22 || hdr[1] != 3 {
            return None;
        }
        let len = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
        let body = stream.get(pos + 5..pos + 5 + len)?;
        starts.push((msg.len(), pos + 5));
        msg.extend_from_slice(body);
        records += 1;
        pos += 5 + len;
        if msg.len() >= 4 {
            let want = 4 + ((msg[1] as usize) << 16 | (msg[2] as usize) << 8 | msg[3] as usize);
            if msg.len() >= want {
                msg.truncate(want);
                break;
            }
        }
    }
    if msg[0] != 1 {
        return None;
    }
    let (mut hello, decisive) = parse_hello_body(&msg[4..])?;
    // The stream offset just past message offset `decisive` (> 0).
    let at = decisive.min(msg.len()).max(1) - 1;
    let &(m, st) = starts.iter().rev().find(|&&(m, _)| m <= at)?;
    hello.decisive_end = st + (at - m) + 1;
    hello.records = records;
    hello.message_len = msg.len();
    Some((hello, pos))
}

/// The hello's fields, and the message offset (handshake header included) just
/// past the bytes the filter needs to decide.
fn parse_hello_body(b: &[u8]) -> Option<(CapturedHello, usize)> {
    let mut h = CapturedHello {
        legacy_version: u16::from_be_bytes([*b.first()?, *b.get(1)?]),
        ..CapturedHello::default()
    };
    let mut p = 2 + 32;
    p += 1 + *b.get(p)? as usize;
    p += 2 + be16(b, p)? as usize;
    p += 1 + *b.get(p)? as usize;
    let ext_end = p + 2 + be16(b, p)? as usize;
    p += 2;
    let (mut sni_end, mut versions_end) = (None, None);
    while p + 4 <= ext_end.min(b.len()) {
        let kind = be16(b, p)?;
        let len = be16(b, p + 2)? as usize;
        let body = b.get(p + 4..p + 4 + len)?;
        match kind {
            0 => sni_end = Some(p + 4 + len),
            43 => versions_end = Some(p + 4 + len),
            _ => {}
        }
        match kind {
            0 if body.len() >= 5 => {
                let n = be16(body, 3)? as usize;
                h.sni = body
                    .get(5..5 + n)
                    .map(|s| String::from_utf8_lossy(s).into_owned());
            }
            10 => h.groups = u16_list(body.get(2..)?),
            43 => h.versions = u16_list(body.get(1..)?),
            51 => {
                let mut q = 2;
                while q + 4 <= body.len() {
                    h.key_shares.push(be16(body, q)?);
                    q += 4 + be16(body, q + 2)? as usize;
                }
            }
            _ => {}
        }
        p += 4 + len;
    }
    let decisive = match (sni_end, versions_end) {
        (Some(a), Some(b)) => a.max(b),
        _ => b.len(),
    };
    // Message offsets count the 4-byte handshake header.
    Some((h, 4 + decisive))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u16_list(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

struct TcpSeg {
    src: Vec<u8>,
    sport: u16,
    dport: u16,
    seq: u32,
    syn: bool,
    payload: Vec<u8>,
}

/// The frames of a classic pcap file (either byte order, µs or ns stamps).
fn pcap_frames(pcap: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    if pcap.len() < 24 {
        bail!("a pcap file of {} bytes has no header", pcap.len());
    }
    let magic = u32::from_le_bytes(pcap[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => bail!("not a pcap file (magic {magic:#x})"),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(pcap, 20);
    if link != 1 {
        bail!("pcap link type {link}, expected Ethernet (1)");
    }
    let mut frames = Vec::new();
    let mut p = 24;
    while p + 16 <= pcap.len() {
        let caplen = u32_at(pcap, p + 8) as usize;
        let Some(frame) = pcap.get(p + 16..p + 16 + caplen) else {
            break; // truncated last record
        };
        frames.push(frame);
        p += 16 + caplen;
    }
    Ok(frames)
}

fn tcp_segment(frame: &[u8]) -> Option<TcpSeg> {
    let ethertype = be16(frame, 12)?;
    let (src, tcp, end) = match ethertype {
        0x0800 => {
            let ip = frame.get(14..)?;
            if ip[9] != 6 {
                return None;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = be16(ip, 2)? as usize;
            (ip.get(12..16)?.to_vec(), 14 + ihl, 14 + total)
        }
        0x86dd => {
            let ip = frame.get(14..)?;
            if ip[6] != 6 {
                return None;
            }
            let plen = be16(ip, 4)? as usize;
            (ip.get(8..24)?.to_vec(), 14 + 40, 14 + 40 + plen)
        }
        _ => return None,
    };
    let t = frame.get(tcp..)?;
    let doff = (t.get(12)? >> 4) as usize * 4;
    Some(TcpSeg {
        src,
        sport: be16(t, 0)?,
        dport: be16(t, 2)?,
        seq: u32::from_be_bytes(t.get(4..8)?.try_into().ok()?),
        syn: t.get(13)? & 0x02 != 0,
        payload: frame.get(tcp + doff..end.min(frame.len()))?.to_vec(),
    })
}

/// Looks for `program` on PATH; fails loudly (with what to install) when absent.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if Path::new(&candidate).is_file() {
            return candidate;
        }
    }
    panic!(
        "this test needs `{program}` (Debian package `{package}`), which is not on PATH; \
         run scripts/setup.sh as root to install it"
    );
}

/// One scrape of the gateway's counters, for the split-hello lab tests.
pub struct Counters(String);

impl Counters {
    /// Scrapes the gateway now.
    pub fn take(lab: &Lab) -> Counters {
        Counters(lab.metrics().expect("scrape the gateway"))
    }
    /// `gateway_xdp_packets_total{verdict, reason}`.
    pub fn packets(&self, verdict: &str, reason: &str) -> f64 {
        metric(
            &self.0,
            "gateway_xdp_packets_total",
            &[("verdict", verdict), ("reason", reason)],
        )
    }
    /// `gateway_xdp_split_hellos_total{outcome}`.
    pub fn split(&self, outcome: &str) -> f64 {
        metric(
            &self.0,
            "gateway_xdp_split_hellos_total",
            &[("outcome", outcome)],
        )
    }
    /// Every refused packet.
    pub fn dropped(&self) -> f64 {
        metric(&self.0, "gateway_xdp_packets_total", &[("verdict", "drop")])
    }
    /// Every counter that moved between `self` and `after`, for the report.
    pub fn moved(&self, after: &Counters) -> String {
        let mut out = Vec::new();
        for line in after.0.lines().filter(|l| l.starts_with("gateway_xdp_")) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let now: f64 = value.parse().unwrap_or(0.0);
            let before = self
                .0
                .lines()
                .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0.0);
            if now != before {
                out.push(format!(
                    "{}+{}",
                    series.trim_start_matches("gateway_xdp_"),
                    now - before
                ));
            }
        }
        out.join(" ")
    }
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
