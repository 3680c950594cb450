//! AWS clients as AWS tools configure them from the environment: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`, `AWS_REGION` (or
//! `AWS_DEFAULT_REGION`; default `us-east-1`), and `AWS_ENDPOINT_URL_<SERVICE>` or
//! `AWS_ENDPOINT_URL` for another endpoint. The S3 client (an S3-compatible server is then
//! addressed path-style) serves the S3 relay and the file sources and sinks; [`AwsEnv`] also
//! serves the Lambda driver.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;

/// S3 requests this process made, for cost estimates: (PUT/LIST/DELETE-class, GET-class).
static REQUESTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts one PUT-, LIST- or DELETE-class request (DELETE is free but counted with them).
pub fn count_put() {
    REQUESTS[0].fetch_add(1, Ordering::Relaxed);
}

/// Counts one GET-class request.
pub fn count_get() {
    REQUESTS[1].fetch_add(1, Ordering::Relaxed);
}

/// (PUT-class, GET-class) requests so far.
pub fn requests() -> (u64, u64) {
    (REQUESTS[0].load(Ordering::Relaxed), REQUESTS[1].load(Ordering::Relaxed))
}
use aws_sdk_s3::config::{Credentials, Region};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Credentials, region and endpoint of one AWS service, from the environment.
pub struct AwsEnv {
    /// Static credentials.
    pub credentials: Credentials,
    /// Region.
    pub region: Region,
    /// Endpoint override, if any.
    pub endpoint: Option<String>,
}

impl AwsEnv {
    /// Reads the environment for `service` (`S3`, `LAMBDA`: the suffix of
    /// `AWS_ENDPOINT_URL_<SERVICE>`).
    ///
    /// # Errors
    /// Missing credentials, in words.
    pub fn read(service: &str) -> Result<AwsEnv, String> {
        let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) else {
            return Err(format!(
                "no AWS credentials for {service}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ));
        };
        let region =
            env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        Ok(AwsEnv {
            credentials: Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment"),
            region: Region::new(region),
            endpoint: env(&format!("AWS_ENDPOINT_URL_{service}")).or_else(|| env("AWS_ENDPOINT_URL")),
        })
    }
}

/// An S3 client configured from the environment.
///
/// # Errors
/// Missing credentials, in words.
pub fn client_from_env() -> Result<Client, String> {
    let aws = AwsEnv::read("S3")?;
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws.region)
        .credentials_provider(aws.credentials);
    if let Some(endpoint) = aws.endpoint {
        config = config.endpoint_url(endpoint).force_path_style(true);
    }
    Ok(Client::from_conf(config.build()))
}

/// An SDK error with its chain of causes, on one line.
pub fn describe<E: std::error::Error + 'static>(e: aws_sdk_s3::error::SdkError<E>) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// True when the error says the object does not exist.
pub fn is_missing<E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> bool {
    e.as_service_error().and_then(aws_sdk_s3::error::ProvideErrorMetadata::code) == Some("NoSuchKey")
}

/// True when the error says the object or the bucket does not exist: an answer about the
/// request, not a failure of the service.
pub fn is_not_found<E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> bool {
    matches!(
        e.as_service_error().and_then(aws_sdk_s3::error::ProvideErrorMetadata::code),
        Some("NoSuchKey" | "NoSuchBucket" | "NotFound")
    )
}
