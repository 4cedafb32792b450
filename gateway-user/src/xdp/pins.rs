//! The filter pinned in bpffs, so that it outlives the process: its XDP link
//! and the maps whose state matters across a restart (policy, hostnames, the
//! flow and reassembly tables, refused flows, counters) live under a pin
//! directory. A gateway that stops leaves them there, and the program keeps
//! refusing; the next one checks that the pinned maps have the layout its own
//! program expects, reuses them, and swaps its program in through the link.
//! A layout that differs (another version, a table resized by configuration)
//! is never mixed: the pins are removed, with a warning, and made afresh.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow};
use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use gateway_common::maps;
use log::{info, warn};

use super::{AttachedMode, MapSizes, XdpFilter};
use crate::config::AttachMode;

/// The maps pinned by name under the pin directory.
pub(crate) const PINNED_MAPS: [&str; 9] = [
    maps::HOST_POLICY,
    maps::CONFIG,
    maps::TLS_PORTS,
    maps::STATS,
    maps::REFUSED_FLOWS,
    maps::FLOW_ANCHORS,
    maps::HELLO_FLOWS,
    // Refusals made while no gateway ran wait in the ring for the next one.
    gateway_common::events::maps::EVENTS,
    gateway_common::events::maps::COUNTS,
];

/// The default pin directory (the packaged unit may write it).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/gateway";

/// What a map is, as the kernel describes it: a pinned map is reused only if
/// all of it is what this build's program would create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
}

/// What the pin directory held when the filter loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No pins: a first start.
    Nothing,
    /// Pins of the same layout: reused, with their state.
    Reused,
    /// Pins of another layout, removed (why); the filter starts afresh.
    Replaced(String),
}

/// The pin directory of one filter.
#[derive(Clone, Debug)]
pub struct Pins {
    dir: PathBuf,
    found: Found,
}

impl Found {
    /// A few words for the start-up banner.
    pub fn describe(&self) -> &'static str {
        match self {
            Found::Nothing => "pinned afresh",
            Found::Reused => "pins reused",
            Found::Replaced(_) => "pins of another layout replaced",
        }
    }
}

impl Pins {
    /// Looks at `dir` before the object loads: keeps pins whose layout is the
    /// one `object` with `tables` creates, removes any others (saying so).
    pub(crate) fn prepare(dir: &Path, object: &[u8], tables: MapSizes) -> anyhow::Result<Pins> {
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating the pin directory {} (is bpffs mounted?)",
                dir.display()
            )
        })?;
        check_bpffs(dir)?;
        let expected = expected_layouts(object, tables)?;
        let mut present = 0;
        let mut mismatch = None;
        for (name, want) in PINNED_MAPS.iter().zip(expected) {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            present += 1;
            let have = pinned_layout(&path)?;
            if have != want && mismatch.is_none() {
                mismatch = Some(format!("map {name} is {have:?}, this build needs {want:?}"));
            }
        }
        let found = match (present, mismatch) {
            (0, _) if !has_link(dir)? => Found::Nothing,
            (n, None) if n == PINNED_MAPS.len() => Found::Reused,
            (n, None) => Found::Replaced(format!(
                "{n} of the {} pinned maps are present",
                PINNED_MAPS.len()
            )),
            (_, Some(why)) => Found::Replaced(why),
        };
        match &found {
            Found::Nothing => info!("no pinned XDP filter in {}: pinning afresh", dir.display()),
            Found::Reused => info!(
                "reusing the pinned XDP maps in {} (same layout): flow state and counters kept",
                dir.display()
            ),
            Found::Replaced(why) => {
                warn!(
                    "the pinned XDP filter in {} has another layout ({why}): replacing it; \
                     the interface is unfiltered until the new program attaches",
                    dir.display()
                );
                remove_all(dir)?;
                fs::create_dir_all(dir)?;
            }
        }
        Ok(Pins {
            dir: dir.to_path_buf(),
            found,
        })
    }

    /// Where map `name` is pinned.
    pub(crate) fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What the directory held at load.
    pub fn found(&self) -> &Found {
        &self.found
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the link on `interface` in `mode` is pinned.
    pub(crate) fn link_path(&self, interface: &str, mode: AttachedMode) -> PathBuf {
        self.dir.join(format!("link_{}_{interface}", mode.as_str()))
    }

    /// The pinned link on `interface` that `mode` accepts, if any; pinned
    /// links elsewhere (another interface or mode) are removed.
    fn take_link(
        &self,
        interface: &str,
        mode: AttachMode,
    ) -> anyhow::Result<Option<(FdLink, AttachedMode)>> {
        let mut found = None;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(rest) = name.strip_prefix("link_") else {
                continue;
            };
            let wanted = [AttachedMode::Native, AttachedMode::Generic]
                .into_iter()
                .filter(|m| accepts(mode, *m))
                .any(|m| rest == format!("{}_{interface}", m.as_str()));
            if wanted && found.is_none() {
                let link = PinnedLink::from_pin(&path)
                    .with_context(|| format!("opening the pinned link {}", path.display()))?;
                let attached = if rest.starts_with("native") {
                    AttachedMode::Native
                } else {
                    AttachedMode::Generic
                };
                found = Some((FdLink::from(link), attached));
            } else {
                warn!("removing the pinned XDP link {name}: not {interface} in {mode:?} mode");
                fs::remove_file(&path)?;
            }
        }
        Ok(found)
    }
}

impl XdpFilter {
    /// Attaches through the pin directory: swaps the program into the pinned
    /// link on `interface` if there is one (atomically: the old program
    /// refuses until this one does), else attaches and pins a new link.
    pub(super) fn attach_pinned(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> anyhow::Result<AttachedMode> {
        let pins = self
            .pins
            .clone()
            .ok_or_else(|| anyhow!("no pin directory"))?;
        if let Some((link, attached)) = pins.take_link(interface, mode)? {
            match self.swap_into(link) {
                Ok(link) => {
                    info!(
                        "XDP filter swapped into the pinned link on {interface} ({} mode): no gap",
                        attached.as_str()
                    );
                    self.pinned_link = Some(link);
                    self.link = Some((interface.to_string(), None, attached));
                    return Ok(attached);
                }
                Err(e) => {
                    let path = pins.link_path(interface, attached);
                    warn!(
                        "the pinned link {} cannot take the new program ({e:#}): removing it \
                         and attaching afresh",
                        path.display()
                    );
                    fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
            }
        }
        let attached = self.attach_owned(interface, mode)?;
        let Some((_, id, _)) = self.link.as_mut() else {
            return Ok(attached);
        };
        let Some(id) = id.take() else {
            return Ok(attached);
        };
        let prog = self.program_mut(gateway_common::programs::FILTER)?;
        let link = prog.take_link(id)?;
        let path = pins.link_path(interface, attached);
        match FdLink::try_from(link) {
            Ok(fd) => {
                let pinned = fd
                    .pin(&path)
                    .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
                info!("XDP link pinned at {}", path.display());
                self.pinned_link = Some(FdLink::from(pinned));
            }
            Err(e) => anyhow::bail!(
                "the kernel attached XDP to {interface} without a BPF link ({e}): pinning \
                 needs XDP links (Linux 5.9+); run without a pin directory"
            ),
        }
        Ok(attached)
    }

    /// Replaces the program of a pinned link by this filter's, atomically
    /// (`BPF_LINK_UPDATE`), and returns the link to hold.
    fn swap_into(&mut self, link: FdLink) -> anyhow::Result<FdLink> {
        let link = XdpLink::try_from(link).context("the pinned link is not an XDP link")?;
        let prog = self.program_mut(gateway_common::programs::FILTER)?;
        let id = prog.attach_to_link(link)?;
        Ok(FdLink::try_from(prog.take_link(id)?)?)
    }
}

/// Whether a link attached in `attached` mode is what `mode` asks for.
fn accepts(mode: AttachMode, attached: AttachedMode) -> bool {
    match mode {
        AttachMode::Auto => true,
        AttachMode::Native => attached == AttachedMode::Native,
        AttachMode::Generic => attached == AttachedMode::Generic,
    }
}

/// The magic number of bpffs in `statfs`'s `f_type`.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

/// Fails clearly when `dir` is not on a bpffs (pins can live nowhere else;
/// note that `ip netns exec` mounts a fresh /sys without /sys/fs/bpf).
fn check_bpffs(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statfs with a NUL-terminated path and a zeroed struct it fills.
    let (rc, buf) = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        (libc::statfs(path.as_ptr(), &mut buf), buf)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", dir.display()));
    }
    if buf.f_type != BPF_FS_MAGIC {
        anyhow::bail!(
            "the pin directory {} is not on a bpffs (mount -t bpf bpf /sys/fs/bpf)",
            dir.display()
        );
    }
    Ok(())
}

fn has_link(dir: &Path) -> anyhow::Result<bool> {
    for entry in fs::read_dir(dir)? {
        if entry?.file_name().to_string_lossy().starts_with("link_") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The layouts of [`PINNED_MAPS`] that `object` creates with `tables`.
fn expected_layouts(object: &[u8], tables: MapSizes) -> anyhow::Result<Vec<Layout>> {
    let parsed = aya_obj::Object::parse(object).context("parsing the XDP object")?;
    PINNED_MAPS
        .iter()
        .map(|name| {
            let map = parsed
                .maps
                .get(*name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
            let max_entries = match *name {
                maps::FLOW_ANCHORS => tables.anchors,
                maps::HELLO_FLOWS => tables.hello_flows,
                maps::HOST_POLICY => tables.hostnames,
                _ => map.max_entries(),
            };
            Ok(Layout {
                map_type: map.map_type(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries,
                flags: map.map_flags(),
            })
        })
        .collect()
}

fn pinned_layout(path: &Path) -> anyhow::Result<Layout> {
    let info = MapInfo::from_pin(path)
        .with_context(|| format!("reading the pinned map {}", path.display()))?;
    Ok(Layout {
        map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// Removes every pin in `dir` and the directory: the maps go when no program
/// holds them, and the link detaches when no process holds it (a running
/// gateway keeps its own until it stops). Returns how many pins were removed.
pub fn remove_all(dir: &Path) -> anyhow::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        removed += 1;
    }
    fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_layouts_follow_the_table_sizes() {
        let small = MapSizes {
            anchors: 1024,
            hello_flows: 64,
            hostnames: 100,
        };
        let default = expected_layouts(super::super::OBJECT, MapSizes::default()).unwrap();
        let resized = expected_layouts(super::super::OBJECT, small).unwrap();
        assert_eq!(default.len(), PINNED_MAPS.len());
        let at = |name: &str| PINNED_MAPS.iter().position(|n| *n == name).unwrap();
        assert_eq!(resized[at(maps::FLOW_ANCHORS)].max_entries, 1024);
        assert_eq!(resized[at(maps::HELLO_FLOWS)].max_entries, 64);
        assert_eq!(resized[at(maps::HOST_POLICY)].max_entries, 100);
        assert_ne!(
            default[at(maps::FLOW_ANCHORS)],
            resized[at(maps::FLOW_ANCHORS)]
        );
        assert_eq!(default[at(maps::STATS)], resized[at(maps::STATS)]);
        assert_eq!(default[at(maps::CONFIG)], resized[at(maps::CONFIG)]);
        // Every map has a key and a value, but the ring, which is sized in bytes.
        let ring = at(gateway_common::events::maps::EVENTS);
        assert_eq!(
            default[ring].max_entries,
            gateway_common::events::EVENT_RING_BYTES
        );
        assert!(
            (default.iter().enumerate())
                .all(|(i, l)| i == ring || (l.key_size > 0 && l.value_size > 0))
        );
    }

    #[test]
    fn a_pinned_link_serves_the_modes_that_accept_it() {
        assert!(accepts(AttachMode::Auto, AttachedMode::Generic));
        assert!(accepts(AttachMode::Native, AttachedMode::Native));
        assert!(!accepts(AttachMode::Native, AttachedMode::Generic));
        assert!(!accepts(AttachMode::Generic, AttachedMode::Native));
    }
}
