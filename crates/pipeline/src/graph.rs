//! The order steps run in: each step after the steps it needs, steps whose needs are met
//! side by side. Built from a loaded [`Pipeline`], whose needs are known to resolve and to
//! hold no cycle.

use crate::model::{Pipeline, StepDecl};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Graph {
    /// By step index: the indices of the steps it needs.
    needs: Vec<Vec<usize>>,
    /// By step index: a bit per step it needs, directly or through others.
    ancestors: Vec<Vec<u64>>,
    /// Every step after all it needs; steps in file order where the needs allow.
    order: Vec<usize>,
}

impl Graph {
    pub fn of(pipeline: &Pipeline) -> Graph {
        Self::of_steps(&pipeline.steps)
    }

    pub fn of_steps(steps: &[StepDecl]) -> Graph {
        let needs = needs_by_index(steps);
        let order = topological(&needs);
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
            ancestors,
            order,
        }
    }

    pub fn len(&self) -> usize {
        self.needs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.needs.is_empty()
    }

    /// The steps `step` needs directly.
    pub fn needs(&self, step: usize) -> &[usize] {
        &self.needs[step]
    }

    /// Whether `step` runs only after `other` has finished (needs it, directly or not).
    pub fn after(&self, step: usize, other: usize) -> bool {
        self.ancestors[step][other / 64] & (1 << (other % 64)) != 0
    }

    /// The steps `step` needs, directly or through others, in index order.
    pub fn ancestors(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(move |&other| self.after(step, other))
    }

    /// Whether two steps may run at the same time: neither waits for the other.
    pub fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.after(a, b) && !self.after(b, a)
    }

    /// An order to run the steps in one at a time.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Whether every step needs the one before it: the file's own order, nothing side by side.
    pub fn is_chain(&self) -> bool {
        (1..self.len()).all(|i| self.needs[i] == [i - 1])
    }
}

/// By step index, the indices of the steps it needs.
fn needs_by_index(steps: &[StepDecl]) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    steps
        .iter()
        .map(|s| s.needs.iter().filter_map(|n| index.get(n.as_str()).copied()).collect())
        .collect()
}

/// Kahn's algorithm, always taking the lowest ready index: steps keep their file order
/// wherever their needs allow. Steps in a cycle are left out.
fn topological(needs: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &j in ns {
            needed_by[j].push(i);
        }
    }
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

/// A cycle among the steps' needs, as step indices in the order they need each other.
pub(crate) fn find_cycle(steps: &[StepDecl]) -> Option<Vec<usize>> {
    let needs = needs_by_index(steps);
    let ordered = topological(&needs);
    if ordered.len() == needs.len() {
        return None;
    }
    let mut placed = vec![false; needs.len()];
    for i in ordered {
        placed[i] = true;
    }
    // Every step left out waits on another left out: walk those until one repeats.
    let start = placed.iter().position(|p| !p)?;
    let mut path = vec![start];
    let mut at = start;
    loop {
        at = *needs[at].iter().find(|&&j| !placed[j])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Pipeline {
        Pipeline::parse(Path::new("p.yml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn without_needs_each_step_needs_the_one_before() {
        let p = load(
            "name: p\nsteps:\n  - { id: a, uses: x.wasm }\n  - { id: b, uses: x.wasm }\n  - { id: c, uses: x.wasm }\n",
        );
        let g = Graph::of(&p);
        assert!(g.is_chain());
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
        let g = Graph::of(&p);
        assert!(!g.is_chain());
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
        assert_eq!(Graph::of(&p).order(), [1, 0]);
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
