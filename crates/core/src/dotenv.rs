//! dotenv files: parsing what `secret import` reads, and writing what `secret export`
//! writes so that three parsers read it back byte for byte: ours, python-dotenv's
//! (`dotenv_values`, with its default `${VAR}` interpolation) and the npm `dotenv`
//! package's (`dotenv.parse`).
//!
//! Those two disagree on escapes: python-dotenv decodes `\\` and `\'` inside single
//! quotes and `\n \t \" \\ ...` inside double quotes, and expands `${NAME}` in either;
//! npm `dotenv` decodes nothing inside single quotes and only `\n` and `\r` inside double
//! quotes, and both turn a carriage return in the file into a line feed. So each value
//! gets the first quoting that all three read back exactly ([`Quoting`]): single quotes
//! for most, double quotes with `\n` where it has line breaks, single quotes across lines
//! where double quotes cannot hold it. A value that no common quoting carries (say, one
//! with both kinds of quote, or with `${HOME}` in it) is written in our own escaped form,
//! which our import reads exactly, and reported as [`Quoting::OursOnly`] so the caller can
//! warn, naming the secret.
//!
//! Errors carry a line number and what is wrong, never the text of a value.

use zeroize::Zeroizing;

use crate::model::{InputError, SecretName, SecretValue};

/// One `NAME=value` binding of a file.
pub struct Binding {
    pub name: SecretName,
    pub value: SecretValue,
    /// Where the binding starts (1-based).
    pub line: usize,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Binding({}, [redacted], line {})", self.name, self.line)
    }
}

/// A line that is not a binding we can read. Never holds a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// How a value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// `'...'` on one line.
    Single,
    /// `"..."` with `\n` and `\r` for line breaks.
    Double,
    /// `'...'` across lines (a value with line feeds that double quotes cannot hold).
    SingleMultiline,
    /// Our escaped double-quoted form: only `secret import` reads it back exactly.
    OursOnly,
}

impl Quoting {
    /// Whether python-dotenv and npm `dotenv` read the value back exactly too.
    pub fn is_portable(self) -> bool {
        self != Quoting::OursOnly
    }
}

/// Writes `NAME=<quoted value>` (no line end), choosing the quoting (see the module doc).
pub fn format_binding(name: &SecretName, value: &SecretValue) -> (Zeroizing<String>, Quoting) {
    let text = value.expose();
    let (quoted, quoting) = quote(text);
    let mut line = Zeroizing::new(String::with_capacity(
        name.as_str().len() + 1 + quoted.len(),
    ));
    line.push_str(name.as_str());
    line.push('=');
    line.push_str(&quoted);
    (line, quoting)
}

/// The value quoted for a dotenv file, and how.
pub fn quote(text: &str) -> (Zeroizing<String>, Quoting) {
    let has_line_break = text.contains(['\n', '\r']);
    let interpolated = has_interpolation(text);
    if !interpolated && single_safe(text) && !has_line_break {
        return (wrap('\'', text), Quoting::Single);
    }
    if !interpolated && double_safe(text) {
        let mut out = Zeroizing::new(String::with_capacity(text.len() + 2));
        out.push('"');
        for c in text.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('"');
        return (out, Quoting::Double);
    }
    if !interpolated && single_safe(text) && !text.contains('\r') {
        return (wrap('\'', text), Quoting::SingleMultiline);
    }
    // Our own form. A backslash is written `\x5c`, never `\\`: a `\\` right before the
    // closing quote would read as an escaped quote to the other parsers' patterns, and
    // they would run on into the next lines. They misread this value (hence the
    // warning), but every other line of the file stays theirs to read.
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 2));
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\x5c"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    (out, Quoting::OursOnly)
}

fn wrap(quote: char, text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 2));
    out.push(quote);
    out.push_str(text);
    out.push(quote);
    out
}

/// Inside single quotes every parser keeps the text as is, except: no `'`; python
/// decodes `\\` (and `\'`); a final backslash would escape the closing quote; a
/// carriage return becomes a line feed on reading.
fn single_safe(text: &str) -> bool {
    !text.contains('\'') && !text.contains("\\\\") && !text.ends_with('\\') && !text.contains('\r')
}

/// Inside double quotes npm decodes `\n` and `\r` only, python decodes
/// `\\ \' \" \a \b \f \n \r \t \v`, and ours `\\ \' \" \n \r \t \x5c`: a value is safe when
/// it has no `"` and no backslash that any of them would take as an escape (line breaks
/// are written as `\n`/`\r`, which all decode).
fn double_safe(text: &str) -> bool {
    if text.contains('"') {
        return false;
    }
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\\' {
            match bytes.get(i + 1) {
                None => return false,
                // A line break after it is written as `\n`/`\r`: the backslash would then
                // start `\\`, an escape (found by the dotenv_parse fuzz target).
                Some(next) if b"\\'\"abfnrtvx\n\r".contains(next) => return false,
                Some(_) => {}
            }
        }
    }
    true
}

/// python-dotenv expands `${NAME}` and `${NAME:-default}` in every value by default
/// (its pattern: `\$\{[^}:]*(:-[^}]*)?\}`).
fn has_interpolation(text: &str) -> bool {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let name_end = after.find(['}', ':']).unwrap_or(after.len());
        let tail = &after[name_end..];
        if tail.starts_with('}') {
            return true;
        }
        if let Some(default) = tail.strip_prefix(":-") {
            if default.contains('}') {
                return true;
            }
        }
        rest = after;
    }
    false
}

/// Parses a dotenv file: `NAME=value` lines, optional `export `, `#` comments, blank
/// lines; values unquoted (to the end of the line or a ` #` comment, trimmed), in single
/// quotes (literal, may span lines) or in double quotes (`\n \r \t \\ \" \' \x5c` decoded,
/// any other backslash kept, may span lines). Each name at most once; values must be valid
/// secret values (see [`SecretValue`]).
pub fn parse(text: &str) -> Result<Vec<Binding>, ParseError> {
    let normalized;
    let text = if text.contains('\r') {
        normalized = Zeroizing::new(text.replace("\r\n", "\n"));
        normalized.as_str()
    } else {
        text
    };
    let mut parser = Parser {
        rest: text,
        line: 1,
    };
    let mut out: Vec<Binding> = Vec::new();
    while let Some(binding) = parser.binding()? {
        if let Some(first) = out.iter().find(|b| b.name == binding.name) {
            return Err(ParseError {
                line: binding.line,
                what: format!(
                    "{} is set again (first on line {}); keep one",
                    binding.name, first.line
                ),
            });
        }
        out.push(binding);
    }
    Ok(out)
}

struct Parser<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, what: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            what: what.into(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.line += self.rest[..n].matches('\n').count();
        self.rest = &self.rest[n..];
    }

    fn skip_horizontal(&mut self) {
        let n = self.rest.len() - self.rest.trim_start_matches([' ', '\t']).len();
        self.advance(n);
    }

    /// Skips to the start of the next line (past a comment, if any); anything else
    /// left on the line is an error.
    fn end_of_line(&mut self, after: &str) -> Result<(), ParseError> {
        self.skip_horizontal();
        if self.rest.starts_with('#') {
            let n = self.rest.find('\n').unwrap_or(self.rest.len());
            self.advance(n);
        }
        if self.rest.is_empty() {
            return Ok(());
        }
        if self.rest.starts_with('\n') {
            self.advance(1);
            return Ok(());
        }
        Err(self.error(format!("unexpected text after {after}")))
    }

    fn binding(&mut self) -> Result<Option<Binding>, ParseError> {
        // Blank lines and comment lines.
        loop {
            self.skip_horizontal();
            if self.rest.is_empty() {
                return Ok(None);
            }
            if self.rest.starts_with('\n') {
                self.advance(1);
            } else if self.rest.starts_with('#') {
                let n = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
                self.advance(n);
            } else {
                break;
            }
        }
        let line = self.line;
        if let Some(after) = self.rest.strip_prefix("export") {
            if after.starts_with([' ', '\t']) {
                self.advance("export".len());
                self.skip_horizontal();
            }
        }
        let name_len = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        let raw_name = &self.rest[..name_len];
        if raw_name.is_empty() {
            return Err(self.error(
                "expected NAME=value (a name of letters, digits and _ not starting with a digit)",
            ));
        }
        // The name is not echoed when invalid: it may be a value on the wrong line.
        let name = SecretName::new(raw_name).map_err(|e| self.error(e.to_string()))?;
        self.advance(name_len);
        self.skip_horizontal();
        if !self.rest.starts_with('=') {
            // Not named: a stray value on its own line would be half echoed.
            return Err(self.error("expected = after the name (NAME=value)"));
        }
        self.advance(1);
        self.skip_horizontal();
        let value = match self.rest.chars().next() {
            Some('\'') => self.single_quoted()?,
            Some('"') => self.double_quoted()?,
            _ => self.unquoted(),
        };
        let value = SecretValue::from_bytes(Zeroizing::new(value.as_bytes().to_vec()), false)
            .map_err(|e| ParseError {
                line,
                what: format!("{name}: {}", input_problem(&e)),
            })?;
        Ok(Some(Binding { name, value, line }))
    }

    fn single_quoted(&mut self) -> Result<Zeroizing<String>, ParseError> {
        let Some(end) = self.rest[1..].find('\'') else {
            return Err(self.error("the single-quoted value is never closed"));
        };
        let value = Zeroizing::new(self.rest[1..1 + end].to_string());
        self.advance(end + 2);
        self.end_of_line("the closing quote")?;
        Ok(value)
    }

    fn double_quoted(&mut self) -> Result<Zeroizing<String>, ParseError> {
        let mut value = Zeroizing::new(String::new());
        let mut chars = self.rest.char_indices().skip(1);
        let end = loop {
            match chars.next() {
                None => return Err(self.error("the double-quoted value is never closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    None => return Err(self.error("the double-quoted value is never closed")),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c @ ('\\' | '"' | '\''))) => value.push(c),
                    Some((i, 'x')) if self.rest[i + 1..].starts_with("5c") => {
                        value.push('\\');
                        chars.next();
                        chars.next();
                    }
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        self.advance(end + 1);
        self.end_of_line("the closing quote")?;
        Ok(value)
    }

    fn unquoted(&mut self) -> Zeroizing<String> {
        let line_end = self.rest.find('\n').unwrap_or(self.rest.len());
        let raw = &self.rest[..line_end];
        // A comment starts at a # after whitespace (a # inside a value is kept).
        let cut = raw
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || raw[..i].ends_with([' ', '\t'])))
            .map_or(raw.len(), |(i, _)| i);
        let value = Zeroizing::new(raw[..cut].trim().to_string());
        self.advance(line_end);
        if self.rest.starts_with('\n') {
            self.advance(1);
        }
        value
    }
}

/// What is wrong with a value, without the value ([`InputError`] never holds one).
fn input_problem(e: &InputError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> SecretValue {
        SecretValue::from_bytes(Zeroizing::new(text.as_bytes().to_vec()), false).unwrap()
    }

    fn round_trip(text: &str) -> Quoting {
        let name = SecretName::new("K").unwrap();
        let (line, quoting) = format_binding(&name, &value(text));
        let parsed = parse(&format!("{}\n", line.as_str())).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].value.expose(), text, "{quoting:?}");
        quoting
    }

    #[test]
    fn every_kind_of_value_reads_back_exactly() {
        for text in [
            "plain",
            "with spaces ",
            "  leading",
            "it's",
            "say \"hi\"",
            "both ' and \"",
            "a#b # c",
            "$HOME and ${HOME}",
            "back\\slash",
            "two\\\\backslashes",
            "ends with \\",
            "line1\nline2",
            "cr\r\nlf",
            "tab\tand unicode ünïcödé 🚀",
            "=equals=",
            "\\n literal",
            "'quoted'",
            "\"",
            "\\x5c is not a backslash",
            "it's \\x5c",
            // A backslash right before a line break (found by fuzzing).
            "slash\\\r;",
            "slash\\\nnext",
        ] {
            round_trip(text);
        }
    }

    #[test]
    fn the_quoting_is_the_first_that_every_parser_reads_the_same() {
        assert_eq!(round_trip("sk-abc 123 #x"), Quoting::Single);
        assert_eq!(round_trip("line1\nline2"), Quoting::Double);
        assert_eq!(round_trip("it's"), Quoting::Double);
        assert_eq!(round_trip("say \"hi\"\nthere"), Quoting::SingleMultiline);
        assert_eq!(round_trip("both ' and \""), Quoting::OursOnly);
        assert_eq!(round_trip("${HOME}"), Quoting::OursOnly);
        assert_eq!(round_trip("$HOME"), Quoting::Single);
        assert_eq!(round_trip("${HOME"), Quoting::Single);
        assert_eq!(
            round_trip("a\\\\b"),
            Quoting::OursOnly,
            "python decodes \\\\"
        );
    }

    #[test]
    fn files_written_by_people_parse() {
        let text = "# comment\n\nexport A=plain value # note\nB = 'single # kept'\nC=\"multi\nline\\tescaped\"\nD=x#y\n";
        let b = parse(text).unwrap();
        let got: Vec<(&str, &str, usize)> = b
            .iter()
            .map(|b| (b.name.as_str(), b.value.expose(), b.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "plain value", 3),
                ("B", "single # kept", 4),
                ("C", "multi\nline\tescaped", 5),
                ("D", "x#y", 7),
            ]
        );
    }

    #[test]
    fn crlf_files_parse_like_lf_files() {
        let b = parse("A=1\r\nB='2'\r\n").unwrap();
        assert_eq!(b[1].value.expose(), "2");
    }

    #[test]
    fn errors_name_the_line_and_never_the_value() {
        let cases = [
            ("A=1\nB='secret-value\n", 2, "never closed"),
            ("A=1\n\nB=\"secret-value\n", 3, "never closed"),
            ("A='secret-value' trailing\n", 1, "unexpected text"),
            ("A=1\n9secret-value=2\n", 2, "starts with a digit"),
            ("A=1\n-secret-value\n", 2, "expected NAME=value"),
            ("A=1\nsecret-value\n", 2, "expected ="),
            ("A=1\nA=2\n", 2, "set again (first on line 1)"),
            ("A=\n", 1, "empty"),
        ];
        for (text, line, what) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(what), "{text:?}: {err}");
            assert!(!err.to_string().contains("secret-value"), "{err}");
        }
    }
}
