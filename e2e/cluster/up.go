package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
)

func kubeVersion() string { return version.Get().GitVersion }

// child is one component process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

type supervisor struct {
	dir      string
	self     string
	mu       sync.Mutex
	children []*child
	exited   chan *child
}

func (s *supervisor) start(name string, args ...string) (*child, error) {
	logPath := filepath.Join(s.dir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = s.dir
	// Own process group (a terminal's Ctrl-C reaches only the supervisor, which stops
	// the components in order); killed by the kernel if the supervisor dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
		s.exited <- c
	}()
	logf("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	return c, nil
}

// stopAll stops the components in reverse start order: SIGTERM, then SIGKILL after grace.
func (s *supervisor) stopAll(grace time.Duration) {
	s.mu.Lock()
	cs := append([]*child(nil), s.children...)
	s.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		select {
		case <-c.done:
			continue
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
			logf("%s did not stop within %s: SIGKILL", c.name, grace)
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
		logf("stopped %s", c.name)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s kfaas-cluster: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func runUp(args []string) int {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (certificates, etcd data, logs, kubeconfigs)")
	nodeConfig := fs.String("node-config", "", "node agent config: image -> local command mapping (YAML)")
	nodeName := fs.String("node-name", "kfaas-node", "name of the Node")
	hostIP := fs.String("host-ip", "10.244.0.1", "address of the node and the API server (advertise address); must be bindable")
	podRange := fs.String("pod-ip-start", "10.244.1.1", "first pod IP handed out")
	port := fs.Int("port", 6443, "API server secure port")
	timeout := fs.Duration("timeout", 4*time.Minute, "give up when the cluster is not ready within this time")
	_ = fs.Parse(args)
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "up: --dir is required")
		return 2
	}
	begin := time.Now()
	abs, err := filepath.Abs(*dir)
	if err != nil {
		logf("%v", err)
		return 1
	}
	*dir = abs
	for _, d := range []string{"logs", "etcd", "pki", "pods"} {
		if err := os.MkdirAll(filepath.Join(*dir, d), 0o755); err != nil {
			logf("%v", err)
			return 1
		}
	}
	_ = os.Remove(filepath.Join(*dir, "ready"))

	ip := net.ParseIP(*hostIP)
	if ip == nil {
		logf("bad --host-ip %q", *hostIP)
		return 2
	}
	if l, err := net.Listen("tcp", net.JoinHostPort(*hostIP, "0")); err != nil {
		logf("cannot bind %s (%v): run inside a private network namespace prepared with "+
			"`ip link set lo up; ip route add local 10.244.0.0/16 dev lo` (see e2e/run.sh)", *hostIP, err)
		return 1
	} else {
		l.Close()
	}

	p := pki{dir: filepath.Join(*dir, "pki")}
	if err := p.ensure([]net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback, ip, net.ParseIP("10.96.0.1")}); err != nil {
		logf("pki: %v", err)
		return 1
	}
	caPEM, _ := os.ReadFile(p.path("ca.crt"))
	adminCrt, _ := os.ReadFile(p.path("admin.crt"))
	adminKey, _ := os.ReadFile(p.path("admin.key"))
	server := "https://127.0.0.1:" + strconv.Itoa(*port)
	adminKC := filepath.Join(*dir, "admin.kubeconfig")
	if err := writeKubeconfig(adminKC, server, caPEM, adminCrt, adminKey, ""); err != nil {
		logf("kubeconfig: %v", err)
		return 1
	}

	self, err := os.Executable()
	if err != nil {
		logf("%v", err)
		return 1
	}
	s := &supervisor{dir: *dir, self: self, exited: make(chan *child, 8)}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	fail := func(format string, args ...any) int {
		logf(format, args...)
		logf("component logs: %s", filepath.Join(*dir, "logs"))
		s.stopAll(10 * time.Second)
		return 1
	}
	// waitFor polls cond until it holds, a component exits, a signal arrives or ctx ends.
	waitFor := func(what string, cond func() bool) error {
		for {
			if cond() {
				logf("%s (%.1fs)", what, time.Since(begin).Seconds())
				return nil
			}
			select {
			case c := <-s.exited:
				return fmt.Errorf("%s exited (%v) while waiting for: %s", c.name, c.err, what)
			case g := <-sig:
				return fmt.Errorf("signal %v while waiting for: %s", g, what)
			case <-ctx.Done():
				return fmt.Errorf("timed out waiting for: %s", what)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}

	if _, err := s.start("etcd", filepath.Join(*dir, "etcd")); err != nil {
		return fail("%v", err)
	}
	if err := waitFor("etcd is listening", func() bool { return dialOK("127.0.0.1:2379") }); err != nil {
		return fail("%v", err)
	}

	pk := p.path
	apiArgs := []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0",
		"--advertise-address=" + *hostIP,
		"--secure-port=" + strconv.Itoa(*port),
		"--cert-dir=" + filepath.Join(*dir, "pki", "apiserver-generated"),
		"--tls-cert-file=" + pk("apiserver.crt"),
		"--tls-private-key-file=" + pk("apiserver.key"),
		"--client-ca-file=" + pk("ca.crt"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pk("sa.pub"),
		"--service-account-signing-key-file=" + pk("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// Aggregation is unused; naming a CA keeps the controllers' authn from complaining.
		// `kubectl logs`: the API server calls the node agent's kubelet endpoint.
		"--kubelet-client-certificate=" + pk("admin.crt"),
		"--kubelet-client-key=" + pk("admin.key"),
		"--kubelet-certificate-authority=" + pk("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--requestheader-client-ca-file=" + pk("ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--v=1",
	}
	if _, err := s.start("apiserver", apiArgs...); err != nil {
		return fail("%v", err)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", adminKC)
	if err != nil {
		return fail("admin kubeconfig: %v", err)
	}
	restCfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fail("client: %v", err)
	}
	if err := waitFor("API server is ready (/readyz)", func() bool {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	}); err != nil {
		return fail("%v", err)
	}

	common := []string{"--kubeconfig=" + adminKC, "--authentication-kubeconfig=" + adminKC,
		"--authorization-kubeconfig=" + adminKC, "--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"}
	cmArgs := append(append([]string{}, common...),
		"--service-account-private-key-file="+pk("sa.key"),
		"--root-ca-file="+pk("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+pk("ca.crt"),
		"--cluster-signing-key-file="+pk("ca.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--cluster-name=kfaas-e2e",
		// Quick reactions: the suite waits on controllers, not on production damping.
		"--node-monitor-grace-period=40s",
		"--concurrent-deployment-syncs=10",
		"--concurrent-replicaset-syncs=10",
	)
	if _, err := s.start("controller-manager", cmArgs...); err != nil {
		return fail("%v", err)
	}
	if _, err := s.start("scheduler", common...); err != nil {
		return fail("%v", err)
	}
	nodeArgs := []string{"--kubeconfig=" + adminKC, "--dir=" + *dir, "--name=" + *nodeName,
		"--host-ip=" + *hostIP, "--pod-ip-start=" + *podRange, "--api-port=" + strconv.Itoa(*port)}
	if *nodeConfig != "" {
		nc, err := filepath.Abs(*nodeConfig)
		if err != nil {
			return fail("%v", err)
		}
		nodeArgs = append(nodeArgs, "--config="+nc)
	}
	if _, err := s.start("node", nodeArgs...); err != nil {
		return fail("%v", err)
	}
	if err := waitFor("node "+*nodeName+" is Ready and schedulable", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, *nodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return false
			}
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	}); err != nil {
		return fail("%v", err)
	}
	if err := waitFor("service account default/default exists", func() bool {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return fail("%v", err)
	}
	if err := waitFor("config map default/kube-root-ca.crt exists", func() bool {
		_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return fail("%v", err)
	}
	cancel()
	took := time.Since(begin)
	msg := fmt.Sprintf("ready in %.1fs: KUBECONFIG=%s (Kubernetes %s)\n", took.Seconds(), adminKC, kubeVersion())
	if err := os.WriteFile(filepath.Join(*dir, "ready"), []byte(msg), 0o644); err != nil {
		return fail("%v", err)
	}
	logf("%s", msg)

	select {
	case g := <-sig:
		logf("signal %v: stopping", g)
		s.stopAll(15 * time.Second)
		return 0
	case c := <-s.exited:
		logf("%s exited unexpectedly (%v); stopping the cluster; logs: %s", c.name, c.err, filepath.Join(*dir, "logs"))
		s.stopAll(15 * time.Second)
		return 1
	}
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
