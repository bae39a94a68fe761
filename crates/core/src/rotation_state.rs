//! The vocabulary of a rotation run: its state, how it ended, what started it, the
//! steps it records and their status. Each is an enum here and text only where the
//! store reads and writes a row (and where JSON shows it); an unknown text in the
//! store is a corrupt record, never a guess.
//!
//! The transitions between states belong to the rotation crate (`machine`); this
//! module only names things, so that the store, the vault, the engine, the scheduler,
//! the CLI and the API all spell them the same way. The CHECK constraints of
//! `migrations/sqlite/0004_rotation_checks.sql` list the same texts; a unit test keeps
//! the two in step.

use std::fmt;
use std::str::FromStr;

/// Defines a fieldless enum with one text per variant, `as_str`, `Display`, `FromStr`
/// (the text back to the variant, or the unknown text as the error), serde as that
/// text, and `ALL` (every variant, for the store's CHECK lists and the tests).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text stored and shown for this variant.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownText;

            fn from_str(text: &str) -> Result<Self, UnknownText> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownText {
                        kind: stringify!($name),
                        text: other.to_string(),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text,)+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

/// A stored text that names no variant: the record is corrupt (or from a newer
/// version of `secret`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a known {kind}")]
pub struct UnknownText {
    pub kind: &'static str,
    pub text: String,
}

text_enum! {
    /// Where a run is. `Grace`, `Done`, `RolledBack` and `Failed` have an outcome;
    /// the others are open (running, interrupted, or waiting to be resumed).
    RunState {
        /// Asked for through the API; whichever process rotates starts it.
        Requested = "requested",
        /// Minting the new credential (stored as the `pending` version).
        Create = "create",
        /// Delivering the pending value to every target and deploying.
        Push = "push",
        /// Watching the deploys and checking the new credential.
        Verify = "verify",
        /// Verified: pending becomes current.
        Finish = "finish",
        /// Finished; the old credential still works until `revoke_after`.
        Grace = "grace",
        /// Finished, and the old credential is retired.
        Done = "done",
        /// Putting the old value back at every target.
        Rollback = "rollback",
        /// The old value is back everywhere; the new credential is discarded.
        RolledBack = "rolled_back",
        /// Stopped before anything needed undoing.
        Failed = "failed",
    }
}

impl RunState {
    /// No step will ever run again for this run.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            RunState::Done | RunState::RolledBack | RunState::Failed
        )
    }
}

text_enum! {
    /// How a run ended (`None` while it runs).
    RunOutcome {
        Finished = "finished",
        RolledBack = "rolled_back",
        Failed = "failed",
    }
}

text_enum! {
    /// What started a run.
    Trigger {
        /// `secret rotate NAME`.
        Manual = "manual",
        /// `secret rotate --due`.
        Due = "due",
        /// `secret serve`'s scheduler.
        Scheduler = "scheduler",
        /// `POST /v1/secrets/{name}/rotate`.
        Api = "api",
    }
}

text_enum! {
    /// A recorded step of a run (one row in `rotation_steps`, one `rotate.<step>`
    /// audit entry).
    Step {
        /// The API's request was recorded.
        Request = "request",
        /// The run began (or a requested run was picked up).
        Start = "start",
        /// An interrupted run could not be resumed.
        Resume = "resume",
        /// The provider's intent (what it is about to mint) was recorded before the call.
        Intent = "intent",
        Create = "create",
        /// The newest deployment before ours was recorded, right before the deploy call.
        Deploying = "deploying",
        Push = "push",
        Verify = "verify",
        Finish = "finish",
        Rollback = "rollback",
        Revoke = "revoke",
    }
}

text_enum! {
    /// How a step went.
    StepStatus {
        Ok = "ok",
        Failed = "failed",
        /// Did not complete; the run stays in its state for the next pass.
        Retry = "retry",
        /// Begun (a rollback); its end is a step of its own.
        Started = "started",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_reads_back_as_its_variant() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(*s));
        }
        for s in RunOutcome::ALL {
            assert_eq!(s.as_str().parse::<RunOutcome>(), Ok(*s));
        }
        for s in Trigger::ALL {
            assert_eq!(s.as_str().parse::<Trigger>(), Ok(*s));
        }
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>(), Ok(*s));
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(*s));
        }
    }

    #[test]
    fn an_unknown_text_is_an_error_naming_it() {
        let err = "runing".parse::<RunState>().unwrap_err();
        assert_eq!(err.to_string(), "\"runing\" is not a known RunState");
    }

    #[test]
    fn json_shows_the_text() {
        assert_eq!(
            serde_json::to_string(&RunState::RolledBack).unwrap(),
            "\"rolled_back\""
        );
    }

    #[test]
    fn closed_states_are_the_ones_with_nothing_left_to_do() {
        let closed: Vec<_> = RunState::ALL.iter().filter(|s| s.is_closed()).collect();
        assert_eq!(
            closed,
            [&RunState::Done, &RunState::RolledBack, &RunState::Failed]
        );
    }
}
