//! The order steps run in: each step after the steps it needs, steps whose needs are met
//! side by side. Built once, when a pipeline is loaded ([`Pipeline::graph`]).

use crate::model::StepDecl;
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// By step index: the indices of the steps it needs.
    needs: Vec<Vec<usize>>,
    /// By step index: the indices of the steps that need it.
    needed_by: Vec<Vec<usize>>,
    /// By step index: a bit per step it needs, directly or through others.
    ancestors: Vec<Vec<u64>>,
    /// Every step after all it needs; steps in file order where the needs allow. Steps in
    /// a cycle are left out.
    order: Vec<usize>,
}

impl Graph {
    /// The graph of `steps`, whose `needs` name other steps by id.
    pub(crate) fn new(steps: &[StepDecl]) -> Graph {
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let needs: Vec<Vec<usize>> = steps
            .iter()
            .map(|s| s.needs.iter().filter_map(|n| index.get(n.as_str()).copied()).collect())
            .collect();
        let mut needed_by = vec![Vec::new(); steps.len()];
        for (i, ns) in needs.iter().enumerate() {
            for &j in ns {
                needed_by[j].push(i);
            }
        }
        let order = topological(&needs, &needed_by);
        let words = steps.len().div_ceil(64);
        let mut ancestors = vec![vec![0u64; words]; steps.len()];
        for &i in &order {
            let mut bits = vec![0u64; words];
            for &j in &needs[i] {
                bits[j / 64] |= 1 << (j % 64);
                for (b, a) in bits.iter_mut().zip(&ancestors[j]) {
                    *b |= a;
                }
            }
            ancestors[i] = bits;
        }
        Graph {
            needs,
            needed_by,
            ancestors,
            order,
        }
    }

    /// The steps `step` needs directly.
    pub fn needs(&self, step: usize) -> &[usize] {
        &self.needs[step]
    }

    /// The steps that need `step` directly.
    pub fn needed_by(&self, step: usize) -> &[usize] {
        &self.needed_by[step]
    }

    /// Whether `step` runs only after `other` has finished (needs it, directly or not).
    pub fn after(&self, step: usize, other: usize) -> bool {
        self.ancestors[step][other / 64] & (1 << (other % 64)) != 0
    }

    /// The steps `step` needs, directly or through others, in index order.
    pub fn ancestors(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.needs.len()).filter(move |&other| self.after(step, other))
    }

    /// Whether two steps may run at the same time: neither waits for the other.
    pub fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.after(a, b) && !self.after(b, a)
    }

    /// An order to run the steps in one at a time.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// A cycle among the needs, as step indices in the order they need each other.
    pub(crate) fn cycle(&self) -> Option<Vec<usize>> {
        let mut placed = vec![false; self.needs.len()];
        for &i in &self.order {
            placed[i] = true;
        }
        // Every step left out of the order waits on another left out: walk those until one
        // repeats.
        let start = placed.iter().position(|p| !p)?;
        let mut path = vec![start];
        let mut at = start;
        loop {
            at = *self.needs[at].iter().find(|&&j| !placed[j])?;
            if let Some(pos) = path.iter().position(|&p| p == at) {
                // The walk went from each step to one it needs: `a → c` reads "a needs c".
                let mut cycle = path.split_off(pos);
                let lowest = cycle.iter().enumerate().min_by_key(|(_, i)| **i).map_or(0, |(n, _)| n);
                cycle.rotate_left(lowest);
                return Some(cycle);
            }
            path.push(at);
        }
    }
}

/// Kahn's algorithm, always taking the lowest ready index: steps keep their file order
/// wherever their needs allow. Steps in a cycle are left out.
fn topological(needs: &[Vec<usize>], needed_by: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..needs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(needs.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &needed_by[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.insert(k);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use crate::model::Pipeline;
    use std::path::Path;

    fn load(text: &str) -> Pipeline {
        Pipeline::parse(Path::new("p.yml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn without_needs_each_step_needs_the_one_before() {
        let p = load(
            "name: p\nsteps:\n  - { id: a, uses: x.wasm }\n  - { id: b, uses: x.wasm }\n  - { id: c, uses: x.wasm }\n",
        );
        let g = &p.graph;
        assert_eq!(g.needs(2), [1]);
        assert!(g.after(2, 0));
        assert!(!g.concurrent(0, 2));
        assert_eq!(g.order(), [0, 1, 2]);
    }

    #[test]
    fn needs_let_independent_steps_run_side_by_side() {
        let p = load(
            "name: p\nsteps:\n  - { id: a, uses: x.wasm }\n  - { id: b, uses: x.wasm, needs: a }\n  \
             - { id: c, uses: x.wasm, needs: [a] }\n  - { id: d, uses: x.wasm, needs: [b, c] }\n",
        );
        let g = &p.graph;
        assert!(g.concurrent(1, 2));
        assert!(g.after(3, 0), "d needs a through b");
        assert_eq!(g.ancestors(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(g.order(), [0, 1, 2, 3]);
    }

    #[test]
    fn the_order_follows_needs_written_against_the_file() {
        let p = load(
            "name: p\nsteps:\n  - { id: late, uses: x.wasm, needs: [early] }\n  - { id: early, uses: x.wasm, needs: [] }\n",
        );
        assert_eq!(p.graph.order(), [1, 0]);
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let e = Pipeline::parse(
            Path::new("p.yml"),
            "name: p\nsteps:\n  - { id: a, uses: x.wasm, needs: [c] }\n  - { id: b, uses: x.wasm, needs: [a] }\n  \
             - { id: c, uses: x.wasm, needs: [b] }\n  - { id: d, uses: x.wasm, needs: [] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`needs:` makes a cycle: a → c → b → a"), "{e}");
        assert!(e.contains("p.yml:3:"), "{e}");
    }
}
