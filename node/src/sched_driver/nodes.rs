//! Node commands in the scheduler task (`docs/services.md`, §5): `shoal node drain` and
//! `shoal node eligibility` are written like a job write (logged, committed, acknowledged once
//! durable on a peer), and this node's resource ad mirrors its own intent (`draining` when it
//! refuses new work), so peers that have not merged the intent yet filter it anyway.

use shoal_scheduler::{NodeChange, NodeStatus, Receipt};
use tokio::sync::oneshot;

use super::{Driver, Request, SchedError, SchedHandle};

impl SchedHandle {
    /// Writes a node command; resolves once it is durable (or with why not).
    pub async fn node_command(
        &self,
        name: String,
        change: NodeChange,
    ) -> Result<Receipt, SchedError> {
        self.ask(|tx| Request::Node(name, change, tx))
            .await
            .unwrap_or(Err(SchedError::Stopping))
    }

    /// Every node's eligibility and drain, as this node's tables say.
    pub async fn node_statuses(&self) -> Vec<NodeStatus> {
        self.ask(Request::NodeStatuses).await.unwrap_or_default()
    }
}

impl Driver {
    pub(super) fn node_command(
        &mut self,
        name: &str,
        change: NodeChange,
        reply: oneshot::Sender<Result<Receipt, SchedError>>,
    ) {
        match self.core.prepare_node(self.clock.now(), name, change) {
            Ok(prepared) => self.log_and_commit("NodeIntent", prepared, reply),
            Err(e) => {
                let _ = reply.send(Err(SchedError::Node(e)));
            }
        }
    }

    /// Sets the ad's `draining` flag to what the tables say of this node, when it differs.
    pub(super) fn mirror_intent(&mut self) {
        let refuses = self.core.refuses_work();
        if self.mirrored == Some(refuses) {
            return;
        }
        let me = self.core.node().to_string();
        let Some(mut ad) = self
            .gossip
            .members()
            .into_iter()
            .find(|m| m.id.name == me)
            .and_then(|m| m.ad)
        else {
            return;
        };
        // The view's own ad may lag what this node published (the membership core tells the
        // view of its own ad's changes only with other events): compare with what was last
        // asked for, and with the view only the first time.
        let first = self.mirrored.is_none();
        self.mirrored = Some(refuses);
        if first && ad.draining == refuses {
            return;
        }
        ad.draining = refuses;
        let gossip = self.gossip.clone();
        tokio::spawn(async move {
            if let Err(e) = gossip.set_ad(ad).await {
                tracing::warn!(error = %e, "cannot mirror the node's intent into its ad");
            }
        });
    }
}
