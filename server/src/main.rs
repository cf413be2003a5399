//! `fieldcrm-server`: command-line entry point.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fieldcrm-server",
    version,
    about = "FieldCRM relay: merges changes between reps' devices and the office"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay.
    Serve {
        /// Address and port to listen on.
        #[arg(long, env = "FIELDCRM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Folder for the relay's embedded SQLite store.
        #[arg(long, env = "FIELDCRM_DATA", default_value = "fieldcrm-data")]
        data: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { listen, data } => {
            std::fs::create_dir_all(&data)?;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(%listen, data = %data.display(), "FieldCRM relay listening");
            axum::serve(listener, fieldcrm_server::app())
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
    }
    Ok(())
}
