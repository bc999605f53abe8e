"""An emulated Kubernetes cluster built from real parts, for the kubernetes target's tests.

No Kubernetes API server, kubelet or KServe/KFP controller can run here, so each is played by the
smallest stand-in that follows the real component's documented behaviour (each module cites the
upstream source it follows), and everything below them is real: every Pod runs as a Docker container
of the project's own images with its declared command, env, volumes and security context; Services
route to the Ready pods their selectors pick; KServe's own storage code fills /mnt/models from an
S3 server; the KFP components run as containers of their declared image.

  apiserver  the Kubernetes API (kmock plus the apiserver behaviour clients rely on)
  admission  ValidatingAdmissionPolicies, as the API server applies them (CEL by cel-python)
  selectors  label selectors, as Kubernetes matches them
  engine     the Docker engine of this checkout (scripts/dockerd.sh)
  network    pod network, Services (a userspace kube-proxy) and cluster DNS
  kubelet    Pods -> containers, with status, logs and exec as a kubelet reports them
  workloads  the Deployment controller
  kserve     KServe's InferenceService controller (Knative or raw Deployment mode) and its defaulting webhook
  fieldmanager  server-side apply: managedFields, field ownership and conflicts, as the API server keeps them
  kfp        the KFP v2beta1 API server, and a backend that runs the submitted pipeline in containers
  storage    an S3-compatible object store (moto's server mode)
  cluster    all of the above, with the project's k8s-yaml objects installed
"""
