//! `proxy-herd`: run one server of the herd, or the whole herd, or ask a server something
//! (`--ask`). See the crate docs
//! (`cargo doc --open`) for how it works inside.

use std::process::ExitCode;

use proxy_herd::cli::{self, Parsed};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&args) {
        Ok(Parsed::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("{}", cli::version());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Ask(ask)) => {
            return match proxy_herd::ask::run(&ask) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("proxy-herd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Parsed::Run(options)) => options,
        Err(e) => {
            eprintln!("proxy-herd: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    let result = match &options.server {
        Some(name) => cli::run_server(&options, name),
        None => proxy_herd::launcher::run_herd(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy-herd: {e}");
            ExitCode::FAILURE
        }
    }
}
