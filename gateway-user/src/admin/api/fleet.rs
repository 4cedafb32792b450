//! `GET /accounts/A/fleet/nodes`: every node of the fleet, the revision it
//! runs, how far behind the newest it is, and why it refused one if it did.

use serde_json::{Value, json};

use super::{ApiError, Reply};
use crate::control::ControlPlane;

/// The nodes' reports, by name.
pub(super) async fn nodes(plane: &ControlPlane) -> Result<Reply, ApiError> {
    let (mut nodes, head) = plane.fleet_nodes().await?;
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let views: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.node,
                "revision": n.revision,
                "lag": (head - n.revision).max(0),
                "leader": n.leader,
                "stale": n.stale,
                "error": n.error,
                "updated_on": n.updated_on,
            })
        })
        .collect();
    Ok(Reply {
        result_info: Some(json!({"head_revision": head, "count": views.len()})),
        result: Value::Array(views),
    })
}

/// What a fleet node adds to every answer.
#[derive(Default)]
pub(super) struct Marks {
    /// The revision installed when it answered (`X-Gateway-Revision`): after
    /// a change, the change's own or a later one (an earlier one only if the
    /// change was not installed here within the wait, which is logged).
    pub revision: Option<i64>,
    /// When it serves its last configuration read-only, why (a message, and
    /// `X-Gateway-Stale: true`).
    pub stale: Option<String>,
}

/// This node's marks (none outside fleet mode).
pub(super) fn marks(plane: &ControlPlane) -> Marks {
    let Some(fleet) = plane.fleet() else {
        return Marks::default();
    };
    let revision = fleet.progress.applied();
    Marks {
        revision: Some(revision),
        stale: fleet.progress.stale_for().map(|stale| {
            format!(
                "stale: etcd has not answered this node for {} s; it serves revision {revision} \
                 read-only",
                stale.as_secs()
            )
        }),
    }
}
