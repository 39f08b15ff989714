//! The benchmark's SVG charts (plotters): messages per server CPU-second and RSS per idle
//! connection per server, and the soak's RSS over time.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One server's bars in the summary chart.
#[derive(Debug, Clone)]
pub struct ServerBars {
    pub name: &'static str,
    /// Messages per server CPU-second, echo at 64 and at many connections.
    pub echo_64: f64,
    pub echo_many: f64,
    /// Server RSS per idle connection, bytes.
    pub rss_per_connection: f64,
}

const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const GREEN: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const SHADE: RGBColor = RGBColor(0xe8, 0xe8, 0xe8);

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {error}")
}

/// Two panels side by side: throughput per CPU (two bars per server) and memory per idle
/// connection (log scale: axum's defaults hold 30 times what the others do).
pub fn summary(path: &Path, servers: &[ServerBars], many: usize, idle: usize) -> Result<()> {
    let root = SVGBackend::new(path, (960, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(540);
    let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 {
            names.get(i as usize).copied().unwrap_or("").to_owned()
        } else {
            String::new()
        }
    };
    let n = servers.len() as f64;

    let top = servers.iter().map(|s| s.echo_64.max(s.echo_many)).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption("messages per server CPU-second (higher is better)", ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(servers.len())
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()
        .map_err(plot_error)?;
    let series = [
        (-0.4, BLUE, "echo, 64 connections".to_owned(), false),
        (0.02, ORANGE, format!("echo, {many} connections"), true),
    ];
    for (offset, color, caption, is_many) in series {
        chart
            .draw_series(servers.iter().enumerate().map(|(i, s)| {
                let x = i as f64 + offset;
                let value = if is_many { s.echo_many } else { s.echo_64 };
                Rectangle::new([(x, 0.0), (x + 0.38, value)], color.filled())
            }))
            .map_err(plot_error)?
            .label(caption)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;

    let highest = servers.iter().map(|s| s.rss_per_connection).fold(1000.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption(format!("RSS per idle connection, {idle} open (bytes, log)"), ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n - 0.5, (1000.0..highest).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(servers.len())
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(servers.iter().enumerate().map(|(i, s)| {
            let x = i as f64;
            Rectangle::new([(x - 0.3, 1000.0), (x + 0.3, s.rss_per_connection)], GREEN.filled())
        }))
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// The soak's server RSS over time, the churn's window shaded.
pub fn soak(path: &Path, samples: &[(f64, f64)], churn: (f64, f64), held: usize) -> Result<()> {
    let root = SVGBackend::new(path, (960, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let end = samples.last().map_or(1.0, |s| s.0).max(1.0);
    let top = samples.iter().map(|s| s.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("soak: server RSS (MB), {held} connections held; churn shaded"),
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(churn.0, 0.0), (churn.1, top)],
            SHADE.filled(),
        )))
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(samples.iter().copied(), BLUE.stroke_width(2)))
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}
