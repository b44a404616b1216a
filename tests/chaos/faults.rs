//! The faults a scenario injects, each recorded in the history with its time (the returned
//! `u64`, milliseconds since the run started): packet filters between namespaces, signals to
//! an agent, `kill -9` of an agent or of everything in a node's namespace, a restart on the
//! same data dir, and a full data dir.

use std::io::Write;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster::Cluster;

impl Cluster {
    /// Cuts node `i` off from every other node, both ways.
    pub fn isolate(&self, i: usize) -> u64 {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        self.net().partition(&[&[i], &others]);
        self.rec.event(format!("isolate {}", self.nodes[i].name))
    }

    /// Cuts the cluster into sides.
    pub fn partition(&self, sides: &[&[usize]]) -> u64 {
        self.net().partition(sides);
        let names: Vec<Vec<&str>> = sides
            .iter()
            .map(|s| s.iter().map(|i| self.nodes[*i].name.as_str()).collect())
            .collect();
        self.rec.event(format!("partition {names:?}"))
    }

    /// Node `at` stops hearing node `from`; `from` still hears `at`.
    pub fn one_way(&self, at: usize, from: usize) -> u64 {
        self.net().drop_from(at, from);
        self.rec.event(format!(
            "{} no longer hears {}",
            self.nodes[at].name, self.nodes[from].name
        ))
    }

    /// Removes every packet filter.
    pub fn heal(&self) -> u64 {
        self.net().heal();
        self.rec.event("heal")
    }

    /// SIGSTOP to node `i`'s agent (its tasks keep running).
    pub fn pause(&mut self, i: usize) -> u64 {
        let pid = self.nodes[i].pid().expect("the agent runs");
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
        self.nodes[i].paused = true;
        self.rec
            .event(format!("SIGSTOP agent {} (pid {pid})", self.nodes[i].name))
    }

    /// SIGCONT to node `i`'s agent.
    pub fn resume(&mut self, i: usize) -> u64 {
        let pid = self.nodes[i].pid().expect("the agent runs");
        kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
        self.nodes[i].paused = false;
        self.rec
            .event(format!("SIGCONT agent {} (pid {pid})", self.nodes[i].name))
    }

    /// `kill -9` of node `i`'s agent only: its tasks keep running.
    pub fn kill_agent(&mut self, i: usize) -> u64 {
        let mut child = self.nodes[i].child.take().expect("the agent runs");
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        self.nodes[i].http = None;
        self.rec
            .event(format!("kill -9 agent {} (pid {pid})", self.nodes[i].name))
    }

    /// `kill -9` of node `i`: its agent and every process in its namespace.
    pub fn kill_node(&mut self, i: usize) -> u64 {
        let signalled = self.net().kill_everything_in(i);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].http = None;
        self.rec.event(format!(
            "kill -9 node {} ({signalled} processes)",
            self.nodes[i].name
        ))
    }

    /// Starts node `i`'s agent again on its data dir.
    pub fn restart(&mut self, i: usize) -> u64 {
        assert!(self.nodes[i].child.is_none(), "restart of a running agent");
        self.spawn_agent(i);
        self.rec
            .event(format!("restarted agent {}", self.nodes[i].name))
    }

    /// Fills node `i`'s tmpfs data dir with one file until the file system refuses a byte.
    pub fn fill_disk(&mut self, i: usize) -> u64 {
        assert!(
            self.mounts.contains(&self.nodes[i].data_dir),
            "{} has no tmpfs",
            self.nodes[i].name
        );
        let path = self.nodes[i].data_dir.join("chaos-filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let mut written = 0u64;
        // Big writes first, then single pages, until ENOSPC; bounded by the tmpfs size.
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            let limit = 1 << 30;
            while written < limit {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        let _ = f.sync_all();
        self.fillers.insert(i, path);
        self.rec.event(format!(
            "filled {}'s data dir ({} MiB written)",
            self.nodes[i].name,
            written >> 20
        ))
    }

    /// Removes the file [`Cluster::fill_disk`] wrote.
    pub fn free_disk(&mut self, i: usize) -> u64 {
        if let Some(path) = self.fillers.remove(&i) {
            std::fs::remove_file(&path).unwrap();
        }
        self.rec
            .event(format!("freed {}'s data dir", self.nodes[i].name))
    }
}
