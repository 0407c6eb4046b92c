//! `openkcm`: one binary, one subcommand per component. This file is CLI and wiring only.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "openkcm",
    version,
    about = "OpenKCM crypto layer: multi-tenant KMIP key service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the KMIP protocol versions this build speaks.
    Versions,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Versions => {
            for v in kmip::ProtocolVersion::SUPPORTED {
                println!("{v}");
            }
        }
    }
    Ok(())
}
