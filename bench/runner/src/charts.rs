//! SVG charts of the table's medians, written next to it, so a reader sees who wins and by
//! how much without reading numbers:
//! - `STEM-replies.svg`: replies/s against connection count (both axes logarithmic) for the
//!   pipelined IAMAT scenarios with logging on, a line per implementation;
//! - `STEM-replies-other.svg`: replies/s of every other throughput scenario, a panel each,
//!   a bar per implementation (logarithmic: the herds are 100× apart);
//! - `STEM-flood.svg`: flood latency idle and under load, a bar to the median and a whisker
//!   to p99 per implementation;
//! - `STEM-idle.svg`: server memory per idle connection.
//!
//! Drawn with plotters' SVG backend (text is left to the SVG viewer's fonts).

use crate::herd::Impl;
use crate::scenarios::{Metrics, Scenario, What};
use crate::table::median_of;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Results = HashMap<(String, String), Vec<Result<Metrics, String>>>;
/// (x, y) points of one line.
type Points = Vec<(f64, f64)>;

const FONT: &str = "sans-serif";

/// One colour per implementation, by its place in the table (so a herd keeps its colour
/// from chart to chart).
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(214, 39, 40),   // red: proxy-herd, the first column
        RGBColor(31, 119, 180),  // blue
        RGBColor(44, 160, 44),   // green
        RGBColor(255, 127, 14),  // orange
        RGBColor(148, 103, 189), // purple
        RGBColor(140, 86, 75),   // brown
        RGBColor(23, 190, 207),  // cyan
        RGBColor(127, 127, 127), // grey: the echo floor, the last column
        RGBColor(188, 189, 34),  // olive
        RGBColor(227, 119, 194), // pink
    ];
    PALETTE[i % PALETTE.len()]
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// A round logarithmic range around `lo..hi`: powers of ten, with room for a label on the
/// right of the longest bar.
fn log_range(lo: f64, hi: f64, room: f64) -> std::ops::Range<f64> {
    let lo = 10f64.powf(lo.max(1e-9).log10().floor());
    let hi = 10f64.powf((hi.max(lo) * room).log10().ceil());
    lo..hi.max(lo * 10.0)
}

/// A value for a bar's label: three significant figures, thousands separated.
fn short(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Writes every chart the results allow next to `out` (the markdown file); returns the files.
pub fn write(
    out: &Path,
    scenarios: &[Scenario],
    impls: &[Impl],
    results: &Results,
) -> Result<Vec<PathBuf>, String> {
    let stem = out.with_extension("");
    let file = |suffix: &str| PathBuf::from(format!("{}-{suffix}.svg", stem.display()));
    let mut written = Vec::new();
    let sweep: Vec<&Scenario> = scenarios.iter().filter(|s| is_sweep(s)).collect();
    if !sweep.is_empty() {
        let f = file("replies");
        sweep_chart(&f, &sweep, impls, results)?;
        written.push(f);
    }
    let others: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| !is_sweep(s) && s.rows.first().is_some_and(|r| r.key == "rate"))
        .collect();
    let bar_panels: Vec<Panel> = others
        .iter()
        .map(|s| Panel::of(s, "rate", 1.0, "replies/s", impls, results))
        .filter(|p| !p.bars.is_empty())
        .collect();
    if !bar_panels.is_empty() {
        let f = file("replies-other");
        bars_chart(&f, &bar_panels)?;
        written.push(f);
    }
    let flood: Vec<Panel> = scenarios
        .iter()
        .filter(|s| matches!(s.what, What::Flood { .. }))
        .map(|s| {
            let mut p = Panel::of(
                s,
                "p50_us",
                0.001,
                "ms (bar: p50, whisker: p99)",
                impls,
                results,
            );
            for b in &mut p.bars {
                b.whisker = median_of(results, &s.id, &b.name, "p99_us").map(|v| v * 0.001);
            }
            p
        })
        .filter(|p| !p.bars.is_empty())
        .collect();
    if !flood.is_empty() {
        let f = file("flood");
        bars_chart(&f, &flood)?;
        written.push(f);
    }
    let idle: Vec<Panel> = scenarios
        .iter()
        .filter(|s| matches!(s.what, What::Idle { .. }))
        .map(|s| {
            Panel::of(
                s,
                "bytes_per_conn",
                1.0,
                "server RSS per idle connection (bytes)",
                impls,
                results,
            )
        })
        .filter(|p| !p.bars.is_empty())
        .collect();
    if !idle.is_empty() {
        let f = file("idle");
        bars_chart(&f, &idle)?;
        written.push(f);
    }
    Ok(written)
}

/// The pipelined IAMAT scenarios with logging on: the connection sweep.
fn is_sweep(s: &Scenario) -> bool {
    matches!(
        s.what,
        What::Load {
            style: "pipelined",
            kind: "iamat",
            log_off: false,
            offline: false,
            stub_delay_ms: None,
            ..
        }
    )
}

fn conns_of(s: &Scenario) -> usize {
    match s.what {
        What::Load { conns, .. } => conns,
        _ => 0,
    }
}

/// replies/s against connections, log–log, a line per implementation.
fn sweep_chart(
    path: &Path,
    sweep: &[&Scenario],
    impls: &[Impl],
    results: &Results,
) -> Result<(), String> {
    // (colour index, implementation, its points)
    let mut lines: Vec<(usize, &Impl, Points)> = Vec::new();
    for (i, imp) in impls.iter().enumerate() {
        let points: Vec<(f64, f64)> = sweep
            .iter()
            .filter_map(|s| {
                let v = median_of(results, &s.id, &imp.name, "rate")?;
                (v > 0.0).then_some((conns_of(s) as f64, v))
            })
            .collect();
        if !points.is_empty() {
            lines.push((i, imp, points));
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    let all = || lines.iter().flat_map(|(_, _, p)| p.iter());
    let x = log_range(
        all().map(|p| p.0).fold(f64::MAX, f64::min),
        all().map(|p| p.0).fold(0.0, f64::max),
        1.0,
    );
    let y = log_range(
        all().map(|p| p.1).fold(f64::MAX, f64::min),
        all().map(|p| p.1).fold(0.0, f64::max),
        1.5,
    );
    let root = SVGBackend::new(path, (820, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "IAMAT pipelined, flooded, logging on: replies/s by connections",
            (FONT, 20),
        )
        .margin(12)
        .margin_right(36)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(x.log_scale(), y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("connections to Hamilton (window 16 each)")
        .y_desc("replies/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(err)?;
    for (i, imp, points) in &lines {
        let c = colour(*i);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(imp.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// One bar of a bar panel.
struct Bar {
    name: String,
    colour: RGBColor,
    value: f64,
    /// A second, larger figure drawn as a whisker (p99 next to p50).
    whisker: Option<f64>,
}

/// A panel of horizontal bars: one scenario, one figure, a bar per implementation.
struct Panel {
    title: String,
    unit: String,
    bars: Vec<Bar>,
}

impl Panel {
    fn of(
        s: &Scenario,
        key: &str,
        scale: f64,
        unit: &str,
        impls: &[Impl],
        results: &Results,
    ) -> Panel {
        let bars = impls
            .iter()
            .enumerate()
            .filter_map(|(i, imp)| {
                let v = median_of(results, &s.id, &imp.name, key)? * scale;
                (v > 0.0).then(|| Bar {
                    name: imp.name.clone(),
                    colour: colour(i),
                    value: v,
                    whisker: None,
                })
            })
            .collect();
        Panel {
            title: format!("{} ({})", s.title.replace('`', ""), s.id),
            unit: unit.to_string(),
            bars,
        }
    }
}

/// Panels stacked one above the other, bars on a logarithmic axis, each labelled with its
/// value (and whisker value).
fn bars_chart(path: &Path, panels: &[Panel]) -> Result<(), String> {
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| 90 + 30 * p.bars.len() as u32)
        .collect();
    let root = SVGBackend::new(path, (900, heights.iter().sum())).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut rest = root;
    for (p, h) in panels.iter().zip(&heights) {
        let (area, below) = rest.split_vertically(*h);
        bar_panel(&area, p)?;
        rest = below;
    }
    rest.present().map_err(err)
}

fn bar_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, p: &Panel) -> Result<(), String> {
    let n = p.bars.len();
    let top = |b: &Bar| b.whisker.unwrap_or(b.value).max(b.value);
    let x = log_range(
        p.bars.iter().map(|b| b.value).fold(f64::MAX, f64::min) / 2.0,
        p.bars.iter().map(top).fold(0.0, f64::max),
        6.0,
    );
    let names: Vec<String> = p.bars.iter().map(|b| b.name.clone()).collect();
    // Segment 0 is at the bottom: the table's first column goes to the top.
    let row = |i: usize| n - 1 - i;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 15))
        .margin(8)
        .margin_right(36)
        .x_label_area_size(34)
        .y_label_area_size(150)
        .build_cartesian_2d(x.clone().log_scale(), (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => names[row(*i)].clone(),
            _ => String::new(),
        })
        .x_desc(p.unit.as_str())
        .x_label_formatter(&|v| short(*v))
        .label_style((FONT, 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(p.bars.iter().enumerate().map(|(i, b)| {
            let mut r = Rectangle::new(
                [
                    (x.start, SegmentValue::Exact(row(i))),
                    (b.value, SegmentValue::Exact(row(i) + 1)),
                ],
                b.colour.filled(),
            );
            r.set_margin(5, 5, 0, 0);
            r
        }))
        .map_err(err)?;
    chart
        .draw_series(p.bars.iter().enumerate().filter_map(|(i, b)| {
            let w = b.whisker?;
            Some(PathElement::new(
                vec![
                    (b.value, SegmentValue::CenterOf(row(i))),
                    (w, SegmentValue::CenterOf(row(i))),
                ],
                BLACK.stroke_width(2),
            ))
        }))
        .map_err(err)?;
    chart
        .draw_series(p.bars.iter().enumerate().map(|(i, b)| {
            let end = top(b);
            let label = match b.whisker {
                Some(w) => format!("  {} / {}", short(b.value), short(w)),
                None => format!("  {}", short(b.value)),
            };
            Text::new(
                label,
                (end, SegmentValue::CenterOf(row(i))),
                TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_labels() {
        let r = log_range(3.2, 110_000.0, 1.0);
        assert_eq!((r.start, r.end), (1.0, 1_000_000.0));
        assert_eq!(short(1234567.0), "1,234,567");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(0.5), "0.50");
    }
}
