//! Running frames through the loaded program with BPF_PROG_TEST_RUN: the
//! engine of `gateway xdp replay`, the tests and the benchmark.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, anyhow};
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions},
};
use gateway_common::{SNI_PRESENT, Scratch, Stat, StatKind, maps, programs};

use super::XdpFilter;

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// What the program learned from a ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloSeen {
    /// Highest version offered (wire value).
    pub max_version: u16,
    /// The lowercased SNI, when the program read one.
    pub sni: Option<String>,
}

/// The outcome of one frame.
#[derive(Clone, Debug)]
pub struct FrameVerdict {
    /// The XDP action returned.
    pub action: u32,
    /// The outcome counter the program bumped.
    pub stat: Stat,
    /// The hello's version and SNI, when the program determined the version.
    pub hello: Option<HelloSeen>,
    /// `SplitAllowed` or `SplitRefused` when the frame decided a hello taken
    /// from several segments or records.
    pub split: Option<Stat>,
    /// The frame as the program left it (a refused hello becomes a RST).
    pub output: Vec<u8>,
}

impl FrameVerdict {
    /// "pass" or "drop": whether the handshake was refused in XDP.
    pub fn verdict(&self) -> &'static str {
        self.stat.verdict().unwrap_or("pass")
    }

    /// Whether the handshake was refused.
    pub fn refused(&self) -> bool {
        self.verdict() == "drop"
    }
}

impl XdpFilter {
    /// Runs one frame through the filter and reports what it decided.
    ///
    /// The program runs on whichever CPU the kernel picks; the counters of every
    /// CPU are compared before and after to find the one it bumped.
    pub fn run_frame(&self, frame: &[u8]) -> anyhow::Result<FrameVerdict> {
        let before = self.stats.per_cpu()?;
        let mut output = vec![0u8; frame.len() + 256];
        let result = self
            .program(programs::FILTER)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut output),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        output.truncate(result.data_size_out as usize);
        let after = self.stats.per_cpu()?;

        let bumped = |s: Stat| -> Option<usize> {
            let (b, a) = (&before[s as usize], &after[s as usize]);
            (0..a.len()).find(|&cpu| a[cpu] != b[cpu])
        };
        let (stat, _) = Stat::ALL
            .into_iter()
            .filter(|s| s.verdict().is_some())
            .find_map(|s| bumped(s).map(|cpu| (s, cpu)))
            .ok_or_else(|| anyhow!("the program ran but bumped no outcome counter"))?;
        let hello_cpu = Stat::ALL
            .into_iter()
            .filter(|s| s.kind() == StatKind::HelloVersion)
            .find_map(bumped);
        let hello = match hello_cpu {
            Some(cpu) => Some(self.hello_seen(cpu)?),
            None => None,
        };
        let split = Stat::ALL
            .into_iter()
            .filter(|s| s.kind() == StatKind::Split)
            .find(|&s| bumped(s).is_some());
        Ok(FrameVerdict {
            action: result.return_value,
            stat,
            hello,
            split,
            output,
        })
    }

    /// Average nanoseconds per run of `frame` over `repeat` runs, as the kernel
    /// measures it (whole nanoseconds, time off the CPU excluded), for the filter
    /// or (with `baseline`) for a program that only returns `XDP_PASS`.
    pub fn time_frame(&self, frame: &[u8], repeat: u32, baseline: bool) -> anyhow::Result<f64> {
        let name = if baseline {
            programs::BASELINE
        } else {
            programs::FILTER
        };
        let mut output = vec![0u8; frame.len() + 256];
        let result = self.program(name)?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            repeat,
            ..Default::default()
        })?;
        Ok(result.duration.as_nanos() as f64)
    }

    /// Test hook: runs `frame` through one of the object's XDP programs by
    /// name (e.g. `cookie_syn`, which `gateway_xdp` tail-calls) and returns
    /// its action and the frame as it left it. Nothing is counted or decoded;
    /// the cookie key ring is [`CookieControl`](super::cookies::CookieControl)'s.
    pub fn run_program(&self, name: &str, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        let mut output = vec![0u8; frame.len() + 256];
        let result = self
            .program(name)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut output),
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        output.truncate(result.data_size_out as usize);
        Ok((result.return_value, output))
    }

    fn hello_seen(&self, cpu: usize) -> anyhow::Result<HelloSeen> {
        let scratch: PerCpuArray<_, Scratch> = PerCpuArray::try_from(self.map(maps::SCRATCH)?)?;
        let values = scratch.get(&0, 0)?;
        let s = values
            .get(cpu)
            .ok_or_else(|| anyhow!("no scratch value for CPU {cpu}"))?;
        let sni = (s.summary.sni_state == SNI_PRESENT).then(|| {
            let bytes: Vec<u8> = s.sni.iter().flat_map(|w| w.to_le_bytes()).collect();
            let name = &bytes[..usize::from(s.summary.sni_len)];
            String::from_utf8_lossy(&name.to_ascii_lowercase()).into_owned()
        });
        Ok(HelloSeen {
            max_version: s.summary.max_version,
            sni,
        })
    }
}

/// Runs frames through the filter one after another, faster than
/// [`XdpFilter::run_frame`]: it keeps the counters as they were after the
/// previous frame, so each frame costs the test run and one batched read of
/// every counter on every CPU (`BPF_MAP_LOOKUP_BATCH`), plus one read of the
/// per-CPU scratch when the frame reported a hello. The snapshot covers every
/// CPU, so the answer is right wherever the kernel runs the program; nothing
/// is pinned.
///
/// The runner holds the filter exclusively: while it lives, only its own runs
/// may bump the counters (the filter must not be attached to an interface).
/// A frame that bumps no outcome counter, or more than one, is an error.
pub struct FrameRunner<'a> {
    filter: &'a mut XdpFilter,
    /// A second handle on the `STATS` map (the filter's own lives in its `StatsMap`).
    stats: MapData,
    cpus: usize,
    /// Counters after the previous frame, `[stat * cpus + cpu]`.
    before: Vec<u64>,
    after: Vec<u64>,
    keys: Vec<u32>,
}

/// `BPF_MAP_LOOKUP_BATCH`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

impl XdpFilter {
    /// A [`FrameRunner`] over this filter, starting from its counters as they are now.
    pub fn frame_runner(&mut self) -> anyhow::Result<FrameRunner<'_>> {
        let stats = stats_map(self)?;
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| anyhow!("reading {path}: {e}"))?;
        let len = Stat::COUNT as usize * cpus;
        let mut runner = FrameRunner {
            filter: self,
            stats,
            cpus,
            before: vec![0; len],
            after: vec![0; len],
            keys: vec![0; Stat::COUNT as usize],
        };
        runner.read_counters()?;
        std::mem::swap(&mut runner.before, &mut runner.after);
        Ok(runner)
    }
}

/// The program's `STATS` map, found again through the program's map ids.
fn stats_map(filter: &XdpFilter) -> anyhow::Result<MapData> {
    let ids = filter
        .program(programs::FILTER)?
        .info()?
        .map_ids()?
        .ok_or_else(|| anyhow!("the kernel does not list a program's maps"))?;
    for id in ids {
        let map = MapData::from_id(id)?;
        if map.info()?.name_as_str() == Some(maps::STATS) {
            return Ok(map);
        }
    }
    Err(anyhow!("the filter uses no map named {}", maps::STATS))
}

impl FrameRunner<'_> {
    /// Runs one frame through the filter and reports what it decided, as
    /// [`XdpFilter::run_frame`] does.
    pub fn run(&mut self, frame: &[u8]) -> anyhow::Result<FrameVerdict> {
        let mut output = vec![0u8; frame.len() + 256];
        let result = self
            .filter
            .program(programs::FILTER)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut output),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        output.truncate(result.data_size_out as usize);
        self.read_counters()?;
        let verdict = self.verdict(result.return_value, output);
        std::mem::swap(&mut self.before, &mut self.after);
        verdict
    }

    /// Forgets every flow's state in the filter ([`XdpFilter::forget_flows`]).
    pub fn forget_flows(&mut self) -> anyhow::Result<()> {
        self.filter.forget_flows()
    }

    /// The filter the frames run through.
    pub fn filter(&self) -> &XdpFilter {
        self.filter
    }

    /// The CPU on which `stat` changed since the previous frame.
    fn bumped(&self, stat: Stat) -> Option<usize> {
        let at = stat as usize * self.cpus;
        (0..self.cpus).find(|&cpu| self.after[at + cpu] != self.before[at + cpu])
    }

    fn verdict(&self, action: u32, output: Vec<u8>) -> anyhow::Result<FrameVerdict> {
        let of = |kind: fn(StatKind) -> bool| -> Vec<(Stat, usize)> {
            Stat::ALL
                .into_iter()
                .filter(|s| kind(s.kind()))
                .filter_map(|s| self.bumped(s).map(|cpu| (s, cpu)))
                .collect()
        };
        let outcomes = of(|k| matches!(k, StatKind::Outcome(_)));
        let [(stat, _)] = outcomes[..] else {
            return Err(anyhow!(
                "one outcome counter must change per frame, these did: {outcomes:?} \
                 (is something else running the program?)"
            ));
        };
        let hello = match of(|k| k == StatKind::HelloVersion).first() {
            Some(&(_, cpu)) => Some(self.filter.hello_seen(cpu)?),
            None => None,
        };
        let split = of(|k| k == StatKind::Split).first().map(|&(s, _)| s);
        Ok(FrameVerdict {
            action,
            stat,
            hello,
            split,
            output,
        })
    }

    /// Reads every counter of every CPU into `after`, in one system call.
    fn read_counters(&mut self) -> anyhow::Result<()> {
        let mut out_batch = 0u32;
        let mut attr = BatchAttr {
            out_batch: (&raw mut out_batch) as u64,
            keys: self.keys.as_mut_ptr() as u64,
            values: self.after.as_mut_ptr() as u64,
            count: Stat::COUNT,
            map_fd: self.stats.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of `count` keys and `count` per-CPU
        // values (8 bytes per CPU for a u64), all live across the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        // The kernel says ENOENT when the batch reached the map's end, with
        // every entry copied.
        let error = (rc != 0).then(std::io::Error::last_os_error);
        let failed = error
            .as_ref()
            .filter(|e| e.raw_os_error() != Some(libc::ENOENT));
        if let Some(e) = failed {
            return Err(anyhow!("BPF_MAP_LOOKUP_BATCH on {}: {e}", maps::STATS));
        }
        anyhow::ensure!(
            attr.count == Stat::COUNT,
            "BPF_MAP_LOOKUP_BATCH on {} returned {} of {} entries",
            maps::STATS,
            attr.count,
            Stat::COUNT
        );
        anyhow::ensure!(
            self.keys.iter().enumerate().all(|(i, &k)| k as usize == i),
            "BPF_MAP_LOOKUP_BATCH returned {} out of order",
            maps::STATS
        );
        Ok(())
    }
}
