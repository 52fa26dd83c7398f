//! A small SVG line chart with a logarithmic x axis, written by hand: the
//! bench needs two panels of a few lines each, and a plotting library would
//! bring font handling the course does not otherwise need.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    /// (x, y), x > 0.
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub series: Vec<Series>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];
const W: f64 = 460.0;
const H: f64 = 320.0;
const MARGIN: (f64, f64, f64, f64) = (70.0, 20.0, 40.0, 50.0); // left, right, top, bottom

/// The panels side by side, one legend below.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = W * panels.len() as f64;
    let names: Vec<&str> = panels
        .first()
        .map(|p| p.series.iter().map(|s| s.name.as_str()).collect())
        .unwrap_or_default();
    let height = H + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="16" text-anchor="middle" font-size="14">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut out, p, W * i as f64);
    }
    for (i, name) in names.iter().enumerate() {
        let x = 20.0 + 110.0 * i as f64;
        let y = H + 20.0;
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="2"/>"#,
            x + 20.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 25.0,
            y + 4.0,
            esc(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, p: &Panel, dx: f64) {
    let (l, r, t, b) = MARGIN;
    let (x0, x1, y0, y1) = (dx + l, dx + W - r, H - b, t);
    let pts: Vec<(f64, f64)> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| *x > 0.0 && y.is_finite())
        .collect();
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        t - 8.0,
        esc(&p.title)
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text>"#,
        (x0 + x1) / 2.0,
        H - 12.0,
        esc(&p.x_label)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        x1 - x0,
        y0 - y1
    );
    if pts.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text>"#,
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
        return;
    }
    let lx = |x: f64| x.log10();
    let (mut xmin, mut xmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(lx(*x)), b.max(lx(*x)))
    });
    if xmax - xmin < 1e-9 {
        xmin -= 0.5;
        xmax += 0.5;
    }
    let ymax = nice(pts.iter().map(|(_, y)| *y).fold(0.0, f64::max));
    let sx = |x: f64| x0 + (lx(x) - xmin) / (xmax - xmin) * (x1 - x0);
    let sy = |y: f64| y0 - y / ymax * (y0 - y1);
    // Grid: y in fifths, x at each power of ten.
    for k in 0..=5 {
        let y = ymax * k as f64 / 5.0;
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{py}" x2="{x1}" y2="{py}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0 - 4.0,
            sy(y) + 4.0,
            short(y),
            py = sy(y)
        );
    }
    let mut e = xmin.ceil() as i32;
    while (e as f64) <= xmax + 1e-9 {
        let x = 10f64.powi(e);
        let _ = writeln!(
            out,
            r##"<line x1="{px}" y1="{y0}" x2="{px}" y2="{y1}" stroke="#eee"/><text x="{px}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + 16.0,
            short(x),
            px = sx(x)
        );
        e += 1;
    }
    for (i, s) in p.series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| *x > 0.0 && y.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        if path.len() > 1 {
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        for (x, y) in &pts {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: {} at {}</title></circle>"#,
                sx(*x),
                sy(*y),
                esc(&s.name),
                short(*y),
                short(*x)
            );
        }
    }
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// 1500 -> "1.5k", 2000000 -> "2M".
fn short(v: f64) -> String {
    let (d, suffix) = if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if (x - x.round()).abs() < 0.05 {
        format!("{:.0}{suffix}", x)
    } else {
        format!("{x:.1}{suffix}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_and_short() {
        assert_eq!(nice(730.0), 1000.0);
        assert_eq!(nice(1200.0), 2000.0);
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
    }

    #[test]
    fn draws_every_series() {
        let p = Panel {
            title: "t".into(),
            x_label: "x".into(),
            series: vec![
                Series {
                    name: "a<b".into(),
                    points: vec![(1.0, 10.0), (100.0, 20.0)],
                },
                Series {
                    name: "c".into(),
                    points: vec![(1.0, 5.0)],
                },
            ],
        };
        let svg = svg("title", &[p]);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("a&lt;b"));
    }
}
