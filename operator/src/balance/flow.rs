//! Minimum-cost maximum flow (successive shortest paths), for choosing which replicas move
//! where with the fewest moves. Pure.

use std::collections::VecDeque;

/// A flow network with integer capacities and costs.
#[derive(Debug, Clone, Default)]
pub(super) struct Network {
    /// Edge indices leaving each node; edge `e ^ 1` is the reverse of edge `e`.
    out: Vec<Vec<usize>>,
    to: Vec<usize>,
    /// Capacity left on each edge.
    left: Vec<u32>,
    capacity: Vec<u32>,
    cost: Vec<i64>,
}

impl Network {
    pub(super) fn new(nodes: usize) -> Network {
        Network {
            out: vec![Vec::new(); nodes],
            ..Network::default()
        }
    }

    /// Adds an edge and returns its index, for [`Network::flow`].
    pub(super) fn edge(&mut self, from: usize, to: usize, capacity: u32, cost: i64) -> usize {
        let index = self.to.len();
        for (a, b, c, k) in [(from, to, capacity, cost), (to, from, 0, -cost)] {
            self.out[a].push(self.to.len());
            self.to.push(b);
            self.left.push(c);
            self.capacity.push(c);
            self.cost.push(k);
        }
        index
    }

    /// Flow through an edge after [`Network::min_cost_max_flow`].
    pub(super) fn flow(&self, edge: usize) -> u32 {
        self.capacity[edge] - self.left[edge]
    }

    /// Pushes as much flow as possible from `source` to `sink`, at the least total cost
    /// among maximum flows; returns (flow, cost).
    ///
    /// Each round sends flow along a cheapest path of the residual network (found with a
    /// queue-based Bellman-Ford, since reverse edges have negative costs); sending along
    /// cheapest paths keeps the flow the cheapest of its size.
    pub(super) fn min_cost_max_flow(&mut self, source: usize, sink: usize) -> (u64, i64) {
        let nodes = self.out.len();
        let (mut flow, mut cost) = (0u64, 0i64);
        loop {
            let mut distance = vec![i64::MAX; nodes];
            let mut via = vec![usize::MAX; nodes];
            let mut queued = vec![false; nodes];
            distance[source] = 0;
            let mut queue = VecDeque::from([source]);
            while let Some(node) = queue.pop_front() {
                queued[node] = false;
                for edge in &self.out[node] {
                    let to = self.to[*edge];
                    let through = distance[node].saturating_add(self.cost[*edge]);
                    if self.left[*edge] > 0 && through < distance[to] {
                        distance[to] = through;
                        via[to] = *edge;
                        if !queued[to] {
                            queued[to] = true;
                            queue.push_back(to);
                        }
                    }
                }
            }
            if distance[sink] == i64::MAX {
                return (flow, cost);
            }
            let mut pushed = u32::MAX;
            let mut node = sink;
            while node != source {
                let edge = via[node];
                pushed = pushed.min(self.left[edge]);
                node = self.to[edge ^ 1];
            }
            let mut node = sink;
            while node != source {
                let edge = via[node];
                self.left[edge] -= pushed;
                self.left[edge ^ 1] += pushed;
                node = self.to[edge ^ 1];
            }
            flow += u64::from(pushed);
            cost += i64::from(pushed) * distance[sink];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheapest_maximum_flow_prefers_cheap_paths_and_reports_each_edge() {
        // The direct edge holds one unit at cost 5, the detour through 1 and 2 holds two at
        // cost 3 each.
        let mut network = Network::new(4);
        let direct = network.edge(0, 3, 1, 5);
        let a = network.edge(0, 1, 2, 1);
        network.edge(1, 2, 2, 1);
        let c = network.edge(2, 3, 2, 1);
        assert_eq!(network.min_cost_max_flow(0, 3), (3, 11));
        assert_eq!(network.flow(direct), 1);
        assert_eq!((network.flow(a), network.flow(c)), (2, 2));
    }

    #[test]
    fn negative_reverse_edges_let_a_later_path_undo_an_earlier_choice() {
        // The cheapest single path is 0 → 1 → 2 → 3 (cost 2), but it blocks a second unit;
        // the second path undoes 1 → 2 through its reverse edge, ending with 0 → 1 → 3 and
        // 0 → 2 → 3 (cost 3 each).
        let mut network = Network::new(4);
        network.edge(0, 1, 1, 1);
        network.edge(0, 2, 1, 2);
        network.edge(1, 2, 1, 0);
        network.edge(1, 3, 1, 2);
        network.edge(2, 3, 1, 1);
        assert_eq!(network.min_cost_max_flow(0, 3), (2, 6));
    }
}
