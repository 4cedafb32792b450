//! TLS session resumption from the client's side: `openssl s_client` runs
//! that save or offer a session and send one GET, and what they showed.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use crate::pki::Issued;

/// One `openssl s_client` connection and its GET.
pub struct Run {
    /// `Reused` in its output.
    pub reused: bool,
    /// The server sent a CertificateRequest.
    pub asked_cert: bool,
    /// The HTTP status line's code (empty: no response).
    pub status: String,
    /// stdout and stderr.
    pub out: String,
}

/// `openssl s_client` to `sni` on 127.0.0.1:`port` with `args` (version,
/// `-sess_out`/`-sess_in FILE`, ...), a client certificate if given, sending
/// one GET for `path` (`Accept: application/json`) and reading its response.
pub fn s_client(port: u16, sni: &str, args: &[&str], cert: Option<&Issued>, path: &str) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "openssl", "s_client", "-state", "-ign_eof"])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", sni])
        .args(args);
    if let Some(c) = cert {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (Debian's openssl package) must be installed");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {sni}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let done = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    let status = stdout
        .find("HTTP/1.1 ")
        .and_then(|i| stdout.get(i + 9..i + 12))
        .unwrap_or_default()
        .to_string();
    Run {
        reused: stdout.contains("Reused, TLS"),
        asked_cert: stderr.contains("read server certificate request"),
        status,
        out: format!("{stdout}\n--- stderr ---\n{stderr}"),
    }
}

/// The value of a series (name and labels, as printed) in a Prometheus
/// text exposition; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
