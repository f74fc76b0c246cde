//! Binding a TCP listener up front, so that "address in use" is a clear
//! start-up error and a `:0` port is resolved before anything is logged.

use std::net::SocketAddr;

use anyhow::Context;
use poem::listener::TcpAcceptor;

/// Binds `address` for a poem server.
pub async fn bind(address: SocketAddr) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let (listener, local) = bind_tcp(address).await?;
    let acceptor =
        TcpAcceptor::from_tokio(listener).with_context(|| format!("cannot accept on {address}"))?;
    Ok((acceptor, local))
}

/// Binds `address` as a plain tokio listener (the prediction service
/// drives hyper itself).
pub async fn bind_tcp(
    address: SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("no local address for {address}"))?;
    Ok((listener, local))
}
