//! `spur serve`: the daemon on its listener (plain, or TLS with `[server.tls]`)
//! until a signal, then the shutdown in order.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::App;
use crate::config::Config;

/// Serves until `stop` is cancelled (or SIGINT/SIGTERM when `None`).
///
/// # Errors
/// When start-up fails or the listener cannot bind.
pub(crate) async fn serve(config: Config, stop: Option<CancellationToken>) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let tls = config.server.tls.clone();
    if tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "Serving plain HTTP beyond loopback: tokens, customer data and approval links cross the network unencrypted. Set [server.tls] cert and key, or put a TLS proxy in front."
        );
    }
    let app = App::start(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "Listening.");
    // Tests and scripts read this line to learn the bound port.
    println!("spur listening on {scheme}://{addr}");
    let stop = stop.unwrap_or_else(|| {
        let t = CancellationToken::new();
        let t2 = t.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            t2.cancel();
        });
        t
    });
    match tls {
        None => {
            axum::serve(listener, app.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await?;
        }
        Some(t) => {
            let listener = crate::tls::TlsListener::new(listener, t.cert, t.key)?;
            axum::serve(listener, app.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await?;
        }
    }
    tracing::info!("Shutting down.");
    app.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
