//! Running frames through the loaded program with BPF_PROG_TEST_RUN: the
//! engine of `gateway xdp replay`, the tests and the benchmark.

use anyhow::{Context, anyhow};
use aya::{
    maps::PerCpuArray,
    programs::{TestRun, TestRunOptions},
};
use gateway_common::{SNI_PRESENT, Scratch, Stat, StatKind, maps, programs};

use super::XdpFilter;

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;

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
        Ok(FrameVerdict {
            action: result.return_value,
            stat,
            hello,
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
