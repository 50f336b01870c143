//! `heex-package-assets`: writes the man pages and shell completions the Debian package ships.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use heex_proto::exit;

/// Write the man pages and bash/zsh/fish completions of heex-agent and heex-installer.
#[derive(Debug, Parser)]
#[command(name = "heex-package-assets", version)]
struct Cli {
    /// Directory to write man/, bash/, zsh/ and fish/ into.
    out_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return code(if e.exit_code() == 0 {
                exit::OK
            } else {
                exit::USAGE
            });
        }
    };
    match heex_packaging::write_assets(&cli.out_dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: cannot write assets to {}: {e}",
                cli.out_dir.display()
            );
            code(exit::FILE_ERROR)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(70))
}
