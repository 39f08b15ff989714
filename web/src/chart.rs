//! The round-trip chart's geometry, apart from the DOM: an SVG polyline of the last round-trip
//! times and a line at their median, in whole numbers (no float formatting in the bundle).

use crate::session::RTT_HISTORY;

/// The chart's `viewBox` size.
pub const WIDTH: u32 = 300;
pub const HEIGHT: u32 = 60;

/// What the page draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plot {
    /// The polyline's `points` attribute (`x,y x,y ...`), oldest on the left.
    pub points: String,
    /// The median's height in the `viewBox`, and its value in milliseconds.
    pub median: Option<(u32, u32)>,
    /// The value at the top of the chart, in milliseconds.
    pub top_ms: u32,
}

/// The median of `values` (the mean of the middle two for an even count, rounded down).
pub fn median(values: &[u32]) -> Option<u32> {
    // Insertion sort: a few dozen values, and far less code in the bundle than `sort`.
    let mut sorted: Vec<u32> = Vec::with_capacity(values.len());
    for &value in values {
        let at = sorted.iter().position(|&v| v > value).unwrap_or(sorted.len());
        sorted.insert(at, value);
    }
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some(
            sorted[mid - 1] / 2 + sorted[mid] / 2 + (sorted[mid - 1] % 2 + sorted[mid] % 2) / 2,
        ),
    }
}

/// Scales `rtts` into the chart: the largest value touches the top, zero the bottom.
pub fn plot(rtts: &[u32]) -> Plot {
    let top_ms = rtts.iter().copied().max().unwrap_or(0).max(1);
    let y = |ms: u32| HEIGHT - (u64::from(ms) * u64::from(HEIGHT) / u64::from(top_ms)) as u32;
    let step = WIDTH / (RTT_HISTORY as u32 - 1);
    let mut points = String::new();
    for (i, ms) in rtts.iter().enumerate() {
        if i > 0 {
            points.push(' ');
        }
        points.push_str(&(i as u32 * step).to_string());
        points.push(',');
        points.push_str(&y(*ms).to_string());
    }
    Plot { points, median: median(rtts).map(|m| (y(m), m)), top_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[3, 5]), Some(4));
        assert_eq!(median(&[u32::MAX, u32::MAX]), Some(u32::MAX));
    }

    #[test]
    fn the_largest_value_touches_the_top_and_the_median_is_drawn() {
        let plot = plot(&[10, 20, 5]);
        assert_eq!(plot.top_ms, 20);
        assert_eq!(plot.points, "0,30 10,0 20,45");
        assert_eq!(plot.median, Some((30, 10)));
    }

    #[test]
    fn no_data_draws_nothing() {
        assert_eq!(plot(&[]), Plot { points: String::new(), median: None, top_ms: 1 });
        assert_eq!(plot(&[0]).points, "0,60");
    }
}
