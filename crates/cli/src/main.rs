//! The `secret` binary: parse, run, map the error to its documented exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = secret_cli::Cli::parse();
    match secret_cli::run(cli, secret_cli::Environment::from_process()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
