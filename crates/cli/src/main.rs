//! The `secret` binary: parse, run, map the error to its documented exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match secret_cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Rendered without repeating what was typed (it may be a value).
        Err(err) => return secret_cli::usage::report(&err),
    };
    match secret_cli::run(cli, secret_cli::Environment::from_process()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
