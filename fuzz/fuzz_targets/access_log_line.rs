//! Any bytes as an access-log line: the parser answers a line or a reason, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(parsed) = prism_formats::access_log::parse_line(line) {
            // What was accepted holds the documented ranges.
            assert!((100..=599).contains(&parsed.status));
            assert!(!parsed.host.is_empty());
        }
    }
});
