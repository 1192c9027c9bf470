//! The client of the Kubernetes streaming protocols (`skiff_test_support::stream`), speaking with
//! skiffd's SPDY header dictionary.

pub use skiff_agent::stream::spdy::headers::DICTIONARY;
pub use skiff_test_support::stream::*;

/// A SPDY/3.1 session on the streaming URL `url`, the upgrade checked.
pub async fn spdy_session(url: &str) -> Spdy {
    skiff_test_support::stream::spdy_session(url, &DICTIONARY).await
}
