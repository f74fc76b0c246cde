//! The one client of the Prometheus HTTP API in mlwatch (the report, the
//! demo and the tests use it): range queries, instant queries and the
//! current alerts.
//!
//! Every error names the Prometheus URL. A connection that fails is
//! [`Error::Unreachable`] (the report cannot go on); a query Prometheus
//! rejects is [`Error::Api`] with Prometheus' own `errorType` and message (the
//! report shows it on the panel and goes on).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Label name → value of one series.
pub type Labels = BTreeMap<String, String>;

/// One series of a range query: (unix seconds, value) points, NaN kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(f64, f64)>,
}

/// One sample of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub time: f64,
    pub value: f64,
}

/// An entry of `/api/v1/alerts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    /// `firing` or `pending`.
    pub state: String,
    /// RFC 3339, when the alert became pending.
    pub active_at: Option<String>,
    pub value: String,
}

impl Alert {
    pub fn name(&self) -> String {
        self.labels.get("alertname").cloned().unwrap_or_default()
    }

    /// `k=v, ...` of every label but the alert's name.
    pub fn other_labels(&self) -> String {
        self.labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn annotation(&self, name: &str) -> String {
        self.annotations.get(name).cloned().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url} is not an http:// or https:// URL")]
    BadUrl { url: String },
    #[error(
        "cannot reach Prometheus at {url} (is it running? pass its address with --prometheus)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prometheus at {url} rejected {query:?}: {error_type}: {message}")]
    Api {
        url: String,
        query: String,
        error_type: String,
        message: String,
    },
    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer with the Prometheus API's JSON: {detail}")]
    Malformed { url: String, detail: String },
}

impl Error {
    /// True when Prometheus answered but refused this one query.
    pub fn is_query_error(&self) -> bool {
        matches!(self, Error::Api { .. })
    }
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BadUrl { url: base });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| Error::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(Self { base, http })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// `/api/v1/query_range` from `start` to `end` (unix seconds) every `step` seconds.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, Error> {
        let form = [
            ("query", expr.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{step:.3}")),
        ];
        let data = self.post("/api/v1/query_range", expr, &form).await?;
        parse_matrix(&data).map_err(|detail| self.malformed("/api/v1/query_range", detail))
    }

    /// `/api/v1/query` at `time` (unix seconds).
    pub async fn query(&self, expr: &str, time: f64) -> Result<Vec<Sample>, Error> {
        let form = [("query", expr.to_owned()), ("time", format!("{time:.3}"))];
        let data = self.post("/api/v1/query", expr, &form).await?;
        parse_vector(&data).map_err(|detail| self.malformed("/api/v1/query", detail))
    }

    /// `/api/v1/alerts`: alerts pending or firing now.
    pub async fn alerts(&self) -> Result<Vec<Alert>, Error> {
        let url = format!("{}/api/v1/alerts", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        let data = self.data(&url, "alerts", response).await?;
        parse_alerts(&data).map_err(|detail| self.malformed("/api/v1/alerts", detail))
    }

    async fn post(&self, path: &str, expr: &str, form: &[(&str, String)]) -> Result<Value, Error> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        self.data(&url, expr, response).await
    }

    /// The `data` of a success envelope, or the error Prometheus gave.
    async fn data(
        &self,
        url: &str,
        query: &str,
        response: reqwest::Response,
    ) -> Result<Value, Error> {
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| self.unreachable(source))?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        match json {
            Some(envelope) if envelope["status"] == "success" => Ok(envelope["data"].clone()),
            Some(envelope) if envelope["status"] == "error" => Err(Error::Api {
                url: self.base.clone(),
                query: query.to_owned(),
                error_type: envelope["errorType"].as_str().unwrap_or("error").to_owned(),
                message: envelope["error"].as_str().unwrap_or("").to_owned(),
            }),
            _ if !status.is_success() => Err(Error::Http {
                url: url.to_owned(),
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            }),
            _ => Err(self.malformed(url, "no status field".into())),
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> Error {
        Error::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    fn malformed(&self, path: &str, detail: String) -> Error {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        Error::Malformed { url, detail }
    }
}

fn labels(metric: &Value) -> Labels {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `[1700000000.5, "1.25"]` → (time, value); Prometheus writes `NaN`, `+Inf`.
fn point(pair: &Value) -> Result<(f64, f64), String> {
    let time = pair[0]
        .as_f64()
        .ok_or_else(|| format!("sample time is not a number: {pair}"))?;
    let text = pair[1]
        .as_str()
        .ok_or_else(|| format!("sample value is not a string: {pair}"))?;
    let value = text
        .parse::<f64>()
        .map_err(|_| format!("sample value {text:?} is not a number"))?;
    Ok((time, value))
}

pub(crate) fn parse_matrix(data: &Value) -> Result<Vec<Series>, String> {
    let result = data["result"]
        .as_array()
        .ok_or("data.result is not a list")?;
    result
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .map(|v| v.iter().map(point).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            Ok(Series {
                labels: labels(&s["metric"]),
                points,
            })
        })
        .collect()
}

pub(crate) fn parse_vector(data: &Value) -> Result<Vec<Sample>, String> {
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => {
            let (time, value) = point(&data["result"])?;
            Ok(vec![Sample {
                labels: Labels::new(),
                time,
                value,
            }])
        }
        _ => data["result"]
            .as_array()
            .ok_or("data.result is not a list")?
            .iter()
            .map(|s| {
                let (time, value) = point(&s["value"])?;
                Ok(Sample {
                    labels: labels(&s["metric"]),
                    time,
                    value,
                })
            })
            .collect(),
    }
}

pub(crate) fn parse_alerts(data: &Value) -> Result<Vec<Alert>, String> {
    Ok(data["alerts"]
        .as_array()
        .ok_or("data.alerts is not a list")?
        .iter()
        .map(|a| Alert {
            labels: labels(&a["labels"]),
            annotations: labels(&a["annotations"]),
            state: a["state"].as_str().unwrap_or_default().to_owned(),
            active_at: a["activeAt"].as_str().map(str::to_owned),
            value: a["value"].as_str().unwrap_or_default().to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matrix_values_parse_including_nan_and_inf() {
        let data = json!({"resultType": "matrix", "result": [
            {"metric": {"__name__": "up", "job": "ml-api"},
             "values": [[1700000000, "1"], [1700000015.5, "NaN"], [1700000030, "+Inf"]]}]});
        let series = parse_matrix(&data).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels["job"], "ml-api");
        assert_eq!(series[0].points[0], (1_700_000_000.0, 1.0));
        assert!(series[0].points[1].1.is_nan());
        assert_eq!(series[0].points[2].1, f64::INFINITY);
    }

    #[test]
    fn vector_and_scalar_results_parse() {
        let vector = json!({"resultType": "vector", "result": [
            {"metric": {"model_version": "v1"}, "value": [1700000000, "0.5"]}]});
        assert_eq!(parse_vector(&vector).unwrap()[0].value, 0.5);
        let scalar = json!({"resultType": "scalar", "result": [1700000000, "2"]});
        assert_eq!(parse_vector(&scalar).unwrap()[0].value, 2.0);
        let broken = json!({"resultType": "vector", "result": [{"value": [1, "x"]}]});
        assert!(parse_vector(&broken).is_err());
    }

    #[test]
    fn unreachable_prometheus_names_the_url() {
        let client = Client::new("http://127.0.0.1:1/").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime.block_on(client.query("up", 0.0)).unwrap_err();
        assert!(!err.is_query_error());
        assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
        assert!(Client::new("localhost:9090").is_err());
    }
}
