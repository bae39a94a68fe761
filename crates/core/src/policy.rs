//! Policies: parses and validates `policies/*.toml` into typed, immutable values —
//! which targets exist ([`TargetPolicy`]), how each secret is minted ([`Generator`]), when
//! it rotates ([`Schedule`]), how long the old value lives (`grace`) and where new values go
//! (`push`). It owns the policy file format and every rule about it, and reports every
//! problem at once, each naming the file, the table and the key ([`PolicyProblem`]).
//!
//! This module reads files and nothing else: it must not import `store`, `crypto`, `vault`
//! or any HTTP client, and it never reads the clock — callers pass the time in
//! ([`Schedule::next_due`]). Policies hold names and ids, never secret values; whether a
//! referenced vault secret exists is the caller's check ([`PolicySet::credential_refs`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use toml::{Table, Value};

use crate::model::SecretName;

/// Railway's public GraphQL endpoint, used when a target sets no `endpoint`.
pub const RAILWAY_ENDPOINT: &str = "https://backboard.railway.com/graphql/v2";
/// OpenAI's API base, used when `[secrets.NAME.openai]` sets no `base_url`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// LaunchDarkly's API base, used when `[secrets.NAME.launchdarkly]` sets no `base_url`.
pub const LAUNCHDARKLY_BASE_URL: &str = "https://app.launchdarkly.com";
/// How long a Railway deploy may take to reach SUCCESS when `deploy_timeout` is not set.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Length of a `random` secret when `length` is not set.
pub const DEFAULT_RANDOM_LENGTH: usize = 32;
/// Longest `random` secret: the vault's value limit (64 KiB).
pub const MAX_RANDOM_LENGTH: usize = 65_536;

// ---------------------------------------------------------------------------------------
// Problems and reports
// ---------------------------------------------------------------------------------------

/// One problem found in the policies: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The policy file (or the directory, for problems with the directory itself).
    pub file: PathBuf,
    /// The TOML table, e.g. `secrets.OPENAI_API_KEY.openai`; empty for the file's top level.
    pub table: String,
    /// The key inside the table, when the problem is about one key.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    /// `FILE: [TABLE] KEY: MESSAGE`; the table and key are left out when there is none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.table.is_empty() || self.key.is_some() {
            f.write_str(":")?;
        }
        if !self.table.is_empty() {
            write!(f, " [{}]", self.table)?;
        }
        if let Some(key) = &self.key {
            write!(f, " {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why policies were refused: every error (never empty) and every warning, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    pub errors: Vec<PolicyProblem>,
    pub warnings: Vec<PolicyProblem>,
}

impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{n} policy error{}", if n == 1 { "" } else { "s" })?;
        for error in &self.errors {
            write!(f, "\n  error: {error}")?;
        }
        for warning in &self.warnings {
            write!(f, "\n  warning: {warning}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyReport {}

/// A place where a policy names a vault secret that holds a credential (a Railway
/// `token`, an OpenAI `admin_key`, a LaunchDarkly `access_token`). The caller checks that
/// the secret exists in the vault and reports a missing one with [`CredentialRef::problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    /// The referenced vault secret's name.
    pub secret: String,
    pub file: PathBuf,
    pub table: String,
    pub key: String,
}

impl CredentialRef {
    /// A problem located at this reference, e.g. "no such secret in the vault".
    pub fn problem(&self, message: impl Into<String>) -> PolicyProblem {
        PolicyProblem {
            file: self.file.clone(),
            table: self.table.clone(),
            key: Some(self.key.clone()),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The parsed policies
// ---------------------------------------------------------------------------------------

/// Every target and secret policy from one policy directory, validated together.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub targets: BTreeMap<String, TargetPolicy>,
    pub secrets: BTreeMap<String, SecretPolicy>,
    /// Things that are allowed but deserve a look (e.g. a key with no overlap period).
    pub warnings: Vec<PolicyProblem>,
}

impl PolicySet {
    /// True when the directory defined no targets and no secrets.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.secrets.is_empty()
    }

    /// Every vault secret the policies use as a credential, with its exact location.
    pub fn credential_refs(&self) -> Vec<CredentialRef> {
        let mut refs = Vec::new();
        for (name, target) in &self.targets {
            if let TargetPolicy::Railway(railway) = target {
                refs.push(CredentialRef {
                    secret: railway.token.as_str().to_string(),
                    file: railway.file.clone(),
                    table: table_path(&["targets", name]),
                    key: "token".to_string(),
                });
            }
        }
        for (name, secret) in &self.secrets {
            let (sub, key, credential) = match &secret.generator {
                Generator::OpenAi(s) => ("openai", "admin_key", &s.admin_key),
                Generator::LaunchDarklySdk(s) | Generator::LaunchDarklyMobile(s) => {
                    ("launchdarkly", "access_token", &s.access_token)
                }
                _ => continue,
            };
            refs.push(CredentialRef {
                secret: credential.as_str().to_string(),
                file: secret.file.clone(),
                table: table_path(&["secrets", name, sub]),
                key: key.to_string(),
            });
        }
        refs
    }
}

/// Where rotated values are delivered (`[targets.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    Railway(RailwayTarget),
    Dotenv(DotenvTarget),
}

impl TargetPolicy {
    /// The policy file that defines this target.
    pub fn file(&self) -> &Path {
        match self {
            TargetPolicy::Railway(t) => &t.file,
            TargetPolicy::Dotenv(t) => &t.file,
        }
    }

    /// The `kind` as written in the policy.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetPolicy::Railway(_) => "railway",
            TargetPolicy::Dotenv(_) => "dotenv",
        }
    }
}

/// `kind = "railway"`: one service's variables in one environment of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RailwayTarget {
    pub name: String,
    pub file: PathBuf,
    pub project_id: String,
    pub environment_id: String,
    pub service_id: String,
    /// The vault secret holding the Railway API token.
    pub token: SecretName,
    pub token_kind: RailwayTokenKind,
    /// Deploy the service once after its variables change (default true).
    pub redeploy: bool,
    /// Must answer 2xx after the deploy, when set.
    pub health_url: Option<String>,
    /// GraphQL endpoint (default [`RAILWAY_ENDPOINT`]; tests point it at a stand-in).
    pub endpoint: String,
    /// How long a deploy may take to reach SUCCESS (default [`DEFAULT_DEPLOY_TIMEOUT`]).
    pub deploy_timeout: Duration,
}

/// How the Railway token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RailwayTokenKind {
    /// A project token: `Project-Access-Token: <token>` (the default).
    Project,
    /// An account, workspace or OAuth token: `Authorization: Bearer <token>`.
    Account,
}

/// `kind = "dotenv"`: a `.env` file on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvTarget {
    pub name: String,
    pub file: PathBuf,
    /// As written, or — when relative — joined to the directory of the policy file.
    pub path: PathBuf,
}

/// How and when one secret (`[secrets.NAME]`) is minted, rotated and delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPolicy {
    pub name: SecretName,
    /// The policy file that defines this secret.
    pub file: PathBuf,
    pub generator: Generator,
    /// When it rotates: `None` exactly for `manual` secrets, which are never rotated here.
    pub schedule: Option<Schedule>,
    /// How long the previous value stays valid after a rotation (default 0).
    pub grace: Duration,
    /// Target names the new value is pushed to (each exists in [`PolicySet::targets`]).
    pub push: Vec<String>,
    /// During grace, the previous value is also pushed under this name.
    pub previous_as: Option<SecretName>,
    /// A current version older than this is overdue (required for `manual`).
    pub max_age: Option<Duration>,
    /// Keep at most this many versions; older unlabelled ones are pruned.
    pub max_versions: Option<u32>,
    pub description: Option<String>,
}

/// How a secret's new value is minted, with that generator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generator {
    /// Random characters from `charset`.
    Random { length: usize, charset: Charset },
    /// A random HMAC key for signing JWTs.
    JwtHmac { algorithm: HmacAlgorithm },
    /// An Ed25519 key pair for signing JWTs (algorithm EdDSA).
    JwtEd25519,
    /// A new OpenAI project service account and its key.
    OpenAi(OpenAiSettings),
    /// A LaunchDarkly SDK key reset; the old key expires after `grace`.
    LaunchDarklySdk(LaunchDarklySettings),
    /// A LaunchDarkly mobile key reset; the old key dies at once (no expiry exists).
    LaunchDarklyMobile(LaunchDarklySettings),
    /// Set by a person; only flagged overdue past `max_age`.
    Manual,
}

impl Generator {
    /// The `generator` value as written in the policy.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    fn kind(&self) -> GeneratorKind {
        match self {
            Generator::Random { .. } => GeneratorKind::Random,
            Generator::JwtHmac { .. } => GeneratorKind::JwtHmac,
            Generator::JwtEd25519 => GeneratorKind::JwtEd25519,
            Generator::OpenAi(_) => GeneratorKind::OpenAi,
            Generator::LaunchDarklySdk(_) => GeneratorKind::LaunchDarklySdk,
            Generator::LaunchDarklyMobile(_) => GeneratorKind::LaunchDarklyMobile,
            Generator::Manual => GeneratorKind::Manual,
        }
    }
}

/// Characters a `random` secret is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `A-Z a-z 0-9` (the default).
    Alnum,
    /// `0-9 a-f`.
    Hex,
    /// `A-Z a-z 0-9 - _`.
    Base64Url,
}

impl Charset {
    const ALL: [(&'static str, Charset); 3] = [
        ("alnum", Charset::Alnum),
        ("hex", Charset::Hex),
        ("base64url", Charset::Base64Url),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Charset::Alnum => "alnum",
            Charset::Hex => "hex",
            Charset::Base64Url => "base64url",
        }
    }

    fn bits_per_char(self) -> f64 {
        match self {
            Charset::Alnum => 62f64.log2(),
            Charset::Hex => 4.0,
            Charset::Base64Url => 6.0,
        }
    }
}

/// The HMAC algorithm of a `jwt-hmac` secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl HmacAlgorithm {
    const ALL: [(&'static str, HmacAlgorithm); 3] = [
        ("HS256", HmacAlgorithm::Hs256),
        ("HS384", HmacAlgorithm::Hs384),
        ("HS512", HmacAlgorithm::Hs512),
    ];

    /// The JWT `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            HmacAlgorithm::Hs256 => "HS256",
            HmacAlgorithm::Hs384 => "HS384",
            HmacAlgorithm::Hs512 => "HS512",
        }
    }

    /// Random key bytes to mint: the hash's output size (RFC 7518 §3.2 minimum).
    pub fn key_bytes(self) -> usize {
        match self {
            HmacAlgorithm::Hs256 => 32,
            HmacAlgorithm::Hs384 => 48,
            HmacAlgorithm::Hs512 => 64,
        }
    }
}

/// `[secrets.NAME.openai]`: where new service accounts are made, and with which admin key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiSettings {
    pub project_id: String,
    /// The vault secret holding the OpenAI admin key.
    pub admin_key: SecretName,
    /// API base without a trailing slash (default [`OPENAI_BASE_URL`]).
    pub base_url: String,
}

/// `[secrets.NAME.launchdarkly]`: which environment's key is reset, and with which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDarklySettings {
    pub project_key: String,
    pub environment_key: String,
    /// The vault secret holding the LaunchDarkly API access token.
    pub access_token: SecretName,
    /// API base without a trailing slash (default [`LAUNCHDARKLY_BASE_URL`]).
    pub base_url: String,
}

// ---------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------

/// When a secret is due: a fixed period after the last rotation, or the next cron firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `every = "30d"`.
    Every(Duration),
    /// `cron = "0 3 1 * *"`, in UTC. `expr` is as written; `schedule` is its translation for
    /// the `cron` crate (seconds first, days of week as names).
    Cron {
        expr: String,
        schedule: Box<cron::Schedule>,
    },
}

impl Schedule {
    /// Parses a crontab expression, evaluated in UTC:
    /// - 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds first;
    ///   `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` (`@annually`) too.
    /// - Day of week follows crontab, not the `cron` crate: `0` and `7` are Sunday, `1` is
    ///   Monday … `6` Saturday, or names (`MON-FRI`). (The crate itself counts 1 = Sunday,
    ///   so numbers are translated to names before it sees them.)
    /// - Restricting both day-of-month and day-of-week is refused: crontab fires when
    ///   EITHER matches, the `cron` crate only when BOTH do, so such a line is ambiguous.
    pub fn cron(expr: &str) -> Result<Schedule, String> {
        let translated = translate_crontab(expr)?;
        let schedule = cron::Schedule::from_str(&translated)
            .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
        Ok(Schedule::Cron {
            expr: expr.trim().to_string(),
            schedule: Box::new(schedule),
        })
    }

    /// When a secret last rotated at `last_rotation` is next due: `last + every`, or the
    /// first cron firing strictly after it. `None` if there is none (past year 2100, or an
    /// overflow).
    pub fn next_due(&self, last_rotation: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let period = chrono::Duration::from_std(*period).ok()?;
                last_rotation.checked_add_signed(period)
            }
            Schedule::Cron { schedule, .. } => schedule.after(&last_rotation).next(),
        }
    }

    /// A short human description: `every 7days`, `cron "0 3 1 * *" (UTC)`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(period) => format!("every {}", humantime::format_duration(*period)),
            Schedule::Cron { expr, .. } => format!("cron {expr:?} (UTC)"),
        }
    }

    /// The shortest time between two rotations. For cron: the smallest gap among the
    /// first firings after a fixed date (enough to cover month-length and leap-year effects
    /// for any 5/6-field line). `None` if the schedule fires at most once.
    fn shortest_gap(&self) -> Option<Duration> {
        const FIRINGS: usize = 1_000;
        match self {
            Schedule::Every(period) => Some(*period),
            Schedule::Cron { schedule, .. } => {
                let anchor = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single()?;
                let mut previous: Option<DateTime<Utc>> = None;
                let mut shortest: Option<chrono::Duration> = None;
                for firing in schedule.after(&anchor).take(FIRINGS) {
                    if let Some(previous) = previous {
                        let gap = firing - previous;
                        shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
                    }
                    previous = Some(firing);
                }
                shortest.and_then(|s| s.to_std().ok())
            }
        }
    }
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Turns a crontab line into the `cron` crate's 6-field form (see [`Schedule::cron`]).
fn translate_crontab(expr: &str) -> Result<String, String> {
    let expr = expr.trim();
    if expr.starts_with('@') {
        let fields = match expr.to_ascii_lowercase().as_str() {
            "@hourly" => "0 0 * * * *",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@weekly" => "0 0 0 * * Sun",
            "@monthly" => "0 0 0 1 * *",
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            _ => {
                return Err(format!(
                    "unknown cron shorthand {expr:?}; use @hourly, @daily, @weekly, \
                     @monthly or @yearly"
                ))
            }
        };
        return Ok(fields.to_string());
    }
    let mut fields: Vec<&str> = expr.split_whitespace().collect();
    match fields.len() {
        5 => fields.insert(0, "0"),
        6 => {}
        n => {
            return Err(format!(
                "cron expression {expr:?} has {n} fields; write 5 (minute hour day-of-month \
                 month day-of-week, e.g. \"0 3 1 * *\") or 6 with seconds first"
            ))
        }
    }
    let unrestricted = |field: &str| field.starts_with('*') || field == "?";
    let (day_of_month, day_of_week) = (fields[3], fields[5]);
    if !unrestricted(day_of_month) && !unrestricted(day_of_week) {
        return Err(format!(
            "cron expression {expr:?} restricts both day-of-month ({day_of_month}) and \
             day-of-week ({day_of_week}): crontab fires when EITHER matches but this \
             scheduler only when BOTH do; restrict one and write * for the other"
        ));
    }
    let day_of_week = translate_day_of_week(day_of_week)?;
    let mut out: Vec<String> = fields[..5].iter().map(|f| f.to_string()).collect();
    out.push(day_of_week);
    Ok(out.join(" "))
}

/// Crontab day-of-week (0/7 = Sunday, 1 = Monday, names, ranges, steps) → a list of names.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step = step
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| {
                        format!("day-of-week step {step:?} in {field:?} is not a whole number ≥ 1")
                    })?;
                (base, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if base == "*" {
            (0, 7)
        } else if let Some((a, b)) = base.split_once('-') {
            let start = day_of_week_value(a)?;
            let mut end = day_of_week_value(b)?;
            if end == 0 && start > 0 {
                end = 7; // FRI-SUN
            }
            if start > end {
                return Err(format!(
                    "day-of-week range {base:?} runs backwards; write it as a list"
                ));
            }
            (start, end)
        } else {
            let start = day_of_week_value(base)?;
            (start, if step.is_some() { 7 } else { start })
        };
        let step = step.unwrap_or(1);
        let mut day = start;
        while day <= end {
            days[(day % 7) as usize] = true;
            day += step;
        }
    }
    let names: Vec<&str> = DAY_NAMES
        .iter()
        .zip(days)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect();
    Ok(names.join(","))
}

fn day_of_week_value(raw: &str) -> Result<u32, String> {
    if let Ok(n) = raw.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!(
                "day-of-week {n} is out of range: 0-7 (0 and 7 are Sunday, 1 is Monday)"
            ))
        };
    }
    let day = match raw.to_ascii_lowercase().as_str() {
        "sun" | "sunday" => 0,
        "mon" | "monday" => 1,
        "tue" | "tues" | "tuesday" => 2,
        "wed" | "wednesday" => 3,
        "thu" | "thur" | "thurs" | "thursday" => 4,
        "fri" | "friday" => 5,
        "sat" | "saturday" => 6,
        _ => {
            return Err(format!(
                "{raw:?} is not a day of the week: use 0-7 (0 and 7 are Sunday) or SUN..SAT"
            ))
        }
    };
    Ok(day)
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Loads and validates every `*.toml` file directly in `dir` (sorted by name; files whose
/// name starts with `.` are skipped) as one policy set. A missing directory is an error; an
/// empty one gives an empty set. On `Err`, the report lists every problem found.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyReport> {
    let dir_problem = |message: String| PolicyReport {
        errors: vec![PolicyProblem {
            file: dir.to_path_buf(),
            table: String::new(),
            key: None,
            message,
        }],
        warnings: Vec::new(),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(dir_problem(
                "policy directory does not exist (set --policies or SECRET_POLICIES)".into(),
            ))
        }
        Err(e) => return Err(dir_problem(format!("cannot read policy directory: {e}"))),
        Ok(meta) if !meta.is_dir() => {
            return Err(dir_problem(
                "is not a directory: policies are read from a directory of *.toml files".into(),
            ))
        }
        Ok(_) => {}
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| dir_problem(format!("cannot list policy directory: {e}")))?;

    let mut findings = Findings::default();
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let is_toml = path.extension().is_some_and(|ext| ext == "toml");
                // Follows symlinks, so a linked policy file counts.
                if is_toml && !name.starts_with('.') && path.is_file() {
                    paths.push(path);
                }
            }
            Err(e) => findings.errors.push(PolicyProblem {
                file: dir.to_path_buf(),
                table: String::new(),
                key: None,
                message: format!("cannot list policy directory: {e}"),
            }),
        }
    }
    paths.sort();

    let mut sources = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => findings.errors.push(PolicyProblem {
                file: path,
                table: String::new(),
                key: None,
                message: format!("cannot read policy file: {e}"),
            }),
        }
    }
    validate_sources(&sources, findings)
}

/// Parses one policy file's text on its own; `file` is only used to label problems (and
/// to resolve relative dotenv paths). Meant for tests and `secret policy check FILE`.
pub fn parse_str(file: &Path, text: &str) -> Result<PolicySet, PolicyReport> {
    validate_sources(
        &[(file.to_path_buf(), text.to_string())],
        Findings::default(),
    )
}

#[derive(Default)]
struct Findings {
    errors: Vec<PolicyProblem>,
    warnings: Vec<PolicyProblem>,
}

/// What cross-file checks need to know about a secret, even one that failed to parse.
struct SecretRefs {
    name: String,
    file: PathBuf,
    push: Vec<String>,
    previous_as: Option<String>,
}

fn validate_sources(
    sources: &[(PathBuf, String)],
    mut findings: Findings,
) -> Result<PolicySet, PolicyReport> {
    let mut set = PolicySet::default();
    // Every name seen, valid or not, so duplicates and references are checked once each.
    let mut target_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut secret_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut secret_refs: Vec<SecretRefs> = Vec::new();

    for (file, text) in sources {
        let root = match text.parse::<Table>() {
            Ok(root) => root,
            Err(e) => {
                findings.errors.push(syntax_problem(file, text, &e));
                continue;
            }
        };
        let reader = TableReader {
            file,
            path: String::new(),
            table: &root,
        };
        reader.check_keys(&mut findings, &["targets", "secrets"]);

        if let Some(targets) = reader.sub_table(&mut findings, "targets") {
            for (name, value) in targets.table {
                if let Some(first) = target_files.get(name) {
                    findings.errors.push(problem(
                        file,
                        &table_path(&["targets", name]),
                        None,
                        format!("target {name:?} is already defined in {}", first.display()),
                    ));
                    continue;
                }
                target_files.insert(name.clone(), file.clone());
                if let Some(target) = parse_target(file, name, value, &mut findings) {
                    set.targets.insert(name.clone(), target);
                }
            }
        }
        if let Some(secrets) = reader.sub_table(&mut findings, "secrets") {
            for (name, value) in secrets.table {
                if let Some(first) = secret_files.get(name) {
                    findings.errors.push(problem(
                        file,
                        &table_path(&["secrets", name]),
                        None,
                        format!("secret {name:?} is already defined in {}", first.display()),
                    ));
                    continue;
                }
                secret_files.insert(name.clone(), file.clone());
                let (secret, refs) = parse_secret(file, name, value, &mut findings);
                if let Some(secret) = secret {
                    set.secrets.insert(name.clone(), secret);
                }
                secret_refs.extend(refs);
            }
        }
    }

    cross_check(&target_files, &secret_files, &secret_refs, &mut findings);

    if findings.errors.is_empty() {
        set.warnings = findings.warnings;
        Ok(set)
    } else {
        Err(PolicyReport {
            errors: findings.errors,
            warnings: findings.warnings,
        })
    }
}

/// Checks that span tables: push targets exist, `previous_as` names are unique.
fn cross_check(
    target_files: &BTreeMap<String, PathBuf>,
    secret_files: &BTreeMap<String, PathBuf>,
    secrets: &[SecretRefs],
    findings: &mut Findings,
) {
    let target_names: Vec<&str> = target_files.keys().map(String::as_str).collect();
    let mut previous_names: BTreeMap<&str, &str> = BTreeMap::new();
    for secret in secrets {
        let table = table_path(&["secrets", &secret.name]);
        for target in &secret.push {
            if !target_files.contains_key(target) {
                let known = if target_names.is_empty() {
                    "no targets are defined".to_string()
                } else {
                    format!("defined targets: {}", target_names.join(", "))
                };
                findings.errors.push(problem(
                    &secret.file,
                    &table,
                    Some("push"),
                    format!(
                        "no target named {target:?}{} ({known})",
                        did_you_mean(target, &target_names)
                    ),
                ));
            }
        }
        if let Some(previous) = secret.previous_as.as_deref() {
            if previous == secret.name {
                continue; // reported where the secret was parsed
            }
            if let Some(other_file) = secret_files.get(previous) {
                findings.errors.push(problem(
                    &secret.file,
                    &table,
                    Some("previous_as"),
                    format!(
                        "{previous:?} is the name of a secret defined in {}; the previous \
                         value would overwrite it in the targets",
                        other_file.display()
                    ),
                ));
            }
            if let Some(owner) = previous_names.insert(previous, &secret.name) {
                findings.errors.push(problem(
                    &secret.file,
                    &table,
                    Some("previous_as"),
                    format!("{previous:?} is also the previous_as of secret {owner:?}"),
                ));
            }
        }
    }
}

fn syntax_problem(file: &Path, text: &str, error: &toml::de::Error) -> PolicyProblem {
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let message = match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit_once('\n')
                .map_or(before, |(_, last)| last)
                .chars()
                .count()
                + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    };
    problem(file, "", None, message)
}

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

const RAILWAY_KEYS: &[&str] = &[
    "kind",
    "project_id",
    "environment_id",
    "service_id",
    "token",
    "token_kind",
    "redeploy",
    "health_url",
    "endpoint",
    "deploy_timeout",
];
const DOTENV_KEYS: &[&str] = &["kind", "path"];

fn parse_target(
    file: &Path,
    name: &str,
    value: &Value,
    findings: &mut Findings,
) -> Option<TargetPolicy> {
    let Some(table) = value.as_table() else {
        findings.errors.push(problem(
            file,
            "targets",
            Some(name),
            format!(
                "expected a table [targets.{name}], found {}",
                value.type_str()
            ),
        ));
        return None;
    };
    let r = TableReader {
        file,
        path: table_path(&["targets", name]),
        table,
    };
    let name_ok = is_target_name(name);
    if !name_ok {
        r.error(
            findings,
            None,
            "invalid target name: use letters, digits, '-' and '_'",
        );
    }
    let kind = r.string(findings, "kind");
    let target = match kind {
        Some("railway") => {
            r.check_keys(findings, RAILWAY_KEYS);
            parse_railway(&r, name, findings).map(TargetPolicy::Railway)
        }
        Some("dotenv") => {
            r.check_keys(findings, DOTENV_KEYS);
            parse_dotenv(&r, name, findings).map(TargetPolicy::Dotenv)
        }
        Some(other) => {
            r.error(
                findings,
                Some("kind"),
                format!(
                    "unknown target kind {other:?}{}; kinds are railway and dotenv",
                    did_you_mean(other, &["railway", "dotenv"])
                ),
            );
            None
        }
        None => {
            if !r.has("kind") {
                r.error(
                    findings,
                    Some("kind"),
                    "missing: every target needs kind = \"railway\" or \"dotenv\"",
                );
            }
            let all: Vec<&str> = RAILWAY_KEYS.iter().chain(DOTENV_KEYS).copied().collect();
            r.check_keys(findings, &all);
            None
        }
    };
    target.filter(|_| name_ok)
}

fn parse_railway(r: &TableReader<'_>, name: &str, f: &mut Findings) -> Option<RailwayTarget> {
    let project_id = r.required_id(f, "project_id");
    let environment_id = r.required_id(f, "environment_id");
    let service_id = r.required_id(f, "service_id");
    let token = r.secret_ref(f, "token");
    let token_kind = match r.string(f, "token_kind") {
        None | Some("project") => Some(RailwayTokenKind::Project),
        Some("account") => Some(RailwayTokenKind::Account),
        Some(other) => {
            r.error(
                f,
                Some("token_kind"),
                format!(
                    "unknown token kind {other:?}{}; use \"project\" (a project token, sent \
                     as Project-Access-Token) or \"account\" (an account, workspace or OAuth \
                     token, sent as Bearer)",
                    did_you_mean(other, &["project", "account"])
                ),
            );
            None
        }
    };
    let redeploy = r.boolean(f, "redeploy").unwrap_or(true);
    let health_url = r.url(f, "health_url", false);
    let endpoint = r
        .url(f, "endpoint", true)
        .unwrap_or_else(|| RAILWAY_ENDPOINT.to_string());
    let deploy_timeout = r
        .positive_duration(f, "deploy_timeout")
        .unwrap_or(DEFAULT_DEPLOY_TIMEOUT);
    Some(RailwayTarget {
        name: name.to_string(),
        file: r.file.to_path_buf(),
        project_id: project_id?,
        environment_id: environment_id?,
        service_id: service_id?,
        token: token?,
        token_kind: token_kind?,
        redeploy,
        health_url,
        endpoint,
        deploy_timeout,
    })
}

fn parse_dotenv(r: &TableReader<'_>, name: &str, f: &mut Findings) -> Option<DotenvTarget> {
    let raw = r.required_string(f, "path", "the .env file to write")?;
    if raw.starts_with('~') {
        r.error(
            f,
            Some("path"),
            "~ is not expanded here; write the full path",
        );
        return None;
    }
    let path = Path::new(raw);
    let path = match r.file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    };
    Some(DotenvTarget {
        name: name.to_string(),
        file: r.file.to_path_buf(),
        path,
    })
}

fn is_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GeneratorKind {
    Random,
    JwtHmac,
    JwtEd25519,
    OpenAi,
    LaunchDarklySdk,
    LaunchDarklyMobile,
    Manual,
}

impl GeneratorKind {
    const ALL: [GeneratorKind; 7] = [
        GeneratorKind::Random,
        GeneratorKind::JwtHmac,
        GeneratorKind::JwtEd25519,
        GeneratorKind::OpenAi,
        GeneratorKind::LaunchDarklySdk,
        GeneratorKind::LaunchDarklyMobile,
        GeneratorKind::Manual,
    ];

    fn as_str(self) -> &'static str {
        match self {
            GeneratorKind::Random => "random",
            GeneratorKind::JwtHmac => "jwt-hmac",
            GeneratorKind::JwtEd25519 => "jwt-ed25519",
            GeneratorKind::OpenAi => "openai",
            GeneratorKind::LaunchDarklySdk => "launchdarkly-sdk",
            GeneratorKind::LaunchDarklyMobile => "launchdarkly-mobile",
            GeneratorKind::Manual => "manual",
        }
    }

    fn parse(raw: &str) -> Option<GeneratorKind> {
        GeneratorKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

const COMMON_SECRET_KEYS: &[&str] = &[
    "generator",
    "every",
    "cron",
    "grace",
    "push",
    "previous_as",
    "max_age",
    "max_versions",
    "description",
];

/// Keys that belong to some generators only, and which ones.
const GENERATOR_KEYS: &[(&str, &[GeneratorKind])] = &[
    ("length", &[GeneratorKind::Random]),
    ("charset", &[GeneratorKind::Random]),
    (
        "algorithm",
        &[GeneratorKind::JwtHmac, GeneratorKind::JwtEd25519],
    ),
    ("openai", &[GeneratorKind::OpenAi]),
    (
        "launchdarkly",
        &[
            GeneratorKind::LaunchDarklySdk,
            GeneratorKind::LaunchDarklyMobile,
        ],
    ),
];

/// Keys a `manual` secret must not have: it is never rotated here.
const ROTATION_KEYS: &[&str] = &["every", "cron", "grace", "push", "previous_as"];

fn parse_secret(
    file: &Path,
    name: &str,
    value: &Value,
    f: &mut Findings,
) -> (Option<SecretPolicy>, Option<SecretRefs>) {
    let Some(table) = value.as_table() else {
        f.errors.push(problem(
            file,
            "secrets",
            Some(name),
            format!(
                "expected a table [secrets.{name}], found {}",
                value.type_str()
            ),
        ));
        return (None, None);
    };
    let r = TableReader {
        file,
        path: table_path(&["secrets", name]),
        table,
    };
    let secret_name = match SecretName::new(name) {
        Ok(n) => Some(n),
        Err(e) => {
            r.error(f, None, e.to_string());
            None
        }
    };
    let known: Vec<&str> = COMMON_SECRET_KEYS
        .iter()
        .copied()
        .chain(GENERATOR_KEYS.iter().map(|(key, _)| *key))
        .collect();
    r.check_keys(f, &known);

    let kind = match r.string(f, "generator") {
        Some(raw) => {
            let kind = GeneratorKind::parse(raw);
            if kind.is_none() {
                let names: Vec<&str> = GeneratorKind::ALL.iter().map(|k| k.as_str()).collect();
                r.error(
                    f,
                    Some("generator"),
                    format!(
                        "unknown generator {raw:?}{}; generators are {}",
                        did_you_mean(raw, &names),
                        names.join(", ")
                    ),
                );
            }
            kind
        }
        None => {
            if !r.has("generator") {
                r.error(
                    f,
                    Some("generator"),
                    "missing: say how the value is minted (random, jwt-hmac, jwt-ed25519, \
                     openai, launchdarkly-sdk, launchdarkly-mobile or manual)",
                );
            }
            None
        }
    };

    if let Some(kind) = kind {
        for (key, applies_to) in GENERATOR_KEYS {
            if r.has(key) && !applies_to.contains(&kind) {
                let owners: Vec<&str> = applies_to.iter().map(|k| k.as_str()).collect();
                r.error(
                    f,
                    Some(key),
                    format!(
                        "only applies to generator {}; this secret's generator is {:?}",
                        owners.join(" or "),
                        kind.as_str()
                    ),
                );
            }
        }
    }
    let generator = kind.and_then(|kind| parse_generator(&r, name, kind, f));

    // Rotation settings.
    let manual = kind == Some(GeneratorKind::Manual);
    if manual {
        for key in ROTATION_KEYS {
            if r.has(key) {
                r.error(
                    f,
                    Some(key),
                    "manual secrets are not rotated or pushed by this service; remove it \
                     (max_age says when the secret is overdue)",
                );
            }
        }
    }
    let every = r.positive_duration(f, "every");
    let cron = r
        .string(f, "cron")
        .and_then(|expr| match Schedule::cron(expr) {
            Ok(schedule) => Some(schedule),
            Err(message) => {
                r.error(f, Some("cron"), message);
                None
            }
        });
    let schedule = match (every, cron) {
        (Some(every), None) => Some(Schedule::Every(every)),
        (None, Some(cron)) => Some(cron),
        _ => None,
    };
    if !manual && kind.is_some() {
        match (r.has("every"), r.has("cron")) {
            (true, true) => r.error(f, Some("cron"), "both every and cron are set; keep one"),
            (false, false) => r.error(
                f,
                Some("every"),
                "missing: set every (e.g. \"30d\") or cron (e.g. \"0 3 1 * *\", UTC)",
            ),
            _ => {}
        }
    }
    if let Some(Schedule::Cron { expr, .. }) = &schedule {
        if schedule.as_ref().and_then(Schedule::shortest_gap).is_none() {
            r.error(
                f,
                Some("cron"),
                format!("cron expression {expr:?} never fires more than once"),
            );
        }
    }

    let grace = r.duration(f, "grace").unwrap_or(Duration::ZERO);
    let rotating = schedule.as_ref().filter(|_| !manual);
    if let Some(period) = rotating.and_then(Schedule::shortest_gap) {
        if grace > period {
            let period = humantime::format_duration(period);
            let what = match &schedule {
                Some(Schedule::Cron { expr, .. }) => {
                    format!("the shortest gap between firings of cron {expr:?} ({period})")
                }
                _ => format!("the rotation period (every = {period})"),
            };
            r.error(
                f,
                Some("grace"),
                format!(
                    "grace ({}) is longer than {what}: the old value would still be in its \
                     grace period when the next rotation starts",
                    humantime::format_duration(grace),
                ),
            );
        }
    }
    match kind {
        Some(GeneratorKind::LaunchDarklyMobile) => r.warn(
            f,
            Some(if r.has("grace") { "grace" } else { "generator" }),
            "LaunchDarkly mobile keys have no expiry: the old key stops working the moment \
             the new one is minted, whatever grace says; apps holding it fail until they \
             get the new one",
        ),
        Some(
            GeneratorKind::OpenAi
            | GeneratorKind::LaunchDarklySdk
            | GeneratorKind::JwtHmac
            | GeneratorKind::JwtEd25519,
        ) if grace.is_zero() && schedule.is_some() => r.warn(
            f,
            Some("grace"),
            "grace is 0: the old value is revoked as soon as the new one is live, so \
             anything still holding it fails until it reloads",
        ),
        _ => {}
    }

    let push = r.string_list(f, "push");
    let previous_as_raw = r.string(f, "previous_as");
    let previous_as = previous_as_raw.and_then(|raw| match SecretName::new(raw) {
        Ok(n) => Some(n),
        Err(e) => {
            r.error(f, Some("previous_as"), e.to_string());
            None
        }
    });
    if let Some(previous) = previous_as_raw {
        if push.is_empty() && !manual {
            r.error(
                f,
                Some("previous_as"),
                "only means something with push targets: the previous value is pushed \
                 under this name during grace",
            );
        }
        if previous == name {
            r.error(
                f,
                Some("previous_as"),
                "must differ from the secret's own name",
            );
        } else if grace.is_zero() && !push.is_empty() {
            r.warn(
                f,
                Some("previous_as"),
                "grace is 0, so the previous value is removed at once and this name is \
                 never useful",
            );
        }
    }

    let max_age = r.positive_duration(f, "max_age");
    if manual && !r.has("max_age") {
        r.error(
            f,
            Some("max_age"),
            "missing: manual secrets need max_age (e.g. \"180d\") so they are flagged \
             overdue when nobody has rotated them",
        );
    }
    let max_versions = r.integer(f, "max_versions").and_then(|n| {
        match u32::try_from(n).ok().filter(|n| *n >= 1) {
            Some(n) => Some(n),
            None => {
                r.error(f, Some("max_versions"), "must be a whole number ≥ 1");
                None
            }
        }
    });
    let description = r.string(f, "description").map(str::to_string);

    let refs = SecretRefs {
        name: name.to_string(),
        file: file.to_path_buf(),
        push: push.clone(),
        previous_as: previous_as_raw.map(str::to_string),
    };
    let policy = match (secret_name, generator) {
        (Some(name), Some(generator)) if manual || schedule.is_some() => Some(SecretPolicy {
            name,
            file: file.to_path_buf(),
            generator,
            schedule: if manual { None } else { schedule },
            grace,
            push,
            previous_as,
            max_age,
            max_versions,
            description,
        }),
        _ => None,
    };
    (policy, Some(refs))
}

fn parse_generator(
    r: &TableReader<'_>,
    name: &str,
    kind: GeneratorKind,
    f: &mut Findings,
) -> Option<Generator> {
    match kind {
        GeneratorKind::Random => {
            let length = match r.integer(f, "length") {
                None => DEFAULT_RANDOM_LENGTH,
                Some(n) => match usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_RANDOM_LENGTH).contains(n))
                {
                    Some(n) => n,
                    None => {
                        r.error(
                            f,
                            Some("length"),
                            format!("must be between 1 and {MAX_RANDOM_LENGTH} characters"),
                        );
                        return None;
                    }
                },
            };
            let charset = match r.string(f, "charset") {
                None => Charset::Alnum,
                Some(raw) => r.choice(f, "charset", raw, &Charset::ALL)?,
            };
            let bits = length as f64 * charset.bits_per_char();
            if bits < 128.0 {
                r.warn(
                    f,
                    Some("length"),
                    format!(
                        "{length} {} characters carry about {} bits of randomness; 128 or \
                         more is the usual floor for a credential",
                        charset.as_str(),
                        bits.floor()
                    ),
                );
            }
            Some(Generator::Random { length, charset })
        }
        GeneratorKind::JwtHmac => {
            let algorithm = match r.string(f, "algorithm") {
                None => HmacAlgorithm::Hs256,
                Some(raw) => r.choice(f, "algorithm", raw, &HmacAlgorithm::ALL)?,
            };
            Some(Generator::JwtHmac { algorithm })
        }
        GeneratorKind::JwtEd25519 => {
            match r.string(f, "algorithm") {
                None => {}
                Some(raw) => {
                    r.choice(f, "algorithm", raw, &[("EdDSA", ())])?;
                }
            }
            Some(Generator::JwtEd25519)
        }
        GeneratorKind::OpenAi => {
            let sub = r.required_sub_table(
                f,
                "openai",
                "generator = \"openai\" needs it, with project_id and admin_key",
            )?;
            sub.check_keys(f, &["project_id", "admin_key", "base_url"]);
            let project_id = sub.required_id(f, "project_id");
            let admin_key = sub.secret_ref(f, "admin_key");
            let base_url = sub
                .url(f, "base_url", true)
                .unwrap_or_else(|| OPENAI_BASE_URL.to_string());
            let admin_key = admin_key?;
            if admin_key.as_str() == name {
                sub.error(
                    f,
                    Some("admin_key"),
                    "the admin key cannot be the key it rotates; name the vault secret \
                     that holds the admin key",
                );
                return None;
            }
            Some(Generator::OpenAi(OpenAiSettings {
                project_id: project_id?,
                admin_key,
                base_url,
            }))
        }
        GeneratorKind::LaunchDarklySdk | GeneratorKind::LaunchDarklyMobile => {
            let sub = r.required_sub_table(
                f,
                "launchdarkly",
                "LaunchDarkly generators need it, with project_key, environment_key and \
                 access_token",
            )?;
            sub.check_keys(
                f,
                &["project_key", "environment_key", "access_token", "base_url"],
            );
            let project_key = sub.required_id(f, "project_key");
            let environment_key = sub.required_id(f, "environment_key");
            let access_token = sub.secret_ref(f, "access_token");
            let base_url = sub
                .url(f, "base_url", true)
                .unwrap_or_else(|| LAUNCHDARKLY_BASE_URL.to_string());
            let access_token = access_token?;
            if access_token.as_str() == name {
                sub.error(
                    f,
                    Some("access_token"),
                    "the access token cannot be the key it rotates; name the vault secret \
                     that holds the LaunchDarkly API access token",
                );
                return None;
            }
            let settings = LaunchDarklySettings {
                project_key: project_key?,
                environment_key: environment_key?,
                access_token,
                base_url,
            };
            Some(if kind == GeneratorKind::LaunchDarklySdk {
                Generator::LaunchDarklySdk(settings)
            } else {
                Generator::LaunchDarklyMobile(settings)
            })
        }
        GeneratorKind::Manual => Some(Generator::Manual),
    }
}

// ---------------------------------------------------------------------------------------
// Reading one table
// ---------------------------------------------------------------------------------------

/// One TOML table being validated. Each getter returns `None` when the key is absent or
/// invalid; an invalid value has already been reported, so callers only add defaults.
struct TableReader<'a> {
    file: &'a Path,
    /// Dotted table name, e.g. `secrets.OPENAI_API_KEY.openai`; empty at the top level.
    path: String,
    table: &'a Table,
}

impl<'a> TableReader<'a> {
    fn error(&self, f: &mut Findings, key: Option<&str>, message: impl Into<String>) {
        f.errors
            .push(problem(self.file, &self.path, key, message.into()));
    }

    fn warn(&self, f: &mut Findings, key: Option<&str>, message: impl Into<String>) {
        f.warnings
            .push(problem(self.file, &self.path, key, message.into()));
    }

    fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    fn wrong_type(&self, f: &mut Findings, key: &str, expected: &str, found: &Value) {
        self.error(
            f,
            Some(key),
            format!("expected {expected}, found {}", found.type_str()),
        );
    }

    /// Reports every key not in `allowed`, suggesting the closest allowed one.
    fn check_keys(&self, f: &mut Findings, allowed: &[&str]) {
        for key in self.table.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let message = match suggestion(key, allowed) {
                Some(close) => format!("unknown key; did you mean {close:?}?"),
                None => format!("unknown key (allowed here: {})", allowed.join(", ")),
            };
            self.error(f, Some(key), message);
        }
    }

    fn string(&self, f: &mut Findings, key: &str) -> Option<&'a str> {
        match self.table.get(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                self.wrong_type(f, key, "a string", other);
                None
            }
        }
    }

    /// A string that must be present and not blank.
    fn required_string(&self, f: &mut Findings, key: &str, what: &str) -> Option<&'a str> {
        if !self.has(key) {
            self.error(f, Some(key), format!("missing: {what}"));
            return None;
        }
        let value = self.string(f, key)?;
        if value.trim().is_empty() {
            self.error(f, Some(key), "must not be empty");
            return None;
        }
        Some(value)
    }

    /// A required identifier (project id, environment key…): no blanks or whitespace.
    fn required_id(&self, f: &mut Findings, key: &str) -> Option<String> {
        let value = self.required_string(f, key, "required")?;
        if value.chars().any(char::is_whitespace) {
            self.error(f, Some(key), "must not contain whitespace");
            return None;
        }
        Some(value.to_string())
    }

    /// A required reference to a vault secret by name.
    fn secret_ref(&self, f: &mut Findings, key: &str) -> Option<SecretName> {
        let raw = self.required_string(f, key, "required: the name of the vault secret")?;
        match SecretName::new(raw) {
            Ok(name) => Some(name),
            Err(e) => {
                self.error(f, Some(key), format!("not a vault secret name: {e}"));
                None
            }
        }
    }

    fn boolean(&self, f: &mut Findings, key: &str) -> Option<bool> {
        match self.table.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(f, key, "true or false", other);
                None
            }
        }
    }

    fn integer(&self, f: &mut Findings, key: &str) -> Option<i64> {
        match self.table.get(key)? {
            Value::Integer(n) => Some(*n),
            other => {
                self.wrong_type(f, key, "a whole number", other);
                None
            }
        }
    }

    fn duration(&self, f: &mut Findings, key: &str) -> Option<Duration> {
        let value = self.table.get(key)?;
        let Value::String(raw) = value else {
            self.wrong_type(
                f,
                key,
                "a duration string such as \"30d\" or \"48h\"",
                value,
            );
            return None;
        };
        match humantime::parse_duration(raw) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    f,
                    Some(key),
                    format!(
                        "{raw:?} is not a duration ({e}); write e.g. \"30d\", \"48h\", \"90m\""
                    ),
                );
                None
            }
        }
    }

    fn positive_duration(&self, f: &mut Findings, key: &str) -> Option<Duration> {
        let d = self.duration(f, key)?;
        if d.is_zero() {
            self.error(f, Some(key), "must be longer than zero");
            return None;
        }
        Some(d)
    }

    /// An http(s) URL, returned without a trailing slash. With `carries_credentials`, a
    /// plain-http URL to a non-loopback host earns a warning.
    fn url(&self, f: &mut Findings, key: &str, carries_credentials: bool) -> Option<String> {
        let raw = self.string(f, key)?;
        let (scheme, rest) = match raw.split_once("://") {
            Some((scheme, rest)) if scheme == "https" || scheme == "http" => (scheme, rest),
            _ => {
                self.error(f, Some(key), "must be an http:// or https:// URL");
                return None;
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() {
            self.error(f, Some(key), "the URL has no host");
            return None;
        }
        if authority.contains('@') {
            self.error(
                f,
                Some(key),
                "must not carry user:password@; credentials live in the vault",
            );
            return None;
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(f, Some(key), "must not contain spaces");
            return None;
        }
        if carries_credentials && scheme == "http" && !is_loopback(authority) {
            self.warn(
                f,
                Some(key),
                "plain http sends the API credential unencrypted; use https (http is meant \
                 for stand-ins on loopback)",
            );
        }
        Some(raw.trim_end_matches('/').to_string())
    }

    /// A list of distinct, non-empty strings (absent = empty).
    fn string_list(&self, f: &mut Findings, key: &str) -> Vec<String> {
        let Some(value) = self.table.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            self.wrong_type(
                f,
                key,
                "a list of target names, e.g. [\"api-production\"]",
                value,
            );
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for item in items {
            match item {
                Value::String(s) if s.trim().is_empty() => {
                    self.error(f, Some(key), "contains an empty name");
                }
                Value::String(s) if out.contains(s) => {
                    self.error(f, Some(key), format!("{s:?} is listed twice"));
                }
                Value::String(s) => out.push(s.clone()),
                other => self.wrong_type(f, key, "a list of strings, with an item", other),
            }
        }
        out
    }

    /// One of a fixed set of spellings.
    fn choice<T: Copy>(
        &self,
        f: &mut Findings,
        key: &str,
        raw: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == raw) {
            return Some(*value);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        self.error(
            f,
            Some(key),
            format!(
                "{raw:?} is not allowed{}; use {}",
                did_you_mean(raw, &names),
                names.join(" or ")
            ),
        );
        None
    }

    /// A sub-table, if present and a table (a non-table value is reported).
    fn sub_table(&self, f: &mut Findings, key: &str) -> Option<TableReader<'a>> {
        match self.table.get(key)? {
            Value::Table(table) => Some(TableReader {
                file: self.file,
                path: self.child(key),
                table,
            }),
            other => {
                self.wrong_type(f, key, &format!("a table [{}]", self.child(key)), other);
                None
            }
        }
    }

    fn required_sub_table(
        &self,
        f: &mut Findings,
        key: &str,
        why: &str,
    ) -> Option<TableReader<'a>> {
        if !self.has(key) {
            self.error(
                f,
                Some(key),
                format!("missing table [{}]: {why}", self.child(key)),
            );
            return None;
        }
        self.sub_table(f, key)
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            table_path(&[key])
        } else {
            format!("{}.{}", self.path, table_path(&[key]))
        }
    }
}

fn problem(file: &Path, table: &str, key: Option<&str>, message: String) -> PolicyProblem {
    PolicyProblem {
        file: file.to_path_buf(),
        table: table.to_string(),
        key: key.map(str::to_string),
        message,
    }
}

/// Dotted TOML table name, quoting parts that are not bare keys.
fn table_path(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| {
            let bare = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if bare {
                part.to_string()
            } else {
                format!("{part:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// ` (did you mean "x"?)` when a known spelling is close, else nothing.
fn did_you_mean(raw: &str, known: &[&str]) -> String {
    suggestion(raw, known)
        .map(|close| format!(" (did you mean {close:?}?)"))
        .unwrap_or_default()
}

/// The known spelling closest to `raw`, if it is a plausible typo of it.
fn suggestion<'k>(raw: &str, known: &[&'k str]) -> Option<&'k str> {
    let raw = raw.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&raw, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2 && *d < raw.len().max(k.len()) / 2 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (with adjacent transpositions counting as one edit).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = r#"
[targets.api-production]
kind = "railway"
project_id = "p"
environment_id = "e"
service_id = "s"
token = "RAILWAY_TOKEN"
"#;

    fn parse(text: &str) -> Result<PolicySet, PolicyReport> {
        parse_str(Path::new("policies/test.toml"), text)
    }

    fn errors(text: &str) -> Vec<PolicyProblem> {
        match parse(text) {
            Ok(_) => panic!("expected errors"),
            Err(report) => report.errors,
        }
    }

    fn find<'p>(problems: &'p [PolicyProblem], table: &str, key: &str) -> &'p PolicyProblem {
        problems
            .iter()
            .find(|p| p.table == table && p.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no problem at [{table}] {key} in {problems:#?}"))
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn shipped_policies_directory_parses_without_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let set = load_dir(&dir).unwrap_or_else(|report| panic!("{report}"));
        assert!(set.warnings.is_empty(), "{:#?}", set.warnings);

        let Some(TargetPolicy::Railway(api)) = set.targets.get("api-production") else {
            panic!("api-production is not a railway target");
        };
        assert_eq!(api.token.as_str(), "RAILWAY_TOKEN");
        assert_eq!(api.token_kind, RailwayTokenKind::Project);
        assert!(api.redeploy);
        assert_eq!(api.endpoint, RAILWAY_ENDPOINT);
        assert!(api.file.ends_with("railway.toml"));

        let jwt = &set.secrets["JWT_SECRET"];
        assert_eq!(
            jwt.generator,
            Generator::JwtHmac {
                algorithm: HmacAlgorithm::Hs256
            }
        );
        assert_eq!(
            jwt.schedule,
            Some(Schedule::Every(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(jwt.grace, Duration::from_secs(86_400));
        assert_eq!(jwt.push, vec!["api-production".to_string()]);
        assert_eq!(
            jwt.previous_as.as_ref().map(SecretName::as_str),
            Some("JWT_SECRET_PREVIOUS")
        );

        let Generator::OpenAi(openai) = &set.secrets["OPENAI_API_KEY"].generator else {
            panic!("OPENAI_API_KEY is not an openai secret");
        };
        assert_eq!(openai.base_url, OPENAI_BASE_URL);
        assert_eq!(openai.admin_key.as_str(), "OPENAI_ADMIN_KEY");
        assert!(matches!(
            set.secrets["LAUNCHDARKLY_SDK_KEY"].generator,
            Generator::LaunchDarklySdk(_)
        ));
        for manual in [
            "OPENAI_ADMIN_KEY",
            "RAILWAY_TOKEN",
            "LAUNCHDARKLY_API_TOKEN",
        ] {
            let secret = &set.secrets[manual];
            assert_eq!(secret.generator, Generator::Manual);
            assert_eq!(secret.schedule, None);
            assert_eq!(secret.max_age, Some(Duration::from_secs(180 * 86_400)));
        }
    }

    #[test]
    fn credential_refs_name_the_referenced_secret_and_its_location() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let set = load_dir(&dir).unwrap_or_else(|report| panic!("{report}"));
        let refs = set.credential_refs();
        let by_secret = |name: &str| {
            refs.iter()
                .find(|r| r.secret == name)
                .unwrap_or_else(|| panic!("no ref to {name}"))
        };
        let railway = by_secret("RAILWAY_TOKEN");
        assert_eq!(
            (railway.table.as_str(), railway.key.as_str()),
            ("targets.api-production", "token")
        );
        let openai = by_secret("OPENAI_ADMIN_KEY");
        assert_eq!(
            (openai.table.as_str(), openai.key.as_str()),
            ("secrets.OPENAI_API_KEY.openai", "admin_key")
        );
        assert!(openai.file.ends_with("secrets.toml"));
        let ld = by_secret("LAUNCHDARKLY_API_TOKEN");
        assert_eq!(
            (ld.table.as_str(), ld.key.as_str()),
            ("secrets.LAUNCHDARKLY_SDK_KEY.launchdarkly", "access_token")
        );
        assert_eq!(refs.len(), 3);
        assert_eq!(
            openai.problem("no such secret in the vault").to_string(),
            format!(
                "{}: [secrets.OPENAI_API_KEY.openai] admin_key: no such secret in the vault",
                openai.file.display()
            )
        );
    }

    #[test]
    fn problem_display_names_file_table_and_key() {
        let p = problem(
            Path::new("policies/a.toml"),
            "secrets.X",
            Some("every"),
            "bad".into(),
        );
        assert_eq!(p.to_string(), "policies/a.toml: [secrets.X] every: bad");
        let top = problem(Path::new("policies/a.toml"), "", None, "bad".into());
        assert_eq!(top.to_string(), "policies/a.toml: bad");
    }

    #[test]
    fn misspelled_key_is_named_with_its_table_and_a_suggestion() {
        let errs = errors(
            r#"
[secrets.X]
generator = "random"
evry = "7d"
"#,
        );
        let p = find(&errs, "secrets.X", "evry");
        assert_eq!(p.file, Path::new("policies/test.toml"));
        assert!(
            p.message.contains("did you mean \"every\""),
            "{}",
            p.message
        );
        // The misspelling also leaves the secret without a schedule.
        find(&errs, "secrets.X", "every");
    }

    #[test]
    fn unknown_key_in_a_provider_sub_table_names_the_sub_table() {
        let errs = errors(
            r#"
[secrets.OPENAI_API_KEY]
generator = "openai"
every = "30d"
grace = "1h"
[secrets.OPENAI_API_KEY.openai]
project_id = "proj_1"
admin_kee = "OPENAI_ADMIN_KEY"
"#,
        );
        let p = find(&errs, "secrets.OPENAI_API_KEY.openai", "admin_kee");
        assert!(
            p.message.contains("did you mean \"admin_key\""),
            "{}",
            p.message
        );
        let missing = find(&errs, "secrets.OPENAI_API_KEY.openai", "admin_key");
        assert!(missing.message.contains("missing"), "{}", missing.message);
    }

    #[test]
    fn unknown_top_level_table_is_refused_with_a_suggestion() {
        let errs = errors("[secret.X]\ngenerator = \"random\"\n");
        let p = find(&errs, "", "secret");
        assert!(
            p.message.contains("did you mean \"secrets\""),
            "{}",
            p.message
        );
    }

    #[test]
    fn several_problems_in_one_file_are_all_reported() {
        let errs = errors(
            r#"
[targets.api-production]
kind = "railway"
project_id = "p"
environment_id = "e"
service_id = "s"
token = "not a name"
token_kind = "team"

[secrets.A]
generator = "random"
length = 0
every = "7d"

[secrets.B]
generator = "jwt-hmac"
algorithm = "HS999"
cron = "0 3 1 * *"
push = ["nowhere"]

[secrets.C]
generator = "manual"
"#,
        );
        find(&errs, "targets.api-production", "token");
        find(&errs, "targets.api-production", "token_kind");
        find(&errs, "secrets.A", "length");
        find(&errs, "secrets.B", "algorithm");
        find(&errs, "secrets.B", "push");
        find(&errs, "secrets.C", "max_age");
        assert_eq!(errs.len(), 6, "{errs:#?}");
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let errs = errors("[secrets.X]\ngenerator = \"random\"\nevery = 7d\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, Path::new("policies/test.toml"));
        assert!(
            errs[0].message.contains("line 3, column 10"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn wrong_value_type_is_reported() {
        let errs = errors("[secrets.X]\ngenerator = \"random\"\nevery = 7\n");
        let p = find(&errs, "secrets.X", "every");
        assert!(p.message.contains("found integer"), "{}", p.message);
    }

    #[test]
    fn unknown_generator_is_refused_with_a_suggestion() {
        let errs = errors("[secrets.X]\ngenerator = \"jwt-hmca\"\nevery = \"7d\"\n");
        let p = find(&errs, "secrets.X", "generator");
        assert!(
            p.message.contains("did you mean \"jwt-hmac\""),
            "{}",
            p.message
        );
    }

    #[test]
    fn unknown_target_kind_is_refused() {
        let errs = errors("[targets.t]\nkind = \"heroku\"\n");
        let p = find(&errs, "targets.t", "kind");
        assert!(p.message.contains("railway and dotenv"), "{}", p.message);
    }

    #[test]
    fn railway_key_on_a_dotenv_target_is_refused() {
        let errs = errors("[targets.local]\nkind = \"dotenv\"\npath = \".env\"\ntoken = \"T\"\n");
        find(&errs, "targets.local", "token");
    }

    #[test]
    fn generator_specific_keys_on_the_wrong_generator_are_refused() {
        let errs = errors(
            r#"
[secrets.X]
generator = "jwt-hmac"
every = "7d"
length = 64
[secrets.X.openai]
project_id = "p"
admin_key = "K"

[secrets.Y]
generator = "random"
every = "7d"
algorithm = "HS256"
"#,
        );
        assert!(find(&errs, "secrets.X", "length")
            .message
            .contains("only applies to generator random"));
        find(&errs, "secrets.X", "openai");
        find(&errs, "secrets.Y", "algorithm");
    }

    #[test]
    fn openai_secret_without_its_sub_table_is_refused() {
        let errs = errors("[secrets.K]\ngenerator = \"openai\"\nevery = \"30d\"\n");
        let p = find(&errs, "secrets.K", "openai");
        assert!(p.message.contains("[secrets.K.openai]"), "{}", p.message);
    }

    #[test]
    fn launchdarkly_sub_table_needs_every_key() {
        let errs = errors(
            "[secrets.K]\ngenerator = \"launchdarkly-sdk\"\nevery = \"30d\"\ngrace = \"1h\"\n\
             [secrets.K.launchdarkly]\nproject_key = \"p\"\n",
        );
        find(&errs, "secrets.K.launchdarkly", "environment_key");
        find(&errs, "secrets.K.launchdarkly", "access_token");
        assert_eq!(errs.len(), 2, "{errs:#?}");
    }

    #[test]
    fn credential_reference_must_be_a_valid_secret_name() {
        let errs = errors(
            "[secrets.K]\ngenerator = \"openai\"\nevery = \"30d\"\n\
             [secrets.K.openai]\nproject_id = \"p\"\nadmin_key = \"sk-admin-123\"\n",
        );
        let p = find(&errs, "secrets.K.openai", "admin_key");
        assert!(
            p.message.contains("not a vault secret name"),
            "{}",
            p.message
        );
    }

    #[test]
    fn push_to_an_undefined_target_is_refused() {
        let errs = errors(&format!(
            "{TARGET}\n[secrets.X]\ngenerator = \"random\"\nevery = \"7d\"\npush = [\"api-prodution\"]\n"
        ));
        let p = find(&errs, "secrets.X", "push");
        assert!(p.message.contains("\"api-prodution\""), "{}", p.message);
        assert!(
            p.message.contains("did you mean \"api-production\""),
            "{}",
            p.message
        );
    }

    #[test]
    fn duplicate_definitions_across_files_name_both_files() {
        let a = (
            PathBuf::from("policies/a.toml"),
            format!("{TARGET}\n[secrets.X]\ngenerator = \"random\"\nevery = \"7d\"\n"),
        );
        let b = (
            PathBuf::from("policies/b.toml"),
            format!("{TARGET}\n[secrets.X]\ngenerator = \"random\"\nevery = \"1d\"\n"),
        );
        let report = validate_sources(&[a, b], Findings::default()).unwrap_err();
        let target = report
            .errors
            .iter()
            .find(|p| p.table == "targets.api-production")
            .unwrap();
        assert_eq!(target.file, Path::new("policies/b.toml"));
        assert!(
            target.message.contains("policies/a.toml"),
            "{}",
            target.message
        );
        let secret = report
            .errors
            .iter()
            .find(|p| p.table == "secrets.X")
            .unwrap();
        assert_eq!(secret.file, Path::new("policies/b.toml"));
        assert!(
            secret.message.contains("policies/a.toml"),
            "{}",
            secret.message
        );
        assert_eq!(report.errors.len(), 2, "{:#?}", report.errors);
    }

    #[test]
    fn grace_longer_than_every_is_refused() {
        let errs = errors("[secrets.X]\ngenerator = \"random\"\nevery = \"1d\"\ngrace = \"25h\"\n");
        let p = find(&errs, "secrets.X", "grace");
        assert!(
            p.message.contains("longer than the rotation period"),
            "{}",
            p.message
        );
        assert!(
            parse("[secrets.X]\ngenerator = \"random\"\nevery = \"1d\"\ngrace = \"24h\"\n").is_ok()
        );
    }

    #[test]
    fn grace_longer_than_the_shortest_cron_gap_is_refused() {
        // Monthly on the 1st: the shortest gap is February's 28 days.
        let errs =
            errors("[secrets.X]\ngenerator = \"random\"\ncron = \"0 3 1 * *\"\ngrace = \"29d\"\n");
        let p = find(&errs, "secrets.X", "grace");
        assert!(p.message.contains("shortest gap"), "{}", p.message);
        assert!(parse(
            "[secrets.X]\ngenerator = \"random\"\ncron = \"0 3 1 * *\"\ngrace = \"28d\"\n"
        )
        .is_ok());
    }

    #[test]
    fn rotated_secret_needs_exactly_one_of_every_or_cron() {
        let neither = errors("[secrets.X]\ngenerator = \"random\"\n");
        find(&neither, "secrets.X", "every");
        let both =
            errors("[secrets.X]\ngenerator = \"random\"\nevery = \"1d\"\ncron = \"0 3 * * *\"\n");
        find(&both, "secrets.X", "cron");
    }

    #[test]
    fn manual_secret_needs_max_age_and_no_rotation_keys() {
        let errs = errors("[secrets.M]\ngenerator = \"manual\"\nevery = \"30d\"\n");
        assert!(find(&errs, "secrets.M", "max_age")
            .message
            .contains("flagged overdue"));
        find(&errs, "secrets.M", "every");
    }

    #[test]
    fn previous_as_without_push_is_refused() {
        let errs = errors(
            "[secrets.J]\ngenerator = \"jwt-hmac\"\nevery = \"7d\"\ngrace = \"1h\"\n\
             previous_as = \"J_OLD\"\n",
        );
        find(&errs, "secrets.J", "previous_as");
    }

    #[test]
    fn previous_as_colliding_with_another_secret_is_refused() {
        let errs = errors(&format!(
            "{TARGET}\n[secrets.J]\ngenerator = \"jwt-hmac\"\nevery = \"7d\"\ngrace = \"1h\"\n\
             push = [\"api-production\"]\nprevious_as = \"OTHER\"\n\
             [secrets.OTHER]\ngenerator = \"random\"\nevery = \"7d\"\n"
        ));
        let p = find(&errs, "secrets.J", "previous_as");
        assert!(p.message.contains("policies/test.toml"), "{}", p.message);
    }

    #[test]
    fn invalid_secret_name_is_refused() {
        let errs = errors("[secrets.openai-key]\ngenerator = \"random\"\nevery = \"7d\"\n");
        let p = errs
            .iter()
            .find(|p| p.table == "secrets.openai-key" && p.key.is_none())
            .unwrap();
        assert!(p.message.contains("invalid secret name"), "{}", p.message);
    }

    #[test]
    fn launchdarkly_mobile_and_zero_grace_are_warnings_not_errors() {
        let set = parse(
            r#"
[secrets.MOBILE]
generator = "launchdarkly-mobile"
every = "90d"
[secrets.MOBILE.launchdarkly]
project_key = "p"
environment_key = "production"
access_token = "LD_TOKEN"

[secrets.OPENAI]
generator = "openai"
every = "30d"
[secrets.OPENAI.openai]
project_id = "proj_1"
admin_key = "ADMIN"
"#,
        )
        .unwrap_or_else(|report| panic!("{report}"));
        find(&set.warnings, "secrets.MOBILE", "generator");
        find(&set.warnings, "secrets.OPENAI", "grace");
        assert_eq!(set.warnings.len(), 2, "{:#?}", set.warnings);
    }

    #[test]
    fn defaults_are_applied() {
        let set = parse(&format!(
            "{TARGET}\n[targets.local]\nkind = \"dotenv\"\npath = \"../.env\"\n\
             [secrets.R]\ngenerator = \"random\"\nevery = \"1d\"\n"
        ))
        .unwrap_or_else(|report| panic!("{report}"));
        let Some(TargetPolicy::Railway(api)) = set.targets.get("api-production") else {
            panic!("not railway");
        };
        assert_eq!(api.token_kind, RailwayTokenKind::Project);
        assert!(api.redeploy);
        assert_eq!(api.health_url, None);
        assert_eq!(api.deploy_timeout, DEFAULT_DEPLOY_TIMEOUT);
        let Some(TargetPolicy::Dotenv(local)) = set.targets.get("local") else {
            panic!("not dotenv");
        };
        assert_eq!(local.path, Path::new("policies/../.env"));
        let r = &set.secrets["R"];
        assert_eq!(
            r.generator,
            Generator::Random {
                length: 32,
                charset: Charset::Alnum
            }
        );
        assert_eq!(r.grace, Duration::ZERO);
        assert!(r.push.is_empty());
    }

    #[test]
    fn five_field_cron_next_due_is_the_next_firing() {
        let schedule = Schedule::cron("0 3 1 * *").unwrap();
        assert_eq!(
            schedule.next_due(utc("2026-11-25T00:00:00Z")),
            Some(utc("2026-12-01T03:00:00Z"))
        );
        assert_eq!(schedule.describe(), "cron \"0 3 1 * *\" (UTC)");
    }

    #[test]
    fn six_field_cron_with_seconds_is_accepted() {
        let schedule = Schedule::cron("30 0 3 1 * *").unwrap();
        assert_eq!(
            schedule.next_due(utc("2026-11-25T00:00:00Z")),
            Some(utc("2026-12-01T03:00:30Z"))
        );
    }

    #[test]
    fn cron_next_due_is_strictly_after_the_last_rotation() {
        let schedule = Schedule::cron("0 3 * * *").unwrap();
        assert_eq!(
            schedule.next_due(utc("2026-12-01T03:00:00Z")),
            Some(utc("2026-12-02T03:00:00Z"))
        );
    }

    #[test]
    fn cron_day_of_week_follows_crontab_numbering() {
        // 2026-11-25 is a Wednesday.
        let next = |expr: &str| {
            Schedule::cron(expr)
                .unwrap()
                .next_due(utc("2026-11-25T12:00:00Z"))
                .unwrap()
        };
        assert_eq!(next("0 3 * * 1"), utc("2026-11-30T03:00:00Z")); // Monday
        assert_eq!(next("0 3 * * 0"), utc("2026-11-29T03:00:00Z")); // Sunday
        assert_eq!(next("0 3 * * 7"), utc("2026-11-29T03:00:00Z")); // Sunday
        assert_eq!(next("0 3 * * 6"), utc("2026-11-28T03:00:00Z")); // Saturday
        assert_eq!(next("0 3 * * MON-FRI"), utc("2026-11-26T03:00:00Z")); // Thursday
        assert_eq!(next("0 3 * * 5-7"), utc("2026-11-27T03:00:00Z")); // Friday
        assert_eq!(next("0 3 * * 1-5/2"), utc("2026-11-27T03:00:00Z")); // Mon, Wed, Fri
        assert_eq!(next("@weekly"), utc("2026-11-29T00:00:00Z")); // Sunday midnight
    }

    #[test]
    fn cron_restricting_both_day_fields_is_refused() {
        let err = Schedule::cron("0 3 1 * MON").unwrap_err();
        assert!(err.contains("EITHER"), "{err}");
        let errs = errors("[secrets.X]\ngenerator = \"random\"\ncron = \"0 3 * *\"\n");
        assert!(find(&errs, "secrets.X", "cron")
            .message
            .contains("4 fields"));
        assert!(Schedule::cron("0 3 * * 8").is_err());
        assert!(Schedule::cron("0 25 * * *").is_err());
    }

    #[test]
    fn cron_that_never_fires_is_refused() {
        let errs = errors("[secrets.X]\ngenerator = \"random\"\ncron = \"0 3 30 2 *\"\n");
        find(&errs, "secrets.X", "cron");
    }

    #[test]
    fn every_next_due_adds_the_period() {
        let schedule = Schedule::Every(Duration::from_secs(30 * 86_400));
        assert_eq!(
            schedule.next_due(utc("2026-11-25T10:00:00Z")),
            Some(utc("2026-12-25T10:00:00Z"))
        );
        assert_eq!(schedule.describe(), "every 30days");
    }

    #[test]
    fn load_dir_reports_a_missing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let report = load_dir(&missing).unwrap_err();
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].file, missing);
        assert!(report.errors[0].message.contains("does not exist"));
    }

    #[test]
    fn load_dir_of_an_empty_directory_is_an_empty_set() {
        let tmp = tempfile::tempdir().unwrap();
        let set = load_dir(tmp.path()).unwrap();
        assert!(set.is_empty());
    }

    #[test]
    fn load_dir_merges_toml_files_and_ignores_others() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("targets.toml"), TARGET).unwrap();
        std::fs::write(
            tmp.path().join("secrets.toml"),
            "[secrets.X]\ngenerator = \"random\"\nevery = \"1d\"\npush = [\"api-production\"]\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("README.md"), "not toml [").unwrap();
        std::fs::write(tmp.path().join("old.toml.bak"), "not toml [").unwrap();
        let set = load_dir(tmp.path()).unwrap_or_else(|report| panic!("{report}"));
        assert_eq!(set.targets.len(), 1);
        assert_eq!(set.secrets["X"].file, tmp.path().join("secrets.toml"));
    }

    #[test]
    fn plain_http_endpoint_to_a_remote_host_is_a_warning() {
        let set = parse(&format!(
            "{TARGET}endpoint = \"http://railway.internal/graphql\"\n"
        ))
        .unwrap_or_else(|report| panic!("{report}"));
        find(&set.warnings, "targets.api-production", "endpoint");
        let local = parse(&format!("{TARGET}endpoint = \"http://127.0.0.1:4000/\"\n")).unwrap();
        assert!(local.warnings.is_empty());
        let Some(TargetPolicy::Railway(api)) = local.targets.get("api-production") else {
            panic!("not railway");
        };
        assert_eq!(api.endpoint, "http://127.0.0.1:4000");
    }
}
