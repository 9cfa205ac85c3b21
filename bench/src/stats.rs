//! Percentiles and the lost / duplicated arithmetic of a scenario.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::target::Arrival;

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summary(values: &mut [f64]) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({
        "p50": round(percentile(values, 50.0)),
        "p90": round(percentile(values, 90.0)),
        "p99": round(percentile(values, 99.0)),
        "max": round(values.last().copied().unwrap_or(f64::NAN)),
    })
}

pub fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// What the target saw of `expected` keys.
pub struct Delivery {
    pub executed: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Lateness of each key's first arrival, in ms.
    pub lateness_ms: Vec<f64>,
    /// Last first-arrival (ns since the epoch).
    pub last_arrival_ns: i64,
}

pub fn delivery(arrivals: &[Arrival], expected: usize) -> Delivery {
    let mut first: HashMap<u64, Arrival> = HashMap::with_capacity(arrivals.len());
    let mut duplicated = 0;
    for a in arrivals {
        match first.get(&a.key) {
            Some(f) if f.arrival_ns <= a.arrival_ns => duplicated += 1,
            Some(_) => {
                duplicated += 1;
                first.insert(a.key, *a);
            }
            None => {
                first.insert(a.key, *a);
            }
        }
    }
    let executed = first.len();
    Delivery {
        executed,
        lost: expected.saturating_sub(executed),
        duplicated,
        lateness_ms: first.values().map(Arrival::lateness_ms).collect(),
        last_arrival_ns: first.values().map(|a| a.arrival_ns).max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn duplicates_and_losses_are_counted_per_key() {
        let a = |key, ns| Arrival {
            key,
            scheduled_ms: 0,
            arrival_ns: ns,
        };
        let d = delivery(&[a(1, 5_000_000), a(2, 1_000_000), a(1, 3_000_000)], 3);
        assert_eq!((d.executed, d.lost, d.duplicated), (2, 1, 1));
        let mut late = d.lateness_ms.clone();
        late.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(late, vec![1.0, 3.0], "the first arrival of a key counts");
    }
}
