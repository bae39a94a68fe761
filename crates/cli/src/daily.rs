//! The daily commands: `import` (a dotenv or JSON file into the vault, all or
//! nothing), `export` (values out as dotenv, JSON or shell), `run` (a command with the
//! values in its environment). Values pass through `Zeroizing` buffers only; errors and
//! warnings name secrets and lines, never values.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use zeroize::Zeroizing;

use crate::{io_error, stdout_result, Context};
use secret_core::dotenv::{self, Quoting};
use secret_core::error::VaultError;
use secret_core::model::{Revealed, SecretName, SecretValue};

/// File formats `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Dotenv,
    Json,
}

/// Formats `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `NAME='value'` lines that python-dotenv and npm `dotenv` read back exactly too.
    Dotenv,
    /// One JSON object, name → value.
    Json,
    /// `export NAME='value'` lines, safe to `eval` in bash and sh.
    Shell,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A dotenv or JSON file; `-` reads stdin.
    pub file: String,
    /// The file's format (default: json for *.json, else dotenv).
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Replace secrets that exist already (each gets a new version).
    #[arg(long)]
    pub overwrite: bool,
    /// Say what would be imported; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value = "dotenv")]
    pub format: ExportFormat,
    /// Only these secrets (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub only: Option<Vec<String>>,
    /// Write to FILE (mode 0600, replaced atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print values to a terminal.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Only these secrets (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub only: Option<Vec<String>>,
    /// Put each secret in the environment as PREFIX + its name.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub prefix: String,
    /// Replace variables the environment already has (default: refuse, naming them).
    #[arg(long = "override")]
    pub override_env: bool,
    /// The command and its arguments, after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// The longest file `import` reads: 10,000 secrets of the largest size, with room.
const MAX_IMPORT_BYTES: u64 = 64 * 1024 * 1024;

fn read_input(file: &str) -> Result<Zeroizing<String>, VaultError> {
    let mut bytes = Zeroizing::new(Vec::new());
    let read = if file == "-" {
        io::stdin()
            .lock()
            .take(MAX_IMPORT_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_IMPORT_BYTES + 1).read_to_end(&mut bytes))
    };
    read.map_err(io_error(&format!("cannot read {file}")))?;
    if bytes.len() as u64 > MAX_IMPORT_BYTES {
        return Err(VaultError::Usage(format!(
            "{file} is larger than {} MiB; split it",
            MAX_IMPORT_BYTES / 1024 / 1024
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        VaultError::Usage(format!(
            "{file} is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    Ok(Zeroizing::new(text.to_string()))
}

/// The bindings of a JSON object of strings, in file order. Errors name the key, never
/// the value (serde_json's syntax errors carry positions only).
fn parse_json(file: &str, text: &str) -> Result<Vec<(SecretName, SecretValue)>, VaultError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        VaultError::Usage(format!(
            "{file}: not JSON: {} at line {} column {}",
            match e.classify() {
                serde_json::error::Category::Eof => "it ends too early",
                _ => "unexpected text",
            },
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(VaultError::Usage(format!(
            "{file}: expected one JSON object of name → string value"
        )));
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, v) in map {
        let name = SecretName::new(&key).map_err(|e| VaultError::Usage(format!("{file}: {e}")))?;
        let serde_json::Value::String(text) = v else {
            return Err(VaultError::Usage(format!(
                "{file}: {name}: expected a string value"
            )));
        };
        let text = Zeroizing::new(text);
        let value = SecretValue::from_bytes(Zeroizing::new(text.as_bytes().to_vec()), false)
            .map_err(|e| VaultError::Usage(format!("{file}: {name}: {e}")))?;
        out.push((name, value));
    }
    Ok(out)
}

pub(crate) fn import(ctx: &Context, args: ImportArgs) -> Result<(), VaultError> {
    ctx.local_only()?;
    let text = read_input(&args.file)?;
    let format = args.format.unwrap_or(if args.file.ends_with(".json") {
        ImportFormat::Json
    } else {
        ImportFormat::Dotenv
    });
    let bindings = match format {
        ImportFormat::Json => parse_json(&args.file, &text)?,
        ImportFormat::Dotenv => dotenv::parse(&text)
            .map_err(|e| VaultError::Usage(format!("{}: {e}; nothing was imported", args.file)))?
            .into_iter()
            .map(|b| (b.name, b.value))
            .collect(),
    };
    drop(text);
    if bindings.is_empty() {
        return Err(VaultError::Usage(format!(
            "{}: no NAME=value lines; nothing to import",
            args.file
        )));
    }
    let mut vault = ctx.open()?;
    if args.dry_run {
        let existing: std::collections::BTreeSet<String> =
            vault.list(true)?.into_iter().map(|m| m.name).collect();
        let mut conflicts = 0;
        for (name, _) in &bindings {
            if existing.contains(name.as_str()) {
                conflicts += 1;
                ctx.say(format!(
                    "would {} {name}",
                    if args.overwrite { "replace" } else { "refuse" }
                ))?;
            } else {
                ctx.say(format!("would add {name}"))?;
            }
        }
        ctx.say(format!(
            "dry run: {} secrets, {conflicts} already in the vault; nothing was written",
            bindings.len()
        ))?;
        if conflicts > 0 && !args.overwrite {
            return Err(VaultError::Conflict(
                "some names are in the vault already: pass --overwrite to replace them".into(),
            ));
        }
        return Ok(());
    }
    let imported = vault.import(&bindings, args.overwrite)?;
    let replaced = imported.iter().filter(|i| i.replaced).count();
    ctx.say(format!(
        "imported {} secrets ({} new, {replaced} replaced)",
        imported.len(),
        imported.len() - replaced
    ))
}

/// POSIX shell single quotes: `'` becomes `'\''`; nothing else is special inside.
fn shell_quote(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 2));
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn names(only: Option<Vec<String>>) -> Result<Option<Vec<SecretName>>, VaultError> {
    only.map(|names| {
        names
            .iter()
            .map(|n| SecretName::new(n).map_err(VaultError::from))
            .collect()
    })
    .transpose()
}

/// The export text and the names python-dotenv or npm `dotenv` would misread.
fn render(format: ExportFormat, values: &[Revealed]) -> (Zeroizing<String>, Vec<String>) {
    let mut out = Zeroizing::new(String::new());
    let mut ours_only = Vec::new();
    match format {
        ExportFormat::Dotenv => {
            for r in values {
                let (line, quoting) = dotenv::format_binding(&r.name, &r.value);
                if quoting == Quoting::OursOnly {
                    ours_only.push(r.name.to_string());
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
        ExportFormat::Shell => {
            for r in values {
                out.push_str("export ");
                out.push_str(r.name.as_str());
                out.push('=');
                out.push_str(&shell_quote(r.value.expose()));
                out.push('\n');
            }
        }
        ExportFormat::Json => {
            out.push('{');
            for (i, r) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Strings serialise infallibly; the fallback is never taken.
                let key = serde_json::to_string(r.name.as_str()).unwrap_or_default();
                let value =
                    Zeroizing::new(serde_json::to_string(r.value.expose()).unwrap_or_default());
                out.push_str(&key);
                out.push(':');
                out.push_str(&value);
            }
            out.push_str("}\n");
        }
    }
    (out, ours_only)
}

pub(crate) fn export(ctx: &Context, args: ExportArgs) -> Result<(), VaultError> {
    if args.output.is_none() && !args.force && io::stdout().is_terminal() {
        return Err(VaultError::Usage(
            "export prints secret values: to show them on this terminal pass --force, or write \
             them to a file with --output FILE"
                .into(),
        ));
    }
    let only = names(args.only)?;
    let values = ctx.backend()?.reveal_current(only.as_deref(), "export")?;
    let (text, ours_only) = render(args.format, &values);
    let count = values.len();
    drop(values);
    for name in &ours_only {
        eprintln!(
            "warning: {name}: python-dotenv and npm dotenv would not read this value back exactly \
             (its quotes, backslashes or ${{...}} have no quoting both keep); it is written in \
             secret's escaped form, which `secret import` reads"
        );
    }
    match &args.output {
        Some(path) => {
            write_private_atomically(path, text.as_bytes())?;
            ctx.say(format!("exported {count} secrets to {}", path.display()))
        }
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            stdout_result(out.write_all(text.as_bytes()).and_then(|_| out.flush()))
        }
    }
}

/// Writes `bytes` to `path` through a temporary file created exclusively (mode 0600,
/// no symlink followed) in the same folder, synced, then renamed over `path`.
fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let what = format!("cannot write {}", path.display());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".secret-")
        .tempfile_in(dir)
        .map_err(io_error(&what))?;
    file.write_all(bytes).map_err(io_error(&what))?;
    file.as_file().sync_all().map_err(io_error(&what))?;
    file.persist(path)
        .map_err(|e| VaultError::Io(format!("{what}: {}", e.error)))?;
    Ok(())
}

/// `secret run`: the values go into CMD's environment and CMD replaces this process,
/// so its exit code is ours. The reads are audited before the exec.
pub(crate) fn run(ctx: &Context, args: RunArgs) -> Result<(), VaultError> {
    // A command word that starts with `-` is an option `run` does not know, typed where
    // the command goes; it may be a value, so it is refused without being repeated, and
    // before anything is read.
    if args
        .command
        .first()
        .is_some_and(|p| p.as_encoded_bytes().starts_with(b"-"))
    {
        return Err(VaultError::Usage(
            "run does not know the option given before the command (`secret run --help` \
             lists them); put the command after `--`"
                .into(),
        ));
    }
    let only = names(args.only)?;
    let mut shadowed = Vec::new();
    let mut backend = ctx.backend()?;
    let values = backend.reveal_current(only.as_deref(), "run")?;
    drop(backend);
    let mut vars: Vec<(String, &SecretValue)> = Vec::with_capacity(values.len());
    for r in &values {
        let var = format!("{}{}", args.prefix, r.name);
        if !args.override_env && ctx.env.inherited_has(&var) {
            shadowed.push(var.clone());
        }
        vars.push((var, &r.value));
    }
    if !shadowed.is_empty() {
        return Err(VaultError::Usage(format!(
            "the environment already has {}: pass --override to replace them, --prefix to rename \
             ours, or --only to leave them out",
            shadowed.join(", ")
        )));
    }
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| VaultError::Usage("run needs a command after --".into()))?;
    let mut command = std::process::Command::new(program);
    command.args(rest);
    for (var, value) in &vars {
        command.env(var, value.expose());
    }
    // Only returns on failure.
    let err = std::os::unix::process::CommandExt::exec(&mut command);
    let code = if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Err(VaultError::Exec {
        code,
        message: format!("cannot run {}: {err}", program.to_string_lossy()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_every_quote() {
        assert_eq!(shell_quote("it's").as_str(), "'it'\\''s'");
        assert_eq!(shell_quote("$HOME `x` \"y\"").as_str(), "'$HOME `x` \"y\"'");
    }

    #[test]
    fn json_imports_refuse_non_strings_without_echoing_them() {
        let err = parse_json("f.json", r#"{"A": 12345678}"#).unwrap_err();
        assert!(err.to_string().contains("A: expected a string"), "{err}");
        assert!(!err.to_string().contains("12345678"));
        let err = parse_json("f.json", r#"{"A": "sk-secret-1""#).unwrap_err();
        assert!(!err.to_string().contains("sk-secret-1"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
