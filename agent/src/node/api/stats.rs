//! `/stats/summary`, `/metrics/resource`, `/metrics/cadvisor` and `/metrics` ([`crate::node::stats`]).

use http::{header, HeaderValue, Response, StatusCode};

use super::context::Api;
use super::reply::{self, Reply};
use crate::node::stats;

pub async fn summary(api: &Api) -> Reply {
    match stats::summary_json(&api.ctx).await {
        Ok(body) => {
            let mut r = Response::new(reply::full(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => reply::text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn prometheus(text: String) -> Reply {
    let mut r = Response::new(reply::full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(stats::PROMETHEUS_TEXT),
    );
    r
}

pub async fn resource(api: &Api) -> Reply {
    prometheus(stats::resource_metrics(&api.ctx).await)
}

pub async fn agent(api: &Api) -> Reply {
    prometheus(stats::agent_metrics(&api.ctx).await)
}

pub async fn cadvisor(api: &Api) -> Reply {
    prometheus(stats::cadvisor_metrics(&api.ctx).await)
}
