//! A dashboard's Prometheus annotations as events: each series of an
//! annotation query becomes one event per run of consecutive samples (a
//! gap longer than 1.5 query steps starts a new one), as Grafana draws
//! them. Events are markers on the time series and rows of a table.

use futures_util::future::try_join_all;

use super::chart;
use super::dashboard::{legend, Annotation};
use super::panel::Window;
use super::variables::Template;
use crate::prometheus_api::{Client, Series};

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub annotation: String,
    pub color: String,
    pub title: String,
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// Every event of `annotations` in the window, queried concurrently,
/// sorted by start. A query Prometheus rejects fails the report: an
/// annotation that silently shows nothing would look like "nothing
/// happened".
pub async fn events(
    client: &Client,
    template: &Template,
    window: Window,
    annotations: &[Annotation],
) -> anyhow::Result<Vec<Event>> {
    let queries = annotations.iter().map(|a| async move {
        let expr = template.expand(&a.expr);
        // Steps counted back from the end, so that what holds at the end of
        // the window (an alert firing now) is always evaluated.
        let start = window.end - ((window.end - window.start) / a.step).floor() * a.step;
        let series = client
            .query_range(&expr, start, window.end, a.step)
            .await
            .map_err(|e| anyhow::anyhow!("annotation {:?}: {e}", a.name))?;
        Ok::<_, anyhow::Error>(of_series(a, &expr, &series))
    });
    let mut all: Vec<Event> = try_join_all(queries).await?.into_iter().flatten().collect();
    all.sort_by(|a, b| a.start.total_cmp(&b.start));
    Ok(all)
}

fn of_series(a: &Annotation, expr: &str, series: &[Series]) -> Vec<Event> {
    let mut out = Vec::new();
    for s in series {
        let title = legend(Some(&a.title_format), &s.labels, expr);
        let text = if a.text_format.is_empty() {
            String::new()
        } else {
            legend(Some(&a.text_format), &s.labels, expr)
        };
        let mut run: Option<(f64, f64)> = None;
        for &(t, v) in &s.points {
            if !v.is_finite() {
                continue;
            }
            run = match run {
                Some((start, end)) if t - end <= a.step * 1.5 => Some((start, t)),
                Some((start, end)) => {
                    out.push(event(a, &title, &text, start, end));
                    Some((t, t))
                }
                None => Some((t, t)),
            };
        }
        if let Some((start, end)) = run {
            out.push(event(a, &title, &text, start, end));
        }
    }
    out
}

fn event(a: &Annotation, title: &str, text: &str, start: f64, end: f64) -> Event {
    Event {
        annotation: a.name.clone(),
        color: a.color.clone(),
        title: title.to_owned(),
        text: text.to_owned(),
        start,
        end,
    }
}

/// The events as chart markers.
pub fn markers(events: &[Event]) -> Vec<chart::Marker> {
    events
        .iter()
        .map(|e| chart::Marker {
            start: e.start,
            end: e.end,
            color: chart::color(&e.color).unwrap_or(chart::palette(3)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus_api::Labels;

    #[test]
    fn runs_of_samples_become_events_titled_by_labels() {
        let a = Annotation {
            name: "Model reloaded".into(),
            color: "green".into(),
            expr: "x".into(),
            step: 10.0,
            title_format: "Reloaded on {{instance}}".into(),
            text_format: String::new(),
        };
        let labels: Labels = [("instance".to_owned(), "a:1".to_owned())].into();
        let s = Series {
            labels,
            points: vec![(0.0, 1.0), (10.0, 1.0), (50.0, 1.0), (60.0, f64::NAN)],
        };
        let got = of_series(&a, "x", &[s]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].start, got[0].end), (0.0, 10.0));
        assert_eq!((got[1].start, got[1].end), (50.0, 50.0));
        assert_eq!(got[0].title, "Reloaded on a:1");
        assert_eq!(markers(&got).len(), 2);
    }
}
