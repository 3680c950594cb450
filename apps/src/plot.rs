//! Line plots (SVG) for the benchmarks.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Named series of (x, y) points.
pub type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// Draws `lines` into an SVG at `path`: linear axes from zero, or log-log axes.
///
/// # Errors
/// The file cannot be written.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    log: bool,
    lines: Lines,
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let points = || lines.iter().flat_map(|l| l.1.iter().copied());
    let (min_x, max_x) = points().fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (min_y, max_y) = points().fold((f64::MAX, 1e-6f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 22)).margin(16).x_label_area_size(40).y_label_area_size(80);
    if log {
        let x = (min_x.max(1.0) / 1.5..max_x * 1.5).log_scale();
        let y = (min_y.max(1e-7) / 2.0..max_y * 2.0).log_scale();
        let mut chart = builder.build_cartesian_2d(x, y).map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
        draw(&mut chart, lines).map_err(|e| err(&e))?;
    } else {
        let mut chart: ChartContext<'_, _, Cartesian2d<RangedCoordf64, RangedCoordf64>> =
            builder.build_cartesian_2d(0.0..max_x + 0.5, 0.0..max_y.max(1e-3) * 1.15).map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(|e| err(&e))?;
        draw(&mut chart, lines).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn draw<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, lines: Lines) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    for (i, (name, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}
