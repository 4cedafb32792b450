//! Helpers for the access and handshake log tests: reading a log (every line
//! must be JSON), waiting for its writer, a raw TLS client, metric values.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::local::output;

/// Every line of the log at `path`, parsed; panics, showing the line, at one
/// that is not a JSON object (a broken or forged line).
pub fn lines(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "{}: a line that is not JSON ({e}): {}",
                    path.display(),
                    String::from_utf8_lossy(l)
                )
            });
            assert!(v.is_object(), "not an object: {v}");
            v
        })
        .collect()
}

/// The log's lines once it has at least `n` (the writer runs on its own
/// thread), waiting up to 10 s; then a little more, so that an extra line
/// would be seen too.
pub fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = lines(path);
        if got.len() >= n || Instant::now() > deadline {
            thread::sleep(Duration::from_millis(300));
            return lines(path);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The one line whose `field` is `value`; panics if there is not exactly one.
pub fn the_line<'a>(lines: &'a [Value], field: &str, value: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l[field] == value).collect();
    assert_eq!(
        found.len(),
        1,
        "lines with {field} = {value:?}: {found:#?}\nall: {lines:#?}"
    );
    found[0]
}

/// `scripts/raw_tls_client.py PORT SNI ARGS...`: the status of each response.
pub fn raw_client(port: u16, sni: &str, args: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/raw_tls_client.py");
    let out = output(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(sni)
            .args(args),
    );
    assert!(out.ok, "raw client failed: {}{}", out.stdout, out.stderr);
    out.stdout.lines().map(str::to_string).collect()
}

/// The value of the series `series` (name and labels as rendered) in a
/// Prometheus text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
