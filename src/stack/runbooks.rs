//! docs/runbooks.md as one HTML page, served by the launcher's HTTP server
//! at [`PATH`], so that every alert's `runbook_url` and every dashboard
//! runbook link works out of the box. `mlwatch runbooks` serves the same page
//! on its own (the NixOS module's `mlwatch-runbooks.service`), or prints it.
//!
//! Each heading gets the anchor GitHub would give it (lowercased, spaces to
//! `-`, punctuation dropped), so `## HighErrorRate` is `#higherrorrate`, the
//! anchor the alerts and dashboards use, on GitHub and here alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag, TagEnd};

/// Where the launcher serves the page.
pub const PATH: &str = "/runbooks";

/// GitHub's heading anchor of `text`.
pub fn anchor(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The markdown rendered into a standalone HTML page, headings anchored.
pub fn render(markdown: &str) -> String {
    let mut events: Vec<Event> = Parser::new_ext(markdown, Options::ENABLE_TABLES).collect();
    let mut i = 0;
    while i < events.len() {
        if let Event::Start(Tag::Heading { .. }) = &events[i] {
            let mut text = String::new();
            let mut j = i + 1;
            while j < events.len() && !matches!(events[j], Event::End(TagEnd::Heading(_))) {
                if let Event::Text(t) | Event::Code(t) = &events[j] {
                    text.push_str(t);
                }
                j += 1;
            }
            if let Event::Start(Tag::Heading { id, .. }) = &mut events[i] {
                *id = Some(CowStr::from(anchor(&text)));
            }
            i = j;
        }
        i += 1;
    }
    let mut body = String::new();
    html::push_html(&mut body, events.into_iter());
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>mlwatch runbooks</title>\
         <style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;padding:0 1em;line-height:1.5}}\
         code,pre{{background:#f4f4f4}}pre{{padding:.5em;overflow-x:auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em}}\
         :target{{background:#fff3b0}}</style></head>\n<body>\n{body}</body></html>\n"
    )
}

/// The rendered page of `docs/runbooks.md` under `assets_root`.
pub fn load(assets_root: &Path) -> anyhow::Result<String> {
    let path = assets_root.join("docs/runbooks.md");
    let markdown = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the runbooks at {}", path.display()))?;
    Ok(render(&markdown))
}

/// `mlwatch runbooks`: the rendered runbooks, printed or served.
#[derive(Debug, Clone, clap::Args)]
pub struct RunbooksArgs {
    /// Directory holding docs/runbooks.md (default: this repository, or the installed share/mlwatch).
    #[arg(long, env = "MLWATCH_ASSETS")]
    pub assets: Option<PathBuf>,
    /// Serve the page at GET /runbooks on this address until stopped; without it, print the HTML.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// GET handler for [`PATH`]: the page, rendered once.
pub fn endpoint(page: String) -> poem::RouteMethod {
    let page = Arc::new(page);
    poem::get(poem::endpoint::make_sync(move |_| {
        poem::web::Html(page.as_str().to_owned())
    }))
}

pub async fn run(args: RunbooksArgs, shutdown: crate::shutdown::Shutdown) -> anyhow::Result<()> {
    let assets = super::assets::Assets::discover(args.assets.as_deref())?;
    let page = load(&assets.root)?;
    let Some(address) = args.listen else {
        print!("{page}");
        return Ok(());
    };
    let (acceptor, local) = crate::listen::bind(address).await?;
    tracing::info!(address = %local, path = PATH, "serving the runbooks");
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            poem::Route::new().at(PATH, endpoint(page)),
            shutdown.requested_owned(),
            Some(std::time::Duration::from_secs(5)),
        )
        .await
        .with_context(|| format!("cannot serve the runbooks on {local}"))
}

/// `url` if it is an absolute http(s) URL: Grafana prefixes its own base
/// to anything else, which is how the links broke before.
pub fn check_url(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.contains('#')
    {
        anyhow::bail!(
            "--runbook-url {url:?} must be an absolute http:// or https:// URL without a #fragment"
        );
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_get_github_anchors() {
        assert_eq!(anchor("HighErrorRate"), "higherrorrate");
        assert_eq!(anchor("What to check first?"), "what-to-check-first");
        let page = render("# Runbooks\n\n## HighErrorRate\n\nText with `code`.\n");
        assert!(
            page.contains(r#"<h2 id="higherrorrate">HighErrorRate</h2>"#),
            "{page}"
        );
        assert!(page.contains("<code>code</code>"), "{page}");
    }

    #[test]
    fn every_alert_of_the_rules_has_its_anchor_in_the_repository_runbooks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let page = load(root).unwrap();
        let rules = std::fs::read_to_string(root.join("prometheus/rules/ml_alerts.yml")).unwrap();
        let alerts: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert:"))
            .map(str::trim)
            .collect();
        assert!(alerts.len() >= 13, "{alerts:?}");
        for alert in alerts {
            let id = format!("id=\"{}\"", alert.to_lowercase());
            assert!(page.contains(&id), "no {id} for {alert}");
        }
    }

    #[test]
    fn runbook_urls_must_be_absolute() {
        assert_eq!(
            check_url("http://h:1/runbooks/").unwrap(),
            "http://h:1/runbooks"
        );
        assert!(check_url("docs/runbooks.md").is_err());
        assert!(check_url("/runbooks").is_err());
        assert!(check_url("http://h/r#x").is_err());
    }
}
