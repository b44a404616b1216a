//! Plots as hand-written SVG line charts: no font files, no native dependencies, and output
//! that is a pure function of the data (so plots are as reproducible as `report.json`).
//! Text is left to the viewer's default sans-serif font.

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Stroke colour.
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

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// "Nice" tick step for a range split in about `n` parts.
fn tick_step(range: f64, n: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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

/// Renders the chart as a standalone SVG document.
#[must_use]
pub fn render(chart: &Chart) -> String {
    let (x0, x1, y0, y1) = bounds(chart);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        escape(&chart.title)
    );
    axes(&mut s, chart, (x0, x1, y0, y1), &sx, &sy);
    for (x, label) in &chart.markers {
        if *x < x0 || *x > x1 {
            continue;
        }
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#999" stroke-dasharray="4 3"/><text x="{3:.1}" y="{4}" font-size="10" fill="#666" text-anchor="end" transform="rotate(-90 {3:.1} {4})">{5}</text>"##,
            sx(*x),
            TOP,
            TOP + ph,
            sx(*x) + 10.0,
            TOP + 80.0,
            escape(label)
        );
    }
    for series in &chart.series {
        path(&mut s, series, &sx, &sy);
    }
    legend(&mut s, chart);
    s.push_str("</svg>\n");
    s
}

fn axes(
    s: &mut String,
    chart: &Chart,
    (x0, x1, y0, y1): (f64, f64, f64, f64),
    sx: &dyn Fn(f64) -> f64,
    sy: &dyn Fn(f64) -> f64,
) {
    let (bx, by) = (TOP + H - TOP - BOTTOM, LEFT);
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let step = tick_step(x1 - x0, 8.0);
    let mut x = (x0 / step).ceil() * step;
    while x <= x1 + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            sx(x),
            TOP,
            bx,
            bx + 16.0,
            fmt_num(x)
        );
        x += step;
    }
    let step = tick_step(y1 - y0, 6.0);
    let mut y = (y0 / step).ceil() * step;
    while y <= y1 + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#eee"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            by,
            sy(y),
            W - RIGHT,
            by - 6.0,
            sy(y) + 4.0,
            fmt_num(y)
        );
        y += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 16.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">{1}</text>"#,
        TOP + (H - TOP - BOTTOM) / 2.0,
        escape(&chart.y_label)
    );
}

fn path(s: &mut String, series: &Series, sx: &dyn Fn(f64) -> f64, sy: &dyn Fn(f64) -> f64) {
    if series.points.is_empty() {
        return;
    }
    let mut d = String::new();
    let mut prev_y = None;
    for (k, &(x, y)) in series.points.iter().enumerate() {
        let cmd = if k == 0 { 'M' } else { 'L' };
        if series.step
            && let Some(py) = prev_y
        {
            let _ = write!(d, "L{:.1},{:.1} ", sx(x), sy(py));
        }
        let _ = write!(d, "{cmd}{:.1},{:.1} ", sx(x), sy(y));
        prev_y = Some(y);
    }
    let _ = writeln!(
        s,
        r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.8"/>"#,
        d.trim_end(),
        series.color
    );
}

fn legend(s: &mut String, chart: &Chart) {
    for (k, series) in chart.series.iter().enumerate() {
        let y = TOP + 10.0 + k as f64 * 20.0;
        let x = W - RIGHT + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 22.0,
            series.color,
            x + 28.0,
            y + 4.0,
            escape(&series.label)
        );
    }
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
