//! The flood scenario's plot: one panel per kind of flood, each server's
//! legitimate handshake rate (as a share of its no-flood rate) against the
//! flood rate on a log scale, with the 90% and 50% lines where servers break;
//! a PNG drawn with `plotters` (bitmap backend, text with Debian's DejaVu Sans).

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::{FloodKind, Server, report::Series};

/// Where Debian's fonts-dejavu-core puts the font the plot uses.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers [`FONT`] as plotters' `sans-serif` (once per process).
pub(crate) fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT)
            .map_err(|e| format!("{FONT}: {e} (Debian package fonts-dejavu-core)"))?;
        // The font lives for the rest of the process, as plotters requires.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

const COLORS: [RGBColor; 5] = [
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
];

/// Where a step sits on the log-scale flood axis: its achieved rate (the
/// unpaced step's rate is what the generator reached), the no-flood step at
/// the axis' left end.
fn x_of(st: &super::Step, left: f64) -> f64 {
    if st.flood_rate == 0 {
        left
    } else {
        st.flood_achieved().max(left)
    }
}

/// One panel: each server's legitimate rate, as % of its no-flood rate,
/// against the flood rate of `kind`, with the 90% and 50% lines.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    kind: FloodKind,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e:?}");
    let mine: Vec<&Series> = series.iter().filter(|s| s.kind == kind).collect();
    let rates = mine
        .iter()
        .flat_map(|s| s.steps.iter().filter(|st| st.flood_rate > 0));
    let top = rates
        .clone()
        .map(|st| st.flood_achieved())
        .fold(10.0, f64::max);
    let left = rates
        .map(|st| st.flood_achieved())
        .fold(top, f64::min)
        .max(1.0)
        / 3.0;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} flood", kind.key()), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(55)
        .build_cartesian_2d((left..top * 2.0).log_scale(), 0.0..120.0)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "flood achieved ({}, log; left edge: no flood)",
            kind.unit()
        ))
        .y_desc("legit handshakes/s, % of no-flood")
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|x| super::kind::rate_label(x.round() as u64))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(e)?;
    for (level, style) in [(90.0, BLACK.mix(0.5)), (50.0, RED.mix(0.5))] {
        chart
            .draw_series(LineSeries::new(
                vec![(left, level), (top * 2.0, level)],
                style.stroke_width(1),
            ))
            .map_err(e)?;
    }
    for s in mine {
        let color =
            COLORS[Server::ALL.iter().position(|x| *x == s.server).unwrap_or(0) % COLORS.len()];
        let mut points: Vec<((f64, f64), bool)> = s
            .steps
            .iter()
            .map(|st| {
                let at = (x_of(st, left), 100.0 * s.share(st).unwrap_or(0.0));
                (at, super::report::judged(st))
            })
            .collect();
        // By the rate achieved: a saturated generator may reach less at a higher asked rate.
        points.sort_by(|a, b| a.0.0.total_cmp(&b.0.0));
        let line: Vec<(f64, f64)> = points.iter().map(|p| p.0).collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(3)))
            .map_err(e)?
            .label(s.server.key())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        // Judged steps filled, steps bound elsewhere hollow.
        chart
            .draw_series(points.iter().map(|(p, judged)| {
                let style = if *judged {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                Circle::new(*p, 5, style)
            }))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Draws one panel per kind of flood, two a row, into `path` (PNG).
pub fn draw(path: &Path, series: &[Series], subtitle: &str) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 1450)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let (top, body) = root.split_vertically(40);
    top.draw(&Text::new(subtitle, (15, 12), ("sans-serif", 15)))
        .map_err(e)?;
    let kinds: Vec<FloodKind> = FloodKind::ALL
        .into_iter()
        .filter(|k| series.iter().any(|s| s.kind == *k))
        .collect();
    for (area, kind) in body.split_evenly((3, 2)).iter().zip(kinds) {
        panel(area, series, kind)?;
    }
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
