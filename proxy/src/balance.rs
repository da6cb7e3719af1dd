//! Choosing an endpoint of a cluster. Lock-free: round robin is one atomic increment, least
//! request compares the active-connection counters of two random endpoints (the "power of
//! two choices", Envoy's LEAST_REQUEST), which is nearly as good as scanning all of them
//! at a fraction of the cost.

use std::cell::Cell;
use std::sync::atomic::Ordering;

use crate::snapshot::{Cluster, LbPolicy};

thread_local! {
    /// xorshift64* state per thread: fast, no shared state, good enough to spread load.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let local = &t as *const u64 as u64;
    (t ^ local.rotate_left(32)) | 1
}

/// A uniformly distributed number below `n` (`n > 0`).
pub fn random_below(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

/// A uniformly distributed 64-bit number.
pub fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The order in which to try the cluster's endpoints for one connection: the balancer's
/// pick first, then the others (so an unreachable endpoint is followed by the next one).
/// Empty when the cluster has no endpoints.
pub fn attempt_order(cluster: &Cluster) -> Vec<usize> {
    let n = cluster.endpoints.len();
    if n == 0 {
        return Vec::new();
    }
    let first = pick(cluster);
    (0..n).map(|i| (first + i) % n).collect()
}

/// The balancer's choice among `cluster.endpoints` (non-empty).
pub fn pick(cluster: &Cluster) -> usize {
    let n = cluster.endpoints.len();
    if n == 1 {
        return 0;
    }
    match cluster.lb_policy {
        LbPolicy::RoundRobin => weighted_round_robin(cluster),
        LbPolicy::Random => random_below(n),
        LbPolicy::LeastRequest => {
            let a = random_below(n);
            let mut b = random_below(n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (&cluster.endpoints[a], &cluster.endpoints[b]);
            // Weight scales capacity: compare active/weight without dividing.
            let load_a = ea.active() * u64::from(eb.weight.max(1));
            let load_b = eb.active() * u64::from(ea.weight.max(1));
            if load_b < load_a { b } else { a }
        }
    }
}

/// Round robin over the endpoints repeated by weight (weights are small in practice).
fn weighted_round_robin(cluster: &Cluster) -> usize {
    let total: u64 = cluster
        .endpoints
        .iter()
        .map(|e| u64::from(e.weight.max(1)))
        .sum();
    let mut slot = cluster.next.fetch_add(1, Ordering::Relaxed) as u64 % total;
    for (i, e) in cluster.endpoints.iter().enumerate() {
        let w = u64::from(e.weight.max(1));
        if slot < w {
            return i;
        }
        slot -= w;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Discovery, Endpoint};

    fn cluster(policy: LbPolicy, weights: &[u32]) -> Cluster {
        let endpoints = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut e = Endpoint::new(format!("10.0.0.{}:80", i + 1).parse().unwrap());
                e.weight = *w;
                e
            })
            .collect();
        let mut c = Cluster::new("c", Discovery::Static, endpoints);
        c.lb_policy = policy;
        c
    }

    #[test]
    fn round_robin_honours_weights_exactly() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 3]);
        let picks: Vec<usize> = (0..8).map(|_| pick(&c)).collect();
        assert_eq!(picks, vec![0, 1, 1, 1, 0, 1, 1, 1]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = cluster(LbPolicy::LeastRequest, &[1, 1]);
        c.endpoints[0].active.store(10, Ordering::Relaxed);
        for _ in 0..100 {
            assert_eq!(pick(&c), 1);
        }
        let c = cluster(LbPolicy::LeastRequest, &[1, 1, 1]);
        c.endpoints[1].active.store(5, Ordering::Relaxed);
        let busy = (0..3000).filter(|_| pick(&c) == 1).count();
        // Endpoint 1 wins only when paired with itself, which P2C never does.
        assert_eq!(busy, 0);
    }

    #[test]
    fn random_spreads_over_all_endpoints() {
        let c = cluster(LbPolicy::Random, &[1, 1, 1, 1]);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            seen[pick(&c)] += 1;
        }
        // Each expected 1000 with a standard deviation of about 27; ±6 of them keeps a
        // correct picker from failing more than about once in 10^8 runs.
        assert!(seen.iter().all(|&n| (835..1165).contains(&n)), "{seen:?}");
    }

    #[test]
    fn attempt_order_starts_at_the_pick_and_covers_all() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1]);
        let order = attempt_order(&c);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert!(attempt_order(&cluster(LbPolicy::RoundRobin, &[])).is_empty());
    }
}
