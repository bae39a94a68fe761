//! Name validation and token scopes on arbitrary text. A name is accepted exactly when
//! it is an environment-variable name of 1..=255 bytes (a reference implementation
//! here decides), and a refusal never repeats the input (its message is plain ASCII
//! of our own). A scope that parses prints back to text that parses to the same scope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_core::model::SecretName;
use secret_core::scope::Scope;

fn is_env_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SecretName::new(text) {
        Ok(name) => {
            assert!(is_env_name(text), "accepted {text:?}");
            assert_eq!(name.as_str(), text);
        }
        Err(e) => {
            assert!(!is_env_name(text), "refused {text:?}");
            let message = e.to_string();
            assert!(message.is_ascii(), "the message carries input: {message}");
            assert!(message.len() < 200, "the message grew with the input: {message}");
        }
    }
    if let Ok(scope) = text.parse::<Scope>() {
        let shown = scope.to_string();
        let again: Scope = shown.parse().expect("a printed scope parses");
        assert_eq!(again, scope);
    }
});
