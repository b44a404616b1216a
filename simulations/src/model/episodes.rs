//! The episodes a fault starts, drawn pair by pair: one member's suspicion and down marks
//! on its observers (a crash), and one direction of a partition, observer by observer so the
//! views' rows are written in order. Each returns or records what the figures count.

use super::delays::{self, Kind};
use super::drawing::Drawing;
use super::views::{NEVER, Status};
use crate::figures::{PairMarks, WaveAcc};

/// When node `j` is next up after `now` (`u64::MAX` if never).
pub(super) fn next_up(log: &[(u64, usize, bool)], j: usize, now: u64) -> u64 {
    log.iter()
        .find(|&&(t, i, up)| i == j && up && t > now)
        .map_or(u64::MAX, |&(t, ..)| t)
}

/// Draws one member's suspicion and down marks on `observers` (sorted) from `now`, the marks
/// due before `end` scheduled in the views; returns each observer's (suspect, down) in ms
/// since `now`, `None` past `end`.
#[allow(clippy::too_many_arguments)]
pub(super) fn wave(
    d: &mut Drawing,
    kind: Kind,
    episode: u64,
    j: usize,
    observers: &[usize],
    now: u64,
    end: u64,
    generation: u32,
) -> Vec<(Option<u64>, Option<u64>)> {
    let first = now + d.delays.first_suspect(kind, episode, j, observers.len());
    let prober = prober(d, episode, j, observers.len());
    observers
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let (sus, down) = marks(
                d,
                kind,
                episode,
                (i, j),
                first,
                k == prober,
                observers.len(),
            );
            schedule(d, (i, j), now, end, generation, sus, down);
            let since = |t: u64| (t < end).then_some(t - now);
            (since(sus), since(down))
        })
        .collect()
}

/// Which of `count` observers probes member `j` first (its spread is zero).
pub(super) fn prober(d: &Drawing, episode: u64, j: usize, count: usize) -> usize {
    let u = d.delays.uniform(delays::Draw::FirstSuspect, episode, j, 1);
    ((u * count as f64) as usize).min(count.saturating_sub(1))
}

/// One pair's suspect-or-down and down times.
pub(super) fn marks(
    d: &Drawing,
    kind: Kind,
    episode: u64,
    pair: (usize, usize),
    first: u64,
    is_prober: bool,
    observers: usize,
) -> (u64, u64) {
    let spread = if is_prober {
        0
    } else {
        d.delays.spread(kind, episode, pair, observers)
    };
    let sus = first + spread;
    (sus, sus + d.delays.down_after(kind, episode, pair))
}

pub(super) fn schedule(
    d: &mut Drawing,
    (i, j): (usize, usize),
    now: u64,
    end: u64,
    generation: u32,
    sus: u64,
    down: u64,
) {
    let t = |ms: u64| ms.min(u64::from(NEVER - 1)) as u32;
    let changes = [(t(sus), Status::Suspect), (t(down), Status::Down)];
    let due = changes
        .iter()
        .filter(|(at, _)| u64::from(*at) < end)
        .count();
    d.views.begin(i, j, t(now), generation, &changes[..due]);
}

/// One direction of a partition: `observers` lose `members`. Visits observer by observer
/// (the views' rows in order); members' first suspicions and probers are drawn first.
#[allow(clippy::too_many_arguments)]
pub(super) fn cut_direction(
    d: &mut Drawing,
    acc: &mut WaveAcc,
    kind: Kind,
    episode: u64,
    (observers, members): (&[usize], &[usize]),
    now: u64,
    heal: u64,
    generation: &[u32],
) {
    let count = observers.len();
    let first: Vec<u64> = members
        .iter()
        .map(|&j| now + d.delays.first_suspect(kind, episode, j, count))
        .collect();
    let probers: Vec<usize> = members
        .iter()
        .map(|&j| prober(d, episode, j, count))
        .collect();
    let mut first_down = vec![u64::MAX; members.len()];
    let mut last_witness: Vec<Option<u64>> = vec![Some(0); members.len()];
    acc.observers(count);
    for (k, &i) in observers.iter().enumerate() {
        let witness_i = d.up_throughout(i, now);
        for (m, &j) in members.iter().enumerate() {
            let knows = matches!(
                d.views.pair(i, j).status_at(now as u32),
                Status::Alive | Status::Suspect
            );
            if !knows {
                // Not joined yet: no join across the cut (the heal brings it in).
                d.views.begin(i, j, now as u32, generation[j], &[]);
                continue;
            }
            let (sus, down) = marks(d, kind, episode, (i, j), first[m], k == probers[m], count);
            schedule(d, (i, j), now, heal, generation[j], sus, down);
            if !(witness_i && d.up_throughout(j, now)) {
                continue;
            }
            let since = |t: u64| (t < heal).then_some(t - now);
            let (sus_ms, down_ms) = (since(sus), since(down));
            let remerge = sus_ms.and_then(|_| {
                let r = d.delays.remerge(kind, episode, (i, j));
                (heal.saturating_add(r) <= d.views_end()).then_some(r)
            });
            let f = (first[m] < heal).then_some(first[m] - now);
            acc.pair(
                f,
                PairMarks {
                    suspect: sus_ms,
                    down: down_ms,
                    remerge,
                    witness: true,
                },
            );
            if let Some(dm) = down_ms {
                first_down[m] = first_down[m].min(dm);
            }
            last_witness[m] = last_witness[m].and_then(|l| sus_ms.map(|s| l.max(s)));
        }
    }
    for (m, &j) in members.iter().enumerate() {
        if !d.up_throughout(j, now) {
            continue;
        }
        let f = (first[m] < heal).then_some(first[m] - now);
        let fd = (first_down[m] != u64::MAX).then_some(first_down[m]);
        acc.summary(f, fd, last_witness[m]);
    }
}
