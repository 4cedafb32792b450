//! A log's writer: lines go through a bounded queue to a thread of their own,
//! which writes them in batches to a file or to standard output. Nothing on
//! the request or handshake path waits for it: a full queue drops the line and
//! counts it, and a write that fails (a full disk) drops its batch, counted
//! too, and is cut back so that the file holds whole lines only.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread,
    time::{Duration, Instant},
};

use log::warn;
use prometheus::IntCounter;

use crate::config::LogOutput;

/// How long the writer waits for a line before it looks for a reopen request.
const TICK: Duration = Duration::from_millis(100);
/// How long the writer lets lines gather after writing some: at most this
/// much later on disk, under load.
const LINGER: Duration = Duration::from_millis(10);
/// The most bytes written at once.
const BATCH: usize = 256 * 1024;

/// The counters of one log.
#[derive(Clone)]
pub struct WriterCounters {
    /// Lines written.
    pub written: IntCounter,
    /// Lines dropped because the queue was full.
    pub dropped_full: IntCounter,
    /// Lines dropped because writing them failed.
    pub dropped_error: IntCounter,
}

/// The sending end of a log: cheap to call, never blocks.
pub struct Writer {
    queue: SyncSender<Vec<u8>>,
    counters: WriterCounters,
    flushed: Arc<Flushed>,
}

/// How many flush requests the thread has served (an empty line is one).
#[derive(Default)]
struct Flushed {
    count: Mutex<u64>,
    served: Condvar,
}

impl Writer {
    /// Opens `output` and starts its writer thread, with a queue of `capacity`
    /// lines. A change of `reopen` makes the thread reopen the file (SIGHUP).
    pub fn start(
        name: &str,
        output: &LogOutput,
        capacity: usize,
        counters: WriterCounters,
        reopen: Arc<AtomicU64>,
    ) -> io::Result<Writer> {
        let sink = Sink::open(output)?;
        let (queue, lines) = sync_channel(capacity.max(1));
        let thread_counters = counters.clone();
        let flushed = Arc::new(Flushed::default());
        let thread_flushed = flushed.clone();
        thread::Builder::new()
            .name(format!("{name}-log"))
            .spawn(move || run(&lines, sink, &reopen, &thread_counters, &thread_flushed))?;
        Ok(Writer {
            queue,
            counters,
            flushed,
        })
    }

    /// Waits (up to `timeout`) until every line queued so far is written:
    /// at shutdown, so that the last requests' lines are not lost.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let poisoned = |e: std::sync::PoisonError<_>| e.into_inner();
        let before = *self.flushed.count.lock().unwrap_or_else(poisoned);
        loop {
            match self.queue.try_send(Vec::new()) {
                Ok(()) => break,
                Err(TrySendError::Full(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        let mut count = self.flushed.count.lock().unwrap_or_else(poisoned);
        while *count == before {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = match self.flushed.served.wait_timeout(count, left) {
                Ok((c, _)) => c,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    /// Queues one line (ending in `\n`); drops it, counted, when the queue is full.
    pub fn send(&self, line: Vec<u8>) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped_full.inc();
            }
        }
    }
}

/// The writer thread: a batch of whatever is queued, written whole; a reopen
/// request is served between batches, a flush request (an empty line) once
/// the lines before it are written. Ends when the sending end is dropped.
fn run(
    lines: &Receiver<Vec<u8>>,
    mut sink: Sink,
    reopen: &AtomicU64,
    c: &WriterCounters,
    flushed: &Flushed,
) {
    let mut generation = reopen.load(Ordering::Relaxed);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let (mut count, mut flush) = (0u64, false);
        let open = match lines.recv_timeout(TICK) {
            Ok(line) => {
                let mut next = Some(line);
                while let Some(line) = next.take() {
                    if line.is_empty() {
                        flush = true;
                        break;
                    }
                    batch.extend_from_slice(&line);
                    count += 1;
                    if batch.len() < BATCH {
                        next = lines.try_recv().ok();
                    }
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        if count > 0 {
            sink.write(&batch, count, c);
            batch.clear();
        }
        if count > 0 && !flush && open {
            // Lines came: let the next ones gather while this thread is not
            // waiting on the queue, so that a busy gateway's requests queue
            // their lines without waking it each time (one wake-up and one
            // write per LINGER instead of per line). An idle log still waits
            // in recv_timeout and writes its first line at once.
            thread::sleep(LINGER);
        }
        if flush {
            let mut n = flushed.count.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            flushed.served.notify_all();
        }
        if !open {
            return;
        }
        let now = reopen.load(Ordering::Relaxed);
        if now != generation {
            generation = now;
            sink.reopen();
        }
    }
}

/// Where a writer writes.
enum Sink {
    Stdout,
    File {
        path: std::path::PathBuf,
        file: File,
        failing: bool,
    },
}

impl Sink {
    fn open(output: &LogOutput) -> io::Result<Sink> {
        Ok(match output {
            LogOutput::Stdout => Sink::Stdout,
            LogOutput::File(path) => Sink::File {
                file: append(path)?,
                path: path.clone(),
                failing: false,
            },
        })
    }

    /// Writes a batch of `count` whole lines, or none of them.
    fn write(&mut self, batch: &[u8], count: u64, c: &WriterCounters) {
        let result = match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(batch).and_then(|()| out.flush())
            }
            Sink::File { file, .. } => {
                let before = file.metadata().map(|m| m.len());
                let written = file.write_all(batch);
                if written.is_err()
                    && let Ok(len) = before
                {
                    // A partial line would join the next one: cut it off.
                    let _ = file.set_len(len);
                }
                written
            }
        };
        match result {
            Ok(()) => {
                c.written.inc_by(count);
                if let Sink::File { failing, path, .. } = self
                    && *failing
                {
                    *failing = false;
                    warn!("log {}: writing again", path.display());
                }
            }
            Err(e) => {
                c.dropped_error.inc_by(count);
                if let Sink::File { failing, path, .. } = self
                    && !*failing
                {
                    *failing = true;
                    warn!("log {}: {e}; lines are dropped (counted)", path.display());
                }
            }
        }
    }

    /// Opens the file again, under its name (after logrotate moved it away).
    fn reopen(&mut self) {
        if let Sink::File { path, file, .. } = self {
            match append(path) {
                Ok(f) => *file = f,
                Err(e) => warn!("log {}: cannot reopen: {e}", path.display()),
            }
        }
    }
}

fn append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_whole_and_a_flush_waits_for_them() {
        let path = std::env::temp_dir().join(format!("gateway-writer-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let counter = |n: &str| IntCounter::new(n, "test").unwrap();
        let counters = WriterCounters {
            written: counter("w"),
            dropped_full: counter("f"),
            dropped_error: counter("e"),
        };
        let reopen = Arc::new(AtomicU64::new(0));
        let output = LogOutput::File(path.clone());
        let writer = Writer::start("test", &output, 4096, counters.clone(), reopen).unwrap();
        for i in 0..1000 {
            writer.send(format!("{{\"n\":{i}}}\n").into_bytes());
        }
        assert!(writer.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(counters.written.get(), 1000);
        assert_eq!(counters.dropped_full.get(), 0);
        let _ = std::fs::remove_file(&path);
    }
}
