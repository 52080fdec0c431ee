//! The fast Kill Bill decoder may decline, but when it answers it must give
//! exactly the checked decoder's answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (fast, checked) = tally::format::killbill_both_paths(data);
    if let Some(fast) = fast {
        assert_eq!(
            Ok(&fast),
            checked.as_ref(),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
});
