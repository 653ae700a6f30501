//! `ftp6proxy`: parse the command line, run the daemon, map the outcome to an exit status
//! (0 ok, 1 failure, 64 usage — sysexits(3);
//! `--replay` has its own, see `replay`).

use ftp6proxy::cli::{self, Foreground, Parsed, EX_USAGE};

fn main() {
    let settings = match cli::parse(std::env::args_os()) {
        Parsed::Run(settings) => settings,
        Parsed::Print(text) => {
            print!("{text}");
            std::process::exit(0);
        }
        Parsed::Usage(line) => {
            eprintln!("{line}");
            std::process::exit(EX_USAGE);
        }
    };
    if let Some(capture) = &settings.replay {
        std::process::exit(ftp6proxy::replay::main(capture, &settings));
    }
    match ftp6proxy::run_daemon(&settings) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            let line = format!("{error:#}");
            // Startup errors go to the terminal; detached, syslog gets them too.
            if settings.foreground != Foreground::Debug {
                log::error!("{line}");
            }
            eprintln!("ftp6proxy: {line}");
            std::process::exit(1);
        }
    }
}
