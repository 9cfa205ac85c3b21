//! Small charts drawn on the server as inline SVG (no chart library, no script): a bar chart of
//! a share (success rate) and line charts of durations. Pure functions of their points, so they
//! are unit-tested like any other rendering.

use std::fmt::Write;

/// One bucket of a chart: its label (already in the reader's words) and its value; None is a
/// bucket without data (drawn as a gap, not as zero).
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub value: Option<f64>,
}

const W: f64 = 640.0;
const H: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;
/// Room above the plot for the top label.
const TOP: f64 = 12.0;
/// The plot's height.
const PLOT: f64 = H - BOTTOM - TOP;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn frame(out: &mut String, title: &str, max: f64, unit: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = escape(title)
    );
    for i in 0..=2 {
        let y = TOP + PLOT * (1.0 - i as f64 / 2.0);
        let v = max * i as f64 / 2.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{W}" y1="{y:.1}" y2="{y:.1}" stroke="#c9ced6" stroke-width="1"/><text x="{x:.1}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#4f5a66">{v:.0}{u}</text>"##,
            x = LEFT - 4.0,
            ty = y + 4.0,
            u = escape(unit)
        );
    }
}

fn labels(out: &mut String, points: &[Point]) {
    let n = points.len().max(1);
    let step = (n / 6).max(1);
    let slot = (W - LEFT) / n as f64;
    for (i, p) in points.iter().enumerate().step_by(step) {
        let x = LEFT + slot * (i as f64 + 0.5);
        let _ = write!(
            out,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="11" text-anchor="middle" fill="#4f5a66">{l}</text>"##,
            y = H - 6.0,
            l = escape(&p.label)
        );
    }
}

/// Bars of a percentage (0–100), green, on a 0–100 % scale.
pub fn percent_bars(title: &str, points: &[Point]) -> String {
    let mut out = String::new();
    frame(&mut out, title, 100.0, "%");
    let n = points.len().max(1);
    let slot = (W - LEFT) / n as f64;
    for (i, p) in points.iter().enumerate() {
        if let Some(v) = p.value {
            let h = PLOT * v.clamp(0.0, 100.0) / 100.0;
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#146c2e"><title>{l}: {v:.1}%</title></rect>"##,
                x = LEFT + slot * i as f64 + slot * 0.15,
                y = H - BOTTOM - h,
                w = slot * 0.7,
                l = escape(&p.label)
            );
        }
    }
    labels(&mut out, points);
    out.push_str("</svg>");
    out
}

/// Lines of one or more series on a shared scale (for p50 and p95 durations, say), each with
/// its colour; gaps where a bucket has no data.
pub fn lines(title: &str, unit: &str, series: &[(&str, &str, Vec<Point>)]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().filter_map(|p| p.value))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    // A round top for the scale: 1, 2 or 5 times a power of ten.
    let mag = 10f64.powf(max.log10().floor());
    let top = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|t| *t >= max)
        .unwrap_or(max);
    let mut out = String::new();
    frame(&mut out, title, top, unit);
    for (name, colour, points) in series {
        let n = points.len().max(1);
        let slot = (W - LEFT) / n as f64;
        let mut d = String::new();
        let mut dots = String::new();
        let mut pen_down = false;
        for (i, p) in points.iter().enumerate() {
            match p.value {
                Some(v) => {
                    let x = LEFT + slot * (i as f64 + 0.5);
                    let y = TOP + PLOT * (1.0 - v / top);
                    let _ = write!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                    // A dot too, so a lone bucket (no neighbour to draw a line to) shows.
                    let _ = write!(
                        dots,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"><title>{l}: {v:.0}</title></circle>"#,
                        l = escape(&p.label)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            out,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"><title>{name}</title></path>"#,
            d = d.trim(),
            name = escape(name)
        );
        out.push_str(&dots);
    }
    labels(&mut out, series.first().map(|s| s.2.as_slice()).unwrap_or(&[]));
    out.push_str("</svg>");
    out
}

/// The job list's strip of recent runs, oldest first: one bar a run, green or red, as tall as
/// its duration against the slowest of them. `label` says the same in words.
pub fn strip(label: &str, runs: &[(bool, Option<i64>)]) -> String {
    const BAR: usize = 6;
    const GAP: usize = 2;
    const TALL: f64 = 20.0;
    let max = runs.iter().filter_map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let width = runs.len() * (BAR + GAP);
    let mut out = format!(
        r#"<svg class="strip" width="{width}" height="{TALL}" viewBox="0 0 {width} {TALL}" role="img" aria-label="{l}" xmlns="http://www.w3.org/2000/svg"><title>{l}</title>"#,
        l = escape(label)
    );
    for (i, (ok, ms)) in runs.iter().enumerate() {
        // At least a sliver, so a run without a duration still shows its colour.
        let h = (4.0 + (TALL - 4.0) * ms.unwrap_or(0) as f64 / max).min(TALL);
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y:.1}" width="{BAR}" height="{h:.1}" fill="{c}"/>"#,
            x = i * (BAR + GAP),
            y = TALL - h,
            c = if *ok { "#2e7d32" } else { "#c62828" },
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[Option<f64>]) -> Vec<Point> {
        v.iter()
            .enumerate()
            .map(|(i, v)| Point {
                label: format!("{i}:00"),
                value: *v,
            })
            .collect()
    }

    #[test]
    fn given_a_gap_then_no_bar_is_drawn_for_it() {
        let svg = percent_bars("Success", &pts(&[Some(100.0), None, Some(50.0)]));
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn given_a_gap_then_the_line_lifts_its_pen() {
        let svg = lines(
            "Duration",
            " ms",
            &[("p50", "#0b57d0", pts(&[Some(10.0), Some(20.0), None, Some(5.0)]))],
        );
        let d = svg.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
    }

    #[test]
    fn given_recent_runs_then_the_strip_has_a_bar_each_coloured_by_outcome() {
        let s = strip("2 of 3 <ok>", &[(true, Some(100)), (false, None), (true, Some(50))]);
        assert_eq!(s.matches("<rect").count(), 3);
        assert_eq!(s.matches("#c62828").count(), 1);
        assert!(s.contains("2 of 3 &lt;ok&gt;"));
        assert!(s.contains(r#"height="20.0""#), "the slowest is full height: {s}");
    }

    #[test]
    fn given_hostile_labels_then_they_are_escaped() {
        let p = vec![Point {
            label: "<script>".into(),
            value: Some(1.0),
        }];
        let svg = percent_bars("\"><img onerror=x>", &p);
        assert!(!svg.contains("<script>") && !svg.contains("<img"), "{svg}");
    }

    #[test]
    fn the_scale_ends_on_a_round_number() {
        let svg = lines("d", " ms", &[("p95", "#000", pts(&[Some(130.0)]))]);
        assert!(svg.contains(">200 ms<"), "{svg}");
    }
}
