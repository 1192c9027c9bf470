//! What every request of the kubelet API is served with: the node, the pods bound to it, and the
//! access control in front of them.

use std::sync::Arc;

use tokio::sync::watch;

use super::authn::Authenticator;
use super::authz::Authorizer;
use crate::node::pods::watch::Snapshot;
use crate::node::NodeContext;

/// What requests are served with.
pub struct Api {
    pub ctx: Arc<NodeContext>,
    /// The pods bound to the node, as followed from the API.
    pub pods: watch::Receiver<Snapshot>,
    pub authn: Authenticator,
    pub authz: Authorizer,
}
