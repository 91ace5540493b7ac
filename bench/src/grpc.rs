//! The `grpc/true` case: Execute round trips over the RuntimeDriver gRPC socket, with a
//! tonic client (the fastest gRPC client there is for this), one call at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use megavisor_grpc::v1::ExecuteRequest;
use megavisor_grpc::v1::runtime_driver_client::RuntimeDriverClient;
use tonic::transport::{Endpoint, Uri};

use crate::samples::Samples;

/// Times `iterations` Execute calls of `true` after `warmup` untimed ones.
pub fn measure(
    socket: &Path,
    warmup: usize,
    iterations: usize,
) -> Result<(Samples, Duration), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let path = socket.to_owned();
        // The URI is required by the API and ignored by the connector.
        let channel = Endpoint::try_from("http://localhost")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?;
        let mut client = RuntimeDriverClient::new(channel);
        let request = || ExecuteRequest {
            instruction: "true".into(),
            ..ExecuteRequest::default()
        };
        for _ in 0..warmup {
            client.execute(request()).await?;
        }
        let mut samples = Vec::with_capacity(iterations);
        let started = Instant::now();
        for _ in 0..iterations {
            let t = Instant::now();
            let reply = client.execute(request()).await?.into_inner();
            samples.push(t.elapsed());
            if reply.exit_code != 0 {
                return Err(format!("true exited {}", reply.exit_code).into());
            }
        }
        Ok((Samples::from_unsorted(samples), started.elapsed()))
    })
}
