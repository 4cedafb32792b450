//! `gateway xdp replay`: runs captured frames through the real, loaded XDP
//! program (BPF_PROG_TEST_RUN) and reports each verdict as a JSON line.

use std::{fs::File, io::Write, path::PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::{
    pcap::PcapReader,
    tls_version::wire_name,
    xdp::{FrameVerdict, XdpFilter},
};

/// One line of output.
#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    packet: usize,
    verdict: &'static str,
    reason: &'static str,
    sni: Option<&'a str>,
    max_version: Option<String>,
}

/// Replays every file through `filter`, writing one JSON object per packet to `out`.
///
/// A file that cannot be read is reported on stderr and the others still run;
/// the result is an error if any file failed.
///
/// Flow state (anchors, hellos being reassembled) carries from packet to packet
/// within a file, in file order, as on the interface; each file starts afresh.
pub fn replay(
    filter: &mut XdpFilter,
    files: &[PathBuf],
    mut out: impl Write,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for path in files {
        filter.forget_flows()?;
        if let Err(e) = replay_file(filter, path, &mut out) {
            eprintln!("gateway xdp replay: {}: {e:#}", path.display());
            failed.push(path.display().to_string());
        }
    }
    out.flush()?;
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} file(s) could not be replayed: {}",
            failed.len(),
            files.len(),
            failed.join(", ")
        )
    }
}

fn replay_file(filter: &XdpFilter, path: &PathBuf, out: &mut impl Write) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let file = File::open(path).context("cannot open")?;
    let mut reader = PcapReader::new(std::io::BufReader::new(file))?;
    let mut index = 0;
    while let Some(packet) = reader.next_packet()? {
        index += 1;
        let verdict = filter
            .run_frame(&packet.data)
            .with_context(|| format!("packet {index}"))?;
        writeln!(
            out,
            "{}",
            serde_json::to_string(&line(&name, index, &verdict))?
        )?;
    }
    Ok(())
}

fn line<'a>(file: &'a str, packet: usize, v: &'a FrameVerdict) -> Line<'a> {
    Line {
        file,
        packet,
        verdict: v.verdict(),
        reason: v.stat.label(),
        sni: v.hello.as_ref().and_then(|h| h.sni.as_deref()),
        max_version: v.hello.as_ref().map(|h| wire_name(h.max_version)),
    }
}
