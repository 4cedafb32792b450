//! The flood scenario's plot: legitimate handshakes per second and their p99
//! latency against the flood rate, one line per configuration, as a PNG drawn
//! with `plotters` (bitmap backend, text with Debian's DejaVu Sans).

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::report::Series;

/// Where Debian's fonts-dejavu-core puts the font the plot uses.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers [`FONT`] as plotters' `sans-serif` (once per process).
fn register_font() -> anyhow::Result<()> {
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

const COLORS: [RGBColor; 3] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
];

/// One panel: `value` of each step against its flood rate, one line per series.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    title: &str,
    y_desc: &str,
    value: impl Fn(&super::Step) -> f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e:?}");
    let x_max = series
        .iter()
        .flat_map(|s| s.steps.iter().map(|st| st.flood_rate as f64))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.steps.iter().map(&value))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..x_max * 1.02, 0.0..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("flood rate asked (connections/s)")
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(e)?;
    for (s, color) in series.iter().zip(COLORS) {
        let points: Vec<(f64, f64)> = s
            .steps
            .iter()
            .map(|st| (st.flood_rate as f64, value(st)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(e)?
            .label(s.server.key())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Draws the two panels side by side into `path` (PNG).
pub fn draw(path: &Path, series: &[Series], subtitle: &str) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let (top, body) = root.split_vertically(40);
    top.draw(&Text::new(subtitle, (15, 12), ("sans-serif", 16)))
        .map_err(e)?;
    let (left, right) = body.split_horizontally(700);
    panel(
        &left,
        series,
        "Legitimate mTLS handshakes/s under flood",
        "handshakes/s (TLS 1.3, client cert, 1 request)",
        |st| st.legit_rate,
    )?;
    panel(
        &right,
        series,
        "Handshake latency p99 under flood",
        "p99 handshake latency (ms)",
        |st| st.p99 * 1e3,
    )?;
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
