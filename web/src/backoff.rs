//! When to reconnect: exponential backoff with full jitter, from a small seeded generator so
//! the schedule is reproducible in tests.
//!
//! Full jitter (a uniformly random delay between zero and the current window) spreads the
//! reconnects of many pages after a server restart instead of bringing them back in waves.

/// The first window: the first retry comes within about a second.
pub const BASE_MS: f64 = 1_000.0;
/// The largest window.
pub const CAP_MS: f64 = 15_000.0;
/// A connection that stayed up this long resets the schedule to the first window.
pub const STABLE_MS: f64 = 10_000.0;

/// The window for the `attempt`-th retry in a row (0 for the first): `BASE_MS · 2^attempt`,
/// at most `CAP_MS`.
pub fn window_ms(attempt: u32) -> f64 {
    (BASE_MS * f64::from(1u32 << attempt.min(16))).min(CAP_MS)
}

/// xorshift64*: a few lines, enough to spread reconnects (not for anything secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator from any seed (zero is replaced, as xorshift would stay at zero).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// A number in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // The top 53 bits as a fraction.
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The delay before the `attempt`-th retry in a row: uniform in `[0, window_ms(attempt))`.
    pub fn delay_ms(&mut self, attempt: u32) -> f64 {
        self.next_unit() * window_ms(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn windows_double_from_a_second_up_to_the_cap() {
        let windows: Vec<f64> = (0..7).map(window_ms).collect();
        assert_eq!(windows, [1e3, 2e3, 4e3, 8e3, 15e3, 15e3, 15e3]);
        assert_eq!(window_ms(u32::MAX), CAP_MS);
    }

    #[test]
    fn delays_stay_inside_their_window_and_spread_over_it() {
        let mut rng = Rng::new(42);
        for attempt in 0..8 {
            let delays: Vec<f64> = (0..200).map(|_| rng.delay_ms(attempt)).collect();
            let window = window_ms(attempt);
            assert!(delays.iter().all(|d| (0.0..window).contains(d)), "{attempt}");
            // Full jitter: both halves of the window are used.
            assert!(delays.iter().any(|d| *d < window / 4.0));
            assert!(delays.iter().any(|d| *d > window * 3.0 / 4.0));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let schedule = |seed| {
            let mut rng = Rng::new(seed);
            (0..6).map(|attempt| rng.delay_ms(attempt) as u32).collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        assert_eq!(Rng::new(0).next_unit(), Rng::new(0).next_unit());
    }
}
