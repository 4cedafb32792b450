//! `[log]`: the access log and the handshake log, where each goes, which
//! fields it writes and how many of its lines it keeps.
//!
//! ```toml
//! [log.access]
//! output = "/var/log/gateway/access.log"   # or "stdout"; reopened on SIGHUP;
//!                                          # relative: to the configuration file
//! fields = ["EdgeStartTimestamp", "ClientIP", "RayID"]   # omitted: every field
//! sample_rate = 0.1                          # one line in ten (default 1.0)
//! queue = 8192                               # lines waiting at most; more are dropped
//!
//! [log.handshake]
//! output = "stdout"
//! ```
//!
//! The XDP filter's refusals go to the handshake log too, with their own
//! limits: `[log] xdp_lines_per_second` and `xdp_events_per_cpu`.

use std::{fmt, path::PathBuf, str::FromStr};

use serde::Deserialize;

/// `[log]`: each log is off unless it has a section (or a `gateway run` flag).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// The access log: one line per HTTP request.
    pub access: Option<LogSpec>,
    /// The handshake log: one line per TLS handshake that failed after the
    /// kernel layer, or that completed with a client certificate or an SNI
    /// the gateway does not accept, and the XDP filter's refusals.
    pub handshake: Option<LogSpec>,
    /// Lines a second the handshake log gives the XDP filter's refusals at
    /// most (one per client, SNI and version); the rest go into one summary
    /// line a second.
    #[serde(default = "defaults::xdp_lines_per_second")]
    pub xdp_lines_per_second: u32,
    /// Refusal records each CPU's XDP filter sends userspace a second at most;
    /// past it the filter only counts (the summary line says how many).
    #[serde(default = "defaults::xdp_events_per_cpu")]
    pub xdp_events_per_cpu: u32,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            access: None,
            handshake: None,
            xdp_lines_per_second: defaults::xdp_lines_per_second(),
            xdp_events_per_cpu: defaults::xdp_events_per_cpu(),
        }
    }
}

impl LogSection {
    /// Makes relative log files relative to `dir` (the configuration file's).
    pub fn rebase(&mut self, dir: &std::path::Path) {
        for spec in [&mut self.access, &mut self.handshake]
            .into_iter()
            .flatten()
        {
            if let LogOutput::File(path) = &mut spec.output
                && path.is_relative()
            {
                *path = dir.join(&*path);
            }
        }
    }
}

/// One log: where it goes, its fields, its sample rate and its queue.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// `stdout` (or `-`), or a file appended to and reopened on SIGHUP.
    pub output: LogOutput,
    /// The fields written (names as in the README); empty: every field.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The fraction of lines written, from 0.0 to 1.0.
    #[serde(default = "defaults::sample_rate")]
    pub sample_rate: f64,
    /// Lines waiting for the writer thread at most; more are dropped (and counted).
    #[serde(default = "defaults::queue")]
    pub queue: usize,
}

impl LogSpec {
    /// A log to `output` with every field, every line, the default queue.
    pub fn to(output: LogOutput) -> LogSpec {
        LogSpec {
            output,
            fields: Vec::new(),
            sample_rate: defaults::sample_rate(),
            queue: defaults::queue(),
        }
    }
}

mod defaults {
    pub(super) fn sample_rate() -> f64 {
        1.0
    }
    pub(super) fn queue() -> usize {
        8192
    }
    pub(super) fn xdp_lines_per_second() -> u32 {
        100
    }
    pub(super) fn xdp_events_per_cpu() -> u32 {
        1000
    }
}

/// Where a log's lines go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum LogOutput {
    /// Standard output (journald, containers).
    Stdout,
    /// A file, appended to; reopened on SIGHUP (logrotate).
    File(PathBuf),
}

impl From<String> for LogOutput {
    fn from(s: String) -> LogOutput {
        match s.as_str() {
            "stdout" | "-" => LogOutput::Stdout,
            _ => LogOutput::File(PathBuf::from(s)),
        }
    }
}

impl FromStr for LogOutput {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<LogOutput, Self::Err> {
        Ok(LogOutput::from(s.to_string()))
    }
}

impl fmt::Display for LogOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogOutput::Stdout => f.write_str("stdout"),
            LogOutput::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `gateway run`'s log flags: each overrides its key of `[log]`.
#[derive(Clone, Debug, Default)]
pub struct LogFlags {
    /// `--access-log`: turns the access log on, to this output.
    pub access: Option<LogOutput>,
    /// `--access-log-fields`.
    pub access_fields: Option<Vec<String>>,
    /// `--access-log-sample-rate`.
    pub access_sample_rate: Option<f64>,
    /// `--handshake-log`: turns the handshake log on, to this output.
    pub handshake: Option<LogOutput>,
    /// `--handshake-log-fields`.
    pub handshake_fields: Option<Vec<String>>,
    /// `--handshake-log-sample-rate`.
    pub handshake_sample_rate: Option<f64>,
    /// `--handshake-log-xdp-lines`.
    pub xdp_lines_per_second: Option<u32>,
}

impl LogFlags {
    /// `section` with the flags applied.
    pub fn apply(&self, mut section: LogSection) -> LogSection {
        merge(
            &mut section.access,
            self.access.as_ref(),
            self.access_fields.as_ref(),
            self.access_sample_rate,
        );
        merge(
            &mut section.handshake,
            self.handshake.as_ref(),
            self.handshake_fields.as_ref(),
            self.handshake_sample_rate,
        );
        if let Some(n) = self.xdp_lines_per_second {
            section.xdp_lines_per_second = n;
        }
        section
    }
}

fn merge(
    spec: &mut Option<LogSpec>,
    output: Option<&LogOutput>,
    fields: Option<&Vec<String>>,
    rate: Option<f64>,
) {
    if let Some(output) = output {
        match spec {
            Some(s) => s.output = output.clone(),
            None => *spec = Some(LogSpec::to(output.clone())),
        }
    }
    let Some(s) = spec else { return };
    if let Some(fields) = fields {
        s.fields = fields.clone();
    }
    if let Some(rate) = rate {
        s.sample_rate = rate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_parses_and_flags_override_it() {
        let section: LogSection = toml::from_str(
            "[access]\noutput = \"/tmp/a.log\"\nfields = [\"RayID\"]\n[handshake]\noutput = \"stdout\"\nsample_rate = 0.5\n",
        )
        .unwrap();
        let access = section.access.clone().unwrap();
        assert_eq!(access.output, LogOutput::File("/tmp/a.log".into()));
        assert_eq!(access.fields, ["RayID"]);
        assert_eq!(access.sample_rate, 1.0);
        assert_eq!(section.handshake.clone().unwrap().output, LogOutput::Stdout);
        assert_eq!(section.xdp_lines_per_second, 100);
        assert_eq!(section.xdp_events_per_cpu, 1000);
        let flags = LogFlags {
            access: Some(LogOutput::Stdout),
            handshake_sample_rate: Some(0.25),
            ..LogFlags::default()
        };
        let merged = flags.apply(section);
        assert_eq!(merged.access.unwrap().output, LogOutput::Stdout);
        assert_eq!(merged.handshake.unwrap().sample_rate, 0.25);
        let lines = LogFlags {
            xdp_lines_per_second: Some(7),
            ..LogFlags::default()
        };
        assert_eq!(lines.apply(LogSection::default()).xdp_lines_per_second, 7);
        let none = LogFlags::default().apply(LogSection::default());
        assert!(none.access.is_none() && none.handshake.is_none());
    }
}
