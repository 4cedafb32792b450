//! The XDP layer from userspace: load the program, attach it, keep its policy
//! maps in sync, read its counters, and run frames through it without an interface.

pub mod change;
pub mod cookies;
pub mod events;
pub mod kfunc;
pub mod pins;
mod policy;
mod stats;
mod test_run;

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError},
        tc::{self, SchedClassifierLinkId},
        xdp::XdpLinkId,
    },
};
use cookies::{CookieControl, CookieMaps, CookieSettings};
use events::RefusalEvents;
use gateway_common::{
    DEFAULT_FLOW_ANCHORS, DEFAULT_HELLO_FLOWS, FilterConfig, events as event_maps, maps, programs,
    syncookie::{self, TC_PROGRAM},
};
use log::{info, warn};
use pins::{Found, Pins};

pub use gateway_common::Stat;
pub use policy::XdpPolicy;
pub use stats::{Counters, StatsMap};
pub use test_run::{FrameRunner, FrameVerdict, HelloSeen, XDP_DROP, XDP_PASS, XDP_TX};

use crate::config::{AttachMode, SynCookies, XdpSection, check_table_sizes};

/// The compiled XDP object, built by `build.rs` from `gateway-ebpf`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf.o"));

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// In the driver, before any socket buffer exists.
    Native,
    /// In the kernel's generic path (any device; slower).
    Generic,
}

impl AttachedMode {
    /// "native" or "generic".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// Log level of the program's own log lines (aya-log); off costs nothing in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgramLog {
    /// No log lines from the program.
    #[default]
    Off,
    /// One line per refused ClientHello.
    Debug,
}

/// Sizes of the filter's tables set at load, in entries. The per-flow tables
/// (powers of two) take entries × entry size when the program loads; the
/// hostname table is allocated entry by entry as hostnames are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Flows whose SYN was seen (16 bytes each).
    pub anchors: u32,
    /// ClientHellos being reassembled at once (about 13 KiB each).
    pub hello_flows: u32,
    /// Hostnames with a minimum of their own.
    pub hostnames: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            anchors: DEFAULT_FLOW_ANCHORS,
            hello_flows: DEFAULT_HELLO_FLOWS,
            hostnames: gateway_common::DEFAULT_HOSTS,
        }
    }
}

impl MapSizes {
    /// The table sizes an `[xdp]` section asks for.
    pub fn of(section: &XdpSection) -> MapSizes {
        MapSizes {
            anchors: section.flow_anchors,
            hello_flows: section.hello_flows,
            hostnames: section.hostnames,
        }
    }

    /// Checks the sizes as an `[xdp]` section's are checked.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_table_sizes(self.anchors, self.hello_flows, self.hostnames)
    }
}

/// The loaded XDP program with its maps.
pub struct XdpFilter {
    ebpf: Ebpf,
    tables: MapSizes,
    flow_seed: u32,
    stats: Arc<StatsMap>,
    /// The refusal events, until their reader takes them.
    events: Option<RefusalEvents>,
    /// Refusal events each CPU may send per second (0 until a reader takes them).
    event_budget: u32,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The interface, the link the program owns (none when pinned) and the mode.
    link: Option<(String, Option<XdpLinkId>, AttachedMode)>,
    /// The pin directory, when the filter outlives the process.
    pins: Option<Pins>,
    /// The pinned link this process holds (dropping it leaves it attached).
    pinned_link: Option<FdLink>,
    cookies: Arc<Mutex<CookieControl>>,
    /// Why SYN cookies cannot run here, if they cannot (no kfunc, TC refused).
    cookies_unavailable: Option<String>,
    tc_link: Option<SchedClassifierLinkId>,
    /// The tail-call table of the cookie programs: the kernel empties it when
    /// its last descriptor closes, so the filter keeps it.
    _cookie_programs: ProgramArray<MapData>,
}

impl XdpFilter {
    /// Loads the program into the kernel (no interface yet) with the default
    /// flow tables. Its policy is empty: nothing is refused until
    /// [`XdpFilter::apply`] writes one.
    pub fn load(log_level: ProgramLog) -> anyhow::Result<XdpFilter> {
        Self::load_with(log_level, MapSizes::default())
    }

    /// Loads the program with flow tables of the given sizes.
    pub fn load_with(log_level: ProgramLog, tables: MapSizes) -> anyhow::Result<XdpFilter> {
        Self::load_pinned(log_level, tables, None)
    }

    /// Loads the program with flow tables of the given sizes; with `pin_dir`,
    /// its state maps are pinned there, or reused from there when a previous
    /// gateway left them with the same layout (see [`pins`]), and
    /// [`XdpFilter::attach`] goes through a pinned link.
    pub fn load_pinned(
        log_level: ProgramLog,
        tables: MapSizes,
        pin_dir: Option<&Path>,
    ) -> anyhow::Result<XdpFilter> {
        tables.validate()?;
        raise_memlock_limit();
        let level: u8 = match log_level {
            ProgramLog::Off => 0,
            ProgramLog::Debug => aya_log::Level::Debug as u8,
        };
        // The TC program's kfunc call needs the kernel's id for it; without
        // one (Linux < 6.9) the object loads as is and the TC program never does.
        let (object, mut cookies_unavailable) = match kfunc::kfunc_btf_id() {
            Ok(id) => (kfunc::patch_kfunc_calls(OBJECT, id).0, None),
            Err(e) => (
                kfunc::patch_kfunc_calls(OBJECT, 0).0,
                Some(format!("{e:#}")),
            ),
        };
        let pins = pin_dir
            .map(|dir| Pins::prepare(dir, object.bytes(), tables))
            .transpose()?;
        let mut ebpf = load_object(object.bytes(), level, tables, pins.as_ref())?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                warn!("XDP program log unavailable: {e}");
                None
            }
        };
        load_xdp_programs(&mut ebpf)?;
        let cookie_programs = load_cookie_programs(&mut ebpf)?;
        if cookies_unavailable.is_none() {
            cookies_unavailable = load_tc(&mut ebpf).err().map(|e| format!("{e:#}"));
        }
        let stats = Arc::new(StatsMap::new(PerCpuArray::try_from(take(
            &mut ebpf,
            maps::STATS,
        )?)?));
        let events = RefusalEvents::new(
            RingBuf::try_from(take(&mut ebpf, event_maps::maps::EVENTS)?)?,
            PerCpuArray::try_from(take(&mut ebpf, event_maps::maps::COUNTS)?)?,
        );
        let cookies = CookieMaps {
            keys: Array::try_from(take(&mut ebpf, syncookie::maps::KEYS)?)?,
            config: Array::try_from(take(&mut ebpf, syncookie::maps::CONFIG)?)?,
            ports: Array::try_from(take(&mut ebpf, syncookie::maps::PORTS)?)?,
            syns: PerCpuArray::try_from(take(&mut ebpf, syncookie::maps::SYNS)?)?,
            stats: PerCpuArray::try_from(take(&mut ebpf, syncookie::maps::STATS)?)?,
        };
        let reused = pins.as_ref().is_some_and(|p| *p.found() == Found::Reused);
        let flow_seed = reused
            .then(|| pinned_seed(&ebpf))
            .flatten()
            .unwrap_or_else(random_seed);
        Ok(XdpFilter {
            ebpf,
            tables,
            flow_seed,
            stats,
            events: Some(events),
            event_budget: 0,
            logger,
            link: None,
            pins,
            pinned_link: None,
            cookies: Arc::new(Mutex::new(CookieControl::new(cookies))),
            cookies_unavailable,
            tc_link: None,
            _cookie_programs: cookie_programs,
        })
    }

    /// Starts SYN cookies on the attached interface as `settings` say: attaches
    /// the TC program (with `off` too, so that a configuration change can turn
    /// them on live) and lets the ports answer. Returns a line for the banner;
    /// where the kernel cannot take cookies it says why, and the gateway runs
    /// without them.
    pub fn start_cookies(&mut self, settings: CookieSettings) -> String {
        if let Some(why) = &self.cookies_unavailable {
            if settings.mode != SynCookies::Off {
                warn!("SYN cookies unavailable, running without them: {why}");
            }
            return format!("SYN cookies unavailable ({why})");
        }
        let Some(interface) = self.link.as_ref().map(|(name, ..)| name.clone()) else {
            return "SYN cookies off (XDP not attached)".into();
        };
        // TCX (Linux 6.6+) needs no qdisc; older kernels need clsact, which may exist.
        let _ = tc::qdisc_add_clsact(&interface);
        let attached = self
            .ebpf
            .program_mut(TC_PROGRAM)
            .ok_or_else(|| anyhow!("program {TC_PROGRAM} missing"))
            .and_then(|p| Ok(<&mut SchedClassifier>::try_from(p)?))
            .and_then(|p| Ok(p.attach(&interface, TcAttachType::Ingress)?));
        let link = match attached {
            Ok(link) => link,
            Err(e) => {
                warn!("SYN cookies unavailable: TC ingress on {interface}: {e:#}");
                return format!("SYN cookies unavailable (TC ingress: {e})");
            }
        };
        self.tc_link = Some(link);
        if let Err(e) = cookies::lock(&self.cookies).start(settings) {
            warn!("SYN cookies: {e:#}");
        }
        match settings.mode {
            SynCookies::Off => "SYN cookies off".into(),
            SynCookies::On => "SYN cookies on".into(),
            SynCookies::Auto => format!("SYN cookies auto (at {} SYNs/s per port)", settings.rate),
        }
    }

    /// The SYN-cookie control, for the task that ticks it and for metrics.
    pub fn cookie_control(&self) -> Arc<Mutex<CookieControl>> {
        self.cookies.clone()
    }

    /// Attaches the filter to `interface`. `Auto` tries native mode first and
    /// falls back to generic mode when the driver has no XDP support. With a
    /// pin directory, a link pinned there on `interface` takes this program
    /// atomically; else the new link is pinned.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> anyhow::Result<AttachedMode> {
        self.detach();
        if self.pins.is_some() {
            return self.attach_pinned(interface, mode);
        }
        self.attach_owned(interface, mode)
    }

    /// What the pin directory held at load (none without one).
    pub fn pins(&self) -> Option<&Pins> {
        self.pins.as_ref()
    }

    fn attach_owned(&mut self, interface: &str, mode: AttachMode) -> anyhow::Result<AttachedMode> {
        let prog = self.program_mut(programs::FILTER)?;
        let attached = match mode {
            AttachMode::Native => prog
                .attach(interface, XdpMode::Driver)
                .map(|id| (id, AttachedMode::Native))
                .with_context(|| format!("native XDP on {interface} failed"))?,
            AttachMode::Generic => prog
                .attach(interface, XdpMode::Skb)
                .map(|id| (id, AttachedMode::Generic))
                .with_context(|| format!("generic XDP on {interface} failed"))?,
            AttachMode::Auto => match prog.attach(interface, XdpMode::Driver) {
                Ok(id) => (id, AttachedMode::Native),
                Err(native) => {
                    warn!("native XDP unavailable on {interface} ({native}); using generic mode");
                    prog.attach(interface, XdpMode::Skb)
                        .map(|id| (id, AttachedMode::Generic))
                        .with_context(|| format!("attaching XDP to {interface} failed"))?
                }
            },
        };
        info!(
            "XDP filter attached to {interface} in {} mode",
            attached.1.as_str()
        );
        self.link = Some((interface.to_string(), Some(attached.0), attached.1));
        Ok(attached.1)
    }

    /// Detaches the filter from its interface, if attached. Also done on drop.
    /// A pinned link stays attached (the program keeps refusing while no
    /// gateway runs): `gateway xdp detach` removes it.
    pub fn detach(&mut self) {
        cookies::lock(&self.cookies).stop();
        if let Some(link) = self.tc_link.take() {
            let detached = self
                .ebpf
                .program_mut(TC_PROGRAM)
                .map(|p| <&mut SchedClassifier>::try_from(p).map(|p| p.detach(link)));
            if let Some(Ok(Err(e))) = detached {
                log::debug!("detaching the TC program: {e}");
            }
        }
        let Some((interface, id, mode)) = self.link.take() else {
            return;
        };
        let Some(id) = id else {
            self.pinned_link = None;
            let pin = self.pins.as_ref().map(|p| p.link_path(&interface, mode));
            match pin.filter(|path| path.exists()) {
                Some(path) => info!(
                    "XDP filter left attached to {interface} through its pinned link {} \
                     (`gateway xdp detach` removes it)",
                    path.display()
                ),
                None => info!("XDP filter detached from {interface} (its pins were removed)"),
            }
            return;
        };
        let result = self
            .program_mut(programs::FILTER)
            .and_then(|p| p.detach(id).map_err(anyhow::Error::from));
        match result {
            Ok(()) => info!("XDP filter detached from {interface}"),
            Err(e) if is_gone(&e) => info!("XDP filter detached: {interface} is gone"),
            Err(e) => warn!("detaching XDP from {interface}: {e:#}"),
        }
    }

    /// The program's counters, shared with the metrics endpoint.
    pub fn stats(&self) -> Arc<StatsMap> {
        self.stats.clone()
    }

    /// Starts the refusal events: each CPU sends at most `per_cpu_per_second`
    /// records a second (0: none), and the caller drains them. Once only.
    pub fn take_refusal_events(
        &mut self,
        per_cpu_per_second: u32,
    ) -> anyhow::Result<RefusalEvents> {
        let events = self
            .events
            .take()
            .ok_or_else(|| anyhow!("the refusal events were taken already"))?;
        self.set_event_budget(per_cpu_per_second)?;
        Ok(events)
    }

    /// Changes the refusal events' budget a CPU a second (0: none sent).
    pub fn set_event_budget(&mut self, per_cpu_per_second: u32) -> anyhow::Result<()> {
        self.event_budget = per_cpu_per_second;
        self.write_event_budget()
    }

    /// Drains the program's pending log lines into the `log` crate.
    pub fn flush_log(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }

    fn program_mut(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?)
    }

    fn program(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?)
    }

    fn map_mut(&mut self, name: &str) -> anyhow::Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    fn map(&self, name: &str) -> anyhow::Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A program that passes every frame, attached in native mode: on a veth
/// pair, the peer of a device whose XDP program answers with XDP_TX (as the
/// SYN cookies do) must run XDP itself to receive those frames. Labs attach it
/// to their client side; dropping it detaches it.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl PassProgram {
    /// Loads `baseline_pass` and attaches it to `interface` in native mode.
    pub fn attach(interface: &str) -> anyhow::Result<PassProgram> {
        let (object, _) = kfunc::patch_kfunc_calls(OBJECT, 0);
        let mut ebpf = EbpfLoader::new()
            .load(object.bytes())
            .context("loading the XDP object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(programs::BASELINE)
            .ok_or_else(|| anyhow!("program {} missing", programs::BASELINE))?
            .try_into()?;
        prog.load().map_err(verifier_error(programs::BASELINE))?;
        prog.attach(interface, XdpMode::Driver)
            .with_context(|| format!("native XDP on {interface}"))?;
        Ok(PassProgram { _ebpf: ebpf })
    }
}

/// Creates the object's maps (sized by `tables`, pinned or reused under
/// `pins`) and relocates its programs, not yet loaded.
fn load_object(
    object: &[u8],
    level: u8,
    tables: MapSizes,
    pins: Option<&Pins>,
) -> anyhow::Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader
        .override_global(aya_log::LEVEL, &level, true)
        .map_max_entries(maps::FLOW_ANCHORS, tables.anchors)
        .map_max_entries(maps::HELLO_FLOWS, tables.hello_flows)
        .map_max_entries(maps::HOST_POLICY, tables.hostnames);
    if let Some(pins) = pins {
        for name in pins::PINNED_MAPS {
            loader.map_pin_path(name, pins.map_path(name));
        }
    }
    loader
        .load(object)
        .context("loading the XDP object into the kernel (are you root, with bpffs mounted?)")
}

/// Loads the filter and the baseline program through the verifier.
fn load_xdp_programs(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for name in [programs::FILTER, programs::BASELINE] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?
            .try_into()?;
        prog.load().map_err(verifier_error(name))?;
        if let Some(n) = prog
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count())
        {
            log::debug!("XDP program {name} verified: {n} instructions processed");
        }
    }
    Ok(())
}

/// Takes a map out of the object, to be owned by its reader.
fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))
}

/// Loads the cookie programs `gateway_xdp` tail-calls and fills their table.
fn load_cookie_programs(ebpf: &mut Ebpf) -> anyhow::Result<ProgramArray<MapData>> {
    let mut table = ProgramArray::try_from(take(ebpf, syncookie::maps::PROGRAMS)?)?;
    for (index, name) in syncookie::COOKIE_PROGRAM_NAMES.into_iter().enumerate() {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?
            .try_into()?;
        prog.load().map_err(verifier_error(name))?;
        table
            .set(index as u32, prog.fd()?, 0)
            .with_context(|| format!("adding {name} to the tail-call table"))?;
    }
    Ok(table)
}

/// Loads the SYN cookies' TC program (through the verifier).
fn load_tc(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(TC_PROGRAM)
        .ok_or_else(|| anyhow!("program {TC_PROGRAM} missing from the object"))?
        .try_into()?;
    prog.load().map_err(verifier_error(TC_PROGRAM))
}

fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<LinkError>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::ENODEV))
    })
}

/// Wraps a load error so the verifier's whole log reaches the operator.
fn verifier_error(name: &str) -> impl FnOnce(aya::programs::ProgramError) -> anyhow::Error + '_ {
    move |e| match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            anyhow!("the kernel refused program {name}: {io_error}\nverifier log:\n{verifier_log}")
        }
        other => anyhow!("loading program {name}: {other}"),
    }
}

/// The flow-hash seed in a reused CONFIG map, so that flow state survives.
fn pinned_seed(ebpf: &Ebpf) -> Option<u32> {
    let map = ebpf.map(maps::CONFIG)?;
    let config: Array<_, FilterConfig> = Array::try_from(map).ok()?;
    let current = config.get(&0, 0).ok()?;
    (current != FilterConfig::default()).then_some(current.flow_seed)
}

/// A fresh flow-hash seed from BoringSSL's CSPRNG.
fn random_seed() -> u32 {
    let mut b = [0u8; 4];
    if let Err(e) = boring::rand::rand_bytes(&mut b) {
        warn!("no random flow seed ({e}); using the clock");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ t.as_secs() as u32;
    }
    u32::from_ne_bytes(b)
}

/// Older kernels charge BPF memory to RLIMIT_MEMLOCK; lift it (a no-op on 6.x).
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure is harmless here.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if rc != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; loading may fail on old kernels");
    }
}

/// Map type used by the per-CPU counters.
pub(crate) type StatsArray = PerCpuArray<MapData, u64>;
