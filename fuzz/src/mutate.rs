//! Deterministic input mutation (libFuzzer's classic mutators, without coverage feedback):
//! bit flips, byte sets to interesting values, inserts, deletes, duplicated runs, splices
//! with another corpus entry, and length-field bumps. Seeded, so a failure replays exactly.

/// splitmix64: small, fast, good enough to pick mutations; seeded by the runner.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b'=', b'\n',
];

/// Largest input a mutation produces.
pub const MAX_INPUT: usize = 64 * 1024;

/// Applies 1 to 8 random mutations to `input`, taking splice material from `other`.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(8) {
        mutate_once(rng, &mut data, other);
    }
    data.truncate(MAX_INPUT);
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.next_u64() as u8;
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            data.drain(at..at + n);
        }
        5 if len > 0 => {
            // Repeat a run: grows collections and nesting.
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            let run = data[at..at + n].to_vec();
            let times = 1 + rng.below(4);
            for _ in 0..times {
                data.splice(at..at, run.iter().copied());
            }
        }
        6 if !other.is_empty() => {
            // Splice: our prefix with the other entry's suffix.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        7 if len > 0 => {
            // Bump a byte as if it were a length or count: varints and big-endian lengths.
            let at = rng.below(len);
            let delta = [1u8, 2, 0x40, 0x80][rng.below(4)];
            data[at] = data[at].wrapping_add(delta);
        }
        8 if len > 1 => {
            data.truncate(rng.below(len));
        }
        _ => data.push(rng.next_u64() as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_deterministic_and_bounded() {
        let input = b"{\"id\": \"web\", \"count\": 3}".to_vec();
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..1000 {
            let x = mutate(&mut a, &input, b"other");
            let y = mutate(&mut b, &input, b"other");
            assert_eq!(x, y);
            assert!(x.len() <= MAX_INPUT);
        }
    }
}
