//! Metrics export. Every worker records through the `metrics` facade into a Prometheus recorder
//! (`metrics-exporter-prometheus`). A worker can serve `/metrics` itself (`--metrics-listen`),
//! and always pushes its exposition to the rendezvous every [`PUSH_INTERVAL`] and once at the
//! end, so that workers nobody can scrape (functions, processes behind NATs) are seen too: the
//! rendezvous serves every worker's latest metrics as one `/metrics` with `job` and `worker`
//! labels.
//!
//! The process installs one global recorder, once: [`JobScoped`], which forwards to a fresh
//! Prometheus recorder for each job. A warm Lambda function that runs job after job therefore
//! reports each job's own counts, and never fails to install a second recorder.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use updraft_transports::JobKey;
use updraft_transports::rendezvous::push_metrics;

/// How often a worker pushes its metrics.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Histogram buckets in seconds, from a fast operator call to a slow job phase.
const BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// The process's global recorder: forwards everything to the current job's recorder.
pub struct JobScoped {
    current: RwLock<Arc<PrometheusRecorder>>,
}

impl JobScoped {
    fn current(&self) -> Arc<PrometheusRecorder> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The installed [`JobScoped`], shared with the global recorder slot.
struct Forward(Arc<JobScoped>);

impl Recorder for Forward {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.current().describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.current().describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.current().describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0.current().register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.current().register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0.current().register_histogram(key, metadata)
    }
}

static SCOPED: OnceLock<Option<Arc<JobScoped>>> = OnceLock::new();

/// This job's metrics: a fresh Prometheus recorder behind the process's global one (installed
/// on the first call); with `listen`, `/metrics` is also served there until the returned task
/// is aborted. Must run inside a tokio runtime.
///
/// # Errors
/// If the histogram buckets are refused or the listener cannot be bound.
pub async fn install(
    listen: Option<SocketAddr>,
    job_name: &str,
) -> anyhow::Result<(PrometheusHandle, Option<tokio::task::JoinHandle<()>>)> {
    // Every sample carries the pipeline's job name; the rendezvous adds the run and the rank.
    let recorder =
        PrometheusBuilder::new().set_buckets(BUCKETS)?.add_global_label("job", job_name).build_recorder();
    let handle = recorder.handle();
    let scoped = SCOPED.get_or_init(|| {
        let scoped = Arc::new(JobScoped { current: RwLock::new(Arc::new(recorder_placeholder())) });
        match metrics::set_global_recorder(Forward(Arc::clone(&scoped))) {
            Ok(()) => Some(scoped),
            Err(e) => {
                // A program embedding updraft installed its own: metrics go there.
                tracing::warn!(%e, "another metrics recorder is installed; updraft's own exposition will be empty");
                None
            }
        }
    });
    if let Some(scoped) = scoped {
        *scoped.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(recorder);
    }
    updraft_runtime::metrics::describe();
    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
            let render = handle.clone();
            Some(tokio::spawn(serve(listener, move || render.render())))
        }
        None => None,
    };
    Ok((handle, server))
}

fn recorder_placeholder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

/// Records the process's peak resident memory (Linux: `VmHWM`) as a gauge.
pub fn record_peak_memory() {
    if let Some(bytes) = updraft_runtime::memory::peak_rss() {
        metrics::gauge!(updraft_runtime::metrics::PEAK_MEMORY_BYTES).set(bytes as f64);
    }
}

/// How often a worker looks for a phase that ended, to push at once.
const PHASE_CHECK: Duration = Duration::from_millis(250);

/// The samples of `updraft_stages_done_total` in an exposition: they change when a stage, and
/// so possibly a phase, ends.
fn phase_signature(exposition: &str) -> String {
    let name = updraft_runtime::metrics::STAGES_DONE;
    exposition.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("\n")
}

/// Where a job is, for the `updraft_job_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Registered and running.
    Running,
    /// Ended with every rank's outputs committed.
    Succeeded,
    /// Ended with an error on this rank.
    Failed,
}

/// Sets `updraft_job_state{state}`: 1 for `state`, 0 for the others.
pub fn set_job_state(state: JobState) {
    for (s, label) in
        [(JobState::Running, "running"), (JobState::Succeeded, "succeeded"), (JobState::Failed, "failed")]
    {
        let v = if s == state { 1.0 } else { 0.0 };
        metrics::gauge!(updraft_runtime::metrics::JOB_STATE, "state" => label).set(v);
    }
}

/// Where and as whom a worker pushes.
#[derive(Clone)]
pub struct Pusher {
    /// The rendezvous.
    pub rendezvous: SocketAddr,
    /// Job id.
    pub job: String,
    /// Rank.
    pub rank: u32,
    /// Job key.
    pub key: JobKey,
    /// The recorder.
    pub handle: PrometheusHandle,
}

impl Pusher {
    /// Pushes once, within `timeout`; failures are logged, never fatal.
    pub async fn push(&self, timeout: Duration) {
        record_peak_memory();
        let text = self.handle.render();
        if let Err(e) = push_metrics(self.rendezvous, &self.job, self.rank, &self.key, text, timeout).await {
            tracing::debug!(%e, "metrics push failed");
        }
    }

    /// Pushes every [`PUSH_INTERVAL`] until the task is aborted.
    pub fn spawn_periodic(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            // At once, then whenever a phase ends on this worker, and at least every
            // PUSH_INTERVAL.
            let mut tick = tokio::time::interval(PHASE_CHECK);
            let mut pushed: Option<(tokio::time::Instant, String)> = None;
            loop {
                tick.tick().await;
                let phases = phase_signature(&me.handle.render());
                let due = match &pushed {
                    None => true,
                    Some((at, seen)) => at.elapsed() >= PUSH_INTERVAL || *seen != phases,
                };
                if due {
                    me.push(PUSH_INTERVAL).await;
                    pushed = Some((tokio::time::Instant::now(), phases));
                }
            }
        })
    }
}

/// Most scrapes served at once by [`serve`]; further connections are closed at once.
pub const MAX_SCRAPES: usize = 64;

/// Serves `GET /metrics` on `listener` with whatever `render` returns; other paths get 404.
/// One request per connection, at most [`MAX_SCRAPES`] connections at once, a deadline on every
/// read and write.
pub async fn serve(listener: TcpListener, render: impl Fn() -> String + Send + Sync + 'static) {
    let render = std::sync::Arc::new(render);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(%e, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics endpoint busy; connection closed");
            continue;
        };
        let render = std::sync::Arc::clone(&render);
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    let got = conn.read(&mut buf[n..]).await?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            if tokio::time::timeout(Duration::from_secs(5), read).await.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                ("200 OK", render())
            } else {
                ("404 Not Found", "not found; try /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let write = async {
                conn.write_all(head.as_bytes()).await?;
                conn.write_all(body.as_bytes()).await?;
                conn.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), write).await;
        });
    }
}
