//! `--plot FILE.png|FILE.svg`: throughput over time (left) and the latency
//! CDF on a log axis (right), one line per run.
//!
//! Drawn with plotters' pure-Rust backends; text is laid out with
//! `ab_glyph`, which needs a TrueType font at run time: `PAXSQL_FONT`, or
//! DejaVu Sans / Liberation Sans from the usual system paths (Debian:
//! `fonts-dejavu-core`). PNGs are encoded with the `png` crate.

use super::stats::RunSummary;
use anyhow::{anyhow, bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 560;
const FONT: &str = "sans-serif";

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Draws `runs` into `path`; the extension picks the format.
pub fn plot(path: &Path, title: &str, runs: &[RunSummary]) -> anyhow::Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") | Some("svg") => {}
        _ => bail!(
            "--plot {}: the file name must end in .png or .svg",
            path.display()
        ),
    }
    load_font()?;
    if ext.as_deref() == Some("svg") {
        let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, title, runs).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
        return Ok(());
    }
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, title, runs).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
        root.present()
            .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    write_png(path, &pixels)
}

/// Registers the first TrueType font found as `sans-serif`, once.
fn load_font() -> anyhow::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let env = std::env::var("PAXSQL_FONT").ok();
            let candidates = env
                .iter()
                .map(String::as_str)
                .chain(FONT_PATHS.iter().copied());
            for p in candidates {
                if let Ok(bytes) = std::fs::read(p) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                        return Ok(());
                    }
                }
            }
            Err(
                "--plot needs a TrueType font to draw text: install one (Debian: \
                 fonts-dejavu-core) or point PAXSQL_FONT at a .ttf file"
                    .to_owned(),
            )
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    runs: &[RunSummary],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 22))?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    throughput(&left, runs)?;
    latency_cdf(&right, runs)?;
    Ok(())
}

fn color(i: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    ][i % 4]
}

fn throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[RunSummary],
) -> DrawResult<DB> {
    let t_max = runs
        .iter()
        .flat_map(|r| r.timeline.last().map(|p| p.t_s))
        .fold(1.0, f64::max);
    let y_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.ok_per_s + p.errors_per_s))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("throughput (successful ops/s, 250 ms buckets)", (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since measuring began")
        .y_desc("ops/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 13))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                r.timeline.iter().map(|p| (p.t_s, p.ok_per_s)),
                c.stroke_width(2),
            ))?
            .label(r.target.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if r.timeline.iter().any(|p| p.errors_per_s > 0.0) {
            chart
                .draw_series(LineSeries::new(
                    r.timeline.iter().map(|p| (p.t_s, p.errors_per_s)),
                    c.mix(0.5).stroke_width(1),
                ))?
                .label(format!("{} errors", r.target))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.mix(0.5)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn latency_cdf<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[RunSummary],
) -> DrawResult<DB> {
    let points = || runs.iter().flat_map(|r| r.cdf.iter().map(|&(ms, _)| ms));
    let lo = points().fold(f64::INFINITY, f64::min).max(0.001);
    let hi = points().fold(0.0, f64::max).max(lo * 10.0);
    let (lo, hi) = if lo.is_finite() {
        (lo * 0.8, hi * 1.25)
    } else {
        (0.01, 10.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption("latency CDF (successful ops)", (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of operations")
        .label_style((FONT, 13))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(r.cdf.iter().copied(), c.stroke_width(2)))?
            .label(r.target.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn write_png(path: &Path, rgb: &[u8]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .write_image_data(rgb)
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
