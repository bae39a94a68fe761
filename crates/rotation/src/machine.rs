//! The rotation state machine: one pure function from a run's state and what just
//! happened to its next state, the step recorded, and the effect on the vault.
//!
//! ```text
//!  requested ──start──► create ──minted──► push ──pushed (all)──► verify ──verified──► finish
//!      │                 │  ▲ intent,          │ ▲ deploying,        │                    │
//!      │ nothing to      │  └ interrupted      │ └ pushed (some)     │                promoted
//!      │ restore         │                     │                     │               ┌────┴────┐
//!      ▼                 ▼ create failed       │ failed (no undo: back to push) ◄────┤         │
//!   failed ◄─────────────┘                     │                     │            grace ──► done
//!      ▲ policy gone (any open state)          └──failed──► rollback ◄┘  revoked, superseded ▲
//!                                                             │  ▲ interrupted             │
//!                                                             ▼  │                (no grace)┘
//!                                                          rolled_back
//! ```
//!
//! The engine asks [`next`] before it records anything, so a step that the diagram
//! does not allow is an error, never a silent jump; the store's CHECK constraints keep
//! the texts honest, and this module keeps the arrows honest.

use secret_core::rotation_state::{RunOutcome, RunState, Step, StepStatus};

/// What happened to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A requested run is picked up, from the value current now.
    Start,
    /// A requested run has no current value to put back if it failed.
    NothingToRestore,
    /// The run's policy is gone: nobody knows how to go on.
    PolicyGone,
    /// The provider's intent was recorded before its mint call.
    IntentRecorded,
    /// The new credential was minted (or recovered after a crash).
    Minted,
    /// The mint failed before anything needed undoing.
    CreateFailed,
    /// The step did not complete and must not be undone blindly: stay, retry later.
    Interrupted,
    /// The newest deployment before ours was recorded; the deploy call follows.
    Deploying,
    /// A target has the value and its deploy; `all` once every target has.
    Pushed { all: bool },
    /// Push or verify failed. `can_undo`: the provider can discard the new
    /// credential, so the run rolls back; otherwise (a LaunchDarkly reset) the only
    /// way out is forward, and the next pass pushes again.
    Failed { can_undo: bool },
    /// Every deploy is healthy and the provider accepts the new credential.
    Verified,
    /// Pending became current. `grace`: the old credential stays valid (and
    /// published, for a JWKS) until the revoke step.
    Promoted { grace: bool },
    /// Rollback begins: the old value goes back to every target.
    RollbackStarted,
    /// The old value is back everywhere. `discard`: the new credential is revoked
    /// and its pending label dropped.
    RolledBack { discard: bool },
    /// Grace ended and the old credential is revoked.
    Revoked,
    /// The revoke failed; it is tried again at the next pass.
    RevokeFailed,
    /// A newer run of the same secret took over what this grace protected (its push
    /// replaced the `previous_as` variable), so nothing is left to retire.
    Superseded,
}

/// What the vault does besides recording the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Store the minted value as the `pending` version.
    StagePending,
    /// `pending` becomes `current`, `current` becomes `previous`.
    Promote,
    /// Drop the `pending` label.
    DiscardPending,
    /// Forget the deployments: the next pass pushes and deploys again.
    RedoPush,
}

/// The result of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: RunState,
    /// Set when the run gets its outcome with this step.
    pub outcome: Option<RunOutcome>,
    pub step: Step,
    pub status: StepStatus,
    pub effect: Effect,
}

/// An event the diagram has no arrow for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a rotation in state {state} cannot take {event:?}")]
pub struct Illegal {
    pub state: RunState,
    pub event: Event,
}

const fn to(state: RunState, step: Step, status: StepStatus) -> Transition {
    Transition {
        state,
        outcome: None,
        step,
        status,
        effect: Effect::None,
    }
}

const fn ending(
    state: RunState,
    outcome: RunOutcome,
    step: Step,
    status: StepStatus,
) -> Transition {
    Transition {
        state,
        outcome: Some(outcome),
        step,
        status,
        effect: Effect::None,
    }
}

const fn with(t: Transition, effect: Effect) -> Transition {
    Transition { effect, ..t }
}

/// The step a state records when it stays where it is.
fn own_step(state: RunState) -> Step {
    match state {
        RunState::Requested => Step::Start,
        RunState::Create => Step::Create,
        RunState::Push => Step::Push,
        RunState::Verify => Step::Verify,
        RunState::Finish => Step::Finish,
        RunState::Grace | RunState::Done => Step::Revoke,
        RunState::Rollback | RunState::RolledBack => Step::Rollback,
        RunState::Failed => Step::Resume,
    }
}

/// The next state of a run in `state` after `event`.
pub fn next(state: RunState, event: Event) -> Result<Transition, Illegal> {
    use Event as E;
    use RunState as S;
    use StepStatus::{Failed, Retry, Started};
    let t = match (state, event) {
        (S::Requested, E::Start) => to(S::Create, Step::Start, StepStatus::Ok),
        (S::Requested, E::NothingToRestore) => {
            ending(S::Failed, RunOutcome::Failed, Step::Start, Failed)
        }
        (
            S::Requested | S::Create | S::Push | S::Verify | S::Finish | S::Rollback,
            E::PolicyGone,
        ) => ending(S::Failed, RunOutcome::Failed, Step::Resume, Failed),
        (S::Create, E::IntentRecorded) => to(S::Create, Step::Intent, StepStatus::Ok),
        (S::Create, E::Minted) => with(
            to(S::Push, Step::Create, StepStatus::Ok),
            Effect::StagePending,
        ),
        (S::Create, E::CreateFailed) => ending(S::Failed, RunOutcome::Failed, Step::Create, Failed),
        (S::Create | S::Rollback, E::Interrupted) => to(state, own_step(state), Retry),
        (S::Push, E::Deploying) => to(S::Push, Step::Deploying, StepStatus::Ok),
        (S::Push, E::Pushed { all: false }) => to(S::Push, Step::Push, StepStatus::Ok),
        (S::Push, E::Pushed { all: true }) => to(S::Verify, Step::Push, StepStatus::Ok),
        (S::Push | S::Verify, E::Failed { can_undo: false }) => {
            with(to(S::Push, own_step(state), Retry), Effect::RedoPush)
        }
        (S::Push | S::Verify | S::Rollback, E::Failed { can_undo: true } | E::RollbackStarted) => {
            to(S::Rollback, Step::Rollback, Started)
        }
        (S::Verify, E::Verified) => to(S::Finish, Step::Verify, StepStatus::Ok),
        (S::Finish, E::Promoted { grace }) => with(
            ending(
                if grace { S::Grace } else { S::Done },
                RunOutcome::Finished,
                Step::Finish,
                StepStatus::Ok,
            ),
            Effect::Promote,
        ),
        (S::Rollback, E::RolledBack { discard }) => with(
            ending(
                S::RolledBack,
                RunOutcome::RolledBack,
                Step::Rollback,
                StepStatus::Ok,
            ),
            if discard {
                Effect::DiscardPending
            } else {
                Effect::None
            },
        ),
        (S::Grace, E::Revoked | E::Superseded) => to(S::Done, Step::Revoke, StepStatus::Ok),
        (S::Grace, E::RevokeFailed) => to(S::Grace, Step::Revoke, Failed),
        (state, event) => return Err(Illegal { state, event }),
    };
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState as S;
    use StepStatus::{Failed, Retry, Started};

    fn go(state: RunState, event: Event) -> Transition {
        next(state, event).unwrap_or_else(|e| panic!("{e}"))
    }

    fn edge(state: RunState, event: Event) -> (RunState, Option<RunOutcome>, Step, StepStatus) {
        let t = go(state, event);
        (t.state, t.outcome, t.step, t.status)
    }

    #[test]
    fn a_requested_run_starts_or_fails_for_want_of_a_value() {
        assert_eq!(
            edge(S::Requested, Event::Start),
            (S::Create, None, Step::Start, StepStatus::Ok)
        );
        assert_eq!(
            edge(S::Requested, Event::NothingToRestore),
            (S::Failed, Some(RunOutcome::Failed), Step::Start, Failed)
        );
    }

    #[test]
    fn create_records_its_intent_mints_fails_or_stays() {
        assert_eq!(
            edge(S::Create, Event::IntentRecorded),
            (S::Create, None, Step::Intent, StepStatus::Ok)
        );
        let minted = go(S::Create, Event::Minted);
        assert_eq!(
            (minted.state, minted.step, minted.effect),
            (S::Push, Step::Create, Effect::StagePending)
        );
        assert_eq!(
            edge(S::Create, Event::CreateFailed),
            (S::Failed, Some(RunOutcome::Failed), Step::Create, Failed)
        );
        assert_eq!(
            edge(S::Create, Event::Interrupted),
            (S::Create, None, Step::Create, Retry)
        );
    }

    #[test]
    fn push_moves_on_only_when_every_target_has_the_value() {
        assert_eq!(
            edge(S::Push, Event::Deploying),
            (S::Push, None, Step::Deploying, StepStatus::Ok)
        );
        assert_eq!(
            edge(S::Push, Event::Pushed { all: false }),
            (S::Push, None, Step::Push, StepStatus::Ok)
        );
        assert_eq!(
            edge(S::Push, Event::Pushed { all: true }),
            (S::Verify, None, Step::Push, StepStatus::Ok)
        );
    }

    #[test]
    fn a_failed_push_or_verify_rolls_back_when_the_credential_can_be_undone() {
        for state in [S::Push, S::Verify] {
            assert_eq!(
                edge(state, Event::Failed { can_undo: true }),
                (S::Rollback, None, Step::Rollback, Started)
            );
        }
    }

    #[test]
    fn a_failed_push_or_verify_goes_forward_again_when_it_cannot_be_undone() {
        for (state, step) in [(S::Push, Step::Push), (S::Verify, Step::Verify)] {
            let t = go(state, Event::Failed { can_undo: false });
            assert_eq!(
                (t.state, t.outcome, t.step, t.status, t.effect),
                (S::Push, None, step, Retry, Effect::RedoPush)
            );
        }
    }

    #[test]
    fn verify_leads_to_finish_and_finish_to_grace_or_done() {
        assert_eq!(
            edge(S::Verify, Event::Verified),
            (S::Finish, None, Step::Verify, StepStatus::Ok)
        );
        let grace = go(S::Finish, Event::Promoted { grace: true });
        assert_eq!(
            (grace.state, grace.outcome, grace.effect),
            (S::Grace, Some(RunOutcome::Finished), Effect::Promote)
        );
        let done = go(S::Finish, Event::Promoted { grace: false });
        assert_eq!(
            (done.state, done.outcome, done.effect),
            (S::Done, Some(RunOutcome::Finished), Effect::Promote)
        );
    }

    #[test]
    fn rollback_starts_resumes_stays_and_ends() {
        for state in [S::Push, S::Verify, S::Rollback] {
            assert_eq!(
                edge(state, Event::RollbackStarted),
                (S::Rollback, None, Step::Rollback, Started)
            );
        }
        assert_eq!(
            edge(S::Rollback, Event::Interrupted),
            (S::Rollback, None, Step::Rollback, Retry)
        );
        let discarded = go(S::Rollback, Event::RolledBack { discard: true });
        assert_eq!(
            (discarded.state, discarded.outcome, discarded.effect),
            (
                S::RolledBack,
                Some(RunOutcome::RolledBack),
                Effect::DiscardPending
            )
        );
        let kept = go(S::Rollback, Event::RolledBack { discard: false });
        assert_eq!(kept.effect, Effect::None);
    }

    #[test]
    fn grace_ends_revoked_superseded_or_tries_again() {
        assert_eq!(
            edge(S::Grace, Event::Revoked),
            (S::Done, None, Step::Revoke, StepStatus::Ok)
        );
        assert_eq!(
            edge(S::Grace, Event::Superseded),
            (S::Done, None, Step::Revoke, StepStatus::Ok)
        );
        assert_eq!(
            edge(S::Grace, Event::RevokeFailed),
            (S::Grace, None, Step::Revoke, Failed)
        );
    }

    #[test]
    fn a_run_whose_policy_is_gone_fails_from_any_open_state_but_grace() {
        for state in [
            S::Requested,
            S::Create,
            S::Push,
            S::Verify,
            S::Finish,
            S::Rollback,
        ] {
            assert_eq!(
                edge(state, Event::PolicyGone),
                (S::Failed, Some(RunOutcome::Failed), Step::Resume, Failed),
                "{state}"
            );
        }
        assert!(next(S::Grace, Event::PolicyGone).is_err());
    }

    #[test]
    fn closed_runs_take_no_event_at_all() {
        let events = [
            Event::Start,
            Event::NothingToRestore,
            Event::PolicyGone,
            Event::IntentRecorded,
            Event::Minted,
            Event::CreateFailed,
            Event::Interrupted,
            Event::Deploying,
            Event::Pushed { all: true },
            Event::Failed { can_undo: true },
            Event::Verified,
            Event::Promoted { grace: true },
            Event::RollbackStarted,
            Event::RolledBack { discard: true },
            Event::Revoked,
            Event::RevokeFailed,
            Event::Superseded,
        ];
        for state in RunState::ALL.iter().filter(|s| s.is_closed()) {
            for event in events {
                assert_eq!(
                    next(*state, event),
                    Err(Illegal {
                        state: *state,
                        event
                    })
                );
            }
        }
    }

    #[test]
    fn arrows_the_diagram_does_not_have_are_refused() {
        for (state, event) in [
            (S::Requested, Event::Minted),
            (S::Create, Event::Verified),
            (S::Push, Event::Promoted { grace: false }),
            (S::Verify, Event::Pushed { all: true }),
            (S::Finish, Event::RollbackStarted),
            (S::Grace, Event::RollbackStarted),
            (S::Rollback, Event::Verified),
            (S::Create, Event::RollbackStarted),
        ] {
            assert!(next(state, event).is_err(), "{state} {event:?}");
        }
    }

    #[test]
    fn only_closing_events_give_an_outcome() {
        for state in RunState::ALL {
            for event in [
                Event::Start,
                Event::IntentRecorded,
                Event::Interrupted,
                Event::Deploying,
                Event::Pushed { all: true },
                Event::Verified,
                Event::RollbackStarted,
                Event::RevokeFailed,
            ] {
                if let Ok(t) = next(*state, event) {
                    assert_eq!(t.outcome, None, "{state} {event:?}");
                }
            }
        }
    }
}
