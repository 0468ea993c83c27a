//! A small Kubernetes CRI client for the end-to-end tests: what a kubelet would ask containerd
//! to do for one pod (run the sandbox, create and start a container, inspect it, tear down),
//! over containerd's gRPC socket, with the trimmed `proto/cri.proto`.
//!
//! Also builds and imports the local images the pods run (no registry is reachable here):
//! `scripts/oci-test-image.sh` makes an OCI archive of a static busybox, `ctr images import`
//! loads it into the `k8s.io` namespace.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oci_hook::client::{H2, handshake};
use toml_edit::{DocumentMut, Item, Table, value};
use tonic::codegen::http;

use super::containerd::{Containerd, Setup};
use super::runtimes::Release;

/// The generated CRI messages and client (`runtime.v1`).
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}

use v1::runtime_service_client::RuntimeServiceClient;

/// The image the pods and containers run: busybox whose entrypoint sleeps for ever.
pub const IMAGE: &str = "localhost/rthooks-pause:latest";

/// A pod as the tests describe it.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
}

/// A connection to containerd's CRI runtime service.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<H2>,
}

/// Host namespaces for network (no CNI here), pod-private for the rest.
fn host_network() -> v1::NamespaceOption {
    v1::NamespaceOption {
        network: v1::NamespaceMode::Node as i32,
        pid: v1::NamespaceMode::Container as i32,
        ipc: v1::NamespaceMode::Pod as i32,
    }
}

impl Cri {
    /// Connects to the CRI socket (containerd's gRPC address).
    pub fn connect(socket: &Path) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = rt.block_on(async {
            let io = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("connect {}: {e}", socket.display()))?;
            let h2 = handshake(io).await.map_err(|e| format!("{e:#}"))?;
            Ok::<_, String>(RuntimeServiceClient::with_origin(
                h2,
                http::Uri::from_static("http://localhost"),
            ))
        })?;
        Ok(Self { rt, client })
    }

    fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut RuntimeServiceClient<H2>) -> Result<T, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        let client = &mut self.client;
        self.rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(60), f(client)).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded("CRI call took over 60 s")),
            }
        })
    }

    /// The sandbox config a kubelet would send for `pod` (host network, a log directory).
    pub fn sandbox_config(pod: &PodSpec, log_dir: &Path) -> v1::PodSandboxConfig {
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            // No hostname: with the host's network namespace runc cannot set one.
            hostname: String::new(),
            log_directory: log_dir.display().to_string(),
            labels: Default::default(),
            annotations: Default::default(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network()),
                }),
            }),
        }
    }

    /// Runs a pod sandbox; returns its id and the config used.
    pub fn run_pod(
        &mut self,
        pod: &PodSpec,
        log_dir: &Path,
    ) -> Result<(String, v1::PodSandboxConfig), tonic::Status> {
        let config = Self::sandbox_config(pod, log_dir);
        // The CRI plugin learns of an image `ctr images import` just added through an event; on
        // a loaded machine the first RunPodSandbox can come before it and try to pull the local
        // image (seen on 2.1). Retried while that is the error, for at most 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let req = v1::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            };
            match self.call(async |c| c.run_pod_sandbox(req).await) {
                Ok(id) => return Ok((id.into_inner().pod_sandbox_id, config)),
                Err(e)
                    if e.message().contains("failed to pull image")
                        && e.message().contains(IMAGE)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a container named `name` in the pod, running `command` in [`IMAGE`].
    pub fn create_container(
        &mut self,
        pod_id: &str,
        sandbox: &v1::PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> Result<String, tonic::Status> {
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.to_owned(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: name.to_owned(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image: IMAGE.to_owned(),
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                args: Vec::new(),
                envs: Vec::new(),
                labels: Default::default(),
                annotations: Default::default(),
                log_path: format!("{name}.log"),
                linux: Some(v1::LinuxContainerConfig {
                    security_context: Some(v1::LinuxContainerSecurityContext {
                        namespace_options: Some(host_network()),
                    }),
                }),
            }),
            sandbox_config: Some(sandbox.clone()),
        };
        let r = self.call(async |c| c.create_container(req).await)?;
        Ok(r.into_inner().container_id)
    }

    /// Starts a created container.
    pub fn start_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = v1::StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.call(async |c| c.start_container(req).await)?;
        Ok(())
    }

    /// The container's status and containerd's verbose info (which holds the OCI spec under
    /// `runtimeSpec`).
    pub fn container_status(
        &mut self,
        id: &str,
    ) -> Result<(v1::ContainerStatus, serde_json::Value), tonic::Status> {
        let req = v1::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: true,
        };
        let r = self
            .call(async |c| c.container_status(req).await)?
            .into_inner();
        let info = r
            .info
            .get("info")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok((r.status.unwrap_or_default(), info))
    }

    /// Stops and removes a pod with all its containers.
    pub fn remove_pod(&mut self, pod_id: &str) -> Result<(), tonic::Status> {
        let id = pod_id.to_owned();
        self.call(async |c| {
            c.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            c.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })?;
        Ok(())
    }
}

/// Sets `path` (creating tables) to `v` in a containerd config.
fn set(doc: &mut DocumentMut, path: &[&str], v: Item) {
    let mut t: &mut Table = doc.as_table_mut();
    for k in &path[..path.len() - 1] {
        t = t
            .entry(k)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .expect("a table");
    }
    t.insert(path[path.len() - 1], v);
}

/// A private containerd of `release` ready for pods: [`containerd_setup`]'s config, and the
/// local image built into `work` and imported. `None` when the release is not fetched (use
/// `require!` with `runtimes::missing`).
pub fn containerd_for_pods(release: Release, work: &Path) -> Option<Containerd> {
    let ctr = super::runtimes::bin_dir(release)?.join("ctr");
    let containerd = Containerd::start(release, containerd_setup(release))?;
    import_image(&ctr, containerd.grpc_socket(), work).unwrap();
    Some(containerd)
}

/// containerd's config for running pods here: NRI enabled by our `enable-nri`, negative
/// `oom_score_adj` refused on these machines (so `restrict_oom_score_adj = true`, or runc fails
/// with "can't get final child's PID from pipe"), and the local image as the sandbox image.
pub fn containerd_setup(release: Release) -> Setup {
    Setup::enable_nri().edit(move |doc, _| match release {
        Release::V1_7 => {
            let cri = ["plugins", "io.containerd.grpc.v1.cri"];
            set(
                doc,
                &[cri[0], cri[1], "restrict_oom_score_adj"],
                value(true),
            );
            set(doc, &[cri[0], cri[1], "sandbox_image"], value(IMAGE));
        }
        Release::V2_1 => {
            let runtime = ["plugins", "io.containerd.cri.v1.runtime"];
            set(
                doc,
                &[runtime[0], runtime[1], "restrict_oom_score_adj"],
                value(true),
            );
            let images = ["plugins", "io.containerd.cri.v1.images", "pinned_images"];
            set(
                doc,
                &[images[0], images[1], images[2], "sandbox"],
                value(IMAGE),
            );
        }
    })
}

/// Builds [`IMAGE`] into `dir/pause.tar` (once) and imports it into containerd's `k8s.io`
/// namespace with the release's `ctr`.
pub fn import_image(ctr: &Path, containerd_socket: &Path, dir: &Path) -> Result<(), String> {
    let archive = dir.join("pause.tar");
    if !archive.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oci-test-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&archive)
            .arg(IMAGE)
            .args(["/bin/sleep", "2147483647"])
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "building the test image failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let out = Command::new(ctr)
        .arg("--address")
        .arg(containerd_socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&archive)
        .output()
        .map_err(|e| format!("{}: {e}", ctr.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ctr images import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
