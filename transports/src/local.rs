//! Several workers' transports in one process, linked over one channel: punched TCP on
//! loopback (through a rendezvous started here) or a relay. For collective tests and the
//! channel benchmark, which compare channels on the same operations.

use std::net::SocketAddr;
use std::time::Duration;

use actix::Addr;
use updraft_config::{Encryption, RuntimeSettings};
use updraft_runtime::collective::{Communicator, default_inbox_bytes, inbox};
use updraft_runtime::ids::job_hash;
use updraft_runtime::messages::AttachCollectives;

use crate::JobKey;
use crate::punch::handshake::Identity;
use crate::punch::{MeshConfig, punch_mesh};
use crate::relay::Relay;
use crate::rendezvous::{Registration, RendezvousServer, ServerConfig, register};
use crate::secure::Session;
use crate::transport::{Endpoint, Shutdown, TransportActor, await_links};

/// The channel every pair uses.
#[derive(Clone, Debug)]
pub enum LocalChannel {
    /// Punched TCP on 127.0.0.1.
    Direct,
    /// A relay.
    Relay(Relay),
}

impl LocalChannel {
    /// `direct`, `redis` or `s3`.
    pub fn name(&self) -> &'static str {
        match self {
            LocalChannel::Direct => "direct",
            LocalChannel::Relay(r) => r.name(),
        }
    }
}

/// One worker of a local cluster.
pub struct LocalWorker {
    /// Its communicator.
    pub comm: Communicator,
    /// Its transport.
    pub transport: Addr<TransportActor>,
}

/// Links for `world` workers of job `job` over `channel`, one endpoint list per rank, with
/// frames protected as `encryption` says.
///
/// # Errors
/// Registration, punching or the relay failed.
pub async fn local_endpoints(
    world: u32,
    channel: &LocalChannel,
    job: &str,
    timeout: Duration,
    encryption: Encryption,
) -> Result<Vec<Vec<(u32, Endpoint)>>, String> {
    let secret = b"local-cluster".to_vec();
    match channel {
        LocalChannel::Relay(relay) => {
            let key = JobKey::derive(&secret, job);
            let run: u64 = rand::random();
            let mut all = Vec::new();
            for me in 0..world {
                let mut mine = Vec::new();
                for peer in (0..world).filter(|p| *p != me) {
                    let sender = relay.sender(job, me, peer, timeout).await?;
                    let receiver = relay.receiver(job, peer, me, timeout).await?;
                    let session =
                        Session::relay(encryption, &key, run, me, peer).map_err(|e| e.to_string())?;
                    mine.push((peer, Endpoint::Relay { sender, receiver, name: relay.name(), session }));
                }
                all.push(mine);
            }
            Ok(all)
        }
        LocalChannel::Direct => {
            let server = RendezvousServer::bind(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                ServerConfig::new(secret.clone()),
            )
            .await
            .map_err(|e| format!("rendezvous: {e}"))?;
            let rdv = server.local_addr();
            let mut tasks = Vec::new();
            for rank in 0..world {
                let (job, secret) = (job.to_string(), secret.clone());
                tasks.push(tokio::spawn(async move {
                    let key = JobKey::derive(&secret, &job);
                    let reg = Registration {
                        job: job.clone(),
                        rank,
                        world,
                        key: key.clone(),
                        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                        rendezvous: rdv,
                        plan: Vec::new(),
                    };
                    let r = register(&reg, timeout).await.map_err(|e| format!("rank {rank}: {e}"))?;
                    let id =
                        Identity { me: rank, world, key, job_hash: job_hash(&job), run: r.run, encryption };
                    let cfg = MeshConfig {
                        attempt: Duration::from_millis(250),
                        handshake_timeout: Duration::from_secs(3),
                        timeout,
                        partial_ok: false,
                    };
                    let mesh = punch_mesh(&id, r.local, r.public, &r.listener, &r.peers, &cfg)
                        .await
                        .map_err(|e| format!("rank {rank}: {e}"))?;
                    Ok::<_, String>(mesh.links.into_iter().map(|(p, c)| (p, Endpoint::Direct(c))).collect())
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.map_err(|e| e.to_string())??);
            }
            Ok(all)
        }
    }
}

/// `world` workers over `channel`, each with a transport and a communicator whose receives
/// wait at most `timeout`. Must run inside an actix system.
///
/// # Errors
/// As for [`local_endpoints`].
pub async fn local_cluster(
    world: u32,
    channel: &LocalChannel,
    job: &str,
    settings: &RuntimeSettings,
    timeout: Duration,
) -> Result<Vec<LocalWorker>, String> {
    let endpoints = local_endpoints(world, channel, job, settings.mesh_timeout, settings.encryption).await?;
    let mut workers = Vec::new();
    for (me, links) in endpoints.into_iter().enumerate() {
        let me = me as u32;
        let (port, addr) = TransportActor::new(me, job_hash(job), settings, links).start_port();
        let (tx, rx) = inbox(default_inbox_bytes(settings.max_frame));
        port.attach.send(AttachCollectives { inbox: tx }).await.map_err(|e| e.to_string())?;
        workers.push(LocalWorker {
            comm: Communicator::new(me, world, port.send, rx, timeout),
            transport: addr,
        });
    }
    Ok(workers)
}

/// Closes every worker's links (flushing what is queued) within `limit`, then deletes what is
/// left in a relay.
pub async fn shutdown(
    transports: Vec<Addr<TransportActor>>,
    channel: &LocalChannel,
    job: &str,
    limit: Duration,
) {
    let world = transports.len() as u32;
    let mut tasks = Vec::new();
    for t in transports {
        if let Ok(t) = t.send(Shutdown).await {
            tasks.extend(t);
        }
    }
    await_links(tasks, limit).await;
    if let LocalChannel::Relay(relay) = channel {
        for me in 0..world {
            let peers: Vec<u32> = (0..world).filter(|p| *p != me).collect();
            if let Err(e) = relay.cleanup(job, me, &peers, true, limit).await {
                tracing::warn!(%e, "relay cleanup");
            }
        }
    }
}
