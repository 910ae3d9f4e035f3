//! The HTTP service: `GET /health`, with graceful shutdown.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Config;
use crate::db;

/// Body of a successful `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    database: String,
    migration: Option<i64>,
}

/// Body of a failed `GET /health` (sent with 503).
#[derive(Debug, Serialize)]
struct HealthError {
    status: &'static str,
    error: String,
}

/// Builds the router.
pub fn router(pool: PgPool) -> Router {
    Router::new().route("/health", get(health)).with_state(pool)
}

/// `GET /health`: the database name and the latest applied migration, or 503.
async fn health(State(pool): State<PgPool>) -> Response {
    let result = async {
        let database = db::current_database(&pool).await?;
        let migration = db::latest_migration(&pool).await?;
        Ok::<_, sqlx::Error>(Health { status: "ok", database, migration })
    }
    .await;
    match result {
        Ok(health) => Json(health).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, Json(HealthError { status: "error", error: err.to_string() }))
            .into_response(),
    }
}

/// Connects to the database and serves HTTP on 127.0.0.1:`config.port` until
/// Ctrl-C or SIGTERM.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url()?;
    let pool = db::connect_pool(&url).await?;
    let database = db::current_database(&pool).await.context("querying current_database()")?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    eprintln!("listening on http://{local} (database {database})");
    if let Some(public) = config.public_url() {
        eprintln!("public URL: {public}");
    }

    axum::serve(listener, router(pool.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    pool.close().await;
    eprintln!("shut down");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("warning: cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                eprintln!("warning: cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    eprintln!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_bodies_have_the_documented_shape() {
        let ok = Health { status: "ok", database: "app_main".to_owned(), migration: Some(10) };
        assert_eq!(serde_json::to_value(ok).unwrap(), json!({"status": "ok", "database": "app_main", "migration": 10}));
        let fresh = Health { status: "ok", database: "app_new".to_owned(), migration: None };
        assert_eq!(
            serde_json::to_value(fresh).unwrap(),
            json!({"status": "ok", "database": "app_new", "migration": null})
        );
        let err = HealthError { status: "error", error: "connection refused".to_owned() };
        assert_eq!(serde_json::to_value(err).unwrap(), json!({"status": "error", "error": "connection refused"}));
    }
}
