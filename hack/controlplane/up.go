package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

const (
	apiserverReadyTimeout = 180 * time.Second
	kcmReadyTimeout       = 120 * time.Second
	stopTimeout           = 20 * time.Second
)

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "state folder (certificates, etcd data, logs); a temporary one, removed on exit, when empty")
	kubeconfigOut := fs.String("kubeconfig", "", "also write the admin kubeconfig here")
	readyFile := fs.String("ready-file", "", "write this file once ready (holds the kubeconfig path), remove it on exit")
	pidFile := fs.String("pid-file", "", "write this process's pid here, remove it on exit")
	lifeline := fs.Bool("lifeline", false, "stop when standard input reaches end of file (the parent process exited)")
	var extraAPIArgs repeated
	fs.Var(&extraAPIArgs, "apiserver-arg", "an extra kube-apiserver flag, e.g. --apiserver-arg=--profiling=true (repeatable; a later flag overrides an earlier one)")
	etcdQuota := fs.Int64("etcd-quota-bytes", 8<<30, "etcd's backend quota (etcd's own default, 2 GiB, is reached by the largest benchmark)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: controlplane up [flags]

Starts etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 and free ports,
prints READY <kubeconfig>, and stops on SIGTERM/SIGINT (or, with --lifeline, when
standard input closes).

Signals for resilience tests (an API server outage on demand):
  SIGUSR1  stop kube-apiserver, then etcd, cleanly (the data is kept)
  SIGUSR2  start etcd, then kube-apiserver again on the same ports with the same data
           and certificates; logs "outage over" once /readyz answers
kube-controller-manager keeps running through the outage and reconnects.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	// Children get PR_SET_PDEATHSIG, which fires when the creating OS thread exits:
	// keep this goroutine on one thread for the whole run.
	runtime.LockOSThread()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// A deliberate outage, for resilience tests: SIGUSR1 stops kube-apiserver and etcd,
	// SIGUSR2 starts them again (same ports, data and certificates). Registered before
	// anything starts, so an early signal waits for the control plane to be ready.
	outage := make(chan os.Signal, 4)
	signal.Notify(outage, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(outage)
	if *lifeline {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			logf("standard input closed: stopping")
			stop()
		}()
	}

	removeDir := false
	if *dir == "" {
		d, err := os.MkdirTemp("", "tenantry-controlplane-")
		if err != nil {
			return err
		}
		*dir, removeDir = d, true
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	*dir = abs
	// Every run starts from an empty cluster.
	for _, sub := range []string{"pki", "etcd", "logs"} {
		if err := os.RemoveAll(filepath.Join(*dir, sub)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(*dir, "logs"), 0o755); err != nil {
		return err
	}
	defer func() {
		if removeDir {
			_ = os.RemoveAll(*dir)
		}
	}()
	if *readyFile != "" {
		_ = os.Remove(*readyFile)
		defer os.Remove(*readyFile)
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return err
		}
		defer os.Remove(*pidFile)
	}

	start := time.Now()
	p, err := newPKI(filepath.Join(*dir, "pki"))
	if err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClientURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[0])}
	etcdPeerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(ports[1])}
	apiPort := ports[2]

	etcdDir, etcdLog := filepath.Join(*dir, "etcd"), filepath.Join(*dir, "logs", "etcd.log")
	etcd, err := startEtcd(etcdDir, etcdLog, etcdClientURL, etcdPeerURL, *etcdQuota)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	// etcd and the apiserver are replaced after an outage: the deferred stops read the
	// variables when they run.
	defer func() {
		if etcd != nil {
			etcd.Close()
			logf("etcd stopped")
		}
	}()
	logf("etcd ready on %s", etcdClientURL.String())

	self, err := os.Executable()
	if err != nil {
		return err
	}
	apiArgs := []string{
		"--etcd-servers=" + etcdClientURL.String(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + p.ServingCert,
		"--tls-private-key-file=" + p.ServingKey,
		"--client-ca-file=" + p.CACert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.SAPub,
		"--service-account-signing-key-file=" + p.SAKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		// Graceful termination ends ~2 s after in-flight requests drain, instead of
		// waiting up to a minute for the watches clients keep open (an outage stops the
		// apiserver while kube-controller-manager and the operator under test watch).
		"--shutdown-send-retry-after=true",
		// The aggregation layer, as kubeadm sets it up: the API server authenticates the
		// caller and proxies requests for an APIService's group to its server with this
		// client certificate and the caller in X-Remote-* headers (Tenantry's discovery
		// API). Routed to the Service's cluster IP or ExternalName (no aggregator
		// routing to endpoints: a test's server runs on this host, behind an ExternalName
		// Service "localhost").
		"--requestheader-client-ca-file=" + p.FrontProxyCA,
		"--requestheader-allowed-names=" + frontProxyClient,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.ProxyClientCert,
		"--proxy-client-key-file=" + p.ProxyClientKey,
	}
	apiArgs = append(apiArgs, extraAPIArgs...)
	apiserverLog := filepath.Join(*dir, "logs", "kube-apiserver.log")
	apiserverProc, err := startChild(self, "kube-apiserver", apiArgs, apiserverLog)
	if err != nil {
		return err
	}
	defer func() { apiserverProc.stop() }()

	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	kubeconfig := filepath.Join(*dir, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, p.CACert, p.AdminCert, p.AdminKey); err != nil {
		return err
	}
	kcmKubeconfig := filepath.Join(*dir, "kcm.kubeconfig")
	if err := writeKubeconfig(kcmKubeconfig, server, p.CACert, p.KCMCert, p.KCMKey); err != nil {
		return err
	}
	client, err := adminHTTPClient(p)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, apiserverProc, apiserverReadyTimeout, "kube-apiserver /readyz", func() bool {
		return get(client, server+"/readyz") == http.StatusOK
	}); err != nil {
		return err
	}
	logf("kube-apiserver ready on %s (%.1fs)", server, time.Since(start).Seconds())

	kcmArgs := []string{
		"--kubeconfig=" + kcmKubeconfig,
		// Only what an operator's tests need: namespaces finish terminating, owner
		// references cascade, namespaces get their default ServiceAccount and
		// kube-root-ca.crt, ServiceAccount token Secrets work, and aggregated
		// ClusterRoles (Tenantry's workspace roles aggregate the rules of the built-in
		// admin, edit and view roles, as those do themselves) get their rules, and
		// ResourceQuotas get their status (what is used: an organization's usage and
		// pooled quota add it up).
		"--controllers=namespace,garbagecollector,serviceaccount,serviceaccount-token,root-ca-cert-publisher,clusterrole-aggregation,resourcequota",
		"--service-account-private-key-file=" + p.SAKey,
		"--root-ca-file=" + p.CACert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
	}
	kcmProc, err := startChild(self, "kube-controller-manager", kcmArgs, filepath.Join(*dir, "logs", "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	defer kcmProc.stop()
	if err := waitFor(ctx, kcmProc, kcmReadyTimeout, "kube-controller-manager (ServiceAccount default/default and ConfigMap default/kube-root-ca.crt)", func() bool {
		return get(client, server+"/api/v1/namespaces/default/serviceaccounts/default") == http.StatusOK &&
			get(client, server+"/api/v1/namespaces/default/configmaps/kube-root-ca.crt") == http.StatusOK
	}); err != nil {
		return err
	}

	if *kubeconfigOut != "" {
		if err := copyFile(kubeconfig, *kubeconfigOut); err != nil {
			return err
		}
		kubeconfig, _ = filepath.Abs(*kubeconfigOut)
	}
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte(kubeconfig+"\n"), 0o644); err != nil {
			return err
		}
	}
	logf("ready in %.1fs; logs in %s", time.Since(start).Seconds(), filepath.Join(*dir, "logs"))
	fmt.Printf("READY %s\n", kubeconfig)

	down := false // between SIGUSR1 and SIGUSR2: the apiserver's exit is deliberate
	for {
		var apiserverDone <-chan struct{}
		if !down {
			apiserverDone = apiserverProc.done
		}
		select {
		case <-ctx.Done():
			logf("stopping")
			return nil
		case <-apiserverDone:
			return fmt.Errorf("kube-apiserver exited unexpectedly: %v\n%s", apiserverProc.err, tail(apiserverProc.log, 30))
		case <-kcmProc.done:
			return fmt.Errorf("kube-controller-manager exited unexpectedly: %v\n%s", kcmProc.err, tail(kcmProc.log, 30))
		case sig := <-outage:
			switch {
			case sig == syscall.SIGUSR1 && !down:
				logf("SIGUSR1: outage: stopping kube-apiserver and etcd (data kept)")
				apiserverProc.stop()
				etcd.Close()
				etcd, down = nil, true
				logf("outage: kube-apiserver and etcd are down; SIGUSR2 starts them again")
			case sig == syscall.SIGUSR2 && down:
				logf("SIGUSR2: starting etcd and kube-apiserver again")
				began := time.Now()
				if etcd, err = startEtcd(etcdDir, etcdLog, etcdClientURL, etcdPeerURL, *etcdQuota); err != nil {
					return fmt.Errorf("restarting etcd after the outage: %w", err)
				}
				if apiserverProc, err = startChild(self, "kube-apiserver", apiArgs, apiserverLog); err != nil {
					return fmt.Errorf("restarting kube-apiserver after the outage: %w", err)
				}
				down = false
				if err := waitFor(ctx, apiserverProc, apiserverReadyTimeout, "kube-apiserver /readyz after the outage", func() bool {
					return get(client, server+"/readyz") == http.StatusOK
				}); err != nil {
					return err
				}
				logf("outage over: kube-apiserver ready again on %s (%.1fs)", server, time.Since(began).Seconds())
			case down:
				logf("%v ignored: the outage is on (SIGUSR2 ends it)", sig)
			default:
				logf("%v ignored: the control plane is up (SIGUSR1 starts an outage)", sig)
			}
		}
	}
}

func startEtcd(dataDir, logFile string, client, peer url.URL, quota int64) (*embed.Etcd, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	cfg.UnsafeNoFsync = true
	cfg.QuotaBackendBytes = quota
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{logFile}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("etcd did not become ready within 60s")
	}
}

type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startChild(self, name string, args []string, logFile string) (*child, error) {
	// Appends: a child restarted after an outage keeps its earlier lines.
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// If this process dies without cleaning up (kill -9), the kernel kills the child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	logf("%s started (pid %d, log %s)", name, cmd.Process.Pid, logFile)
	return c, nil
}

// stop sends SIGTERM and waits; after stopTimeout it kills.
func (c *child) stop() {
	if c == nil { // a restart after an outage failed
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		logf("%s stopped", c.name)
	case <-time.After(stopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		logf("%s killed after %s", c.name, stopTimeout)
	}
}

func waitFor(ctx context.Context, c *child, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for %s", what)
		case <-c.done:
			return fmt.Errorf("%s exited while waiting for %s: %v\nlast lines of %s:\n%s", c.name, what, c.err, c.log, tail(c.log, 40))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s\nlast lines of %s:\n%s", timeout, what, c.log, tail(c.log, 40))
		}
	}
}

func adminHTTPClient(p *pki) (*http.Client, error) {
	ca, err := os.ReadFile(p.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(p.AdminCert, p.AdminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}, nil
}

func get(c *http.Client, u string) int {
	resp, err := c.Get(u)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func writeKubeconfig(file, server, caFile, certFile, keyFile string) error {
	b64 := func(f string) (string, error) {
		data, err := os.ReadFile(f)
		return base64.StdEncoding.EncodeToString(data), err
	}
	ca, err := b64(caFile)
	if err != nil {
		return err
	}
	cert, err := b64(certFile)
	if err != nil {
		return err
	}
	key, err := b64(keyFile)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: tenantry-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: tenantry-local
  context:
    cluster: tenantry-local
    user: admin
current-context: tenantry-local
`, server, ca, cert, key)
	return os.WriteFile(file, []byte(cfg), 0o600)
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

// freePorts asks the kernel for n distinct free ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s controlplane: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// repeated is a flag that may be given more than once.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }
