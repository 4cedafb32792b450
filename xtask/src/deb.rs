//! `cargo xtask deb`: the Debian package, built with cargo-deb from the
//! release binary and `gateway-user/packaging/` (unit, maintainer scripts,
//! man page, defaults), then checked as CI checks it:
//! - `dpkg-deb -c` lists every file the package must install;
//! - `lintian` reports no error (the warnings kept are in README.md);
//! - `systemd-analyze verify` accepts the unit, and `systemd-analyze security`
//!   gives its exposure score (printed).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// What the package must hold (as `dpkg-deb -c` lists it).
const EXPECTED: &[&str] = &[
    "./usr/bin/gateway",
    "./usr/lib/systemd/system/gateway.service",
    "./etc/default/gateway",
    "./usr/share/man/man8/gateway.8.gz",
    "./usr/share/gateway/prometheus/gateway-rules.yml",
    "./usr/share/doc/gateway/copyright",
];

/// Builds and checks the package; returns its path.
pub(crate) fn deb(root: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    crate::release_bins(root, &["gateway"])?;
    let staging = target.join("deb");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let page = root.join("gateway-user/packaging/gateway.8");
    let gz = std::fs::File::create(staging.join("gateway.8.gz"))?;
    crate::run(
        Command::new("gzip")
            .args(["-9n", "-c"])
            .arg(&page)
            .stdout(gz),
    )?;
    let out = target.join("debian");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "deb",
            "-p",
            "gateway-user",
            "--no-build",
            "--strip",
            "--output",
        ])
        .arg(&out)
        .current_dir(root)
        .output()
        .context("running cargo deb (is cargo-deb installed? `cargo xtask setup`)")?;
    if !built.status.success() {
        bail!(
            "cargo deb failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    let path = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    anyhow::ensure!(
        path.is_file(),
        "cargo deb made no package at {}",
        path.display()
    );
    check_contents(&path)?;
    lintian(&path)?;
    check_unit(root, target)?;
    println!("deb: {}", path.display());
    Ok(path)
}

/// `dpkg-deb -c`: every path of [`EXPECTED`] is there.
fn check_contents(deb: &Path) -> anyhow::Result<()> {
    let out = Command::new("dpkg-deb").arg("-c").arg(deb).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = EXPECTED
        .iter()
        .copied()
        .filter(|want| !listing.lines().any(|l| l.ends_with(want)))
        .collect();
    if !missing.is_empty() {
        bail!("the package lacks {}:\n{listing}", missing.join(", "));
    }
    Ok(())
}

/// `lintian`: its tags are printed; an error fails.
fn lintian(deb: &Path) -> anyhow::Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(deb)
        .output()
        .context("running lintian (`cargo xtask setup` installs it)")?;
    let tags = String::from_utf8_lossy(&out.stdout);
    println!(
        "lintian:\n{}",
        if tags.trim().is_empty() {
            "  (no tags)"
        } else {
            &tags
        }
    );
    if !out.status.success() {
        bail!(
            "lintian found errors:\n{tags}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `systemd-analyze verify` on the unit (its ExecStart pointed at the
/// release binary and its man page left out: neither is installed here) and
/// its exposure score.
fn check_unit(root: &Path, target: &Path) -> anyhow::Result<()> {
    let unit = std::fs::read_to_string(root.join("gateway-user/packaging/gateway.service"))?;
    let binary = target.join("release/gateway");
    let local: String = unit
        .replace("/usr/bin/gateway", &binary.display().to_string())
        .lines()
        .filter(|l| !l.starts_with("Documentation=man:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = target.join("deb/unit");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("gateway.service");
    std::fs::write(&path, local)?;
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .context("running systemd-analyze verify")?;
    let said = String::from_utf8_lossy(&verify.stderr);
    // Without systemd as PID 1 it cannot load the unit's dependencies; what
    // it says about the unit itself is what counts.
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("gateway.service"))
        .collect();
    if !about_unit.is_empty() {
        bail!("systemd-analyze verify:\n{}", about_unit.join("\n"));
    }
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .context("running systemd-analyze security")?;
    let report = String::from_utf8_lossy(&security.stdout);
    let score = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .context("systemd-analyze security printed no exposure level")?;
    println!(
        "unit: systemd-analyze verify clean; {}",
        score.trim_start_matches('→').trim()
    );
    Ok(())
}
