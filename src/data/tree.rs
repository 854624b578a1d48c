//! Topic trees: parent links, children, depth and the breadcrumb from a topic up to its root.
//! Robust to broken data: unknown parents end a chain, cycles are detected and reported.

use super::schema::Topic;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Forest {
    /// Index of each topic's parent, `None` for roots and for unknown parents.
    pub parent: Vec<Option<usize>>,
    pub children: Vec<Vec<usize>>,
    /// Depth from the root (root = 0); `None` for topics on or below a cycle.
    pub depth: Vec<Option<u32>>,
    /// Each cycle once, as topic indices in parent order.
    pub cycles: Vec<Vec<usize>>,
}

impl Forest {
    pub fn build(topics: &[Topic], index: &HashMap<String, usize>) -> Forest {
        let n = topics.len();
        let parent: Vec<Option<usize>> = topics
            .iter()
            .map(|t| t.parent.as_ref().and_then(|p| index.get(p).copied()))
            .collect();
        // A parent id that names no topic: depths below it are unknown.
        let dangling: Vec<bool> = topics
            .iter()
            .zip(&parent)
            .map(|(t, p)| t.parent.is_some() && p.is_none())
            .collect();
        let mut children = vec![Vec::new(); n];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(i);
            }
        }
        // Walk each chain upward once; state 0 = new, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; n];
        let mut depth: Vec<Option<u32>> = vec![None; n];
        let mut cycles = Vec::new();
        let mut path = Vec::new();
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            path.clear();
            let mut cur = Some(start);
            let mut base: Option<u32> = None; // depth of the node above the path, if known
            let mut broken = false;
            while let Some(c) = cur {
                match state[c] {
                    0 => {
                        state[c] = 1;
                        path.push(c);
                        cur = parent[c];
                        broken |= dangling[c];
                    }
                    1 => {
                        // `c` is on the current path: a cycle from c to the end of the path.
                        let pos = path.iter().position(|&x| x == c).unwrap_or(0);
                        cycles.push(path[pos..].to_vec());
                        broken = true;
                        break;
                    }
                    _ => {
                        match depth[c] {
                            Some(d) => base = Some(d),
                            None => broken = true,
                        }
                        break;
                    }
                }
            }
            // Assign depths from the top of the path downward.
            let top = base.map(|b| b + 1).unwrap_or(0);
            for (d, &node) in (top..).zip(path.iter().rev()) {
                depth[node] = if broken { None } else { Some(d) };
                state[node] = 2;
            }
        }
        Forest {
            parent,
            children,
            depth,
            cycles,
        }
    }

    /// Topic indices from `i` up to its root (self first), stopping before a repeated node.
    pub fn breadcrumb(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut cur = self.parent[i];
        while let Some(p) = cur {
            if out.contains(&p) || out.len() > 10_000 {
                break;
            }
            out.push(p);
            cur = self.parent[p];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(id: &str, parent: Option<&str>) -> Topic {
        Topic {
            id: id.into(),
            title: id.to_uppercase(),
            description: String::new(),
            channel: "c".into(),
            category: "source".into(),
            level: None,
            language: "en".into(),
            parent: parent.map(str::to_string),
            has_content: false,
            fold: None,
            line: 0,
        }
    }

    fn forest(ts: &[Topic]) -> Forest {
        let idx = ts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        Forest::build(ts, &idx)
    }

    #[test]
    fn depths_and_breadcrumbs_follow_parents_in_any_order() {
        // Children listed before their parents.
        let ts = vec![
            topic("d", Some("c")),
            topic("c", Some("b")),
            topic("b", Some("a")),
            topic("a", None),
            topic("e", Some("a")),
        ];
        let f = forest(&ts);
        assert_eq!(f.depth, vec![Some(3), Some(2), Some(1), Some(0), Some(1)]);
        assert_eq!(f.breadcrumb(0), vec![0, 1, 2, 3]);
        assert_eq!(f.children[3], vec![2, 4]);
        assert!(f.cycles.is_empty());
    }

    #[test]
    fn cycles_are_found_and_do_not_loop() {
        let ts = vec![
            topic("a", Some("c")),
            topic("b", Some("a")),
            topic("c", Some("b")),
            topic("x", Some("a")),
            topic("r", None),
            topic("self", Some("self")),
        ];
        let f = forest(&ts);
        assert_eq!(f.cycles.len(), 2);
        let mut first = f.cycles[0].clone();
        first.sort();
        assert_eq!(first, vec![0, 1, 2]);
        assert_eq!(f.cycles[1], vec![5]);
        assert_eq!(f.depth[3], None, "below a cycle has no depth");
        assert_eq!(f.depth[4], Some(0));
        assert_eq!(f.breadcrumb(3), vec![3, 0, 2, 1]);
    }

    #[test]
    fn unknown_parent_ends_the_chain() {
        let ts = vec![topic("a", Some("missing")), topic("b", Some("a"))];
        let f = forest(&ts);
        assert_eq!(f.parent[0], None);
        assert_eq!(
            f.depth,
            vec![None, None],
            "depth under a missing parent is unknown"
        );
        assert_eq!(f.breadcrumb(1), vec![1, 0]);
    }
}
