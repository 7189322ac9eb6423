//! The Go module zip reader, as an ingest runs it on a module proxy's answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = monofs_fetcher::gomod::check_zip(data, "example.com/m", "v1.0.0");
});
