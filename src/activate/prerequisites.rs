//! Host prerequisites of a generation (secrets such as `/etc/kubernetes/token.csv`): checked
//! under the root before a switch changes anything, never copied into the store.

use super::root::Root;

/// Each prerequisite of a generation and whether it is present under `root`.
pub(crate) fn check(root: &Root, prerequisites: &[String]) -> Vec<(String, bool)> {
    prerequisites
        .iter()
        .map(|p| (p.clone(), root.host(p).exists()))
        .collect()
}
