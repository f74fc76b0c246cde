//! Which alerts fired during the report's range, and when.
//!
//! Prometheus keeps a synthetic `ALERTS` series per alert and state while the
//! alert is pending or firing, and ends it with a stale marker when the alert
//! resolves. A range query over `ALERTS` therefore yields, per label set,
//! runs of consecutive points; each run is one [`Interval`] in which the
//! alert was in that state. Runs are exact to one query step.

use crate::prometheus_api::{Labels, Series};

/// The query the Alerts section and the alert-list panels read.
pub const ALERTS_QUERY: &str = r#"ALERTS{alertstate=~"firing|pending"}"#;

#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub alertname: String,
    /// `firing` or `pending`.
    pub state: String,
    /// The alert's labels without `__name__`, `alertname` and `alertstate`.
    pub labels: Labels,
    /// First and last point of the run (unix seconds).
    pub start: f64,
    pub end: f64,
    /// The run starts at the range's first point: it may have begun earlier.
    pub open_start: bool,
    /// The run reaches the range's last point: still in this state at the end.
    pub open_end: bool,
}

impl Interval {
    /// Label pairs other than the name, as `key=value` text (what the
    /// tests compare).
    #[cfg(test)]
    fn label_text(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Groups the points of every `ALERTS` series into intervals: a gap longer
/// than 1.5 steps ends one. Sorted by start, then name.
pub fn intervals(series: &[Series], step: f64, range_start: f64, range_end: f64) -> Vec<Interval> {
    let gap = step * 1.5;
    let mut out = Vec::new();
    for s in series {
        let mut labels = s.labels.clone();
        labels.remove("__name__");
        let alertname = labels.remove("alertname").unwrap_or_default();
        let state = labels.remove("alertstate").unwrap_or_default();
        let mut points = s
            .points
            .iter()
            .filter(|(_, v)| !v.is_nan())
            .map(|(t, _)| *t);
        let Some(first) = points.next() else {
            continue;
        };
        let (mut start, mut end) = (first, first);
        let close = |start: f64, end: f64| Interval {
            alertname: alertname.clone(),
            state: state.clone(),
            labels: labels.clone(),
            start,
            end,
            open_start: start - range_start < gap,
            open_end: range_end - end < gap,
        };
        for t in points {
            if t - end > gap {
                out.push(close(start, end));
                start = t;
            }
            end = t;
        }
        out.push(close(start, end));
    }
    out.sort_by(|a, b| {
        a.start
            .total_cmp(&b.start)
            .then_with(|| a.alertname.cmp(&b.alertname))
            .then_with(|| a.state.cmp(&b.state))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, state: &str, times: &[f64]) -> Series {
        let mut labels = Labels::new();
        labels.insert("__name__".into(), "ALERTS".into());
        labels.insert("alertname".into(), name.into());
        labels.insert("alertstate".into(), state.into());
        labels.insert("severity".into(), "warning".into());
        Series {
            labels,
            points: times.iter().map(|t| (*t, 1.0)).collect(),
        }
    }

    #[test]
    fn consecutive_points_form_one_interval_and_gaps_split() {
        let s = series("HighErrorRate", "firing", &[10.0, 11.0, 12.0, 20.0, 21.0]);
        let got = intervals(&[s], 1.0, 0.0, 100.0);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].start, got[0].end), (10.0, 12.0));
        assert_eq!((got[1].start, got[1].end), (20.0, 21.0));
        assert_eq!(got[0].alertname, "HighErrorRate");
        assert_eq!(got[0].state, "firing");
        assert_eq!(got[0].label_text(), "severity=warning");
        assert!(!got[0].open_start && !got[1].open_end);
    }

    #[test]
    fn runs_touching_the_range_edges_are_open() {
        let s = series("DataDrift", "firing", &[0.0, 5.0, 10.0]);
        let got = intervals(&[s], 5.0, 0.0, 10.0);
        assert_eq!(got.len(), 1);
        assert!(got[0].open_start && got[0].open_end);
    }

    #[test]
    fn intervals_are_sorted_by_start_across_series_and_states() {
        let a = series("B", "firing", &[30.0, 31.0]);
        let b = series("A", "pending", &[5.0, 6.0]);
        let c = series("A", "firing", &[7.0]);
        let got = intervals(&[a, b, c], 1.0, 0.0, 100.0);
        let order: Vec<(&str, &str, f64)> = got
            .iter()
            .map(|i| (i.alertname.as_str(), i.state.as_str(), i.start))
            .collect();
        assert_eq!(
            order,
            vec![
                ("A", "pending", 5.0),
                ("A", "firing", 7.0),
                ("B", "firing", 30.0)
            ]
        );
    }

    #[test]
    fn nan_points_and_empty_series_are_ignored() {
        let mut s = series("X", "firing", &[1.0, 2.0]);
        s.points.push((3.0, f64::NAN));
        let empty = series("Y", "firing", &[]);
        let got = intervals(&[s, empty], 1.0, 0.0, 100.0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].end, 2.0);
    }
}
