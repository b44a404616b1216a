//! The service catalog: which running tasks answer for which service name, derived from the
//! replicated tables and this node's membership view (`docs/services.md`, §3).
//!
//! # What it promises
//!
//! - An **instance** is the current attempt of a slot (`0..count`) of a job that is a
//!   non-stopped `service` with at least one `[[ports]]`, that is `Running` (any round), has a
//!   binding, and whose target is not `Down`/`Left` (or missing) in this node's view.
//! - Every job with ports of a non-stopped service job is listed under its service name
//!   ([`JobSpec::service_name`]) even while it has no instance, so a watcher can wait for one.
//! - A service whose instances change gets `index = ++catalog.index` and a new `hash`: a stable
//!   FNV-1a hash of the postcard bytes of its instances, sorted by (job, slot). Equal instances
//!   give equal hashes on every node; the index is this node's counter and means nothing on
//!   another node.
//! - Whether an instance is healthy is decided in one place, [`instance_health`]; DNS and
//!   `?healthy=true` both go through it.
//!
//! # How to drive it
//!
//! The node's scheduler task owns one [`CatalogBuilder`]. After each input it drains, it calls
//! [`Scheduler::update_catalog`], which rebuilds only the services of the jobs the tables
//! touched since the last call (every service when a member changed status, or after a state
//! merge) and returns whether anything changed; the task then publishes
//! [`CatalogBuilder::catalog`] (cheap to clone: services are shared). The builder itself is
//! pure: the simulator can feed it any [`Tables`] and member view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_gossip::MemberInfo;

use crate::hash::StableHasher;
use crate::health::{TaskHealth, task_health};
use crate::ids::{AttemptId, Name, SlotKey, Stamp};
pub use crate::roles::CatalogChanges;
use crate::roles::down_or_gone;
use crate::scheduler::Scheduler;
use crate::spec::{JobSpec, JobType};
use crate::table::{AttemptState, JobEntry, Tables};

/// Every service this node knows, as its replica and membership view show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Bumped on every change of any service; a service's `index` is the value it took then.
    pub index: u64,
    /// Services by name.
    pub services: BTreeMap<Name, Arc<Service>>,
    /// Each live member's address (the IP of its gossip address), for `NODE.node.shoal.`.
    pub nodes: BTreeMap<Name, IpAddr>,
}

impl Catalog {
    /// The service named `name`.
    #[must_use]
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name).map(|s| &**s)
    }

    /// A hash of every service's name and content hash: equal on converged nodes.
    #[must_use]
    pub fn content_hash(&self) -> u64 {
        self.services
            .iter()
            .fold(StableHasher::new(), |h, (name, s)| {
                h.field(name.as_bytes()).int(s.hash)
            })
            .finish()
    }
}

/// One service name: the jobs that declare it and their instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The discovery name.
    pub name: Name,
    /// The catalog's index when this service last changed.
    pub index: u64,
    /// FNV-1a hash of the instances' postcard bytes: equal on converged nodes.
    pub hash: u64,
    /// The jobs registering under this name, sorted.
    pub jobs: Vec<Name>,
    /// The union of those jobs' tags, sorted.
    pub tags: Vec<String>,
    /// Instances, sorted by (job, slot).
    pub instances: Vec<Instance>,
}

impl Service {
    /// Instances passing [`instance_health`], in order.
    pub fn healthy(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .iter()
            .filter(|i| i.health == InstanceHealth::Healthy)
    }
}

/// One running task of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The job.
    pub job: Name,
    /// The slot.
    pub slot: u32,
    /// The attempt number within the slot.
    pub attempt: u32,
    /// The node it runs on.
    pub node: Name,
    /// The address its ports are reached at (the target's service IP).
    pub ip: IpAddr,
    /// Port name → host port, in the job's declared order (the first one is what a plain
    /// `SRV` query answers).
    pub ports: Vec<(Name, u16)>,
    /// The job's tags.
    pub tags: Vec<String>,
    /// What discovery counts it as.
    pub health: InstanceHealth,
    /// The job version it runs (`docs/services.md`, §4; 0 when no kept version names its
    /// epoch).
    pub version: u32,
}

/// How healthy an instance is, as discovery counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceHealth {
    /// Answered by DNS and `?healthy=true`.
    Healthy,
    /// Its checks fail.
    Unhealthy,
    /// Its checks have not all passed once yet.
    Unknown,
}

impl InstanceHealth {
    /// Stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceHealth::Healthy => "healthy",
            InstanceHealth::Unhealthy => "unhealthy",
            InstanceHealth::Unknown => "unknown",
        }
    }
}

/// Whether discovery counts an attempt as healthy: the one place that decides it for the
/// catalog, the HTTP API and DNS. It is [`task_health`], what `job status` shows: running
/// and every check passing (readiness `Passing`), or running and the job has no checks
/// (`docs/services.md`, §2).
#[must_use]
pub fn instance_health(tables: &Tables, id: &AttemptId, spec: &JobSpec) -> InstanceHealth {
    match task_health(tables, id, !spec.checks.is_empty()) {
        TaskHealth::Healthy => InstanceHealth::Healthy,
        TaskHealth::Unhealthy => InstanceHealth::Unhealthy,
        TaskHealth::Unknown => InstanceHealth::Unknown,
    }
}

/// Keeps a [`Catalog`] up to date from table and membership changes.
#[derive(Debug, Clone, Default)]
pub struct CatalogBuilder {
    catalog: Catalog,
    /// Job → the service it registers under now.
    job_service: BTreeMap<Name, Name>,
    /// Service → its jobs.
    service_jobs: BTreeMap<Name, BTreeSet<Name>>,
    /// Members down, left or gone at the last update.
    down: BTreeSet<Name>,
}

impl CatalogBuilder {
    /// An empty catalog.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The catalog as of the last update.
    #[must_use]
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Applies `changes`: rebuilds the services of touched jobs, or every service when a
    /// member's status changed. `members` is this node's view (`me` counts as alive whatever
    /// it says). Returns whether the catalog changed.
    pub fn update(
        &mut self,
        tables: &Tables,
        members: &BTreeMap<String, MemberInfo>,
        me: &str,
        changes: CatalogChanges,
    ) -> bool {
        let mut changed = false;
        let mut all_services = false;
        if changes.members || changes.everything {
            changed |= self.update_nodes(members, me);
            let down: BTreeSet<Name> = members
                .values()
                .filter(|m| m.id.name != me && down_or_gone(m))
                .map(|m| Name::from(m.id.name.as_str()))
                .collect();
            if down != self.down {
                self.down = down;
                all_services = true;
            }
        }
        let mut jobs = changes.jobs;
        if changes.everything {
            jobs.extend(tables.job_ids().into_iter().map(Name::from));
            jobs.extend(self.job_service.keys().cloned());
        }
        let mut services = BTreeSet::new();
        for job in jobs {
            services.extend(self.reindex_job(tables, &job));
        }
        if all_services {
            services.extend(self.service_jobs.keys().cloned());
        }
        let present = |m: &str| members.contains_key(m) || m == me;
        for name in services {
            changed |= self.rebuild(tables, &name, &present);
        }
        changed
    }

    fn update_nodes(&mut self, members: &BTreeMap<String, MemberInfo>, me: &str) -> bool {
        let nodes: BTreeMap<Name, IpAddr> = members
            .values()
            .filter(|m| m.id.name == me || !down_or_gone(m))
            .filter_map(|m| {
                let addr = m.ad.as_ref()?.gossip_addr?;
                Some((Name::from(m.id.name.as_str()), addr.ip()))
            })
            .collect();
        if nodes == self.catalog.nodes {
            return false;
        }
        self.catalog.nodes = nodes;
        true
    }

    /// Moves `job` to the service it registers under now; returns the services to rebuild
    /// (the old one and the new one).
    fn reindex_job(&mut self, tables: &Tables, job: &Name) -> Vec<Name> {
        let now = tables
            .job(job)
            .filter(|(_, e)| registers(&e.spec) && !e.stopped)
            .map(|(_, e)| Name::from(e.spec.service_name()));
        let before = self.job_service.get(job).cloned();
        if before != now {
            if let Some(old) = &before {
                if let Some(set) = self.service_jobs.get_mut(old) {
                    set.remove(job);
                }
                self.job_service.remove(job);
            }
            if let Some(new) = &now {
                self.service_jobs
                    .entry(new.clone())
                    .or_default()
                    .insert(job.clone());
                self.job_service.insert(job.clone(), new.clone());
            }
        }
        before.into_iter().chain(now).collect()
    }

    /// Rebuilds one service; returns whether it changed.
    fn rebuild(&mut self, tables: &Tables, name: &Name, present: &dyn Fn(&str) -> bool) -> bool {
        let jobs = self.service_jobs.get(name).cloned().unwrap_or_default();
        if jobs.is_empty() {
            self.service_jobs.remove(name);
            if self.catalog.services.remove(name).is_some() {
                self.catalog.index += 1;
                return true;
            }
            return false;
        }
        let mut instances = Vec::new();
        let mut tags = BTreeSet::new();
        for job in &jobs {
            if let Some((incarnation, entry)) = tables.job(job) {
                tags.extend(entry.spec.tags.iter().cloned());
                let live = |n: &str| present(n) && !self.down.contains(n);
                instances.extend(job_instances(tables, job, incarnation, entry, &live));
            }
        }
        let jobs: Vec<Name> = jobs.into_iter().collect();
        let tags: Vec<String> = tags.into_iter().collect();
        if let Some(old) = self.catalog.services.get(name)
            && old.instances == instances
            && old.jobs == jobs
            && old.tags == tags
        {
            return false;
        }
        self.catalog.index += 1;
        let service = Service {
            name: name.clone(),
            index: self.catalog.index,
            hash: instances_hash(&instances),
            jobs,
            tags,
            instances,
        };
        self.catalog
            .services
            .insert(name.clone(), Arc::new(service));
        true
    }
}

impl Scheduler {
    /// The changes the catalog has not absorbed yet, leaving none.
    pub fn take_catalog_changes(&mut self) -> CatalogChanges {
        std::mem::take(&mut self.catalog_changes)
    }

    /// This node's membership view as last reported, by name (what the catalog reads).
    #[must_use]
    pub fn member_view(&self) -> &BTreeMap<String, MemberInfo> {
        &self.members.all
    }

    /// Brings `builder` up to date with the tables and the membership view; returns whether
    /// the catalog changed (then publish it).
    pub fn update_catalog(&mut self, builder: &mut CatalogBuilder) -> bool {
        let changes = self.take_catalog_changes();
        if changes.is_empty() {
            return false;
        }
        builder.update(
            self.replica.tables(),
            &self.members.all,
            &self.node,
            changes,
        )
    }
}

/// Whether a job's tasks register as service instances: a service with ports.
fn registers(spec: &JobSpec) -> bool {
    spec.job_type == JobType::Service && !spec.ports.is_empty()
}

/// The instances of one job incarnation, by slot.
fn job_instances(
    tables: &Tables,
    job: &Name,
    incarnation: u64,
    entry: &JobEntry,
    live: &dyn Fn(&str) -> bool,
) -> Vec<Instance> {
    let spec = &entry.spec;
    (0..spec.count)
        .filter_map(|slot| {
            let key = SlotKey {
                job: job.clone(),
                incarnation,
                slot,
            };
            let (id, assignment) = tables.current_attempt(&key)?;
            let state = tables.state(id);
            if !matches!(state, AttemptState::Running { .. }) || !live(&assignment.target) {
                return None;
            }
            let binding = tables.binding(id)?;
            Some(Instance {
                job: job.clone(),
                slot,
                attempt: id.attempt,
                node: assignment.target.clone(),
                ip: binding.ip,
                ports: binding.ports.clone(),
                tags: spec.tags.clone(),
                health: instance_health(tables, id, spec),
                version: version_of(tables, incarnation, entry, &assignment.epoch),
            })
        })
        .collect()
}

/// The number of the job version whose attempts run under `epoch`.
fn version_of(tables: &Tables, incarnation: u64, entry: &JobEntry, epoch: &Stamp) -> u32 {
    if *epoch == entry.epoch {
        return entry.version;
    }
    tables
        .versions(&entry.spec.id, incarnation)
        .rev()
        .filter_map(|(_, v)| v.row.as_ref())
        .find(|r| r.epoch == *epoch)
        .map_or(0, |r| r.number)
}

/// The content hash of a service: FNV-1a (with the crate's finaliser) of its instances'
/// postcard bytes. `instances` are sorted by (job, slot). An unknown service hashes as one
/// without instances.
#[must_use]
pub fn instances_hash(instances: &[Instance]) -> u64 {
    debug_assert!(
        instances
            .windows(2)
            .all(|w| (&w[0].job, w[0].slot) < (&w[1].job, w[1].slot))
    );
    let bytes = postcard::to_allocvec(instances).expect("instances always encode");
    StableHasher::new().field(&bytes).finish()
}
