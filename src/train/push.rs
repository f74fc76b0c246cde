//! Pushing the final metrics to a Prometheus Pushgateway. Training jobs are
//! ephemeral: a push keeps their last values after the process is gone.
//!
//! One HTTP/1.1 PUT over a plain TCP stream; the Pushgateway is an internal
//! service reached over http, so no TLS client is pulled in for it.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// PUTs `body` (text exposition) to `<base>/metrics/job/<job>`.
pub async fn push(base: &str, job: &str, body: &str) -> anyhow::Result<()> {
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("--pushgateway must be an http:// URL, got {base:?}");
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("--pushgateway URL {base:?} has no host");
    }
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = format!("{prefix}/metrics/job/{job}");
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .context("pushgateway did not answer within 10 s")??;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        bail!(
            "pushgateway answered {:?}",
            text.lines().next().unwrap_or("")
        );
    }
    Ok(())
}
