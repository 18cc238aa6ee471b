//! Any bytes as a pgoutput message: the decoder answers a message or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = prism_formats::pgoutput::decode(data);
});
