//! The dotenv parsers on arbitrary text: `secret import`'s strict one
//! (`secret_core::dotenv::parse`) and the lenient one a dotenv target's drift check
//! reads hand-edited files with (`secret_rotation::targets::dotenv::parse`). Neither
//! panics; a refusal names a line inside the text; whatever the strict parser accepts
//! has valid, distinct names, and written back by `format_binding` reads back to the
//! same names and values in the same order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_core::dotenv::{format_binding, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    let _ = secret_rotation::targets::dotenv::parse(text)
        .map_err(|e| assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line));
    match parse(text) {
        Ok(bindings) => {
            let mut names: Vec<&str> = bindings.iter().map(|b| b.name.as_str()).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "a name accepted twice");
            let mut written = String::new();
            for b in &bindings {
                let (line, _) = format_binding(&b.name, &b.value);
                written.push_str(&line);
                written.push('\n');
            }
            let again = parse(&written).expect("what we write, we read");
            assert_eq!(again.len(), bindings.len());
            for (a, b) in bindings.iter().zip(&again) {
                assert_eq!(a.name.as_str(), b.name.as_str());
                assert_eq!(a.value.expose(), b.value.expose(), "{} changed", a.name);
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line),
    }
});
