//! The dashboard's live charts during a flood: a store-mode gateway with the
//! XDP filter on the lab's interface, headless Chromium on its dashboard (both
//! in the server namespace, where the admin API listens on loopback), and a
//! bounded flood of sub-minimum hellos from the client namespace. The XDP
//! chart must show the refusals within a few samples.

mod dashboard_common;

use std::{
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use dashboard_common::{GATEWAY, shots, sign_in};
use gateway::metrics::history::INTERVAL;
use gateway_tests::{
    browser::Browser,
    flood::{self, Bounds, stateless},
    lab::{IFACE, Lab, METRICS, SERVER_V4, run},
};

const ADMIN: &str = "127.0.0.1:9180";

/// The flood: bursts of unpaced live frames (AF_PACKET where the kernel
/// refuses them), a bounded count each.
const BURSTS: usize = 8;
const BURST: u64 = 150_000;

/// The highest "drop …" rate the XDP chart's legend shows.
fn xdp_drop_peak(b: &Browser) -> f64 {
    b.run(
        "return Math.max(0, ...[...document.querySelectorAll('#chart-xdp li')]\
         .filter(l => l.dataset.label.startsWith('drop ')).map(l => Number(l.dataset.peak)))",
    )
    .as_f64()
    .unwrap_or(0.0)
}

#[test]
fn during_a_flood_the_xdp_chart_shows_the_refusals() {
    gateway_tests::require_root("the lab's namespaces and XDP");
    let mut lab = Lab::create().unwrap();
    let data = lab.dir.join("data");
    let mut cmd = lab.in_server(GATEWAY);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&data)
        .args(["--interface", IFACE])
        .args(["--listen", &format!("{SERVER_V4}:8443")])
        .args(["--admin", ADMIN, "--metrics", METRICS])
        .args(["--default-hostname", "lab.test"])
        .env("RUST_LOG", "info");
    lab.spawn("gateway", cmd).unwrap();
    lab.wait_for("gateway", Duration::from_secs(20), |lab| {
        lab.metrics().is_ok()
    })
    .unwrap();
    // The dashboard itself answers before Chromium opens it: the metrics
    // answering says nothing of the admin listener.
    lab.wait_for("gateway", Duration::from_secs(20), |lab| {
        let dashboard = format!("http://{ADMIN}/");
        run(lab
            .in_server("curl")
            .args(["-sf", "--max-time", "2", &dashboard]))
        .is_ok()
    })
    .unwrap();
    let token = lab
        .log("gateway")
        .lines()
        .find_map(|l| {
            l.split_once("GATEWAY_TOKEN): ")
                .map(|(_, t)| t.trim().to_string())
        })
        .expect("the first run prints a token");
    let dir = lab.dir.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    // The terminator's port: the one the filter inspects in store mode.
    let target = stateless::Target::lab(&lab, 8443).unwrap();
    // chromedriver (and so Chromium) runs as `ip netns exec` runs programs, with
    // the namespace's own /sys; the WebDriver client runs on a thread in it.
    let wrap = lab.server_wrapper();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            lab.in_server_thread(move || {
                let b = Browser::start(&dir, &shots(), wrap);
                let base = format!("http://{ADMIN}");
                sign_in(&b, &base, &token);
                b.page(&base, "charts");
                let calm = xdp_drop_peak(&b);
                ready_tx.send(()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(40);
                let mut peak = calm;
                while peak < 1000.0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(500));
                    peak = xdp_drop_peak(&b);
                }
                // One more sample while the flood goes on, for the picture.
                std::thread::sleep(INTERVAL + Duration::from_secs(1));
                let shot = b.screenshot("charts-flood");
                let _ = done_rx.recv_timeout(Duration::from_secs(30));
                let legend = b.text("#chart-xdp");
                let context = if peak < 1000.0 {
                    b.what_went_wrong()
                } else {
                    String::new()
                };
                (calm, peak, format!("{legend}\n{context}"), shot)
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the browser got to the charts");
        flood_in_bursts(&lab, target);
        done_tx.send(()).unwrap();
        let (calm, peak, legend, shot) = watcher.join().unwrap().unwrap();
        eprintln!(
            "XDP chart before: {calm:.0} drops/s; during: {peak:.0} drops/s\n{legend}\n{}",
            shot.display()
        );
        assert_eq!(calm, 0.0, "drops before the flood: {legend}");
        assert!(
            peak >= 1000.0,
            "the XDP chart never showed the flood's refusals: {legend}"
        );
        assert!(Path::new(&shot).exists());
    });
}

/// Floods the lab's server in [`BURSTS`] bursts for about 12 s, so the chart
/// shows a plateau, not one spike: live XDP frames, or AF_PACKET (said loudly)
/// where the kernel refuses them.
fn flood_in_bursts(lab: &Lab, target: stateless::Target) {
    let bounds = Bounds {
        count: BURST,
        rate: 0,
        max_time: Duration::from_secs(5),
    };
    let frames = std::sync::Arc::new(stateless::hello_frames(target));
    let (mut sent, mut generators) = (0, Vec::new());
    for _ in 0..BURSTS {
        let frames = frames.clone();
        let (generator, result) = lab
            .in_client_thread(move || flood::blast_fastest(IFACE, target, &frames, bounds))
            .expect("a thread in the client namespace")
            .expect("a flood, from live XDP frames or AF_PACKET");
        sent += result.sent;
        generators.push(generator);
        std::thread::sleep(Duration::from_millis(1500));
    }
    generators.dedup();
    eprintln!("flood: {sent} frames in {BURSTS} bursts, from {generators:?}");
    if generators.contains(&flood::Generator::AfPacket) {
        eprintln!(
            "!!! LIVE XDP FRAMES NOT USED ({}): the chart was checked under an AF_PACKET flood",
            flood::fastest::live_frames_refusal().unwrap_or("GATEWAY_FLOOD_NO_LIVE_FRAMES=1")
        );
    }
}
