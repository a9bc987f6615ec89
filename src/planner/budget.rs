//! Hard budgets for one investigation's planner: model turns, tokens, dollars and
//! wall time. The decision is pure; the loop asks before every model turn.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{LlmConfig, Price};

/// What an investigation may spend.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub max_steps: u32,
    pub max_tokens: u64,
    pub max_cost_usd: f64,
    pub max_time: Duration,
}

impl Budget {
    pub fn from_config(c: &LlmConfig) -> Budget {
        Budget { max_steps: c.max_steps, max_tokens: c.max_tokens, max_cost_usd: c.max_cost_usd, max_time: c.max_time }
    }
}

/// What was spent so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spent {
    pub steps: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub elapsed: Duration,
}

impl Spent {
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Adds one model turn's usage, priced by `price` (none: free, e.g. a local model).
    pub fn add_turn(&mut self, prompt: u64, completion: u64, price: Option<&Price>) {
        self.steps += 1;
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
        if let Some(p) = price {
            self.cost_usd +=
                (prompt as f64 * p.prompt_per_mtok + completion as f64 * p.completion_per_mtok) / 1_000_000.0;
        }
    }
}

/// Which budget is used up, if any: the name the report gives it.
pub fn exhausted(budget: &Budget, spent: &Spent) -> Option<&'static str> {
    if spent.steps >= budget.max_steps {
        Some("steps")
    } else if spent.tokens() >= budget.max_tokens {
        Some("tokens")
    } else if spent.cost_usd >= budget.max_cost_usd {
        Some("cost")
    } else if spent.elapsed >= budget.max_time {
        Some("time")
    } else {
        None
    }
}

/// The price of `model`: an exact entry, else the longest listed prefix (`gpt-4o`
/// prices `gpt-4o-2024-08-06`).
pub fn price<'a>(prices: &'a BTreeMap<String, Price>, model: &str) -> Option<&'a Price> {
    prices.get(model).or_else(|| {
        prices.iter().filter(|(k, _)| model.starts_with(k.as_str())).max_by_key(|(k, _)| k.len()).map(|(_, p)| p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget { max_steps: 3, max_tokens: 1_000, max_cost_usd: 0.01, max_time: Duration::from_secs(10) }
    }

    #[test]
    fn each_budget_stops_by_its_name() {
        let b = budget();
        assert_eq!(exhausted(&b, &Spent::default()), None);
        assert_eq!(exhausted(&b, &Spent { steps: 3, ..Spent::default() }), Some("steps"));
        assert_eq!(
            exhausted(&b, &Spent { prompt_tokens: 900, completion_tokens: 100, ..Spent::default() }),
            Some("tokens")
        );
        assert_eq!(exhausted(&b, &Spent { cost_usd: 0.02, ..Spent::default() }), Some("cost"));
        assert_eq!(exhausted(&b, &Spent { elapsed: Duration::from_secs(11), ..Spent::default() }), Some("time"));
    }

    #[test]
    fn turns_are_priced_by_the_longest_matching_model_prefix() {
        let mut prices = BTreeMap::new();
        prices.insert("gpt-4o".to_string(), Price { prompt_per_mtok: 2.5, completion_per_mtok: 10.0 });
        prices.insert("gpt-4o-mini".to_string(), Price { prompt_per_mtok: 0.15, completion_per_mtok: 0.6 });
        let mut spent = Spent::default();
        spent.add_turn(1_000_000, 100_000, price(&prices, "gpt-4o-2024-08-06"));
        assert!((spent.cost_usd - 3.5).abs() < 1e-9, "{}", spent.cost_usd);
        assert_eq!(price(&prices, "gpt-4o-mini-2024").map(|p| p.prompt_per_mtok), Some(0.15));
        assert!(price(&prices, "llama3").is_none());
        assert_eq!(spent.steps, 1);
        assert_eq!(spent.tokens(), 1_100_000);
    }
}
