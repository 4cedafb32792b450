//! The gateway's own logs, besides its diagnostics: the access log (one JSON
//! line per HTTP request, [`access`]) and the handshake log (one per TLS
//! handshake that failed or completed unacceptably, [`handshake`], and per
//! refusal of the XDP filter, [`kernel`]).
//!
//! The request and handshake paths only gather what a line needs (nothing at
//! all when a log is off or the line is sampled out); the line is built once
//! the response has ended (see `terminator::trace`) and handed to its log's [`writer`]
//! thread through a bounded queue, never waited for.

pub mod access;
pub mod handshake;
pub mod kernel;
pub mod line;
pub mod ray;
pub mod writer;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::config::{LogSection, LogSpec};
use line::FieldMask;
use ray::RayIds;
use writer::{Writer, WriterCounters};

/// One log: its writer, the fields it writes, and its sampling.
pub struct Log {
    writer: Writer,
    fields: FieldMask,
    /// Lines kept: those whose draw is below this (`u64::MAX`: all).
    threshold: u64,
    draws: AtomicU64,
}

impl Log {
    /// Whether the next line is kept (its sample rate).
    pub fn sampled(&self) -> bool {
        if self.threshold == u64::MAX {
            return true;
        }
        ray::mix(self.draws.fetch_add(1, Ordering::Relaxed)) < self.threshold
    }

    /// The fields it writes.
    pub fn fields(&self) -> FieldMask {
        self.fields
    }

    /// Queues a finished line (never blocks).
    pub fn send(&self, line: Vec<u8>) {
        self.writer.send(line);
    }
}

/// The logs of a gateway, and the ray ids of its requests.
#[derive(Default)]
pub struct Logs {
    /// The access log, when on.
    pub access: Option<Arc<Log>>,
    /// The handshake log, when on.
    pub handshake: Option<Log>,
    /// Request ids.
    pub rays: RayIds,
    /// Bumped to make the writers reopen their files.
    reopen: Arc<AtomicU64>,
}

impl Logs {
    /// No log: requests still get ray ids.
    pub fn off() -> Logs {
        Logs::default()
    }

    /// Opens the logs `section` configures, with their counters in `registry`
    /// (`gateway_log_lines_total`, `gateway_log_dropped_total`).
    pub fn start(section: &LogSection, registry: &Registry) -> anyhow::Result<Logs> {
        let mut logs = Logs::default();
        if section.access.is_none() && section.handshake.is_none() {
            return Ok(logs);
        }
        let lines = IntCounterVec::new(
            Opts::new("gateway_log_lines_total", "Log lines written, by log."),
            &["log"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "gateway_log_dropped_total",
                "Log lines dropped, by log and reason (queue_full: the writer fell \
                 behind; write_error: the output refused them, e.g. a full disk).",
            ),
            &["log", "reason"],
        )?;
        registry.register(Box::new(lines.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        let open = |name: &str, spec: &LogSpec, names: &'static [&'static str]| {
            let counters = WriterCounters {
                written: lines.with_label_values(&[name]),
                dropped_full: dropped.with_label_values(&[name, "queue_full"]),
                dropped_error: dropped.with_label_values(&[name, "write_error"]),
            };
            open_log(name, spec, names, counters, logs.reopen.clone())
                .with_context(|| format!("[log.{name}]"))
        };
        let access = section
            .access
            .as_ref()
            .map(|s| open("access", s, access::FIELDS))
            .transpose()?;
        let handshake = section
            .handshake
            .as_ref()
            .map(|s| open("handshake", s, handshake::FIELDS))
            .transpose()?;
        logs.access = access.map(Arc::new);
        logs.handshake = handshake;
        Ok(logs)
    }

    /// Waits (up to `timeout` each) until the lines queued so far are
    /// written: at shutdown. Blocks the calling thread.
    pub fn flush(&self, timeout: std::time::Duration) {
        let logs = self.access.as_deref().into_iter().chain(&self.handshake);
        for log in logs {
            if !log.writer.flush(timeout) {
                log::warn!("a log's last lines were not all written at shutdown");
            }
        }
    }

    /// Makes the writers reopen their files (after logrotate moved them).
    pub fn reopen(&self) {
        self.reopen.fetch_add(1, Ordering::Relaxed);
    }

    /// Reopens the files on every SIGHUP (a task on the current runtime).
    pub fn follow_sighup(self: &Arc<Self>) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let logs = Arc::downgrade(self);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(logs) = logs.upgrade() else { return };
                logs.reopen();
            }
        });
        Ok(())
    }

    /// What the banner says of the logs.
    pub fn describe(section: &LogSection) -> Option<String> {
        let part = |name: &str, spec: &Option<LogSpec>| {
            spec.as_ref().map(|s| format!("{name} log to {}", s.output))
        };
        let parts: Vec<String> = [
            part("access", &section.access),
            part("handshake", &section.handshake),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

fn open_log(
    name: &str,
    spec: &LogSpec,
    names: &'static [&'static str],
    counters: WriterCounters,
    reopen: Arc<AtomicU64>,
) -> anyhow::Result<Log> {
    let fields = FieldMask::select(names, &spec.fields).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        (0.0..=1.0).contains(&spec.sample_rate),
        "sample_rate = {}: must be from 0.0 to 1.0",
        spec.sample_rate
    );
    let threshold = if spec.sample_rate >= 1.0 {
        u64::MAX
    } else {
        (spec.sample_rate * u64::MAX as f64) as u64
    };
    let writer = Writer::start(name, &spec.output, spec.queue, counters, reopen)?;
    Ok(Log {
        writer,
        fields,
        threshold,
        draws: AtomicU64::new(0),
    })
}
