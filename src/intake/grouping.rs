//! Storm control, part one: which episode a delivery joins. Pure; the store asks.
//!
//! An episode is one incident as people see it; it gets at most one investigation.
//! Part two (global and per-team caps) is applied when work is claimed, see
//! `engine::quota`.

use crate::engine::State;

/// What the store knows about the latest episode with a delivery's key.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeView {
    pub id: String,
    /// Milliseconds since the epoch of the last alert that joined it.
    pub last_alert_at_ms: i64,
    pub investigation_state: Option<State>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Join this existing episode.
    Attach { episode_id: String },
    /// Open a new episode; `investigate` says whether it gets an investigation.
    Open { investigate: bool },
}

/// Decides where a delivery goes.
///
/// - A repeat notification never starts anything: it joins the latest episode of its
///   key, however old. Only if Inquest never saw the key does it open one, since the
///   first notification was then lost before it reached us.
/// - An episode whose investigation is still queued or running takes everything.
/// - Otherwise an episode stays open for `cooldown` after its last alert; a firing
///   alert after that opens a new episode (a new incident), a resolved one still joins.
/// - A delivery with nothing firing opens an episode without an investigation.
pub fn decide(prev: Option<&EpisodeView>, any_firing: bool, repeat: bool, now_ms: i64, cooldown_ms: i64) -> Decision {
    match prev {
        None => Decision::Open { investigate: any_firing },
        Some(e) => {
            let active = e.investigation_state.is_some_and(|s| !s.is_terminal());
            let cooling = now_ms.saturating_sub(e.last_alert_at_ms) < cooldown_ms;
            if repeat || active || cooling || !any_firing {
                Decision::Attach { episode_id: e.id.clone() }
            } else {
                Decision::Open { investigate: true }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: i64, state: Option<State>) -> EpisodeView {
        EpisodeView { id: "e1".into(), last_alert_at_ms: last, investigation_state: state }
    }

    #[test]
    fn decision_table() {
        let attach = Decision::Attach { episode_id: "e1".into() };
        let open = Decision::Open { investigate: true };
        let cooldown = 1_000;
        let cases: Vec<(Option<EpisodeView>, bool, bool, i64, Decision)> = vec![
            // (previous episode, any firing, repeat, now, decision)
            (None, true, false, 0, open.clone()),
            (None, false, false, 0, Decision::Open { investigate: false }),
            (None, true, true, 0, open.clone()),
            (Some(ep(0, Some(State::Running))), true, false, 10_000, attach.clone()),
            (Some(ep(0, Some(State::Queued))), true, false, 10_000, attach.clone()),
            (Some(ep(0, Some(State::Completed))), true, false, 500, attach.clone()),
            (Some(ep(0, Some(State::Completed))), true, false, 1_000, open.clone()),
            (Some(ep(0, Some(State::Completed))), true, true, 1_000_000, attach.clone()),
            (Some(ep(0, Some(State::Completed))), false, false, 1_000_000, attach.clone()),
            (Some(ep(0, None)), true, false, 1_000_000, open.clone()),
        ];
        for (prev, firing, repeat, now, expected) in cases {
            assert_eq!(
                decide(prev.as_ref(), firing, repeat, now, cooldown),
                expected,
                "{prev:?} {firing} {repeat} {now}"
            );
        }
    }
}
