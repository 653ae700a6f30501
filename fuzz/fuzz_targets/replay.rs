//! libFuzzer target for `ftp6proxy --replay`: arbitrary bytes as a capture file.
//!
//! The whole replay runs on them: the pcap/pcapng reader (pcap-parser and our record
//! bookkeeping), link-layer decapsulation, the engine, the data-connection matcher and the
//! report. Any outcome is fine except a panic, a hang or a sanitizer finding; an input that
//! reads must also give a summary line whose counts agree with the verdict.
//!
//! Run (nightly, from fuzz/; the flags are those of tools/fuzz):
//!   cargo +nightly build --release --target x86_64-unknown-linux-gnu --bin replay
//!   mkdir -p corpus-replay && cp -n seeds-replay/* corpus-replay/
//!   ./target/x86_64-unknown-linux-gnu/release/replay -max_total_time=300 \
//!       -artifact_prefix=artifacts/ corpus-replay/
#![no_main]

use std::sync::OnceLock;

use ftp6proxy::cli::{self, Parsed, Settings};
use ftp6proxy::replay;
use libfuzzer_sys::fuzz_target;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let argv = [
            "ftp6proxy",
            "--replay",
            "fuzz.pcap",
            "--ftp-ports",
            "21,2121,2122",
            "-c",
            "4",
        ];
        match cli::parse(argv) {
            Parsed::Run(settings) => *settings,
            other => panic!("fuzz settings do not parse: {other:?}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if let Ok(verdict) = replay::run_reader("fuzz.pcap", data, settings(), &mut out) {
        let report = String::from_utf8(out).expect("the report is UTF-8");
        let last = report.lines().last().expect("a summary line");
        assert_eq!(last, verdict.to_string());
        assert!(verdict.passed() + verdict.blocked() == verdict.data.len());
        assert_eq!(verdict.exit_code() == 0, verdict.blocked() == 0);
    }
});
