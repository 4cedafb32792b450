//! Flood generators for the lab, each bounded in count and time and stopping
//! by itself. They run in the client namespace only (see
//! [`Lab::in_client_thread`](crate::lab::Lab::in_client_thread)).
//!
//! - [`stateless`]: crafted Ethernet frames carrying sub-minimum ClientHellos
//!   with no prior handshake, from spoofed sources, written to the client's veth
//!   with AF_PACKET at up to millions of packets per second.
//! - [`live`]: the same hellos as live XDP frames from `BPF_PROG_RUN`, faster
//!   still where the kernel allows it.
//! - [`fastest`]: live frames, or AF_PACKET where the kernel refuses them
//!   (or `GATEWAY_FLOOD_NO_LIVE_FRAMES=1` asks so); says which ran.
//! - [`connections`]: real TCP connections that each send a sub-minimum
//!   ClientHello and wait for the server to end them;
//!   [`connections_evented`] the same from one thread, the hello shaped as a
//!   [`HelloShape`] (or none sent: [`HelloShape::Idle`]).

pub mod fastest;
pub mod live;
pub mod stateless;

pub use fastest::{Generator, blast_fastest};

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use gateway::hello::{ClientHello, Ext, records};
use gateway_common::version;

/// What a flood is allowed to do.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Packets or connections at most.
    pub count: u64,
    /// Per second at most (0: as fast as possible).
    pub rate: u64,
    /// Stop after this long whatever the count.
    pub max_time: Duration,
}

/// What a flood did.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodResult {
    /// Packets or connections sent.
    pub sent: u64,
    /// Sends that failed locally.
    pub errors: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Sleeps until `done` units are due at `bounds.rate` per second since `start`
/// (at once for rate 0: unpaced).
fn pace(bounds: Bounds, start: Instant, done: u64) {
    if bounds.rate > 0 {
        let due = start + Duration::from_secs_f64(done as f64 / bounds.rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// Calls `attempt(i)` for i = 0, 1, ... at `bounds.rate` per second until
/// `bounds.count` attempts or `bounds.max_time`; `attempt` says whether it worked.
fn paced(bounds: Bounds, mut attempt: impl FnMut(u64) -> bool) -> FloodResult {
    let start = Instant::now();
    let mut result = FloodResult::default();
    let mut done = 0;
    while done < bounds.count && start.elapsed() < bounds.max_time {
        if attempt(done) {
            result.sent += 1;
        } else {
            result.errors += 1;
        }
        done += 1;
        pace(bounds, start, done);
    }
    result.elapsed = start.elapsed();
    result
}

/// A sub-minimum ClientHello (TLS 1.0 or 1.1, alternating) for flood number `i`, with its own SNI.
pub fn old_hello(i: u64) -> Vec<u8> {
    old(i).record()
}

fn old(i: u64) -> ClientHello {
    let v = if i.is_multiple_of(2) {
        version::TLS1_0
    } else {
        version::TLS1_1
    };
    ClientHello::legacy(v, Some(&format!("flood{}.lab.test", i % 1000)))
}

/// The size of a browser's ClientHello without a post-quantum key share (a
/// padding extension brings old hellos to it).
pub const BROWSER_HELLO: usize = 1200;

/// How a connection flood's hello crosses the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloShape {
    /// One record in one segment: [`old_hello`].
    Whole,
    /// Padded to [`BROWSER_HELLO`] bytes, one record, sent in two TCP segments.
    TwoSegments,
    /// Padded to [`BROWSER_HELLO`] bytes, cut into TLS records of 256 bytes, one segment.
    Records,
    /// No hello at all: the connection completes the TCP handshake, sends
    /// nothing and waits (at most [`CONNECTION_WAIT`]) for the server to end it.
    Idle,
}

/// How long a flood connection waits for its connect and then for the server
/// to end it, each.
pub const CONNECTION_WAIT: Duration = Duration::from_secs(2);

impl HelloShape {
    /// Every shape.
    pub const ALL: [HelloShape; 4] = [
        HelloShape::Whole,
        HelloShape::TwoSegments,
        HelloShape::Records,
        HelloShape::Idle,
    ];

    /// Short name, for tables and JSON.
    pub fn key(self) -> &'static str {
        match self {
            HelloShape::Whole => "connections",
            HelloShape::TwoSegments => "two-segments",
            HelloShape::Records => "records",
            HelloShape::Idle => "idle",
        }
    }

    /// The writes, each leaving as its own segment, that carry hello `i`.
    pub fn writes(self, i: u64) -> Vec<Vec<u8>> {
        match self {
            HelloShape::Whole => return vec![old_hello(i)],
            HelloShape::Idle => return Vec::new(),
            HelloShape::TwoSegments | HelloShape::Records => {}
        }
        let mut hello = old(i);
        let bare = hello.message().len() + 5;
        if let Some(exts) = hello.extensions.as_mut() {
            exts.push(Ext::padding(BROWSER_HELLO.saturating_sub(bare + 4)));
        }
        let message = hello.message();
        match self {
            HelloShape::Records => vec![records(&message, hello.record_version, 256)],
            _ => {
                let record = records(&message, hello.record_version, usize::MAX);
                let (first, rest) = record.split_at(record.len() / 2);
                vec![first.to_vec(), rest.to_vec()]
            }
        }
    }
}

/// Most worker threads [`connections`] runs: a hello refused in XDP ends its
/// connection only at the client's first retransmission (about 200 ms later), so
/// high rates need many connections in flight.
pub const MAX_WORKERS: u64 = 1024;

/// Opens TCP connections to `server` from `workers` threads (at most
/// [`MAX_WORKERS`]), sends a sub-minimum hello on each and waits (up to 2 s) for
/// the server to end it. Must run inside the client namespace (the workers
/// inherit it).
pub fn connections(server: SocketAddr, bounds: Bounds, workers: u64) -> FloodResult {
    let mut workers = workers.clamp(1, MAX_WORKERS);
    if bounds.rate > 0 {
        workers = workers.min(bounds.rate); // each paced at 1/s or more: 0 would mean unpaced
    }
    // Shares of count and rate that add up to the totals exactly.
    let share = |total: u64, w: u64| total / workers + u64::from(w < total % workers);
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let share = Bounds {
                count: share(bounds.count, w),
                rate: share(bounds.rate, w),
                max_time: bounds.max_time,
            };
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || connection_worker(server, share, w * 1_000_000))
        })
        .collect();
    let mut total = FloodResult::default();
    for h in handles {
        let Ok(h) = h else {
            total.errors += 1; // the thread could not be started
            continue;
        };
        let r = h.join().unwrap_or_default();
        total.sent += r.sent;
        total.errors += r.errors;
    }
    total.elapsed = start.elapsed();
    total
}

fn connection_worker(server: SocketAddr, bounds: Bounds, first: u64) -> FloodResult {
    paced(bounds, |i| {
        TcpStream::connect_timeout(&server, Duration::from_secs(2))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(&old_hello(first + i))?;
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf); // a reset, a close or an alert: any ends the attempt
                Ok(())
            })
            .is_ok()
    })
}

/// The same flood as [`connections`], hellos shaped as `shape`, driven from the calling thread with
/// non-blocking sockets, at most `in_flight` connections open at once: many
/// connections in flight then cost the generator little and take no more than
/// one thread's share of its CPU from whatever else runs there. Its
/// `elapsed` is the time the connections were opened in (a rate's divisor),
/// not the wait for the last ones to end. Must run inside the client namespace.
pub fn connections_evented(
    server: SocketAddr,
    shape: HelloShape,
    bounds: Bounds,
    in_flight: usize,
) -> FloodResult {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return FloodResult {
            errors: bounds.count,
            ..FloodResult::default()
        };
    };
    let in_flight = in_flight.clamp(1, 65_536) as u32;
    let (sent, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let mut issuing = Duration::ZERO;
    runtime.block_on(async {
        let slots = Arc::new(tokio::sync::Semaphore::new(in_flight as usize));
        let limit = CONNECTION_WAIT;
        for i in 0..bounds.count {
            if bounds.rate > 0 {
                let due = start + Duration::from_secs_f64(i as f64 / bounds.rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            if start.elapsed() >= bounds.max_time {
                break;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (sent, errors) = (sent.clone(), errors.clone());
            tokio::spawn(async move {
                let attempt = async {
                    let connect = tokio::net::TcpStream::connect(server);
                    let mut s = tokio::time::timeout(limit, connect).await??;
                    s.set_nodelay(true)?;
                    for write in shape.writes(i) {
                        s.write_all(&write).await?;
                    }
                    let mut buf = [0u8; 256];
                    // A reset, a close, an alert or the time limit: any ends the attempt.
                    let _ = tokio::time::timeout(limit, s.read(&mut buf)).await;
                    anyhow::Ok(())
                };
                match attempt.await {
                    Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                drop(slot);
            });
        }
        issuing = start.elapsed();
        // Wait for the connections still open (each ends within `limit`).
        let _ = slots.acquire_many(in_flight).await;
    });
    FloodResult {
        sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        // The rate is of connections opened over the time they were opened
        // in: the wait for the last ones to end is not the flood's.
        elapsed: issuing.max(Duration::from_millis(1)),
    }
}
