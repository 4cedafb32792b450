//! Prometheus metrics: the registry, the XDP counters collector, and the
//! `/metrics` HTTP endpoint (with [`health`]'s `/healthz` and `/readyz`);
//! [`cookies`] exports the SYN cookies; [`history`] keeps the last minutes for the dashboard,
//! [`hosts`] counts requests under a bounded number of host labels.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use log::{info, warn};
use prometheus::{
    Encoder, IntCounterVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::net::TcpListener;

pub mod cookies;
pub mod health;
pub mod history;
pub mod hosts;

use gateway_common::{Stat, StatKind};

use crate::xdp::StatsMap;

/// Exposes the XDP program's per-CPU counters, summed, at scrape time.
pub struct XdpCollector {
    stats: Arc<StatsMap>,
    families: Families,
}

/// The metric families the XDP counters are exported as.
struct Families {
    packets: IntCounterVec,
    hellos: IntCounterVec,
    split: IntCounterVec,
}

impl XdpCollector {
    /// A collector over the program's `STATS` map.
    pub fn new(stats: Arc<StatsMap>) -> XdpCollector {
        XdpCollector {
            stats,
            families: Self::families(),
        }
    }

    fn families() -> Families {
        let packets = IntCounterVec::new(
            Opts::new(
                "gateway_xdp_packets_total",
                "Packets seen by the XDP filter, by verdict and reason.",
            ),
            &["verdict", "reason"],
        );
        let hellos = IntCounterVec::new(
            Opts::new(
                "gateway_xdp_client_hellos_total",
                "ClientHellos parsed by the XDP filter, by the highest version offered.",
            ),
            &["max_version"],
        );
        let split = IntCounterVec::new(
            Opts::new(
                "gateway_xdp_split_hellos_total",
                "ClientHellos the XDP filter decided from several TCP segments or TLS records.",
            ),
            &["outcome"],
        );
        // The names and labels above are valid constants.
        Families {
            packets: packets.expect("valid metric"),
            hellos: hellos.expect("valid metric"),
            split: split.expect("valid metric"),
        }
    }
}

impl Collector for XdpCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.families.packets.desc();
        d.extend(self.families.hellos.desc());
        d.extend(self.families.split.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counters = match self.stats.read() {
            Ok(c) => c,
            Err(e) => {
                warn!("reading XDP counters: {e:#}");
                return Vec::new();
            }
        };
        // Fresh vectors per scrape: concurrent scrapes never see each other's values.
        let f = Self::families();
        for stat in Stat::ALL {
            let value = counters.get(stat);
            match stat.kind() {
                StatKind::Outcome(verdict) => f
                    .packets
                    .with_label_values(&[verdict, stat.label()])
                    .inc_by(value),
                StatKind::HelloVersion => f.hellos.with_label_values(&[stat.label()]).inc_by(value),
                StatKind::Split => f.split.with_label_values(&[stat.label()]).inc_by(value),
            }
        }
        let mut out = f.packets.collect();
        out.extend(f.hellos.collect());
        out.extend(f.split.collect());
        out
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        warn!("encoding metrics: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Arc<health::Health>,
) -> anyhow::Result<()> {
    info!("metrics on http://{}/metrics", listener.local_addr()?);
    let registry = Arc::new(registry);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!("metrics accept: {e}");
                continue;
            }
        };
        let (registry, health) = (registry.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = answer(req.method().as_str(), req.uri().path(), &registry, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                warn!("metrics connection: {e}");
            }
        });
    }
}

/// The answer to a request for `path`.
fn answer(
    method: &str,
    path: &str,
    registry: &Registry,
    health: &health::Health,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
    };
    let response = match (method, path) {
        ("GET", "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(render(registry)))),
        ("GET", "/healthz") => text(StatusCode::OK, "alive\n"),
        ("GET", "/readyz") => {
            let (status, body) = health.readiness();
            text(status, body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    };
    response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
