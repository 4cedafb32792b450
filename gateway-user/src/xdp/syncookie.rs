//! SYN cookies answered by the gateway (spike for issue 24; nothing calls this
//! outside the lab test, so the gateway's behaviour is unchanged).
//!
//! Loads the eBPF object's two SYN-cookie programs: `syncookie_xdp` (answers
//! SYNs to the guarded port with a cookie SYN-ACK, drops the handshake's bare
//! ACK, refuses or passes the first data segment) and `syncookie_tc` (TC
//! ingress: hands a passed segment's connection to the kernel with the
//! `bpf_sk_assign_tcp_reqsk` kfunc, Linux 6.9+).
//!
//! aya 0.14 resolves no kfunc calls, so the object carries the call as a raw
//! instruction with a placeholder `imm`; [`patch_kfunc_calls`] writes the
//! kfunc's id in the kernel's BTF there before aya parses the object.

/// Where the XDP program runs (re-exported for callers without aya).
pub use aya::programs::XdpMode;
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, tc},
};
use aya_obj::btf::BtfKind;
use gateway_common::syncookie::{
    CONFIG_KEY0, CONFIG_KEY1, CONFIG_PORT, KFUNC_PLACEHOLDER, STAT_COUNT, maps, programs,
};

/// The kfunc the TC program calls.
pub const KFUNC: &str = "bpf_sk_assign_tcp_reqsk";

/// Why the SYN-cookie programs could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum SyncookieError {
    /// The kernel's BTF (/sys/kernel/btf/vmlinux) could not be read.
    #[error("cannot read the kernel's BTF: {0}")]
    KernelBtf(#[from] aya::BtfError),
    /// The kernel has no `bpf_sk_assign_tcp_reqsk` (Linux < 6.9, or no CONFIG_SYN_COOKIES).
    #[error("the kernel has no kfunc {KFUNC} (needs Linux 6.9+ with CONFIG_SYN_COOKIES)")]
    KfuncMissing,
    /// The object carries no placeholder kfunc call (a build problem).
    #[error("the eBPF object has no placeholder call of {KFUNC}")]
    NoPlaceholder,
    /// aya could not parse or load the object.
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load (verifier) or attach.
    #[error("program {name}: {source}")]
    Program {
        /// The program's name.
        name: &'static str,
        /// What failed.
        source: aya::programs::ProgramError,
    },
    /// A map was missing or could not be written or read.
    #[error("map {name}: {detail}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// What failed.
        detail: String,
    },
}

/// The kfunc's id in the running kernel's BTF.
pub fn kfunc_btf_id() -> Result<u32, SyncookieError> {
    let btf = Btf::from_sys_fs()?;
    btf.id_by_type_name_kind(KFUNC, BtfKind::Func)
        .map_err(|_| SyncookieError::KfuncMissing)
}

/// Whether `net.ipv4.tcp_syncookies` is on in the calling thread's network
/// namespace: the kernel takes a connection built by the kfunc only through its
/// cookie path, which 0 closes (the client is then reset). Not yet enforced by
/// [`Syncookies::attach`]: the lab test shows the failure it prevents.
pub fn tcp_syncookies_enabled() -> std::io::Result<bool> {
    let value = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syncookies")?;
    Ok(value.trim() != "0")
}

/// The placeholder kfunc call instruction as it sits in the object (little endian).
fn placeholder_instruction() -> [u8; 8] {
    let mut insn = [0x85, 0x20, 0, 0, 0, 0, 0, 0];
    insn[4..].copy_from_slice(&KFUNC_PLACEHOLDER.to_le_bytes());
    insn
}

/// `object` with every placeholder kfunc call pointed at `btf_id`, in an
/// 8-byte aligned buffer (the ELF parser wants aligned headers), and how many
/// calls were patched.
pub fn patch_kfunc_calls(object: &[u8], btf_id: u32) -> (AlignedObject, usize) {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    let mut aligned = AlignedObject {
        words: Vec::new(),
        len: object.len(),
    };
    let bytes = {
        // SAFETY: a u64 buffer viewed as bytes; u8 has no alignment or validity needs.
        let all = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        &mut all[..object.len()]
    };
    bytes.copy_from_slice(object);
    let placeholder = placeholder_instruction();
    let mut patched = 0;
    // Instructions are 8-byte aligned within their section, and sections are
    // 8-byte aligned in the file: step by 8.
    for insn in bytes.chunks_exact_mut(8) {
        if insn == placeholder {
            insn[4..].copy_from_slice(&btf_id.to_le_bytes());
            patched += 1;
        }
    }
    aligned.words = words;
    (aligned, patched)
}

/// An object file in 8-byte aligned memory.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the u64 buffer, which holds at least that many.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// The loaded SYN-cookie programs; dropping it detaches them.
pub struct Syncookies {
    ebpf: Ebpf,
}

impl Syncookies {
    /// Loads both programs (through the verifier) with a random key, guarding `port`.
    pub fn load(port: u16) -> Result<Syncookies, SyncookieError> {
        let btf_id = kfunc_btf_id()?;
        let (object, patched) = patch_kfunc_calls(super::OBJECT, btf_id);
        if patched == 0 {
            return Err(SyncookieError::NoPlaceholder);
        }
        let mut ebpf = EbpfLoader::new().load(object.bytes())?;
        let key = random_key();
        let mut config: Array<&mut MapData, u64> = Array::try_from(
            ebpf.map_mut(maps::CONFIG)
                .ok_or(map_error(maps::CONFIG, "missing"))?,
        )
        .map_err(|e| map_error(maps::CONFIG, e))?;
        for (slot, value) in [
            (CONFIG_KEY0, key[0]),
            (CONFIG_KEY1, key[1]),
            (CONFIG_PORT, port as u64),
        ] {
            config
                .set(slot, value, 0)
                .map_err(|e| map_error(maps::CONFIG, e))?;
        }
        let xdp: &mut Xdp = program(&mut ebpf, programs::XDP)?;
        xdp.load().map_err(program_error(programs::XDP))?;
        let classifier: &mut SchedClassifier = program(&mut ebpf, programs::TC)?;
        classifier.load().map_err(program_error(programs::TC))?;
        Ok(Syncookies { ebpf })
    }

    /// Attaches the XDP program to `interface` in `mode` and the TC program to
    /// its ingress.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<(), SyncookieError> {
        // TCX (Linux 6.6+) needs no qdisc; older kernels need clsact, which may exist.
        let _ = tc::qdisc_add_clsact(interface);
        let classifier: &mut SchedClassifier = program(&mut self.ebpf, programs::TC)?;
        classifier
            .attach(interface, TcAttachType::Ingress)
            .map_err(program_error(programs::TC))?;
        let xdp: &mut Xdp = program(&mut self.ebpf, programs::XDP)?;
        xdp.attach(interface, mode)
            .map_err(program_error(programs::XDP))?;
        Ok(())
    }

    /// How many instructions the verifier processed for each program (`None`
    /// when the kernel does not say).
    pub fn verified_instructions(&mut self) -> [(&'static str, Option<u32>); 2] {
        let xdp = program::<Xdp>(&mut self.ebpf, programs::XDP)
            .ok()
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count());
        let tc = program::<SchedClassifier>(&mut self.ebpf, programs::TC)
            .ok()
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count());
        [(programs::XDP, xdp), (programs::TC, tc)]
    }

    /// Runs `frame` through the XDP program `repeat` times (BPF_PROG_TEST_RUN):
    /// its action and the average nanoseconds per run, as the kernel measures.
    pub fn time_xdp(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, u128), SyncookieError> {
        let xdp: &mut Xdp = program(&mut self.ebpf, programs::XDP)?;
        let mut output = vec![0u8; frame.len() + 256];
        let result = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut output),
                repeat,
                ..Default::default()
            })
            .map_err(program_error(programs::XDP))?;
        Ok((result.return_value, result.duration.as_nanos()))
    }

    /// The counters, summed over CPUs, indexed by `gateway_common::syncookie::STAT_*`.
    pub fn counters(&self) -> Result<[u64; STAT_COUNT as usize], SyncookieError> {
        let map = self
            .ebpf
            .map(maps::STATS)
            .ok_or(map_error(maps::STATS, "missing"))?;
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_error(maps::STATS, e))?;
        let mut sums = [0u64; STAT_COUNT as usize];
        for (i, sum) in sums.iter_mut().enumerate() {
            let values = stats
                .get(&(i as u32), 0)
                .map_err(|e| map_error(maps::STATS, e))?;
            *sum = values.iter().sum();
        }
        Ok(sums)
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, SyncookieError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(SyncookieError::Map {
        name,
        detail: "program missing from the object".into(),
    })?;
    prog.try_into().map_err(program_error(name))
}

fn program_error(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> SyncookieError {
    move |source| SyncookieError::Program { name, source }
}

fn map_error(name: &'static str, detail: impl std::fmt::Display) -> SyncookieError {
    SyncookieError::Map {
        name,
        detail: detail.to_string(),
    }
}

/// A fresh SipHash key (BoringSSL's generator; the clock if that fails).
fn random_key() -> [u64; 2] {
    let mut b = [0u8; 16];
    if boring::rand::rand_bytes(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return [t.as_nanos() as u64, std::process::id() as u64];
    }
    let (a, c) = b.split_at(8);
    [
        u64::from_ne_bytes(a.try_into().unwrap_or_default()),
        u64::from_ne_bytes(c.try_into().unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_carries_one_placeholder_call_and_patching_replaces_it() {
        let (object, patched) = patch_kfunc_calls(super::super::OBJECT, 4242);
        assert_eq!(patched, 1);
        let (_, again) = patch_kfunc_calls(object.bytes(), 4242);
        assert_eq!(again, 0);
        assert_eq!(object.bytes().len(), super::super::OBJECT.len());
    }
}
