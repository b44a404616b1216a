//! Ports on the in-memory harness (`docs/services.md`, §1): targets pick distinct ports from
//! their range at admission, the task gets them in its environment and arguments, static ports
//! filter placement with a reason, and a static-port slot updates on its own node.

use std::collections::{BTreeMap, BTreeSet};

use shoal_scheduler::testing::{Cluster, fast_config};
use shoal_scheduler::{JobSpec, TaskState};

fn job(id: &str, count: u32, extra: &str) -> JobSpec {
    JobSpec::from_toml_str(&format!(
        "id = \"{id}\"\ntype = \"service\"\ncount = {count}\ncommand = \"serve\"\n\
         resources = {{ cpu = 100, memory = 32 }}\n{extra}"
    ))
    .unwrap()
}

fn running(c: &Cluster, node: &str, job: &str) -> usize {
    c.view(node, job)
        .map_or(0, |v| v.count_in(TaskState::Running))
}

/// Every node's running processes hold pairwise distinct ports (from the tables' bindings).
fn assert_ports_unique(c: &Cluster) {
    for (name, n) in &c.nodes {
        let mut seen = BTreeMap::new();
        for id in n.running.keys() {
            let Some(b) = n.sched.tables().binding(id) else {
                continue;
            };
            for (_, port) in &b.ports {
                if let Some(other) = seen.insert(*port, id.clone()) {
                    panic!("{name}: port {port} held by {other} and {id}");
                }
            }
        }
    }
}

#[test]
fn each_task_gets_distinct_free_ports_and_sees_them() {
    let config = shoal_scheduler::SchedulerConfig {
        // 24 ports per node for 12 tasks × 2 ports: random picks would collide without the
        // ledger.
        port_range: 30000..=30023,
        ..fast_config()
    };
    let mut c = Cluster::with_config(3, 4000, 4096, 5, config);
    let spec = job(
        "web",
        12,
        "args = [\"-m\", \"http.server\", \"${SHOAL_PORT_HTTP}\", \"$${SHOAL_IP}\"]\n\
         env = { URL = \"http://${SHOAL_ADDR_HTTP}/\", PLAIN = \"${HOME}\" }\n\
         [[ports]]\nname = \"http\"\n[[ports]]\nname = \"admin-ui\"\n",
    );
    c.submit("n1", spec).unwrap();
    let ok = c.run_until(10_000, |c| {
        assert_ports_unique(c);
        c.nodes.keys().all(|n| running(c, n, "web") == 12)
    });
    assert!(ok, "{:#?}", c.view("n1", "web"));
    assert_ports_unique(&c);
    let view = c.view("n3", "web").unwrap();
    for p in c.processes.iter().filter(|p| p.outcome.is_none()) {
        let b = c.nodes[&p.node].sched.tables().binding(&p.task).unwrap();
        let http = b.port("http").unwrap();
        let admin = b.port("admin-ui").unwrap();
        assert!((30000..=30023).contains(&http) && (30000..=30023).contains(&admin));
        assert_ne!(http, admin);
        assert_eq!(p.args[2], http.to_string(), "args are interpolated");
        assert_eq!(p.args[3], "${SHOAL_IP}", "$${{ escapes");
        let env = &p.env;
        assert_eq!(env["SHOAL_PORT_HTTP"], http.to_string());
        assert_eq!(env["SHOAL_PORT_ADMIN_UI"], admin.to_string());
        assert_eq!(env["SHOAL_ADDR_HTTP"], format!("127.0.0.1:{http}"));
        assert_eq!(env["SHOAL_IP"], "127.0.0.1");
        assert_eq!(env["URL"], format!("http://127.0.0.1:{http}/"));
        assert_eq!(env["PLAIN"], "${HOME}", "other references are left alone");
        // Every node's view shows the same ports for the slot.
        let t = &view.tasks[p.task.slot as usize];
        assert_eq!(t.node.as_deref(), Some(p.node.as_str()));
        assert_eq!(t.ports.get("http"), Some(&http));
        assert_eq!(t.ip, Some(b.ip));
    }
}

#[test]
fn a_job_without_ports_runs_as_before() {
    let mut c = Cluster::new(2, 4000, 4096, 2);
    let spec = job(
        "plain",
        2,
        "args = [\"${SHOAL_IP}\", \"$x\"]\nenv = { A = \"1\" }\n",
    );
    c.submit("n1", spec).unwrap();
    assert!(c.run_until(5_000, |c| running(c, "n1", "plain") == 2));
    for p in &c.processes {
        assert_eq!(p.env, BTreeMap::from([("A".into(), "1".into())]));
        assert_eq!(p.args, ["127.0.0.1", "$x"]);
        assert!(c.nodes[&p.node].sched.tables().binding(&p.task).is_none());
    }
    let t = &c.view("n2", "plain").unwrap().tasks[0];
    assert!(t.ports.is_empty() && t.ip.is_none());
}

#[test]
fn static_ports_filter_placement_with_a_reason() {
    let mut c = Cluster::new(3, 4000, 4096, 3);
    let fixed = "[[ports]]\nname = \"http\"\nstatic = 8080\n";
    c.submit("n1", job("a", 2, fixed)).unwrap();
    assert!(c.run_until(5_000, |c| running(c, "n2", "a") == 2));
    c.submit("n2", job("b", 2, fixed)).unwrap();
    assert!(c.run_until(5_000, |c| running(c, "n3", "b") == 1));
    c.run_for(500, assert_ports_unique);
    let b = c.view("n1", "b").unwrap();
    assert_eq!(b.count_in(TaskState::Running), 1);
    let nodes_a: BTreeSet<_> = c
        .view("n1", "a")
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    assert_eq!(nodes_a.len(), 2, "a static port implies distinct hosts");
    let runs_b = b
        .tasks
        .iter()
        .find(|t| t.state == TaskState::Running)
        .unwrap();
    assert!(!nodes_a.contains(runs_b.node.as_ref().unwrap()));
    let pending = b
        .tasks
        .iter()
        .find(|t| t.state == TaskState::Pending)
        .unwrap();
    let why = pending.pending_reason.clone().unwrap_or_default();
    assert!(why.contains("2 nodes have port 8080 taken"), "{why}");
    // Stopping `a` frees the port on its nodes.
    c.stop("n3", "a");
    assert!(c.run_until(5_000, |c| running(c, "n1", "b") == 2));
    assert_ports_unique(&c);
}

#[test]
fn a_static_port_slot_is_replaced_on_its_own_node() {
    // One node: the new version can only land where the old one holds the port; admission
    // waits for the old process to exit instead of rejecting.
    let mut c = Cluster::new(1, 4000, 4096, 4);
    let fixed = "[[ports]]\nname = \"http\"\nstatic = 8080\n";
    c.submit("n1", job("api", 1, fixed)).unwrap();
    assert!(c.run_until(5_000, |c| running(c, "n1", "api") == 1));
    let first = c.view("n1", "api").unwrap().tasks[0].attempt;
    c.submit("n1", job("api", 1, &format!("args = [\"v2\"]\n{fixed}")))
        .unwrap();
    let ok = c.run_until(5_000, |c| {
        assert_ports_unique(c);
        c.view("n1", "api")
            .is_some_and(|v| v.tasks[0].state == TaskState::Running && v.tasks[0].attempt != first)
    });
    assert!(ok, "{:#?}", c.view("n1", "api"));
    let live: Vec<_> = c.processes.iter().filter(|p| p.outcome.is_none()).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].args, ["v2"]);
    assert_eq!(live[0].env["SHOAL_PORT_HTTP"], "8080");
    // No rejection on the way: the proposal waited.
    let rejected = c.nodes["n1"]
        .sched
        .tables()
        .slot_attempts(&live[0].task.slot_key())
        .filter(|(id, _)| {
            matches!(
                c.nodes["n1"].sched.tables().state(id),
                shoal_scheduler::AttemptState::Rejected { .. }
            )
        })
        .count();
    assert_eq!(rejected, 0);
}

#[test]
fn ports_survive_a_restart_of_the_node() {
    let config = shoal_scheduler::SchedulerConfig {
        port_range: 30000..=30003,
        ..fast_config()
    };
    let mut c = Cluster::with_config(2, 4000, 4096, 6, config);
    let dynamic = "constraints = [\"node == n1\"]\n[[ports]]\nname = \"http\"\n";
    c.submit("n1", job("one", 2, dynamic)).unwrap();
    assert!(c.run_until(5_000, |c| running(c, "n1", "one") == 2));
    let snapshot = c.nodes["n1"].sched.snapshot();
    c.restart_agent("n1", &snapshot);
    // The restarted node knows which ports its adopted tasks hold: the next job gets others.
    c.submit("n1", job("two", 2, dynamic)).unwrap();
    let ok = c.run_until(5_000, |c| running(c, "n1", "two") == 2);
    assert!(ok, "{:#?}\n{:#?}", c.view("n1", "two"), c.view("n1", "one"));
    assert_ports_unique(&c);
    // The range is now full: a fifth task is refused with the reason.
    c.submit("n1", job("three", 1, dynamic)).unwrap();
    c.run_for(1_000, |_| {});
    assert_eq!(
        running(&c, "n1", "one"),
        2,
        "the adopted tasks kept running"
    );
    let t = &c.view("n1", "three").unwrap().tasks[0];
    let why = format!("{:?} {:?}", t.detail, t.pending_reason);
    assert!(why.contains("n1 has no free port in 30000-30003"), "{why}");
}
