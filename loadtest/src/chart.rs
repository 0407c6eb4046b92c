//! An SVG chart of latency percentiles against offered load, from open-loop `--json`
//! reports (`make bench` draws docs/img/ with it). Plain SVG text: no plotting dependency.

use std::fmt::Write as _;

/// One open-loop run: offered rate, achieved rate and its percentiles.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Point {
    pub rate: Option<u32>,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The y axis is logarithmic, 0.01 ms to 10 s: tails grow by orders of magnitude at
/// saturation.
const Y_DECADES: [f64; 7] = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0];

/// A line: its name, colour and the value it draws.
type Series = (&'static str, &'static str, fn(&Point) -> f64);

/// The SVG text; points are sorted by offered rate, runs without a rate are skipped.
pub fn svg(title: &str, points: &[Point]) -> String {
    let mut pts: Vec<&Point> = points.iter().filter(|p| p.rate.is_some()).collect();
    pts.sort_by_key(|p| p.rate);
    let x_max = pts
        .iter()
        .filter_map(|p| p.rate)
        .max()
        .map_or(1.0, |r| nice_ceiling(f64::from(r)));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |r: f64| LEFT + r / x_max * plot_w;
    let (lo, hi) = (Y_DECADES[0].log10(), Y_DECADES[Y_DECADES.len() - 1].log10());
    let y = |ms: f64| {
        let v = ms
            .clamp(Y_DECADES[0], Y_DECADES[Y_DECADES.len() - 1])
            .log10();
        TOP + plot_h - (v - lo) / (hi - lo) * plot_h
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for d in Y_DECADES {
        let yy = y(d);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            format_ms(d)
        );
    }
    for i in 0..=5 {
        let r = x_max * f64::from(i) / 5.0;
        let xx = x(r);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            format_rate(r)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (requests/s, open loop)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    let series: [Series; 3] = [
        ("p50", "#4c78a8", |p| p.p50_ms),
        ("p95", "#f58518", |p| p.p95_ms),
        ("p99", "#e45756", |p| p.p99_ms),
    ];
    for (i, (name, color, value)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .filter_map(|p| Some(format!("{:.1},{:.1}", x(f64::from(p.rate?)), y(value(p)))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &pts {
            let Some(r) = p.rate else { continue };
            let mark = if p.errors > 0 { "black" } else { color };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{mark}"/>"#,
                x(f64::from(r)),
                y(value(p))
            );
        }
        let ly = TOP + 10.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}">black dots: runs with errors</text>"#,
        LEFT + 10.0,
        TOP + 10.0 + 16.0 * 3.0 + 4.0
    );
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn format_rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{}k", (r / 100.0).round() / 10.0)
    } else {
        format!("{}", r.round())
    }
}

fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.0} s", ms / 1000.0)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rate: u32, p99: f64, errors: u64) -> Point {
        Point {
            rate: Some(rate),
            ops_per_sec: f64::from(rate),
            p50_ms: p99 / 4.0,
            p95_ms: p99 / 2.0,
            p99_ms: p99,
            errors,
        }
    }

    #[test]
    fn chart_has_a_line_per_percentile_and_a_dot_per_run() {
        let svg = svg(
            "Get <gateway>",
            &[
                point(20_000, 50.0, 3),
                point(5_000, 0.8, 0),
                point(10_000, 1.2, 0),
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 9);
        assert!(svg.contains("Get &lt;gateway&gt;"));
        // Sorted by rate: the polyline goes left to right.
        let line = svg.lines().find(|l| l.contains("<polyline")).expect("line");
        let xs: Vec<f64> = line
            .split("points=\"")
            .nth(1)
            .expect("points")
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| p.split(',').next().expect("x").parse().expect("number"))
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    }

    #[test]
    fn axis_ceiling_is_round() {
        assert_eq!(nice_ceiling(18_000.0), 20_000.0);
        assert_eq!(nice_ceiling(26_000.0), 50_000.0);
        assert_eq!(nice_ceiling(1_000.0), 1_000.0);
        assert_eq!(format_rate(25_000.0), "25k");
        assert_eq!(format_rate(2_500.0), "2.5k");
        assert_eq!(format_rate(500.0), "500");
    }
}
