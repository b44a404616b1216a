//! The service catalog on the in-memory harness (`docs/services.md`, §3): every node lists the
//! running instances of a service with their ports, converged nodes agree on the content hash,
//! a stopped job or a dead node's instances leave every catalog, and the incremental upkeep
//! equals a rebuild from scratch.

use std::collections::BTreeMap;

use shoal_scheduler::catalog::CatalogChanges;
use shoal_scheduler::testing::Cluster;
use shoal_scheduler::{CatalogBuilder, InstanceHealth, JobSpec};

fn job(id: &str, kind: &str, count: u32, extra: &str) -> JobSpec {
    JobSpec::from_toml_str(&format!(
        "id = \"{id}\"\ntype = \"{kind}\"\ncount = {count}\ncommand = \"serve\"\n\
         resources = {{ cpu = 100, memory = 32 }}\n{extra}"
    ))
    .unwrap()
}

const HTTP: &str = "[[ports]]\nname = \"http\"\n[[ports]]\nname = \"admin\"\n";

/// One catalog builder per node, kept up to date after every step.
struct Catalogs(BTreeMap<String, CatalogBuilder>);

impl Catalogs {
    fn new(c: &Cluster) -> Self {
        Catalogs(
            c.nodes
                .keys()
                .map(|n| (n.clone(), CatalogBuilder::new()))
                .collect(),
        )
    }

    fn update(&mut self, c: &mut Cluster) {
        for (name, b) in &mut self.0 {
            let node = c.nodes.get_mut(name).unwrap();
            if node.up {
                node.sched.update_catalog(b);
            }
        }
    }

    /// Steps until `pred` holds on the updated catalogs, for at most `max_ms` of virtual time.
    fn run_until(&mut self, c: &mut Cluster, max_ms: u64, pred: impl Fn(&Self) -> bool) -> bool {
        let deadline = c.now.plus_ms(max_ms);
        while c.now < deadline {
            self.update(c);
            if pred(self) {
                return true;
            }
            c.step();
        }
        self.update(c);
        pred(self)
    }

    fn count(&self, node: &str, service: &str) -> usize {
        self.0[node]
            .catalog()
            .service(service)
            .map_or(0, |s| s.instances.len())
    }

    fn all_count(&self, service: &str, n: usize) -> bool {
        self.0.keys().all(|node| self.count(node, service) == n)
    }
}

/// A builder fed everything at once gives the same services as the incremental one.
fn assert_equals_rebuild(c: &mut Cluster, cats: &Catalogs, node: &str) {
    let sched = &c.nodes[node].sched;
    let mut fresh = CatalogBuilder::new();
    let all = CatalogChanges {
        everything: true,
        members: true,
        ..CatalogChanges::default()
    };
    fresh.update(sched.tables(), sched.member_view(), node, all);
    let strip = |b: &CatalogBuilder| {
        b.catalog()
            .services
            .values()
            .map(|s| (s.name.clone(), s.hash, s.instances.clone(), s.jobs.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&cats.0[node]),
        strip(&fresh),
        "{node}: incremental ≠ rebuild"
    );
    assert_eq!(cats.0[node].catalog().nodes, fresh.catalog().nodes);
}

#[test]
fn every_node_lists_running_instances_with_their_ports() {
    let mut c = Cluster::new(3, 4000, 4096, 11);
    let mut cats = Catalogs::new(&c);
    c.submit(
        "n1",
        job(
            "web_app",
            "service",
            3,
            &format!("tags = [\"blue\"]\n{HTTP}"),
        ),
    )
    .unwrap();
    c.submit(
        "n2",
        job(
            "api",
            "service",
            2,
            &format!("service = \"web-app\"\n{HTTP}"),
        ),
    )
    .unwrap();
    // Neither registers: a batch job with ports, a service without.
    c.submit("n1", job("etl", "batch", 1, HTTP)).unwrap();
    c.submit("n3", job("plain", "service", 1, "")).unwrap();
    assert!(cats.run_until(&mut c, 10_000, |k| k.all_count("web-app", 5)));
    // Converge the tables fully, then compare.
    assert!(c.run_until(5_000, |c| c.converged()));
    cats.update(&mut c);
    let n1 = cats.0["n1"].catalog().clone();
    let web = n1.service("web-app").unwrap();
    assert_eq!(n1.services.len(), 1, "{:?}", n1.services.keys());
    assert_eq!(web.jobs, ["api", "web_app"]);
    assert_eq!(web.tags, ["blue"]);
    for i in &web.instances {
        let tables = c.nodes["n1"].sched.tables();
        let slot = shoal_scheduler::SlotKey {
            job: i.job.clone(),
            incarnation: tables.job(&i.job).unwrap().0,
            slot: i.slot,
        };
        let (id, a) = tables.current_attempt(&slot).unwrap();
        assert_eq!((id.attempt, &a.target), (i.attempt, &i.node));
        let b = tables.binding(id).unwrap();
        assert_eq!(i.ports, b.ports);
        assert_eq!(
            i.ports.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["http", "admin"]
        );
        assert_eq!(i.health, InstanceHealth::Healthy);
        assert_eq!(
            i.tags,
            if i.job == "web_app" {
                vec!["blue".to_string()]
            } else {
                vec![]
            }
        );
    }
    for node in ["n2", "n3"] {
        let other = cats.0[node].catalog().service("web-app").unwrap();
        assert_eq!(
            other.hash, web.hash,
            "{node}: converged nodes agree on the hash"
        );
        assert_eq!(other.instances, web.instances);
        assert_equals_rebuild(&mut c, &cats, node);
    }
    // Quiet: nothing changes, so no index moves.
    let before: Vec<u64> = cats.0.values().map(|b| b.catalog().index).collect();
    c.run_for(2_000, |_| {});
    cats.update(&mut c);
    let after: Vec<u64> = cats.0.values().map(|b| b.catalog().index).collect();
    assert_eq!(before, after);
}

#[test]
fn a_stopped_job_and_a_dead_node_leave_every_catalog() {
    let mut c = Cluster::new(3, 4000, 4096, 12);
    let mut cats = Catalogs::new(&c);
    c.submit(
        "n1",
        job(
            "web",
            "service",
            3,
            &format!("distinct_hosts = true\n{HTTP}"),
        ),
    )
    .unwrap();
    c.submit("n1", job("db", "service", 1, HTTP)).unwrap();
    assert!(cats.run_until(&mut c, 10_000, |k| k.all_count("web", 3)
        && k.all_count("db", 1)));
    let index = |k: &Catalogs, node: &str| k.0[node].catalog().service("web").unwrap().index;
    let before = [index(&cats, "n1"), index(&cats, "n2")];

    // A node dies: its instance leaves the survivors' catalogs as soon as SWIM says so, long
    // before its attempt is marked lost (a long settle time holds that back).
    c.settle_ms = 600_000;
    c.sync_members();
    c.crash("n3");
    c.declare_down("n3");
    for (node, before) in ["n1", "n2"].into_iter().zip(before) {
        let sched = &mut c.nodes.get_mut(node).unwrap().sched;
        sched.update_catalog(cats.0.get_mut(node).unwrap());
        let web = cats.0[node].catalog().service("web").unwrap();
        assert!(
            web.instances.iter().all(|i| i.node != "n3"),
            "{node}: {web:?}"
        );
        assert!(web.index > before, "a changed service gets a new index");
        assert!(!cats.0[node].catalog().nodes.contains_key("n3"));
        assert_equals_rebuild(&mut c, &cats, node);
    }

    // A stopped job leaves every catalog.
    c.stop("n2", "db");
    let live = ["n1", "n2"];
    assert!(cats.run_until(&mut c, 10_000, |k| {
        live.iter()
            .all(|n| k.0[*n].catalog().service("db").is_none())
    }));
    for node in live {
        assert_equals_rebuild(&mut c, &cats, node);
    }
}
