//! The packaged systemd unit (`gateway-user/packaging/gateway.service`) as the
//! lab tests use it: its capabilities, and the gateway run the way the unit
//! runs it, as an unprivileged user with exactly those capabilities.

use std::{path::Path, process::Command};

use crate::lab::Lab;

/// The packaged unit file.
pub const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../gateway-user/packaging/gateway.service"
);

/// The unit's `AmbientCapabilities=`, as `setpriv` spells them (`+bpf,...`).
pub fn capabilities() -> String {
    let unit = std::fs::read_to_string(UNIT).expect("read the packaged unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities=");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `setpriv` in the server namespace running `bin` as nobody (uid and gid
/// 65534, no groups) with exactly `caps` as its ambient, inheritable and
/// bounding sets; the caller adds `bin`'s arguments.
pub fn as_nobody(lab: &Lab, bin: &Path, caps: &str) -> Command {
    let mut cmd = lab.in_server("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg(bin);
    cmd
}
