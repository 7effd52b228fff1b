//! Line charts with optional confidence-interval error bars, written as PNG and SVG with
//! plotters; shared by the comparison and the run report.
//!
//! PNG and SVG text need a TrueType font (plotters' `ab_glyph` backend has none built in). The
//! first readable one of `$EMBER_FONT` and the usual system locations (Debian's
//! `fonts-dejavu-core`, which `make` installs, Fedora, Arch, macOS) is registered once as
//! `sans-serif`; without one, [`draw_line_plot`] fails with a hint naming the fix.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::UsageError;

/// Where a TrueType font is looked for, after `$EMBER_FONT`.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Registers the first usable font as `sans-serif` (once per process) and returns its path.
pub fn ensure_font() -> Result<PathBuf> {
    let found = FONT.get_or_init(|| {
        let env = std::env::var("EMBER_FONT").ok().filter(|s| !s.is_empty());
        for path in env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied())
        {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(PathBuf::from(path));
            }
        }
        Err(format!(
            "no TrueType font found for plot text (looked at $EMBER_FONT and {})",
            FONT_CANDIDATES[0]
        ))
    });
    found.clone().map_err(|msg| {
        UsageError::with_hint(
            msg,
            "install one (`apt-get install fonts-dejavu-core`) or set EMBER_FONT=/path/to/font.ttf",
        )
        .into()
    })
}

/// A point (x, y) with an optional interval (lo, hi) drawn as an error bar.
pub type Point = (f64, f64, Option<(f64, f64)>);

/// One curve of points.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
    /// Draw markers only, no connecting line (e.g. scattered measurements under a fitted curve).
    pub markers_only: bool,
}

/// A chart of several series on shared axes.
#[derive(Debug, Clone, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic x axis (all x must be > 0).
    pub log_x: bool,
    pub series: Vec<Series>,
}

/// Padded (min, max) over every point and interval of the series on one axis.
fn axis_range(plot: &LinePlot, x_axis: bool) -> (f64, f64) {
    let values = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .flat_map(|&(x, y, ci)| {
            if x_axis {
                vec![x]
            } else {
                let mut v = vec![y];
                v.extend(ci.map(|(lo, hi)| [lo, hi]).into_iter().flatten());
                v
            }
        });
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if x_axis && plot.log_x {
        return (lo * 0.8, hi * 1.25);
    }
    let pad = if hi > lo {
        0.06 * (hi - lo)
    } else {
        0.5_f64.max(lo.abs() * 0.1)
    };
    (lo - pad, hi + pad)
}

/// The error of a drawing call, as the one message every plot failure carries.
fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

fn draw_on<DB: DrawingBackend>(plot: &LinePlot, root: DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_err)?;
    let (x0, x1) = axis_range(plot, true);
    let (y0, y1) = axis_range(plot, false);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64);
    // The mesh's bounds differ between a linear and a log x axis: the macro writes it for both.
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(plot.x_label.as_str())
                .y_desc(plot.y_label.as_str())
                .draw()
                .map_err(draw_err)?;
            draw_series(&mut chart, plot)?;
        }};
    }
    if plot.log_x {
        body!(builder
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(draw_err)?);
    } else {
        body!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?);
    }
    root.present().map_err(draw_err)
}

/// Every series of `plot` on `chart` (line or markers, error bars with caps), then the legend.
fn draw_series<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, plot: &LinePlot) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate<From = (f64, f64)>,
{
    for (i, s) in plot.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y, _)| (x, y)).collect();
        let anno = if s.markers_only {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(draw_err)?
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(draw_err)?
        };
        anno.label(s.name.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        });
        // Error bars: a vertical segment with 8-pixel caps at both ends.
        let intervals: Vec<(f64, f64, f64)> = s
            .points
            .iter()
            .filter_map(|&(x, _, ci)| ci.map(|(lo, hi)| (x, lo, hi)))
            .collect();
        let stems = intervals
            .iter()
            .map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], color));
        chart.draw_series(stems).map_err(draw_err)?;
        let caps = intervals
            .iter()
            .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)])
            .map(|p| {
                EmptyElement::at(p) + PathElement::new(vec![(-4, 0), (4, 0)], color.stroke_width(1))
            });
        chart.draw_series(caps).map_err(draw_err)?;
        if !s.markers_only {
            let marks = pts.iter().map(|&p| Circle::new(p, 3, color.filled()));
            chart.draw_series(marks).map_err(draw_err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// Draws `plot` to `STEM.png` and `STEM.svg` (800 × 520) and returns both paths.
pub fn draw_line_plot(plot: &LinePlot, stem: &Path) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_on(
        plot,
        BitMapBackend::new(&png, (800, 520)).into_drawing_area(),
    )
    .with_context(|| format!("writing {}", png.display()))?;
    draw_on(plot, SVGBackend::new(&svg, (800, 520)).into_drawing_area())
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok(vec![png, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg_with_text() {
        let tmp = tempfile::tempdir().unwrap();
        let plot = LinePlot {
            title: "energy vs compute".into(),
            x_label: "forward passes".into(),
            y_label: "energy".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "best-of-N".into(),
                    points: vec![(1.0, 2.0, Some((1.5, 2.5))), (4.0, 1.0, Some((0.8, 1.2)))],
                    markers_only: false,
                },
                Series {
                    name: "fit".into(),
                    points: vec![(2.0, 1.5, None)],
                    markers_only: true,
                },
            ],
        };
        let files = draw_line_plot(&plot, &tmp.path().join("e")).unwrap();
        let png = std::fs::read(&files[0]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("best-of-N") && svg.contains("energy"));
    }

    #[test]
    fn axis_range_covers_intervals() {
        let plot = LinePlot {
            series: vec![Series {
                name: "a".into(),
                points: vec![(1.0, 0.0, Some((-1.0, 2.0)))],
                markers_only: false,
            }],
            ..LinePlot::default()
        };
        let (lo, hi) = axis_range(&plot, false);
        assert!(lo < -1.0 && hi > 2.0);
        assert_eq!(axis_range(&LinePlot::default(), true), (0.0, 1.0));
    }
}
