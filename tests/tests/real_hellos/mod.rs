//! Real clients' ClientHellos, captured on loopback, and what a policy must say of them.
//!
//! - [`capture_all`]: runs every real client (`openssl s_client`, Python's `ssl`,
//!   `curl`) against an in-process listener on 127.0.0.1 that reads the client's
//!   bytes up to the end of the record that completes the first handshake message,
//!   then closes; and says what the policy must do with each hello. Every client
//!   must really run and send a hello: it panics otherwise.
//! - [`Hello::parse`]: an independent little parser of those bytes: the SNI, the
//!   highest version offered, and every field boundary (where adversaries cut).
//! - [`reframe`] and [`Hello::padded`]: the same handshake message in other records,
//!   or grown to a browser's size with a `padding` extension.

use std::{
    io::{ErrorKind, Read},
    net::TcpListener,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// `padding` (RFC 7685).
const PADDING: u16 = 21;

/// A client run: who it is, the SNI it was given, and the command (`{PORT}` is the listener's port).
pub(crate) struct Client {
    /// What the summary calls it, e.g. "openssl s_client -tls1_1".
    pub label: String,
    /// The server name the client was told to send (`None`: it sends none).
    pub sni: Option<&'static str>,
    /// Program and arguments.
    pub argv: Vec<String>,
}

const PYTHON: &str = "import socket, ssl, sys
port, sni, ver = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = getattr(ssl.TLSVersion, ver)
if ver in ('TLSv1', 'TLSv1_1'):
    ctx.set_ciphers('DEFAULT:@SECLEVEL=0')
s = socket.create_connection(('127.0.0.1', port))
try:
    ctx.wrap_socket(s, server_hostname=sni)
except (ssl.SSLError, OSError) as e:
    print('handshake ended as expected:', e)
";

/// Every client run: openssl, Python and curl at each version, to each SNI.
fn clients() -> Vec<Client> {
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for sni in ["old.test", "strict.test"] {
        for flag in ["-tls1", "-tls1_1", "-tls1_2", "-tls1_3"] {
            out.push(Client {
                label: format!("openssl s_client {flag}"),
                sni: Some(sni),
                argv: argv(&[
                    "openssl",
                    "s_client",
                    "-connect",
                    "127.0.0.1:{PORT}",
                    "-servername",
                    sni,
                    "-cipher",
                    "DEFAULT:@SECLEVEL=0",
                    flag,
                ]),
            });
        }
        for ver in ["TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3"] {
            out.push(Client {
                label: format!("python3 ssl maximum_version={ver}"),
                sni: Some(sni),
                argv: argv(&["python3", "-c", PYTHON, "{PORT}", sni, ver]),
            });
        }
        for max in ["1.0", "1.1", "1.2", "default"] {
            let mut a = argv(&["curl", "-sSk", "--max-time", "10"]);
            if max != "default" {
                a.extend(argv(&["--tls-max", max]));
            }
            a.extend(argv(&["--resolve", &format!("{sni}:{{PORT}}:127.0.0.1")]));
            a.push(format!("https://{sni}:{{PORT}}/"));
            out.push(Client {
                label: format!("curl --tls-max {max}"),
                sni: Some(sni),
                argv: a,
            });
        }
    }
    // A server name in the client's own case, and hellos without one (zone minimum).
    for flag in ["-tls1_2", "-tls1_3"] {
        out.push(Client {
            label: format!("openssl s_client {flag} (SNI in capitals)"),
            sni: Some("STRICT.Test"),
            argv: argv(&[
                "openssl",
                "s_client",
                "-connect",
                "127.0.0.1:{PORT}",
                "-servername",
                "STRICT.Test",
                flag,
            ]),
        });
    }
    for flag in ["-tls1_1", "-tls1_2", "-tls1_3"] {
        out.push(Client {
            label: format!("openssl s_client {flag} -noservername"),
            sni: None,
            argv: argv(&[
                "openssl",
                "s_client",
                "-connect",
                "127.0.0.1:{PORT}",
                "-noservername",
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
                flag,
            ]),
        });
    }
    out
}

/// One captured hello and what the policy (zone 1.2, strict.test 1.3) must do with it.
pub(crate) struct Captured {
    /// Who sent it.
    pub client: Client,
    /// The bytes, records included.
    pub stream: Vec<u8>,
    /// What they say.
    pub hello: Hello,
    /// The highest version offered.
    pub max: u16,
    /// Whether the policy refuses it.
    pub refused: bool,
}

/// "1.0" for 0x0301 and so on.
pub(crate) fn version_name(v: u16) -> String {
    format!("1.{}", v.saturating_sub(0x0301))
}

/// Captures every client's hello, prints what each offers, and checks that the
/// set covers what the test needs (sub-minimum and allowed hellos to both names).
pub(crate) fn capture_all() -> Vec<Captured> {
    let start = Instant::now();
    let mut captured = Vec::new();
    for client in clients() {
        let stream = capture(&client);
        let hello = Hello::parse(&stream);
        let lower = |s: Option<&str>| s.map(str::to_ascii_lowercase);
        assert_eq!(
            lower(hello.sni.as_deref()),
            lower(client.sni),
            "{}: the SNI",
            client.label
        );
        let max = hello.max_version();
        let strict = lower(hello.sni.as_deref()).is_some_and(|s| s == "strict.test");
        let refused = max < if strict { 0x0304 } else { 0x0303 };
        captured.push(Captured {
            client,
            stream,
            hello,
            max,
            refused,
        });
    }
    eprintln!(
        "captured {} real hellos in {:.1?}:",
        captured.len(),
        start.elapsed()
    );
    for c in &captured {
        eprintln!(
            "  {:<44} sni={:<12} {:>4} B legacy={:#06x} supported_versions={:<26} max {} -> {}",
            c.client.label,
            c.hello.sni.as_deref().unwrap_or("-"),
            c.stream.len(),
            c.hello.legacy_version,
            format!("{:x?}", c.hello.supported_versions),
            version_name(c.max),
            if c.refused { "refused" } else { "allowed" }
        );
    }
    for (sni, max, refused) in [
        ("old.test", 0x0301, true),
        ("old.test", 0x0302, true),
        ("strict.test", 0x0301, true),
        ("strict.test", 0x0302, true),
        ("strict.test", 0x0303, true),
        ("old.test", 0x0303, false),
        ("old.test", 0x0304, false),
        ("strict.test", 0x0304, false),
    ] {
        let has = |c: &Captured| {
            c.hello.sni.as_deref() == Some(sni) && c.max == max && c.refused == refused
        };
        let v = version_name(max);
        assert!(
            captured.iter().any(has),
            "no TLS {v} hello to {sni} was captured"
        );
    }
    captured
}

/// Runs `client` against a fresh listener and returns the bytes it sent, through
/// the record that completes its ClientHello. Panics, saying why, if it cannot.
fn capture(client: &Client) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let argv: Vec<String> = client
        .argv
        .iter()
        .map(|a| a.replace("{PORT}", &port))
        .collect();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: cannot run {}: {e}", client.label, argv[0]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{}: accept: {e}", client.label),
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{}: the client never connected ({:?}):\n{}{}",
                client.label,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(2));
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = hello_end(&bytes) {
            break end;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = child.kill();
                panic!(
                    "{}: the connection ended after {} bytes, before a whole ClientHello: {:02x?}",
                    client.label,
                    bytes.len(),
                    bytes
                );
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    drop(conn);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    bytes.truncate(end);
    bytes
}

/// Where the record that completes the first handshake message ends, once `stream` holds it.
fn hello_end(stream: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let mut handshake = Vec::new();
    while stream.len() >= pos + 5 {
        assert_eq!(stream[pos], 22, "not a handshake record: {stream:02x?}");
        let len = usize::from(u16::from_be_bytes([stream[pos + 3], stream[pos + 4]]));
        let body = stream.get(pos + 5..pos + 5 + len)?;
        handshake.extend_from_slice(body);
        pos += 5 + len;
        if handshake.len() >= 4 && handshake.len() >= 4 + be(&handshake[1..4]) {
            return Some(pos);
        }
    }
    None
}

fn be(bytes: &[u8]) -> usize {
    bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b))
}

/// What a ClientHello says, read from the bytes a client sent.
#[derive(Clone, Debug)]
pub(crate) struct Hello {
    /// Version in the first record header.
    pub record_version: u16,
    /// The handshake message (type, length, body), records taken out.
    pub message: Vec<u8>,
    /// The SNI's host_name as sent.
    pub sni: Option<String>,
    /// `supported_versions`, if the hello has it.
    pub supported_versions: Option<Vec<u16>>,
    /// `legacy_version`.
    pub legacy_version: u16,
    /// Offsets in `message` where a field (or a length, or an extension) begins or ends.
    pub fields: Vec<usize>,
    /// Offset in `message` of the extensions block's length, and of an existing `padding` extension.
    extensions_at: usize,
    padding_at: Option<usize>,
    /// For each message byte, its offset in the stream; and where record headers are.
    msg_to_stream: Vec<usize>,
    record_starts: Vec<usize>,
    stream_len: usize,
}

impl Hello {
    /// Parses a client's stream: handshake records carrying one ClientHello. Panics if it is not.
    pub(crate) fn parse(stream: &[u8]) -> Hello {
        let (mut message, mut msg_to_stream, mut record_starts) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut pos = 0;
        while pos < stream.len() {
            assert_eq!(stream[pos], 22, "record at {pos} is not a handshake record");
            let len = be(&stream[pos + 3..pos + 5]);
            record_starts.push(pos);
            message.extend_from_slice(&stream[pos + 5..pos + 5 + len]);
            msg_to_stream.extend(pos + 5..pos + 5 + len);
            pos += 5 + len;
        }
        assert_eq!(message[0], 1, "not a ClientHello");
        assert_eq!(be(&message[1..4]) + 4, message.len(), "one whole message");
        let mut fields = vec![1, 4, 6, 38, 39];
        let mut at = 39 + usize::from(message[38]);
        fields.push(at);
        let ciphers = be(&message[at..at + 2]);
        fields.extend([at + 2, at + 2 + ciphers]);
        at += 2 + ciphers;
        at += 1 + usize::from(message[at]);
        fields.push(at);
        let extensions_at = at;
        assert_eq!(
            be(&message[at..at + 2]) + at + 2,
            message.len(),
            "extensions end the hello"
        );
        at += 2;
        let (mut sni, mut supported_versions, mut padding_at) = (None, None, None);
        while at < message.len() {
            let kind = be(&message[at..at + 2]) as u16;
            let len = be(&message[at + 2..at + 4]);
            let body = &message[at + 4..at + 4 + len];
            fields.extend([at, at + 2, at + 4]);
            match kind {
                0 => {
                    // server_name_list: type 0 (host_name), 16-bit length, name.
                    fields.extend([at + 6, at + 7, at + 9, at + 4 + len]);
                    assert_eq!(body[2], 0, "host_name first");
                    let n = be(&body[3..5]);
                    sni = Some(String::from_utf8(body[5..5 + n].to_vec()).unwrap());
                }
                43 => {
                    fields.push(at + 5);
                    let list = &body[1..1 + usize::from(body[0])];
                    supported_versions = Some(list.chunks(2).map(|c| be(c) as u16).collect());
                }
                PADDING => padding_at = Some(at),
                _ => {}
            }
            at += 4 + len;
        }
        fields.push(message.len());
        fields.sort_unstable();
        fields.dedup();
        Hello {
            record_version: be(&stream[1..3]) as u16,
            legacy_version: be(&message[4..6]) as u16,
            message,
            sni,
            supported_versions,
            fields,
            extensions_at,
            padding_at,
            msg_to_stream,
            record_starts,
            stream_len: stream.len(),
        }
    }

    /// The highest version offered: `supported_versions` without GREASE, else
    /// `legacy_version` capped at TLS 1.2.
    pub(crate) fn max_version(&self) -> u16 {
        let real = |v: &&u16| !(**v & 0x0f0f == 0x0a0a && **v >> 8 == **v & 0xff);
        match self
            .supported_versions
            .as_ref()
            .and_then(|l| l.iter().filter(real).max())
        {
            Some(v) => *v,
            None => self.legacy_version.min(0x0303),
        }
    }

    /// Every offset of the stream at which a field, a length or a record header
    /// begins or ends (excluding 0 and the end: each is a cut into two non-empty parts).
    pub(crate) fn stream_cuts(&self) -> Vec<usize> {
        let mut cuts: Vec<usize> = self
            .record_starts
            .iter()
            .flat_map(|&r| [r, r + 1, r + 3, r + 5])
            .collect();
        cuts.extend(self.fields.iter().map(|&m| {
            self.msg_to_stream
                .get(m)
                .copied()
                .unwrap_or(self.stream_len)
        }));
        cuts.retain(|&c| c > 0 && c < self.stream_len);
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// The message grown to `message_len` bytes by a `padding` extension (zeros): the
    /// client's own grown if it sent one, else a new one after the last extension.
    pub(crate) fn padded(&self, message_len: usize) -> Vec<u8> {
        let mut m = self.message.clone();
        let grow = message_len
            .checked_sub(m.len())
            .expect("pad to a larger size");
        match self.padding_at {
            Some(at) => {
                let len = be(&m[at + 2..at + 4]) + grow;
                m[at + 2..at + 4].copy_from_slice(&(len as u16).to_be_bytes());
                m.splice(at + 4..at + 4, std::iter::repeat_n(0, grow));
            }
            None => {
                let body = grow.checked_sub(4).expect("room for the extension header");
                m.extend_from_slice(&PADDING.to_be_bytes());
                m.extend_from_slice(&(body as u16).to_be_bytes());
                m.resize(message_len, 0);
            }
        }
        let ext = self.extensions_at;
        let block = m.len() - ext - 2;
        m[ext..ext + 2].copy_from_slice(&(block as u16).to_be_bytes());
        let body = (m.len() - 4) as u32;
        m[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
        m
    }
}

/// `message` in handshake records of `record_version`, a new record starting at each offset of `cuts`.
pub(crate) fn reframe(message: &[u8], record_version: u16, cuts: &[usize]) -> Vec<u8> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < message.len()));
    bounds.push(message.len());
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        out.push(22);
        out.extend_from_slice(&record_version.to_be_bytes());
        out.extend_from_slice(&((w[1] - w[0]) as u16).to_be_bytes());
        out.extend_from_slice(&message[w[0]..w[1]]);
    }
    out
}
