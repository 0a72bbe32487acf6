//! Figure 4 of the paper: runtime by number of competing cores, one panel per app, one line per
//! configuration with mean and stdev error bars. Drawn as SVG and PNG with plotters; text is
//! laid out with a TrueType font found on the machine (DejaVu Sans from `fonts-dejavu-core`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plan::{Config, Plan};
use super::report::Cell;

/// Failure to draw.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("no TrueType font found for the chart's text (looked in {0}); install fonts-dejavu-core (scripts/install-deps)")]
    NoFont(String),
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the first font found as plotters' "sans-serif" (once per process).
fn ensure_font() -> Result<(), ChartError> {
    FONT.get_or_init(|| {
        let override_path = std::env::var("DUALSTACK_CHART_FONT").ok();
        for p in override_path
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES)
        {
            if let Ok(bytes) = std::fs::read(p) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(FONT_CANDIDATES.join(", "))
    })
    .clone()
    .map_err(ChartError::NoFont)
}

fn color(c: Config) -> RGBColor {
    match c {
        Config::DualStack => RGBColor(31, 119, 180),
        Config::SingleStack => RGBColor(214, 39, 40),
        Config::Native => RGBColor(60, 60, 60),
        Config::NativeThp => RGBColor(44, 160, 44),
        Config::Kvm => RGBColor(148, 103, 189),
    }
}

/// Draws the chart to `path` (`.svg` or `.png`, by extension).
pub fn figure4(plan: &Plan, cells: &[Cell], path: &Path) -> Result<(), ChartError> {
    ensure_font()?;
    let cols = plan.all_apps().len().clamp(1, 4);
    let rows = plan.all_apps().len().div_ceil(cols).max(1);
    let size = (360 * cols as u32, 300 * rows as u32 + 60);
    let err = |e: &dyn std::fmt::Display| ChartError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if path.extension().is_some_and(|e| e == "svg") {
        let root = SVGBackend::new(path, size).into_drawing_area();
        draw(plan, cells, &root, rows, cols).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    } else {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw(plan, cells, &root, rows, cols).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    plan: &Plan,
    cells: &[Cell],
    root: &DrawingArea<DB, Shift>,
    rows: usize,
    cols: usize,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(60);
    title.draw(&Text::new(
        format!(
            "Runtime vs competing cores ({} load, {} reps, mean ± stdev)",
            plan.load.as_str(),
            plan.reps
        ),
        (10, 8),
        ("sans-serif", 20).into_font(),
    ))?;
    // Legend on the title strip.
    let mut x = 10;
    for &c in &plan.configs {
        let label = super::report::config_label(plan, c);
        title.draw(&Rectangle::new([(x, 40), (x + 24, 44)], color(c).filled()))?;
        title.draw(&Text::new(
            label.clone(),
            (x + 30, 34),
            ("sans-serif", 15).into_font(),
        ))?;
        x += 150.max(48 + 8 * label.len() as i32);
    }
    let mut levels = plan.levels.clone();
    levels.sort_unstable();
    levels.dedup();
    let (lo_x, hi_x) = (
        *levels.first().unwrap_or(&0) as f64 - 0.3,
        *levels.last().unwrap_or(&0) as f64 + 0.3,
    );
    let panels = body.split_evenly((rows, cols));
    for (app, panel) in plan.all_apps().iter().zip(panels.iter()) {
        let mine: Vec<&Cell> = cells
            .iter()
            .filter(|c| &c.app == app && c.time_s.n > 0)
            .collect();
        let lo = mine
            .iter()
            .map(|c| c.time_s.mean - c.time_s.stdev)
            .fold(f64::INFINITY, f64::min);
        let hi = mine
            .iter()
            .map(|c| c.time_s.mean + c.time_s.stdev)
            .fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            let pad = ((hi - lo) * 0.15).max(hi.abs() * 0.005).max(1e-6);
            ((lo - pad).max(0.0), hi + pad)
        } else {
            (0.0, 1.0)
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(app.as_str(), ("sans-serif", 17))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(58)
            .build_cartesian_2d(lo_x..hi_x, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("competing cores")
            .y_desc("runtime (s)")
            .x_labels(levels.len().max(2))
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{}", v.round() as i64)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.2}"))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()?;
        let n = plan.configs.len() as f64;
        for (i, &config) in plan.configs.iter().enumerate() {
            // A small horizontal offset per configuration keeps the error bars apart.
            let dx = (i as f64 - (n - 1.0) / 2.0) * 0.06;
            let mut pts: Vec<&&Cell> = mine.iter().filter(|c| c.config == config).collect();
            pts.sort_by_key(|c| c.level);
            let col = color(config);
            chart.draw_series(LineSeries::new(
                pts.iter().map(|c| (c.level as f64 + dx, c.time_s.mean)),
                col.stroke_width(2),
            ))?;
            chart.draw_series(pts.iter().map(|c| {
                ErrorBar::new_vertical(
                    c.level as f64 + dx,
                    c.time_s.mean - c.time_s.stdev,
                    c.time_s.mean,
                    c.time_s.mean + c.time_s.stdev,
                    col.stroke_width(2),
                    8,
                )
            }))?;
            chart.draw_series(
                pts.iter()
                    .map(|c| Circle::new((c.level as f64 + dx, c.time_s.mean), 4, col.filled())),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::plan::test_plan;
    use super::super::record::synthetic;
    use super::super::report::cells;
    use super::*;

    #[test]
    fn draws_svg_and_png_from_synthetic_data() {
        if ensure_font().is_err() {
            return dualstack_testutil::missing("no font is installed (run scripts/install-deps)");
        }
        let p = test_plan();
        let mut recs = vec![];
        for rep in 0..3 {
            for app in &p.apps {
                for &c in &p.configs {
                    for level in [0, 1] {
                        let slow = if c == Config::SingleStack && level == 1 {
                            1.1
                        } else {
                            1.0
                        };
                        recs.push(synthetic(app, c, level, rep, slow + rep as f64 * 0.01));
                    }
                }
            }
        }
        let cells = cells(&p, &recs);
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("f.svg");
        let png = dir.path().join("f.png");
        figure4(&p, &cells, &svg).unwrap();
        figure4(&p, &cells, &png).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("hpccg") && text.contains("dual-stack"));
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
