#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenantry::fuzz::annotations(data));
