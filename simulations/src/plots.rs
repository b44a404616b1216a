//! The plots of one report: members alive over time, the detection-latency CDF, and pending
//! tasks and utilization over time when the scenario has a workload.

use crate::report::Report;
use crate::svg::{Chart, Series, cdf, render};

/// `(file name, SVG text)` for every plot the report supports.
#[must_use]
pub fn all(r: &Report) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("members-alive.svg", render(&members_alive(r))),
        ("detection-cdf.svg", render(&detection_cdf(r))),
    ];
    if r.scheduling.is_some() {
        out.push(("pending-tasks.svg", render(&pending(r))));
        out.push(("utilization.svg", render(&utilization(r))));
    }
    out
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn members_alive(r: &Report) -> Chart {
    let line = |label: &str, color, f: &dyn Fn(&crate::observe::Sample) -> f64| Series {
        label: label.into(),
        color,
        points: r.timeline.iter().map(|s| (secs(s.t_ms), f(s))).collect(),
        step: true,
    };
    Chart {
        title: format!(
            "{}: members seen alive (seed {}, {} nodes)",
            r.scenario, r.seed, r.nodes
        ),
        x_label: "simulated time (s)".into(),
        y_label: "members".into(),
        series: vec![
            line("max seen alive", "#2b8cbe", &|s| s.alive_max as f64),
            line("mean seen alive", "#31a354", &|s| s.alive_mean),
            line("min seen alive", "#de2d26", &|s| s.alive_min as f64),
            line("nodes up (truth)", "#000000", &|s| s.running as f64),
        ],
        markers: vec![(secs(r.last_fault_ms), "last fault".into())],
        y_from_zero: true,
    }
}

fn detection_cdf(r: &Report) -> Chart {
    let d = &r.detection;
    let mut series = Vec::new();
    if !r.detection_samples.observer_down_ms.is_empty() {
        series.push(Series {
            label: "observer marks down".into(),
            color: "#de2d26",
            points: cdf(&r.detection_samples.observer_down_ms),
            step: true,
        });
    }
    if !r.detection_samples.first_suspect_ms.is_empty() {
        series.push(Series {
            label: "first suspicion".into(),
            color: "#2b8cbe",
            points: cdf(&r.detection_samples.first_suspect_ms),
            step: true,
        });
    }
    Chart {
        title: format!(
            "{}: failure detection latency CDF ({} crashes, probe period {} ms)",
            r.scenario, d.crashes, d.probe_period_ms
        ),
        x_label: "time since crash (ms)".into(),
        y_label: "fraction".into(),
        series,
        markers: Vec::new(),
        y_from_zero: true,
    }
}

/// The baseline's and Shoal's step series of one scheduling quantity, each sample
/// `(time_ms, pending, utilization)` projected to a value by `value`.
fn scheduling_series(r: &Report, value: impl Fn(u64, f64) -> f64) -> Vec<Series> {
    let mut series = Vec::new();
    let Some(s) = &r.scheduling else {
        return series;
    };
    let points = |samples: &[(u64, u64, f64)]| -> Vec<(f64, f64)> {
        samples
            .iter()
            .map(|&(t, p, u)| (secs(t), value(p, u)))
            .collect()
    };
    series.push(Series {
        label: "baseline (omniscient)".into(),
        color: "#000000",
        points: points(&s.baseline.series),
        step: true,
    });
    if let Some(q) = &s.shoal {
        series.push(Series {
            label: "shoal".into(),
            color: "#de2d26",
            points: points(&q.series),
            step: true,
        });
    }
    series
}

fn pending(r: &Report) -> Chart {
    Chart {
        title: format!("{}: pending tasks", r.scenario),
        x_label: "simulated time (s)".into(),
        y_label: "tasks waiting for placement".into(),
        series: scheduling_series(r, |p, _| p as f64),
        markers: Vec::new(),
        y_from_zero: true,
    }
}

fn utilization(r: &Report) -> Chart {
    Chart {
        title: format!("{}: CPU allocated on running nodes", r.scenario),
        x_label: "simulated time (s)".into(),
        y_label: "utilization (%)".into(),
        series: scheduling_series(r, |_, u| u * 100.0),
        markers: Vec::new(),
        y_from_zero: true,
    }
}
