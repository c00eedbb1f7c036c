#!/usr/bin/env bash
# Starts a node on the local control plane (`make node`): containerd with runc, the bridge
# CNI network 10.244.0.0/24, the kubelet, kube-scheduler, kube-proxy, the controllers a
# node needs (deployment, replicaset, endpointslice, nodelifecycle, ...) and kube-router's
# NetworkPolicy firewall; imports the images; waits until the Node is Ready. Needs root
# and the control plane started for a node (NODE=1 hack/up.sh: its API server listens
# beyond 127.0.0.1, so pods reach it). Idempotent: what runs already is left running.
# hack/node/down.sh (run by `make down`) undoes all of it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
[[ $(id -u) == 0 ]] || { echo "node: needs root (containerd, the kubelet, iptables)" >&2; exit 1; }
cp=$root/target/controlplane
node=$root/target/node
bin=$node/bin
export KUBECONFIG=$cp/kubeconfig
export PATH=$bin:$PATH
mkdir -p "$node/logs" "$node/pids" "$node/images"
start=$SECONDS
name=tenantry-node

node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
[[ -n $node_ip ]] || node_ip=$(hostname -I | awk '{print $1}')
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
port=${server##*:}
if ! curl -sk --max-time 3 "https://$node_ip:$port/livez" >/dev/null; then
  echo "node: the API server does not answer on $node_ip:$port; start the control plane for a node: make down && make node" >&2
  exit 1
fi

running() { [[ -f $node/pids/$1.pid ]] && kill -0 "$(cat "$node/pids/$1.pid")" 2>/dev/null; }
launch() { # NAME COMMAND...: runs it in the background, once, its log in target/node/logs
  local what=$1; shift
  running "$what" && return 0
  setsid "$@" >"$node/logs/$what.log" 2>&1 </dev/null &
  echo $! >"$node/pids/$what.pid"
}
wait_until() { # SECONDS WHAT COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq 1 $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "node: $what not within ${limit}s (logs: target/node/logs)" >&2
  exit 1
}

# containerd 2.4 with runc. The VM may lack CAP_SYS_RESOURCE: the kubelet's oom_score_adj
# for sandboxes is clamped (restrict_oom_score_adj), or every sandbox fails to start.
cat >"$node/containerd.toml" <<TOML
version = 4
root = "/var/lib/containerd"
state = "/run/containerd"
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'localhost/pause:local'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '/etc/cni/net.d'
TOML
mkdir -p /etc/cni/net.d
cat >/etc/cni/net.d/10-tenantry-podnet.conflist <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
launch containerd containerd --config "$node/containerd.toml"
wait_until 30 "containerd" ctr version

# Images without a registry: one-layer OCI archives imported into containerd. The pause
# image is busybox sleeping; the test image is busybox (sh, nc, httpd).
rootfs=$node/images/busybox
if [[ ! -f $node/images/busybox.tar ]]; then
  rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/tmp" && chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/"
  for applet in $("$rootfs/bin/busybox" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
  done
  python3 hack/node/mkoci.py localhost/busybox:local "$node/images/busybox.tar" "$rootfs" --cmd '["/bin/sh"]' >/dev/null
  python3 hack/node/mkoci.py localhost/pause:local "$node/images/pause.tar" "$rootfs" \
    --entrypoint '["/bin/busybox","sleep","2147483647"]' >/dev/null
fi
# curl (with busybox's sh): the node tests' HTTPS client. curl and the libraries it links.
if [[ ! -f $node/images/curl.tar ]]; then
  rootfs=$node/images/curl
  rm -rf "$rootfs" && cp -a "$node/images/busybox" "$rootfs"
  hack/node/copy-with-libs.sh "$(command -v curl)" "$rootfs" /usr/bin/curl
  python3 hack/node/mkoci.py localhost/curl:local "$node/images/curl.tar" "$rootfs" --cmd '["/bin/sh"]' >/dev/null
fi
# Pinned: there is no registry to pull them again, so the kubelet's image garbage collector
# must never remove them (make image pins Tenantry's the same way).
for image in pause busybox curl; do
  ctr -n k8s.io images import "$node/images/$image.tar" >/dev/null
  ctr -n k8s.io images label "localhost/$image:local" io.cri-containerd.pinned=pinned >/dev/null
done

# The kubelet's identity: a client certificate for system:node:<name> signed by the
# control plane's CA (the Node authorizer then lets it register and read its pods).
state=$(cat "$cp/state-dir" 2>/dev/null || echo "$cp/run")
pki=$state/pki
if [[ ! -f $node/kubelet.crt ]] || ! openssl verify -CAfile "$pki/ca.crt" "$node/kubelet.crt" >/dev/null 2>&1; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$node/kubelet.key" 2>/dev/null
  openssl req -new -key "$node/kubelet.key" -subj "/O=system:nodes/CN=system:node:$name" -out "$node/kubelet.csr"
  openssl x509 -req -in "$node/kubelet.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 7 -out "$node/kubelet.crt" 2>/dev/null \
    -extfile <(printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n')
fi
# The API server's port changes with each control plane: the kubeconfig is written anew.
rm -f "$node/kubelet.kubeconfig"
kc=(kubectl --kubeconfig "$node/kubelet.kubeconfig" config)
"${kc[@]}" set-cluster local --server "$server" --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
"${kc[@]}" set-credentials node --client-certificate "$node/kubelet.crt" --client-key "$node/kubelet.key" --embed-certs >/dev/null
"${kc[@]}" set-context node --cluster local --user node >/dev/null
"${kc[@]}" use-context node >/dev/null
# cgroup v1 hosts (this kind of VM) need failCgroupV1: false; no systemd: cgroupfs. The
# kubelet API is open to the API server without a client certificate (test cluster only:
# kubectl logs and exec work). Disk: the kubelet's defaults (DiskPressure below 10%/15%
# free, image GC above 85% used) are fractions of the whole disk; on a big, well-used build
# disk (252 GiB, 17% free here) they taint the node and leave every pod Pending, and GC
# would delete images no registry can give back. This node only stops at under 1 GiB free.
cat >"$node/kubelet.yaml" <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1Gi
  imagefs.available: 1Gi
  nodefs.inodesFree: 1%
  imagefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
launch kubelet nodebin kubelet --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet.kubeconfig" \
  --hostname-override "$name" --node-ip "$node_ip" --root-dir /var/lib/kubelet
launch kube-scheduler nodebin kube-scheduler --kubeconfig "$KUBECONFIG" --leader-elect=false --secure-port=0
launch kube-controller-manager "$cp/bin/controlplane" kube-controller-manager \
  --kubeconfig="$state/kcm.kubeconfig" \
  --controllers=deployment,replicaset,endpointslice,endpointslicemirroring,nodelifecycle,daemonset,statefulset,job,disruption \
  --leader-elect=false --secure-port=0 --use-service-account-credentials=false
# kube-proxy and kube-router identify their Node: it must be registered first.
wait_until 60 "Node $name registered" kubectl get "node/$name"
launch kube-proxy nodebin kube-proxy --kubeconfig "$KUBECONFIG" --hostname-override "$name" \
  --proxy-mode iptables --cluster-cidr 10.244.0.0/24 --conntrack-max-per-core 0 \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
launch kube-router kube-router --kubeconfig "$KUBECONFIG" --hostname-override "$name" \
  --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
  --service-cluster-ip-range 10.0.0.0/24 --health-port 0

# default/kubernetes: the API server runs with --endpoint-reconciler-type=none, so its
# endpoint is given by hand (pods reach 10.0.0.1 through kube-proxy).
kubectl apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: tenantry-node
addressType: IPv4
endpoints:
- addresses: ["$node_ip"]
  conditions: {ready: true}
ports:
- {name: https, port: $port, protocol: TCP}
YAML
wait_until 60 "Node $name Ready" kubectl wait --for=condition=Ready "node/$name" --timeout=1s
rss=0
for f in "$node"/pids/*.pid; do
  kb=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$f")/status" 2>/dev/null || echo 0)
  rss=$((rss + ${kb:-0}))
done
free=$(df -h --output=avail /var/lib/containerd | tail -1 | tr -d ' ')
echo "node: $name Ready ($node_ip, $free free for images) in $((SECONDS - start))s; its processes hold $((rss / 1024)) MiB"
