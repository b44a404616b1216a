//! Rollout events for the stream: the scheduler core's `DeploymentChange` as `Deployment`
//! topic drafts (`docs/observability.md`).

use serde_json::json;
use shoal_scheduler::DeploymentChange;

use super::{Draft, Topic, draft};

/// A step of a rollout (`Deployment`: `Started`, `SlotDone`, `AwaitingPromotion`,
/// `Promoted`, `Failed`, `Completed`, `Reverted`).
pub(super) fn deployment_event(
    job: &str,
    incarnation: u64,
    version: u32,
    change: &DeploymentChange,
) -> Draft {
    let (kind, extra) = match change {
        DeploymentChange::Started {
            deployment,
            max_parallel,
            canary,
        } => (
            "Started",
            json!({ "deployment": deployment, "max_parallel": max_parallel, "canary": canary }),
        ),
        DeploymentChange::SlotDone { slot } => ("SlotDone", json!({ "slot": slot })),
        DeploymentChange::AwaitingPromotion => ("AwaitingPromotion", json!({})),
        DeploymentChange::Promoted => ("Promoted", json!({})),
        DeploymentChange::Failed { reason } => ("Failed", json!({ "reason": reason })),
        DeploymentChange::Completed => ("Completed", json!({})),
        DeploymentChange::Reverted { from, to, auto } => {
            ("Reverted", json!({ "from": from, "to": to, "auto": auto }))
        }
    };
    let mut payload = json!({ "job": job, "incarnation": incarnation, "version": version });
    if let (Some(p), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    draft(Topic::Deployment, kind, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_step_carries_the_job_version_and_what_changed() {
        let d = deployment_event(
            "web",
            1,
            3,
            &DeploymentChange::Reverted {
                from: Some(2),
                to: Some(1),
                auto: true,
            },
        );
        assert_eq!((d.topic, d.kind), (Topic::Deployment, "Reverted"));
        assert_eq!(
            d.payload,
            json!({"job": "web", "incarnation": 1, "version": 3, "from": 2, "to": 1, "auto": true})
        );
        let d = deployment_event("web", 1, 3, &DeploymentChange::SlotDone { slot: 4 });
        assert_eq!((d.kind, &d.payload["slot"]), ("SlotDone", &json!(4)));
    }
}
