//! Pushing the final metrics to a Prometheus Pushgateway. Training jobs are
//! ephemeral: a push keeps their last values after the process is gone.
//!
//! A PUT replaces the job's whole group, so an empty push would wipe the
//! last good run's metrics: `mlwatch train` refuses `--no-metrics
//! --pushgateway`. The URL is parsed by reqwest's URL type, so IPv6 hosts,
//! `user:password@host` (sent as basic auth) and path prefixes all work.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Url;

/// How long one push may take before it is given up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The Pushgateway URL of `job`'s group below `base`
/// (`<base>/metrics/job/<job>`); `base` may carry a path prefix.
fn group_url(base: &str, job: &str) -> anyhow::Result<Url> {
    let mut url = Url::parse(base).with_context(|| format!("--pushgateway {base:?}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("--pushgateway must be an http:// URL, got {base:?}");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("--pushgateway URL {base:?} has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--pushgateway URL {base:?} must not have a query or fragment");
    }
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--pushgateway URL {base:?} cannot have a path"))?
        .pop_if_empty()
        .extend(["metrics", "job", job]);
    Ok(url)
}

/// PUTs `body` (text exposition) as `job`'s group.
pub async fn push(base: &str, job: &str, body: String) -> anyhow::Result<()> {
    let url = group_url(base, job)?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .put(url.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the pushgateway at {}", redacted(&url)))?;
    let status = response.status();
    if !status.is_success() {
        // The answer explains a 400 (a clashing metric); a bounded excerpt.
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(300).collect();
        bail!("pushgateway answered {status}: {}", excerpt.trim());
    }
    Ok(())
}

/// `url` without its password, for messages.
fn redacted(url: &Url) -> Url {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_urls_keep_hosts_ports_prefixes_and_credentials() {
        let url = |base| group_url(base, "model-training").unwrap().to_string();
        assert_eq!(
            url("http://gw:9091"),
            "http://gw:9091/metrics/job/model-training"
        );
        assert_eq!(
            url("http://[::1]/"),
            "http://[::1]/metrics/job/model-training"
        );
        assert_eq!(
            url("http://user:secret@gw:9091/prefix/"),
            "http://user:secret@gw:9091/prefix/metrics/job/model-training"
        );
        assert_eq!(
            url("http://gw/a/b"),
            "http://gw/a/b/metrics/job/model-training"
        );
    }

    #[test]
    fn unusable_urls_are_refused_with_the_flag_named() {
        for bad in ["gw:9091", "ftp://gw/", "http://gw/?x=1", "not a url"] {
            let error = group_url(bad, "j").unwrap_err();
            assert!(
                format!("{error:#}").contains("--pushgateway"),
                "{bad}: {error:#}"
            );
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let url = group_url("http://u:hunter2@gw/", "j").unwrap();
        assert!(!redacted(&url).to_string().contains("hunter2"));
    }
}
