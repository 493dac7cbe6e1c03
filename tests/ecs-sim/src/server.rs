//! Binds both servers on loopback and runs them, either inside a caller's
//! tokio runtime (`start`) or on a private runtime thread (`SimHandle`), so
//! tests can run the emulator in-process without async test code.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

use crate::config::{ConfigError, SimConfig};
use crate::reqlog::RequestLog;
use crate::state::Sim;
use crate::{control, ecs, imds};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A port could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request log or the snapshot directory could not be opened.
    #[error("cannot prepare {what}: {source}")]
    Io {
        /// Which file or directory.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started emulator's addresses and world.
#[derive(Debug, Clone)]
pub struct Started {
    /// `http://127.0.0.1:P1`.
    pub imds_url: String,
    /// `http://127.0.0.1:P2` (ECS API and `/_sim/*`).
    pub ecs_url: String,
    /// The shared world (tests may inspect it directly).
    pub sim: Arc<Sim>,
}

impl Started {
    /// The line printed on start-up and written to the ready file.
    pub fn ready_line(&self) -> String {
        format!("imds={} ecs={}", self.imds_url, self.ecs_url)
    }
}

/// Binds and spawns both servers on the current tokio runtime.
pub async fn start(cfg: SimConfig) -> Result<Started, StartError> {
    cfg.validate()?;
    let ip = cfg.listen_ip()?;
    std::fs::create_dir_all(&cfg.snapshot_dir).map_err(|source| StartError::Io {
        what: cfg.snapshot_dir.display().to_string(),
        source,
    })?;
    let disk_dir = cfg.disk_dir();
    std::fs::create_dir_all(&disk_dir).map_err(|source| StartError::Io {
        what: disk_dir.display().to_string(),
        source,
    })?;
    // A previous emulator on this directory that was killed left links (and
    // possibly devices still held by a mount): clean up before serving.
    for done in crate::loopdev::sweep(&disk_dir) {
        tracing::info!("start-up sweep: {done}");
    }
    let log = RequestLog::open(cfg.request_log.as_deref()).map_err(|source| StartError::Io {
        what: format!("request log {:?}", cfg.request_log),
        source,
    })?;
    let bind = |port: u16| async move {
        let addr = SocketAddr::new(ip, port);
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let imds_l = bind(cfg.imds_port).await?;
    let ecs_l = bind(cfg.ecs_port).await?;
    let url = |l: &TcpListener| -> String {
        let a = l.local_addr().expect("bound listener has an address");
        format!("http://{a}")
    };
    let (imds_url, ecs_url) = (url(&imds_l), url(&ecs_l));
    // Every other instance's metadata service: its own address, same port.
    let imds_port = imds_l
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(cfg.imds_port);
    let mut more_imds = Vec::with_capacity(cfg.instances.len());
    for i in &cfg.instances {
        let ip = i
            .imds_listen
            .parse()
            .map_err(|_| ConfigError::BadListen(i.imds_listen.clone()))?;
        let addr = SocketAddr::new(ip, imds_port);
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        more_imds.push(l);
    }
    let sim = Arc::new(Sim::new(cfg, log));

    let service = |n: usize| imds::Service {
        sim: sim.clone(),
        instance: sim
            .instances
            .get(n)
            .cloned()
            .expect("one instance per listener"),
    };
    for (n, l) in more_imds.into_iter().enumerate() {
        let router = Router::new()
            .fallback(imds::handle)
            .with_state(service(n + 1));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, router).await {
                tracing::error!("metadata server stopped: {e}");
            }
        });
    }
    let imds_router = Router::new().fallback(imds::handle).with_state(service(0));
    let ecs_router = Router::new()
        .route("/", any(ecs::handle))
        .route("/_sim/state", get(control::state))
        .route(
            "/_sim/faults",
            get(control::get_faults)
                .post(control::set_faults)
                .delete(control::clear_faults),
        )
        .route("/_sim/clock", axum::routing::post(control::clock))
        .with_state(sim.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(imds_l, imds_router).await {
            tracing::error!("metadata server stopped: {e}");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(ecs_l, ecs_router).await {
            tracing::error!("ECS server stopped: {e}");
        }
    });
    Ok(Started {
        imds_url,
        ecs_url,
        sim,
    })
}

/// An emulator running on its own runtime thread; dropping it stops it.
#[derive(Debug)]
pub struct SimHandle {
    /// Addresses and world.
    pub started: Started,
    rt: Option<tokio::runtime::Runtime>,
}

impl SimHandle {
    /// Starts the emulator on a private two-thread runtime.
    pub fn spawn(cfg: SimConfig) -> Result<Self, StartError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|source| StartError::Io {
                what: "tokio runtime".into(),
                source,
            })?;
        let started = rt.block_on(start(cfg))?;
        Ok(SimHandle {
            started,
            rt: Some(rt),
        })
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // No loop device or link of ours outlives the test's handle.
        self.started.sim.release_devices();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
