//! Plots as SVG line charts drawn with `plotters`' SVG backend. Built without its `ttf`
//! feature, plotters estimates text sizes itself (for SVG the viewer lays text out anyway), so
//! there are no font files and no native dependencies, and the output is a pure function of
//! the data: plots are as reproducible as `report.json`.

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Stroke colour, `#rrggbb`.
    pub color: &'static str,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
    /// Draw as steps (value holds until the next point).
    pub step: bool,
}

/// A chart: title, axis labels, lines and optional vertical markers (such as fault times).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// `(x, label)` vertical dashed lines.
    pub markers: Vec<(f64, String)>,
    /// Force the y axis to start at zero.
    pub y_from_zero: bool,
}

const W: u32 = 900;
const H: u32 = 420;
/// Width of the legend column right of the plot.
const LEGEND: u32 = 200;
const MARKER_GREY: RGBColor = RGBColor(0x99, 0x99, 0x99);
const LABEL_GREY: RGBColor = RGBColor(0x66, 0x66, 0x66);

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `#rrggbb` as a colour; anything else is drawn black.
fn color(hex: &str) -> RGBColor {
    let byte = |k: usize| {
        hex.get(1 + 2 * k..3 + 2 * k)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    match (hex.len(), byte(0), byte(1), byte(2)) {
        (7, Some(r), Some(g), Some(b)) => RGBColor(r, g, b),
        _ => BLACK,
    }
}

fn bounds(chart: &Chart) -> (f64, f64, f64, f64) {
    let pts = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    if chart.y_from_zero {
        y0 = y0.min(0.0);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    (
        x0,
        x1,
        if chart.y_from_zero { y0 } else { y0 - pad },
        y1 + pad,
    )
}

/// The points a series is drawn through: a step series holds each value until the next x.
fn drawn_points(series: &Series) -> Vec<(f64, f64)> {
    if !series.step {
        return series.points.clone();
    }
    let mut out = Vec::with_capacity(series.points.len() * 2);
    for (k, &(x, y)) in series.points.iter().enumerate() {
        if k > 0 {
            out.push((x, series.points[k - 1].1));
        }
        out.push((x, y));
    }
    out
}

/// Renders the chart as a standalone SVG document.
#[must_use]
pub fn render(chart: &Chart) -> String {
    let mut out = String::new();
    // Drawing into a string cannot fail for IO reasons; an error here is a plotting bug, and
    // the half-drawn SVG says so in the report rather than aborting the whole run.
    if let Err(e) = draw(chart, &mut out) {
        out.push_str(&format!("<!-- plot failed: {e} -->\n"));
    }
    out
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(chart: &Chart, out: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(out, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, legend_area) = root.split_horizontally(W - LEGEND);
    let (x0, x1, y0, y1) = bounds(chart);
    let mut ctx = ChartBuilder::on(&plot_area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .bold_line_style(RGBColor(0xee, 0xee, 0xee))
        .light_line_style(TRANSPARENT)
        .x_labels(9)
        .y_labels(9)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .draw()?;
    for (x, label) in chart.markers.iter().filter(|(x, _)| (x0..=x1).contains(x)) {
        ctx.draw_series(DashedLineSeries::new(
            [(*x, y0), (*x, y1)],
            4,
            3,
            MARKER_GREY.into(),
        ))?;
        let font = ("sans-serif", 12)
            .into_font()
            .transform(FontTransform::Rotate270)
            .color(&LABEL_GREY);
        let (px, py) = ctx.backend_coord(&(*x, y1));
        plot_area.draw(&Text::new(label.clone(), (px + 2, py + 80), font))?;
    }
    for series in &chart.series {
        let style = color(series.color).stroke_width(2);
        ctx.draw_series(LineSeries::new(drawn_points(series), style))?;
    }
    legend(chart, &legend_area)?;
    root.present()?;
    Ok(())
}

/// One line and label per series, in the column right of the plot.
fn legend(chart: &Chart, area: &DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult {
    for (k, series) in chart.series.iter().enumerate() {
        let y = 50 + 20 * i32::try_from(k).unwrap_or(i32::MAX / 40);
        let stroke = color(series.color).stroke_width(3);
        area.draw(&PathElement::new([(14, y), (36, y)], stroke))?;
        area.draw(&Text::new(
            series.label.clone(),
            (42, y - 6),
            ("sans-serif", 14).into_font(),
        ))?;
    }
    Ok(())
}

/// The empirical CDF of `values` as chart points.
#[must_use]
pub fn cdf(values: &[u64]) -> Vec<(f64, f64)> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(k, &x)| (x as f64, (k + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "members <alive>".into(),
            x_label: "time (s)".into(),
            y_label: "members".into(),
            series: vec![Series {
                label: "alive & well".into(),
                color: "#de2d26",
                points: vec![(0.0, 1.0), (10.0, 5.0), (20.0, 3.0)],
                step: true,
            }],
            markers: vec![(12.0, "kill n3".into())],
            y_from_zero: true,
        }
    }

    #[test]
    fn renders_a_deterministic_svg_with_escaped_text() {
        let svg = render(&chart());
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("members &lt;alive&gt;"), "{svg}");
        assert!(svg.contains("alive &amp; well"), "{svg}");
        assert!(svg.contains("kill n3"), "{svg}");
        assert!(svg.contains("#DE2D26") || svg.contains("#de2d26"), "{svg}");
        assert!(!svg.contains("plot failed"), "{svg}");
        assert_eq!(
            svg,
            render(&chart()),
            "the same data must give the same bytes"
        );
    }

    #[test]
    fn an_empty_chart_still_renders() {
        let svg = render(&Chart::default());
        assert!(
            svg.starts_with("<svg") && !svg.contains("plot failed"),
            "{svg}"
        );
    }

    #[test]
    fn colours_parse_and_fall_back_to_black() {
        assert_eq!(color("#2b8cbe"), RGBColor(0x2b, 0x8c, 0xbe));
        assert_eq!(color("red"), BLACK);
        assert_eq!(color("#12345"), BLACK);
    }
}
