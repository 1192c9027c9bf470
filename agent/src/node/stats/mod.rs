//! Resource usage as the kubelet API serves it: `/stats/summary` (kubelet's `stats/v1alpha1`
//! Summary), `/metrics/resource` (what metrics-server scrapes), `/metrics/cadvisor` and `/metrics`
//! (skiffd's own).
//! Pod and container figures are the CRI layer's (`ListPodSandboxStats`), not measured twice.

pub mod agent;
pub mod cadvisor;
pub mod host;
pub mod prom;
pub mod resource;
pub mod summary;
pub mod types;

use std::sync::Arc;

use crate::node::NodeContext;
pub use summary::StatsError;

/// The Summary as JSON.
pub async fn summary_json(ctx: &Arc<NodeContext>) -> Result<Vec<u8>, StatsError> {
    let s = summary::summary(ctx).await?;
    serde_json::to_vec(&s).map_err(|e| StatsError::Worker(e.to_string()))
}

/// `/metrics/resource`'s text; a failed measurement shows as `scrape_error 1`.
pub async fn resource_metrics(ctx: &Arc<NodeContext>) -> String {
    match summary::summary(ctx).await {
        Ok(s) => resource::render_resource(Some(&s)),
        Err(e) => {
            tracing::warn!(error = %e, "measure resource usage");
            resource::render_resource(None)
        }
    }
}

/// `/metrics/cadvisor`'s text.
pub async fn cadvisor_metrics(ctx: &Arc<NodeContext>) -> String {
    cadvisor::metrics(ctx).await
}

/// `/metrics`' text.
pub async fn agent_metrics(ctx: &Arc<NodeContext>) -> String {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || agent::render_agent(&ctx))
        .await
        .unwrap_or_default()
}

/// The content type Prometheus text is served with.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
