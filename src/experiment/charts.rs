//! The report's two charts as standalone SVG (`charts/pass_rate.svg`, `charts/tokens.svg`): a
//! bar per variant with its 95 % interval as an error bar, the baseline marked.
//!
//! Hand-written rather than drawn with a plotting crate: two bar charts are a few dozen lines of
//! SVG, and a plotting crate would bring fonts, a raster backend and their build time for them.
//!
//! Invariants: pure and deterministic (the same summary gives the same bytes, so the files diff
//! cleanly between runs); every number is finite (a missing interval or a variant without
//! trials draws nothing rather than `NaN`); every name is XML-escaped. The chart draws its own
//! white background so it reads the same on a light or a dark page.

use std::fmt::Write as _;

use super::record::Metric;
use super::summary::{Summary, format_number};

/// The plot area's height; the margins around it grow with the names.
const PLOT_HEIGHT: f64 = 200.0;
/// Room for the tick labels.
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
/// Room for the title, the subtitle and a value label above a full bar.
const TOP: f64 = 64.0;
const SLOT: f64 = 64.0;
/// Wide enough for the title.
const MIN_WIDTH: f64 = 440.0;
/// The slant of the variant names below the bars, and the sine and cosine of that angle.
const LABEL_ANGLE: f64 = 35.0;
const LABEL_SIN: f64 = 0.573_576_436_351_046;
const LABEL_COS: f64 = 0.819_152_044_288_992;
/// A generous average width of a 12 px sans-serif character, for sizing the margins (there is
/// no font metrics here; too wide only wastes a little room).
const CHAR_WIDTH: f64 = 7.0;
/// Longer names are cut (the full name is in the bar's tooltip).
const LABEL_CHARS: usize = 22;

const BAR: &str = "#4c78a8";
const BASELINE_BAR: &str = "#9aa5b1";
const INK: &str = "#222222";
const GRID: &str = "#dddddd";

/// One bar: a value and its interval, or nothing for a variant without trials.
struct Bar {
    name: String,
    baseline: bool,
    value: Option<f64>,
    interval: Option<(f64, f64)>,
    /// Printed above the bar.
    label: String,
    /// The tooltip.
    title: String,
}

/// Pass rate per variant, 0–100 %, with the Wilson 95 % interval.
pub fn pass_rate_svg(summary: &Summary) -> String {
    let bars = summary
        .variants
        .iter()
        .map(|v| {
            let value = v.pass_rate.filter(|r| r.is_finite());
            let label = value.map(percent).unwrap_or_else(|| "no trials".to_string());
            let interval = v.pass_interval.map(|i| (i.low * 100.0, i.high * 100.0));
            let title = match v.pass_interval {
                Some(i) => format!(
                    "{}: {}/{} passed ({}, 95 % CI {}–{})",
                    v.variant,
                    v.passed,
                    v.trials,
                    label,
                    percent(i.low),
                    percent(i.high)
                ),
                None => format!("{}: {label}", v.variant),
            };
            Bar {
                name: v.variant.clone(),
                baseline: v.variant == summary.baseline,
                value: value.map(|r| r * 100.0),
                interval,
                label,
                title,
            }
        })
        .collect::<Vec<_>>();
    let ticks: Vec<f64> = (0..=5).map(|i| f64::from(i) * 20.0).collect();
    chart("Pass rate by variant", "error bars: 95 % Wilson interval", &bars, &ticks, |t| {
        format!("{} %", format_number(t))
    })
}

/// Mean tokens per trial per variant, with the bootstrap 95 % interval.
pub fn tokens_svg(summary: &Summary) -> String {
    let bars = summary
        .variants
        .iter()
        .map(|v| {
            let tokens = v.metric(Metric::Tokens);
            let value = tokens.map(|m| m.mean).filter(|m| m.is_finite());
            let interval = tokens.and_then(|m| m.interval).map(|i| (i.low, i.high));
            // Compact above a million, so that twelve labels fit side by side.
            let label = value.map(axis_number).unwrap_or_else(|| "no trials".to_string());
            let title = match (value, interval) {
                (Some(mean), Some((low, high))) => format!(
                    "{}: {} tokens per trial (95 % CI {}–{})",
                    v.variant,
                    format_number(mean),
                    format_number(low),
                    format_number(high)
                ),
                (Some(mean), None) => format!("{}: {} tokens per trial", v.variant, format_number(mean)),
                _ => format!("{}: no trials", v.variant),
            };
            Bar { name: v.variant.clone(), baseline: v.variant == summary.baseline, value, interval, label, title }
        })
        .collect::<Vec<_>>();
    let top = bars
        .iter()
        .flat_map(|b| b.value.into_iter().chain(b.interval.map(|i| i.1)))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    chart("Mean tokens per trial", "error bars: 95 % bootstrap interval", &bars, &nice_ticks(top), axis_number)
}

/// Round ticks from 0 to at least `top`: a step of 1, 2 or 5 times a power of ten, about five
/// of them.
fn nice_ticks(top: f64) -> Vec<f64> {
    if !top.is_finite() || top <= 0.0 {
        return (0..=5).map(f64::from).collect();
    }
    let rough = top / 5.0;
    let power = 10_f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|s| *s >= rough).unwrap_or(10.0 * power);
    let count = (top / step - 1e-9).ceil().max(1.0) as u32;
    (0..=count).map(|i| f64::from(i) * step).collect()
}

/// An axis label: compact above a million ("1.5M"), else as the report prints numbers.
fn axis_number(value: f64) -> String {
    if value.abs() >= 1e6 { format!("{}M", format_number(value / 1e6)) } else { format_number(value) }
}

fn percent(fraction: f64) -> String {
    super::summary::format_percent(fraction)
}

/// The chart: bars over `ticks` (ascending from 0; the last is the axis top).
fn chart(title: &str, subtitle: &str, bars: &[Bar], ticks: &[f64], tick_label: impl Fn(f64) -> String) -> String {
    let names: Vec<String> = bars.iter().map(name_label).collect();
    // The slanted names hang down and to the left of their bar: room below for the longest,
    // and room on the left for the first one.
    let extent = |name: &String| name.chars().count() as f64 * CHAR_WIDTH;
    let longest = names.iter().map(extent).fold(0.0, f64::max);
    let first = names.first().map(extent).unwrap_or(0.0);
    let left = LEFT.max(first * LABEL_COS - SLOT / 2.0 + 8.0).ceil();
    let width = (left + RIGHT + SLOT * bars.len() as f64).max(MIN_WIDTH);
    let plot_width = width - left - RIGHT;
    let bottom = TOP + PLOT_HEIGHT;
    let plot_height = PLOT_HEIGHT;
    let height = (bottom + 24.0 + longest * LABEL_SIN).max(bottom + 48.0).ceil();
    let top_value = ticks.last().copied().filter(|t| t.is_finite() && *t > 0.0).unwrap_or(1.0);
    let y = |value: f64| bottom - (value.clamp(0.0, top_value) / top_value) * plot_height;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
        w = num(width),
        h = num(height),
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ =
        writeln!(svg, r#"<text x="16" y="24" font-size="15" font-weight="bold" fill="{INK}">{}</text>"#, xml(title));
    let _ = writeln!(svg, r#"<text x="16" y="42" font-size="11" fill="{INK}">{}</text>"#, xml(subtitle));

    svg.push_str("<g class=\"axis\">\n");
    for &tick in ticks {
        let ty = num(y(tick));
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ty}" x2="{}" y2="{ty}" stroke="{GRID}" stroke-width="1"/>"#,
            num(left),
            num(width - RIGHT)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{ty}" dy="4" text-anchor="end" fill="{INK}">{}</text>"#,
            num(left - 8.0),
            xml(&tick_label(tick))
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{INK}" stroke-width="1"/>"#,
        l = num(left),
        r = num(width - RIGHT),
        b = num(bottom)
    );
    svg.push_str("</g>\n");

    if bars.iter().all(|b| b.value.is_none()) {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{INK}">no trials recorded</text>"#,
            num(left + plot_width / 2.0),
            num(TOP + plot_height / 2.0)
        );
    }

    let slot = if bars.is_empty() { plot_width } else { plot_width / bars.len() as f64 };
    let bar_width = (slot * 0.6).min(48.0);
    svg.push_str("<g class=\"bars\">\n");
    for (i, bar) in bars.iter().enumerate() {
        let center = left + slot * (i as f64 + 0.5);
        let _ = writeln!(svg, "<g>\n<title>{}</title>", xml(&bar.title));
        let mut label_y = bottom;
        if let Some(value) = bar.value {
            let top = y(value);
            label_y = top;
            let _ = writeln!(
                svg,
                r#"<rect class="bar" x="{}" y="{}" width="{}" height="{}" fill="{}"/>"#,
                num(center - bar_width / 2.0),
                num(top),
                num(bar_width),
                num(bottom - top),
                if bar.baseline { BASELINE_BAR } else { BAR }
            );
        }
        if let Some((low, high)) = bar.interval.filter(|(l, h)| l.is_finite() && h.is_finite() && l <= h) {
            let (y_low, y_high) = (num(y(low)), num(y(high)));
            let (cap_left, cap_right) = (num(center - 6.0), num(center + 6.0));
            let _ = writeln!(
                svg,
                r#"<path class="interval" d="M{c} {y_low}V{y_high}M{cap_left} {y_low}H{cap_right}M{cap_left} {y_high}H{cap_right}" stroke="{INK}" stroke-width="1.5" fill="none"/>"#,
                c = num(center),
            );
            label_y = label_y.min(y(high));
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" fill="{INK}">{}</text>"#,
            num(center),
            num(label_y - 6.0),
            xml(&bar.label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate({} {}) rotate(-{})" text-anchor="end" fill="{INK}"{}>{}</text>"#,
            num(center + 4.0),
            num(bottom + 14.0),
            num(LABEL_ANGLE),
            if bar.baseline { r#" font-weight="bold""# } else { "" },
            xml(&names[i])
        );
        svg.push_str("</g>\n");
    }
    svg.push_str("</g>\n</svg>\n");
    svg
}

/// A coordinate: one decimal at most, `0` for anything not finite (never `NaN` in the file).
fn num(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_string();
    }
    let rounded = (value * 10.0).round() / 10.0;
    let text = format!("{rounded:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    if text == "-0" { "0".to_string() } else { text.to_string() }
}

/// The name under a bar: cut to [`LABEL_CHARS`], the baseline says so.
fn name_label(bar: &Bar) -> String {
    if bar.baseline { format!("{} (baseline)", cut(&bar.name)) } else { cut(&bar.name) }
}

fn cut(name: &str) -> String {
    if name.chars().count() <= LABEL_CHARS {
        name.to_string()
    } else {
        let kept: String = name.chars().take(LABEL_CHARS - 1).collect();
        format!("{kept}…")
    }
}

/// Text and attribute values escaped for XML.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::summary::fixtures::{info, record};
    use crate::experiment::summary::summarize;

    fn summary_of(variants: &[&str], passes: &[&[bool]]) -> Summary {
        let info = info(variants, &["t"], passes.iter().map(|p| p.len()).max().unwrap_or(0) as u32);
        let mut records = Vec::new();
        for (variant, outcomes) in variants.iter().zip(passes) {
            for (rep, pass) in outcomes.iter().enumerate() {
                let index = records.len() as u32;
                records.push(record(index, variant, "t", rep as u32 + 1, *pass, 1_000 + 500 * index as u64));
            }
        }
        summarize(&info, &records)
    }

    /// The checks a reader of the file would trip on.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("viewBox=\"0 0 ") && svg.contains(" width=\"") && svg.contains(" height=\""));
        assert_eq!(svg.matches("<g>").count() + svg.matches("<g ").count(), svg.matches("</g>").count(), "{svg}");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(svg.matches("<title>").count(), svg.matches("</title>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.contains(r#"fill="white""#));
        // Every `&` starts an entity.
        for (i, _) in svg.match_indices('&') {
            let rest = &svg[i..];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| rest.starts_with(e)), "{rest}");
        }
    }

    /// The `height` of each `class="bar"` rect, in order.
    fn bar_heights(svg: &str) -> Vec<f64> {
        svg.lines()
            .filter(|l| l.contains(r#"class="bar""#))
            .map(|l| {
                let start = l.find(" height=\"").unwrap() + 9;
                let end = start + l[start..].find('"').unwrap();
                l[start..end].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn pass_rate_bars_are_proportional() {
        let summary = summary_of(
            &["base", "half", "all"],
            &[&[true, false, false, false], &[true, true, false, false], &[true, true, true, true]],
        );
        let svg = pass_rate_svg(&summary);
        assert_well_formed(&svg);
        let heights = bar_heights(&svg);
        assert_eq!(heights.len(), 3);
        let full = heights[2];
        assert!(full > 100.0);
        assert!((heights[0] - full * 0.25).abs() <= 0.1, "{heights:?}");
        assert!((heights[1] - full * 0.5).abs() <= 0.1, "{heights:?}");
        assert!(svg.contains(">25 %</text>") && svg.contains(">100 %</text>"));
        // The baseline: its own colour and its label.
        assert!(svg.contains(BASELINE_BAR) && svg.contains("base (baseline)"));
        assert_eq!(svg.matches(r#"class="interval""#).count(), 3);
        // Deterministic.
        assert_eq!(pass_rate_svg(&summary), svg);
    }

    #[test]
    fn tokens_chart_has_round_ticks_and_intervals() {
        let summary = summary_of(&["base", "more"], &[&[true, true, false], &[true, false, true]]);
        let svg = tokens_svg(&summary);
        assert_well_formed(&svg);
        // Means 1,500 and 3,000; the top tick is a round number at or above the highest bound.
        assert!(svg.contains(">1,500</text>") && svg.contains(">3,000</text>"), "{svg}");
        let heights = bar_heights(&svg);
        assert!((heights[1] - 2.0 * heights[0]).abs() <= 0.2, "{heights:?}");
        assert_eq!(nice_ticks(3_900.0), vec![0.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0]);
        assert_eq!(nice_ticks(0.7), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8]);
        assert_eq!(nice_ticks(10_000.0), vec![0.0, 2_000.0, 4_000.0, 6_000.0, 8_000.0, 10_000.0]);
        assert_eq!(nice_ticks(f64::NAN).len(), 6);
        assert_eq!(axis_number(2_500_000.0), "2.5M");
    }

    #[test]
    fn names_are_escaped() {
        let summary = summary_of(&["a<b&c", "\"q\"'s"], &[&[true], &[false]]);
        for svg in [pass_rate_svg(&summary), tokens_svg(&summary)] {
            assert_well_formed(&svg);
            assert!(svg.contains("a&lt;b&amp;c (baseline)"));
            assert!(svg.contains("&quot;q&quot;&apos;s"));
            assert!(!svg.contains("a<b"));
        }
    }

    #[test]
    fn empty_and_missing_data_draw_without_nan() {
        // No records at all.
        let summary = summary_of(&["a", "b"], &[&[], &[]]);
        for svg in [pass_rate_svg(&summary), tokens_svg(&summary)] {
            assert_well_formed(&svg);
            assert!(svg.contains("no trials recorded"));
            assert!(bar_heights(&svg).is_empty());
        }
        // One variant with trials, one without, and a NaN interval.
        let mut summary = summary_of(&["a", "b"], &[&[true, false], &[]]);
        summary.variants[0].pass_interval = Some(crate::experiment::summary::Bounds { low: f64::NAN, high: 0.5 });
        for svg in [pass_rate_svg(&summary), tokens_svg(&summary)] {
            assert_well_formed(&svg);
            assert_eq!(bar_heights(&svg).len(), 1);
            assert!(svg.contains(">no trials</text>"));
        }
    }

    #[test]
    fn twelve_variants_fit() {
        let names: Vec<String> = (0..12).map(|i| format!("variant-with-a-long-name-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let passes: Vec<&[bool]> = (0..12).map(|_| &[true, false][..]).collect();
        let summary = summary_of(&refs, &passes);
        let svg = pass_rate_svg(&summary);
        assert_well_formed(&svg);
        assert_eq!(bar_heights(&svg).len(), 12);
        assert!(svg.contains("variant-with-a-long-n…"));
    }

    #[test]
    fn coordinates_are_finite_and_short() {
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(f64::INFINITY), "0");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(-0.01), "0");
        assert_eq!(num(40.0), "40");
    }
}
