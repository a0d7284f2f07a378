//! The report as an SVG chart (plotters' SVG backend, no system fonts): one panel per
//! workload, scenarios along the x axis, a bar per host at its median with a whisker from min
//! to max, optionally on a log scale, so hosts are compared by looking.

use super::report::{describe, Group, Report};
use anyhow::{anyhow, Result};
use plotters::coord::combinators::{BindKeyPoints, WithKeyPoints};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordi32;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Height of one workload's panel, pixels.
const PANEL_HEIGHT: u32 = 440;

/// The report's chart as SVG text; `log` puts the y axis on a log scale.
pub fn svg(report: &Report, log: bool) -> Result<String> {
    let widest = report
        .groups
        .iter()
        .map(|g| g.scenarios.len() * g.hosts.len().max(1))
        .max()
        .unwrap_or(1);
    let width = (160 + 70 * widest as u32).max(720);
    let height = PANEL_HEIGHT * report.groups.len().max(1) as u32;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((report.groups.len().max(1), 1));
        for (g, area) in report.groups.iter().zip(panels.iter()) {
            if log {
                panel_log(report, g, area)?;
            } else {
                panel_linear(report, g, area)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(text)
}

/// A median as the bar's label: two decimals below 10 s, none from 100 s.
fn seconds(v: f64) -> String {
    match v {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The y range that holds every whisker: from 0 (linear) or below the smallest (log).
fn y_range(g: &Group, log: bool) -> (f64, f64) {
    let max = g.rows.iter().map(|r| r.stats.max).fold(0.0, f64::max);
    let min = g
        .rows
        .iter()
        .map(|r| r.stats.min)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    if log {
        let min = if min.is_finite() { min } else { 0.01 };
        // Headroom above the tallest whisker for the legend and the value labels.
        (min / 2.0, (max * 10.0).max(min))
    } else {
        (0.0, (max * 1.4).max(1e-3))
    }
}

fn panel_linear(report: &Report, g: &Group, area: &Area) -> Result<()> {
    let (lo, hi) = y_range(g, false);
    let x = x_axis(g);
    let mut chart = chart_builder(report, g, area)
        .build_cartesian_2d(x, lo..hi)
        .map_err(err)?;
    mesh(&mut chart, report, g)?;
    bars(&mut chart, g, lo)
}

fn panel_log(report: &Report, g: &Group, area: &Area) -> Result<()> {
    let (lo, hi) = y_range(g, true);
    let x = x_axis(g);
    let mut chart = chart_builder(report, g, area)
        .build_cartesian_2d(x, (lo..hi).log_scale())
        .map_err(err)?;
    mesh(&mut chart, report, g)?;
    bars(&mut chart, g, lo)
}

/// Width of one scenario's slot on the x axis (integer, so the axis formats its labels).
const SLOT: i32 = 1000;

/// Scenario `i` spans `i*SLOT..(i+1)*SLOT`; its name is the tick at the middle.
fn x_axis(g: &Group) -> WithKeyPoints<RangedCoordi32> {
    let n = g.scenarios.len().max(1) as i32;
    let ticks = (0..n).map(|i| i * SLOT + SLOT / 2).collect();
    (0..n * SLOT).with_key_points(ticks)
}

fn chart_builder<'a, 'b>(
    report: &Report,
    g: &Group,
    area: &'a Area<'b>,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.caption(
        format!("{} — {}", describe(&g.workload), report.metric.label()),
        ("sans-serif", 16),
    )
    .margin(12)
    .x_label_area_size(36)
    .y_label_area_size(64);
    b
}

fn mesh<'a, 'b: 'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<RangedCoordi32>, Y>>,
    report: &Report,
    g: &Group,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let names = g.scenarios.clone();
    let label = move |v: &i32| {
        names
            .get((v / SLOT).max(0) as usize)
            .cloned()
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label)
        .y_desc(report.metric.label())
        .draw()
        .map_err(err)
}

/// A bar per host and scenario at the median, from `base` up, with a min–max whisker; a
/// legend of the hosts.
fn bars<'a, 'b: 'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<RangedCoordi32>, Y>>,
    g: &Group,
    base: f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let hosts = g.hosts.len().max(1) as i32;
    let width = SLOT * 8 / 10 / hosts;
    for (hi, host) in g.hosts.iter().enumerate() {
        let color = Palette99::pick(hi).to_rgba();
        let rows: Vec<_> = g.rows.iter().filter(|r| &r.host == host).collect();
        let place = |scenario: &str| {
            let si = g.scenarios.iter().position(|s| s == scenario).unwrap_or(0) as i32;
            let x0 = si * SLOT + SLOT / 10 + width * hi as i32;
            (x0, x0 + width * 9 / 10)
        };
        chart
            .draw_series(rows.iter().map(|r| {
                let (x0, x1) = place(&r.scenario);
                Rectangle::new([(x0, base), (x1, r.stats.median)], color.filled())
            }))
            .map_err(err)?
            .label(host.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        for r in &rows {
            let (x0, x1) = place(&r.scenario);
            let (xc, cap) = ((x0 + x1) / 2, (x1 - x0) / 4);
            let (lo, hi) = (r.stats.min, r.stats.max);
            let lines = [
                vec![(xc, lo), (xc, hi)],
                vec![(xc - cap, lo), (xc + cap, lo)],
                vec![(xc - cap, hi), (xc + cap, hi)],
            ];
            chart
                .draw_series(lines.into_iter().map(|l| PathElement::new(l, BLACK)))
                .map_err(err)?;
            let value = Text::new(
                seconds(r.stats.median),
                (x0, hi),
                TextStyle::from(("sans-serif", 11).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Bottom)),
            );
            chart.draw_series(std::iter::once(value)).map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}
