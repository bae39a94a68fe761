//! Usage errors that never repeat what was typed.
//!
//! A value pasted into argv by mistake (`secret set API_KEY sk-live-...`, a token after
//! `--`, a password given to `--limit`) would come straight back in clap's own messages
//! ("unexpected argument 'sk-live-...' found"), onto a terminal, into CI logs and shell
//! scrollback. So only the errors that carry no user text (help, version, a missing
//! argument or subcommand) are rendered by clap; every other one is rendered here from
//! the error's context — which argument, which values are allowed, the usage line —
//! and never from the text that was typed. Exit code 2, as for every usage error.

use clap::error::{ContextKind, ContextValue, ErrorKind};

use secret_core::error::exit;

/// The largest version number (versions are stored as SQLite integers).
pub const MAX_VERSION: u64 = i64::MAX as u64;

/// What `main` prints and exits with when the arguments do not parse.
#[derive(Debug)]
pub struct ParseFailure {
    /// Complete text for stderr (or stdout for help and version), newline-terminated.
    pub text: String,
    /// Whether the text goes to stdout (help and version) rather than stderr.
    pub to_stdout: bool,
    pub exit_code: u8,
}

/// Turns a clap error into what the user sees, without any argument they typed.
pub fn explain(err: &clap::Error) -> ParseFailure {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return ParseFailure {
                text: err.render().to_string(),
                to_stdout: true,
                exit_code: exit::OK,
            }
        }
        // Messages made of our own names only: clap's wording is fine.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        | ErrorKind::MissingRequiredArgument
        | ErrorKind::MissingSubcommand => {
            return ParseFailure {
                text: err.render().to_string(),
                to_stdout: false,
                exit_code: exit::USAGE,
            }
        }
        _ => {}
    }
    let usage = string(err, ContextKind::Usage).unwrap_or_default();
    let arg = string(err, ContextKind::InvalidArg);
    let mut lines = Vec::new();
    match err.kind() {
        ErrorKind::UnknownArgument => {
            lines.push(format!("unexpected argument {NOT_REPEATED}"));
            if usage.contains("secret set ") {
                lines.push(
                    "  a value is read from stdin, never from arguments: \
                     printf %s \"$VALUE\" | secret set NAME"
                        .into(),
                );
            }
            if let Some(known) = string(err, ContextKind::SuggestedArg) {
                lines.push(format!("  tip: a similar option exists: '{known}'"));
            }
        }
        ErrorKind::InvalidSubcommand => {
            lines.push(format!("unrecognized subcommand {NOT_REPEATED}"));
            if let Some(known) = strings(err, ContextKind::SuggestedSubcommand) {
                lines.push(format!(
                    "  tip: similar subcommands exist: {}",
                    known.join(", ")
                ));
            }
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let arg = arg.unwrap_or_else(|| "an argument".into());
            lines.push(format!("invalid value for '{arg}' {NOT_REPEATED}"));
            if let Some(allowed) = allowed(&arg) {
                lines.push(format!("  expected {allowed}"));
            } else if let Some(valid) = strings(err, ContextKind::ValidValue) {
                lines.push(format!("  possible values: {}", valid.join(", ")));
            } else if let Some(reason) = safe_reason(err) {
                lines.push(format!("  {reason}"));
            }
        }
        ErrorKind::TooManyValues | ErrorKind::WrongNumberOfValues | ErrorKind::TooFewValues => {
            let arg = arg.unwrap_or_else(|| "an argument".into());
            lines.push(format!(
                "'{arg}' got a different number of values than it takes {NOT_REPEATED}"
            ));
        }
        ErrorKind::ArgumentConflict => {
            let prior = strings(err, ContextKind::PriorArg).unwrap_or_default();
            let others = if prior.is_empty() {
                "the other arguments".to_string()
            } else {
                prior
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match arg {
                Some(arg) => {
                    lines.push(format!("the argument '{arg}' cannot be used with {others}"))
                }
                // A subcommand after options of its parent: the word itself may be a value.
                None => lines.push(format!(
                    "unexpected argument after {others} {NOT_REPEATED}; options and a subcommand \
                     are not mixed here: see --help"
                )),
            }
        }
        ErrorKind::NoEquals => {
            let arg = arg.unwrap_or_else(|| "an option".into());
            lines.push(format!("'{arg}' takes its value after '='"));
        }
        ErrorKind::InvalidUtf8 => lines.push("an argument is not valid UTF-8".into()),
        _ => lines.push(format!("the arguments do not parse {NOT_REPEATED}")),
    }
    let mut text = format!("error: {}\n", lines.join("\n"));
    if !usage.is_empty() {
        text.push('\n');
        text.push_str(usage.trim_end());
        text.push('\n');
    }
    text.push_str("\nFor more information, try '--help'.\n");
    ParseFailure {
        text,
        to_stdout: false,
        exit_code: exit::USAGE,
    }
}

const NOT_REPEATED: &str = "(not repeated here, in case it was a secret value)";

/// What an option of ours accepts, by its long name (from clap's `--name <VALUE>`).
fn allowed(arg: &str) -> Option<String> {
    let long = arg.split_whitespace().next().unwrap_or("");
    Some(match long {
        "--version" => format!("a version number from 1 to {MAX_VERSION}"),
        "--if-version" => format!("a version number from 0 (create only) to {MAX_VERSION}"),
        "--length" => format!("a length from 1 to {}", secret_core::model::MAX_VALUE_BYTES),
        "--limit" => format!("a whole number from 0 to {}", u64::MAX),
        "--tick" | "--shutdown-grace" | "--ttl" => {
            "a duration such as 30s, 10m, 12h or 30d".to_string()
        }
        "--expect-head" => "SEQ:MAC as printed by `secret audit verify`".to_string(),
        _ => return None,
    })
}

/// The parser's own reason, if it does not contain the rejected text.
fn safe_reason(err: &clap::Error) -> Option<String> {
    let typed = string(err, ContextKind::InvalidValue)?;
    let reason = std::error::Error::source(err)?.to_string();
    (!typed.is_empty() && !reason.contains(typed.as_str()) && !reason.is_empty()).then_some(reason)
}

fn string(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::StyledStr(s) => Some(s.to_string()),
        ContextValue::Strings(v) => v.first().cloned(),
        _ => None,
    }
}

fn strings(err: &clap::Error, kind: ContextKind) -> Option<Vec<String>> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(vec![s.clone()]),
        ContextValue::Strings(v) => Some(v.clone()),
        ContextValue::StyledStrs(v) => Some(v.iter().map(|s| s.to_string()).collect()),
        _ => None,
    }
}

/// Prints what [`explain`] says and returns the exit code.
pub fn report(err: &clap::Error) -> std::process::ExitCode {
    use std::io::Write;
    let failure = explain(err);
    // Nothing more can be said if the terminal is gone.
    let _ = if failure.to_stdout {
        std::io::stdout().write_all(failure.text.as_bytes())
    } else {
        std::io::stderr().write_all(failure.text.as_bytes())
    };
    std::process::ExitCode::from(failure.exit_code)
}
