//! Grafana template variables, expanded the way Grafana would before a
//! query reaches Prometheus.
//!
//! Dashboard variables (`$instance`, `${model_version}`) become the regex
//! chosen with `--var name=value`, or the variable's "All" value (`.*`).
//! Grafana's built-in interval variables follow its documented rules:
//! `$__interval` is the query step, `$__rate_interval` is
//! `max($__interval + scrape interval, 4 × scrape interval)` with the scrape
//! interval taken from the datasource's `timeInterval`, and `$__range` is the
//! report's time range.

use std::collections::BTreeMap;
use std::time::Duration;

/// The value every built-in and dashboard variable expands to.
#[derive(Debug, Clone)]
pub struct Template {
    values: BTreeMap<String, String>,
}

/// What the built-in variables are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub step: Duration,
    pub range: Duration,
    /// The datasource's scrape interval (Grafana's `timeInterval`).
    pub scrape: Duration,
}

/// Grafana's `$__rate_interval`.
fn rate_interval(step: Duration, scrape: Duration) -> Duration {
    (step + scrape).max(scrape * 4)
}

/// A duration as PromQL writes it: whole seconds as `15s`, else `7500ms`.
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl Template {
    /// `variables` are the dashboard's (name, "All" value); `chosen` are the
    /// `--var` values, where `All` or `$__all` select the "All" value.
    pub fn new(
        variables: &[(String, Option<String>)],
        chosen: &BTreeMap<String, String>,
        timing: Timing,
    ) -> Self {
        let mut values = BTreeMap::new();
        let rate = rate_interval(timing.step, timing.scrape);
        for (name, value) in [
            ("__interval", promql_duration(timing.step)),
            ("__interval_ms", timing.step.as_millis().to_string()),
            ("__rate_interval", promql_duration(rate)),
            ("__rate_interval_ms", rate.as_millis().to_string()),
            ("__range", promql_duration(timing.range)),
            ("__range_s", timing.range.as_secs().to_string()),
            ("__range_ms", timing.range.as_millis().to_string()),
        ] {
            values.insert(name.to_owned(), value);
        }
        for (name, all_value) in variables {
            let all = all_value.clone().unwrap_or_else(|| ".*".to_owned());
            let value = match chosen.get(name).map(String::as_str) {
                None | Some("All") | Some("$__all") => all,
                Some(v) => v.to_owned(),
            };
            values.insert(name.clone(), value);
        }
        Self { values }
    }

    /// `expr` with `$name`, `${name}` and `${name:format}` replaced; unknown
    /// names are left as written (Prometheus will then name the problem).
    pub fn expand(&self, expr: &str) -> String {
        let mut out = String::with_capacity(expr.len());
        let mut rest = expr;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(braced) = after.strip_prefix('{') {
                if let Some(close) = braced.find('}') {
                    let inner = &braced[..close];
                    let name = inner.split(':').next().unwrap_or(inner);
                    if let Some(value) = self.values.get(name) {
                        out.push_str(value);
                        rest = &braced[close + 1..];
                        continue;
                    }
                }
                out.push('$');
                rest = after;
                continue;
            }
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            match self.values.get(&after[..len]) {
                Some(value) if len > 0 => {
                    out.push_str(value);
                    rest = &after[len..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(chosen: &[(&str, &str)], step_ms: u64) -> Template {
        let chosen = chosen
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Template::new(
            &[
                ("instance".into(), Some(".*".into())),
                ("model_version".into(), None),
            ],
            &chosen,
            Timing {
                step: Duration::from_millis(step_ms),
                range: Duration::from_secs(1800),
                scrape: Duration::from_secs(5),
            },
        )
    }

    #[test]
    fn all_selects_the_all_value() {
        let t = template(&[], 7500);
        assert_eq!(
            t.expand(r#"model_info{instance=~"$instance", model_version=~"${model_version}"}"#),
            r#"model_info{instance=~".*", model_version=~".*"}"#
        );
        let t = template(&[("instance", "All")], 7500);
        assert_eq!(t.expand("$instance"), ".*");
    }

    #[test]
    fn chosen_values_replace_variables_by_whole_name() {
        let t = template(&[("instance", "127.0.0.1:9000")], 7500);
        assert_eq!(
            t.expand(r#"up{instance=~"$instance"} $instance_x ${instance:regex}"#),
            r#"up{instance=~"127.0.0.1:9000"} $instance_x 127.0.0.1:9000"#
        );
    }

    #[test]
    fn rate_interval_follows_grafana() {
        // max(7.5 s + 5 s, 4 × 5 s) = 20 s.
        let t = template(&[], 7500);
        assert_eq!(
            t.expand("rate(x[$__rate_interval]) [$__interval] [$__range]"),
            "rate(x[20s]) [7500ms] [1800s]"
        );
        // A long step wins over the scrape floor: max(60 s + 5 s, 20 s).
        let t = template(&[], 60_000);
        assert_eq!(t.expand("$__rate_interval"), "65s");
        assert_eq!(t.expand("$__interval_ms"), "60000");
    }

    #[test]
    fn lone_and_unknown_dollars_are_kept() {
        let t = template(&[], 1000);
        assert_eq!(
            t.expand("a $ b $unknown ${nope} $"),
            "a $ b $unknown ${nope} $"
        );
    }
}
