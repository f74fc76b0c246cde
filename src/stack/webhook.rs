//! The launcher's own HTTP server: Alertmanager's webhook receiver
//! (`POST /alerts`) and, for `mlwatch up`, the rendered runbooks
//! (`GET /runbooks`). The end-to-end tests run this same receiver, so what
//! a test counts is what `mlwatch up` and the demo receive.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use poem::listener::TcpAcceptor;
use poem::{handler, post, web::Data, web::Json, EndpointExt, Route};
use serde_json::Value;

use super::runbooks;

/// Where Alertmanager posts its notifications.
pub const PATH: &str = "/alerts";

/// The largest notification accepted (Alertmanager's are a few KiB per
/// alert).
const BODY_LIMIT: usize = 1024 * 1024;

/// How many bytes of notifications the inbox keeps: Alertmanager re-sends
/// every firing alert each repeat interval, so a stack left up for days
/// would otherwise grow without end. The newest notification is always
/// kept (it is at most [`BODY_LIMIT`]).
const INBOX_BYTES: usize = 4 * 1024 * 1024;

/// The most recent notifications (whole POST bodies), oldest first.
#[derive(Clone, Default)]
pub struct AlertInbox(Arc<Mutex<Inbox>>);

#[derive(Default)]
struct Inbox {
    notifications: VecDeque<(Value, usize)>,
    bytes: usize,
}

impl AlertInbox {
    /// Every notification kept, oldest first.
    pub fn notifications(&self) -> Vec<Value> {
        self.lock()
            .notifications
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The alerts of every notification kept, in the order received.
    pub fn alerts(&self) -> Vec<Value> {
        self.lock()
            .notifications
            .iter()
            .flat_map(|(n, _)| n["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn push(&self, notification: Value, size: usize) {
        let mut inbox = self.lock();
        inbox.notifications.push_back((notification, size));
        inbox.bytes += size;
        while inbox.bytes > INBOX_BYTES && inbox.notifications.len() > 1 {
            if let Some((_, dropped)) = inbox.notifications.pop_front() {
                inbox.bytes -= dropped;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Binds `address` and serves the receiver (and the runbooks page, when
/// given) on the current runtime until the task is aborted. Returns the
/// bound address (`:0` resolved).
pub async fn start(
    address: SocketAddr,
    inbox: AlertInbox,
    runbook_page: Option<String>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (acceptor, local) = crate::listen::bind(address).await?;
    Ok((local, tokio::spawn(serve(acceptor, inbox, runbook_page))))
}

async fn serve(acceptor: TcpAcceptor, inbox: AlertInbox, runbook_page: Option<String>) {
    #[handler]
    fn receive(body: Json<Value>, Data(inbox): Data<&AlertInbox>) -> &'static str {
        let Json(notification) = body;
        for alert in notification["alerts"].as_array().into_iter().flatten() {
            let name = alert["labels"]["alertname"].as_str().unwrap_or("?");
            let status = alert["status"].as_str().unwrap_or("?");
            let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
            let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
            println!("ALERT {status:>8} {name}: {summary} (runbook: {runbook})");
        }
        let size = notification.to_string().len();
        inbox.push(notification, size);
        "ok"
    }
    // The body limit guards the webhook only: SizeLimit answers 411 to a
    // request without Content-Length, which is every GET.
    let mut app = Route::new().at(
        PATH,
        post(receive).with(poem::middleware::SizeLimit::new(BODY_LIMIT)),
    );
    if let Some(page) = runbook_page {
        app = app.at(runbooks::PATH, runbooks::endpoint(page));
    }
    if let Err(e) = poem::Server::new_with_acceptor(acceptor)
        .run(app.data(inbox))
        .await
    {
        tracing::error!("alert webhook stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_keeps_the_newest_notifications_within_its_bytes() {
        let inbox = AlertInbox::default();
        let big = "x".repeat(BODY_LIMIT / 2);
        for n in 0..20 {
            let notification = serde_json::json!({ "n": n, "alerts": [{"pad": big}] });
            let size = notification.to_string().len();
            inbox.push(notification, size);
        }
        let kept = inbox.notifications();
        let bytes: usize = kept.iter().map(|n| n.to_string().len()).sum();
        assert!(bytes <= INBOX_BYTES, "{bytes} bytes kept");
        assert!(kept.len() >= 7, "only {} kept", kept.len());
        assert_eq!(kept.last().unwrap()["n"], 19, "the newest is kept");
        let first = kept[0]["n"].as_i64().unwrap();
        let order: Vec<i64> = kept.iter().map(|n| n["n"].as_i64().unwrap()).collect();
        assert_eq!(
            order,
            (first..20).collect::<Vec<_>>(),
            "oldest dropped first"
        );
        assert_eq!(inbox.alerts().len(), kept.len());
    }

    #[test]
    fn one_notification_larger_than_the_inbox_is_still_kept() {
        let inbox = AlertInbox::default();
        inbox.push(serde_json::json!({"alerts": []}), INBOX_BYTES * 2);
        assert_eq!(inbox.notifications().len(), 1);
    }
}
