//! Storm control, part two: how many investigations may run, overall and per team.
//! Pure; the store calls [`select`] inside the claim transaction.

use std::collections::{BTreeMap, HashMap};

use crate::config::EngineConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_running: u32,
    pub team_max_running: u32,
    pub team_quotas: BTreeMap<String, u32>,
}

impl Limits {
    pub fn from_config(cfg: &EngineConfig) -> Limits {
        Limits {
            max_running: cfg.max_running,
            team_max_running: cfg.team_max_running,
            team_quotas: cfg.team_quotas.clone(),
        }
    }

    fn team_limit(&self, team: &str) -> u32 {
        self.team_quotas.get(team).copied().unwrap_or(self.team_max_running)
    }
}

/// Picks, in order, the candidates (given by team) that may start now. Work over a
/// limit stays queued, never dropped; a later claim takes it.
pub fn select(
    candidate_teams: &[&str],
    running_by_team: &HashMap<String, u32>,
    limits: &Limits,
    capacity: usize,
) -> Vec<usize> {
    let mut running_total: u32 = running_by_team.values().sum();
    let mut per_team = running_by_team.clone();
    let mut chosen = Vec::new();
    for (i, team) in candidate_teams.iter().enumerate() {
        if chosen.len() >= capacity || running_total >= limits.max_running {
            break;
        }
        let n = per_team.entry(team.to_string()).or_insert(0);
        if *n >= limits.team_limit(team) {
            continue;
        }
        *n += 1;
        running_total += 1;
        chosen.push(i);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_quotas() {
        let limits = Limits {
            max_running: 4,
            team_max_running: 2,
            team_quotas: BTreeMap::from([("big".to_string(), 3), ("frozen".to_string(), 0)]),
        };
        let none = HashMap::new();
        // (candidate teams, running per team, capacity, chosen indexes)
        type Case<'a> = (Vec<&'a str>, HashMap<String, u32>, usize, Vec<usize>);
        let cases: Vec<Case> = vec![
            (vec!["a", "a", "a", "b"], none.clone(), 10, vec![0, 1, 3]),
            (vec!["big", "big", "big", "big"], none.clone(), 10, vec![0, 1, 2]),
            (vec!["frozen", "a"], none.clone(), 10, vec![1]),
            (vec!["a", "b", "c", "d", "e"], none.clone(), 10, vec![0, 1, 2, 3]),
            (vec!["a", "b", "c"], none.clone(), 2, vec![0, 1]),
            (vec!["a", "b"], HashMap::from([("a".to_string(), 2)]), 10, vec![1]),
            (vec!["a", "b"], HashMap::from([("x".to_string(), 4)]), 10, vec![]),
        ];
        for (teams, running, capacity, expected) in cases {
            assert_eq!(select(&teams, &running, &limits, capacity), expected, "{teams:?} {running:?}");
        }
    }
}
