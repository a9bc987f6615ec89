//! Server-side SVG bar charts, so the usage page needs no JavaScript.

use std::fmt::Write;

/// A bar chart of `points` (label, value), `width` x `height` pixels.
pub fn bar_chart(points: &[(String, f64)], width: u32, height: u32) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let (left, bottom, top) = (36.0, 22.0, 8.0);
    let max = points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(1.0);
    let n = points.len().max(1) as f64;
    let slot = (w - left) / n;
    let bar = (slot * 0.7).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" font-size="10" font-family="system-ui, sans-serif">"##
    );
    let _ = write!(svg, r##"<line x1="{left}" y1="{y}" x2="{w}" y2="{y}" stroke="#c8ced8"/>"##, y = h - bottom);
    let _ = write!(
        svg,
        r##"<text x="{x}" y="{y}" text-anchor="end" fill="#5b6475">{max}</text>"##,
        x = left - 4.0,
        y = top + 8.0,
        max = fmt(max)
    );
    for (i, (label, value)) in points.iter().enumerate() {
        let bh = (value / max) * (h - bottom - top);
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let y = h - bottom - bh;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}" fill="#2f5bd3"><title>{label}: {v}</title></rect>"##,
            label = escape(label),
            v = fmt(*value)
        );
        let _ = write!(
            svg,
            r##"<text x="{cx:.1}" y="{ty:.1}" text-anchor="middle" fill="#5b6475">{label}</text>"##,
            cx = x + bar / 2.0,
            ty = h - 6.0,
            label = escape(label)
        );
    }
    if points.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#5b6475">no data yet</text>"##,
            x = w / 2.0,
            y = h / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn fmt(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{}", v.round() as i64) } else { format!("{v:.1}") }
}

fn escape(s: &str) -> String {
    crate::identity::oidc::escape_html(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_labels_are_escaped() {
        let svg = bar_chart(&[("2026-10".into(), 5.0), ("<b>".into(), 10.0)], 300, 120);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains(r#"height="90.0""#), "the largest bar fills the plot: {svg}");
        assert!(bar_chart(&[], 300, 120).contains("no data yet"));
    }
}
