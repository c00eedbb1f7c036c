//! `kubectl tenantry`: the kubectl plugin (see `tenantry::plugin`). kubectl runs it for
//! `kubectl tenantry ...` when it is on the PATH.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Help, version and usage errors print as clap prints them (exit 0 or 2).
    let cli = tenantry::plugin::Cli::parse();
    match tenantry::plugin::execute(cli).await {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
