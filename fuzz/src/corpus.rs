//! The committed corpus: reading it, and writing the seed inputs it started from (real
//! encodings made by the code under test, so mutations start inside each format).

use std::path::{Path, PathBuf};

use shoal_gossip::{MemberInfo, MemberStatus, Millis, NodeId, ResourceAd, Resources};
use shoal_node::keyring::{ControlMessage, NodeKeys, WireOp};
use shoal_node::keys::Keyring;
use shoal_node::seal::Sealer;
use shoal_scheduler::{JobSpec, Scheduler, SchedulerConfig};

use crate::{FUZZ_NOW_MS, fuzz_addr, fuzz_key, membership};

/// `fuzz/corpus`, in the source tree.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every file of `dir/target`, sorted by name (deterministic order).
pub fn load(dir: &Path, target: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let folder = dir.join(target);
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&folder)
        .map_err(|e| anyhow::anyhow!("cannot read corpus {}: {e}", folder.display()))?
    {
        let path = entry?.path();
        if path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            entries.push((name, std::fs::read(&path)?));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Seed inputs per target, made by the encoders under test.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, datagram) in gossip_datagrams().into_iter().enumerate() {
        let sealer = Sealer::new(&fuzz_key());
        out.push((
            "seal_open",
            format!("sealed-{i:02}"),
            sealer.seal(&datagram, fuzz_addr(), FUZZ_NOW_MS),
        ));
        out.push(("gossip_datagram", format!("datagram-{i:02}"), datagram));
    }
    out.push(("peer_frames", "two-frames".into(), frames()));
    for (i, message) in control_messages().into_iter().enumerate() {
        out.push(("control_message", format!("control-{i}"), message.encode()));
    }
    for (i, message) in scheduler_messages().into_iter().enumerate() {
        out.push(("scheduler_message", format!("message-{i:02}"), message));
    }
    for (i, spec) in job_specs().into_iter().enumerate() {
        let json = serde_json_string(&spec);
        out.push(("job_spec_json", format!("spec-{i}.json"), json.into_bytes()));
    }
    for (name, text) in toml_specs() {
        out.push(("job_spec_toml", name.into(), text.as_bytes().to_vec()));
    }
    let mut ring = Keyring::new(fuzz_key());
    let _ = ring.install(shoal_node::keys::ClusterKey::from_bytes([7; 32]));
    out.push((
        "keyring_file",
        "two-keys.json".into(),
        ring.to_file_text().into_bytes(),
    ));
    out.push((
        "keyring_file",
        "label".into(),
        fuzz_key().cluster_label().to_string().into_bytes(),
    ));
    out
}

/// Writes [`seeds`] under `dir/<target>/`.
pub fn write_seeds(dir: &Path) -> anyhow::Result<usize> {
    let seeds = seeds();
    for (target, name, bytes) in &seeds {
        let folder = dir.join(target);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(name), bytes)?;
    }
    Ok(seeds.len())
}

/// Datagrams two membership cores exchange while one joins the other.
fn gossip_datagrams() -> Vec<Vec<u8>> {
    let mut a = membership("a", 7001);
    let mut b = membership("b", 7002);
    let (a_addr, b_addr) = (a.identity().addr, b.identity().addr);
    a.join(Millis(FUZZ_NOW_MS), b_addr);
    let mut out = Vec::new();
    let mut now = FUZZ_NOW_MS;
    for _ in 0..40 {
        now += 100;
        a.handle_timeout(Millis(now));
        b.handle_timeout(Millis(now));
        let mut moved = Vec::new();
        while let Some(t) = a.poll_transmit() {
            moved.push((a_addr, t));
        }
        while let Some(t) = b.poll_transmit() {
            moved.push((b_addr, t));
        }
        for (from, t) in moved {
            if out.len() < 24 {
                out.push(t.payload.clone());
            }
            let to = if t.to == a_addr { &mut a } else { &mut b };
            let _ = to.handle_datagram(Millis(now), from, &t.payload);
        }
    }
    out
}

fn frames() -> Vec<u8> {
    let mut out = Vec::new();
    for (channel, body) in [(0u8, &b"scheduler"[..]), (1u8, &b"{\"Request\":1}"[..])] {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.push(channel);
        out.extend_from_slice(body);
    }
    out
}

fn control_messages() -> Vec<ControlMessage> {
    let label = fuzz_key().cluster_label().to_string();
    vec![
        ControlMessage::Request {
            id: 1,
            op: WireOp::Install {
                key: fuzz_key().to_string(),
            },
        },
        ControlMessage::Request {
            id: 2,
            op: WireOp::Use {
                label: label.clone(),
            },
        },
        ControlMessage::Request {
            id: 3,
            op: WireOp::Remove {
                label: label.clone(),
            },
        },
        ControlMessage::Request {
            id: 4,
            op: WireOp::List,
        },
        ControlMessage::Reply {
            id: 2,
            result: Ok(NodeKeys {
                primary: label.clone(),
                keys: vec![label],
                changed: true,
            }),
        },
        ControlMessage::Reply {
            id: 3,
            result: Err("key is the primary key".into()),
        },
    ]
}

fn job_specs() -> Vec<JobSpec> {
    toml_specs()
        .into_iter()
        .filter_map(|(_, text)| JobSpec::from_toml_str(text).ok())
        .collect()
}

fn serde_json_string(spec: &JobSpec) -> String {
    serde_json::to_string_pretty(spec).unwrap_or_default()
}

fn toml_specs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("web.toml", include_str!("../../examples/web.toml")),
        ("batch.toml", include_str!("../../examples/batch.toml")),
        ("api.toml", include_str!("../../examples/api.toml")),
    ]
}

/// Messages a scheduler sends its peers while a job is placed and run.
fn scheduler_messages() -> Vec<Vec<u8>> {
    let names = ["n1", "n2", "n3"];
    let members: Vec<MemberInfo> = names
        .iter()
        .enumerate()
        .map(|(i, name)| MemberInfo {
            id: NodeId {
                name: (*name).into(),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                generation: 1,
            },
            status: MemberStatus::Alive,
            ad: Some(ResourceAd {
                generation: 1,
                ..ResourceAd::new(
                    *name,
                    Resources {
                        cpu_millicores: 4000,
                        memory_mib: 4096,
                        disk_mib: 4096,
                    },
                )
            }),
            last_update: Millis(FUZZ_NOW_MS),
        })
        .collect();
    let mut nodes: Vec<Scheduler> = names
        .iter()
        .map(|n| Scheduler::new((*n).to_string(), SchedulerConfig::default(), 3))
        .collect();
    let mut now = FUZZ_NOW_MS;
    for node in &mut nodes {
        node.handle_members(Millis(now), &members);
    }
    for spec in job_specs().into_iter().take(2) {
        let _ = nodes[0].submit(Millis(now), spec);
    }
    let mut out = Vec::new();
    for _ in 0..50 {
        now += 200;
        let mut moved = Vec::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            node.handle_timeout(Millis(now));
            while let Some(msg) = node.poll_message() {
                moved.push((names[i], msg));
            }
            while node.poll_command().is_some() {}
        }
        for (from, msg) in moved {
            let bytes = msg.message.encode();
            if out.len() < 24 && bytes.len() <= 4096 {
                out.push(bytes.clone());
            }
            for to in msg.to.iter() {
                let limits = Default::default();
                if let (Some(i), Ok(decoded)) = (
                    names.iter().position(|n| *n == to),
                    shoal_scheduler::Message::decode(&bytes, &limits),
                ) {
                    nodes[i].handle_message(Millis(now), from, decoded);
                }
            }
        }
    }
    out
}
