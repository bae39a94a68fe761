//! The policy parser (`policies/*.toml`) on arbitrary text: it never panics, a refusal
//! names at least one problem and renders, and whatever it accepts is consistent —
//! every secret's key is its valid name, every push names a defined target, and the
//! accepted set reparses from the same text to the same names.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use secret_core::model::SecretName;
use secret_core::policy::parse_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("policies/fuzz.toml");
    match parse_str(file, text) {
        Ok(set) => {
            for (key, policy) in &set.secrets {
                assert_eq!(key, policy.name.as_str());
                assert!(SecretName::new(key).is_ok(), "accepted an invalid name");
                for target in &policy.push {
                    assert!(set.targets.contains_key(target), "push to undefined {target}");
                }
            }
            let again = parse_str(file, text).expect("the same text parses the same way");
            assert_eq!(
                set.secrets.keys().collect::<Vec<_>>(),
                again.secrets.keys().collect::<Vec<_>>()
            );
        }
        Err(report) => {
            assert!(!report.errors.is_empty(), "refused without naming a problem");
            assert!(!report.to_string().is_empty());
        }
    }
});
