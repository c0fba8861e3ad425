package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// agent is the node: it registers a Node, keeps its Lease fresh, and runs the pods the
// scheduler binds to it as local processes (see pod.go).
type agent struct {
	cs       kubernetes.Interface
	name     string
	dir      string // cluster state dir; pods live in dir/pods
	hostIP   string
	apiPort  int
	caPEM    []byte
	cfg      *nodeConfig
	svc      *serviceProxy
	self     string
	capacity corev1.ResourceList

	mu       sync.Mutex
	pods     map[types.UID]*podRunner
	finished map[types.UID]bool // pods run to the end: never started again
	usedIPs  map[string]types.UID
	nextIP   uint32
	ipFirst  uint32
}

func runNode(args []string) int {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the agent")
	dir := fs.String("dir", "", "cluster state directory")
	name := fs.String("name", "kfaas-node", "node name")
	hostIP := fs.String("host-ip", "10.244.0.1", "node InternalIP; also the API server address pods use")
	podIPStart := fs.String("pod-ip-start", "10.244.1.1", "first pod IP")
	apiPort := fs.Int("api-port", 6443, "API server port")
	config := fs.String("config", "", "image mapping config (YAML)")
	_ = fs.Parse(args)
	klog.SetOutput(os.Stderr)

	cfg, err := loadNodeConfig(*config)
	if err != nil {
		logf("node: %v", err)
		return 1
	}
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		logf("node: %v", err)
		return 1
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "kfaas-node"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		logf("node: %v", err)
		return 1
	}
	caPEM, err := os.ReadFile(filepath.Join(*dir, "pki", "ca.crt"))
	if err != nil {
		logf("node: %v", err)
		return 1
	}
	first := net.ParseIP(*podIPStart).To4()
	if first == nil {
		logf("node: bad --pod-ip-start %q", *podIPStart)
		return 2
	}
	self, _ := os.Executable()
	a := &agent{
		cs: cs, name: *name, dir: *dir, hostIP: *hostIP, apiPort: *apiPort, caPEM: caPEM, cfg: cfg, self: self,
		capacity: corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse("32"),
			corev1.ResourceMemory:           resource.MustParse("64Gi"),
			corev1.ResourcePods:             resource.MustParse("250"),
			corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		},
		pods:     map[types.UID]*podRunner{},
		finished: map[types.UID]bool{},
		usedIPs:  map[string]types.UID{},
		ipFirst:  binary.BigEndian.Uint32(first),
	}
	a.nextIP = a.ipFirst

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	if err := a.register(ctx); err != nil {
		logf("node: register: %v", err)
		return 1
	}
	go a.heartbeat(ctx)
	a.svc = a.startServices(ctx)
	go a.serveKubelet(ctx)

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "spec.nodeName=" + a.name
	}))
	inf := factory.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onPod(ctx, obj) },
		UpdateFunc: func(_, obj any) { a.onPod(ctx, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.onPodGone(p)
			}
		},
	})
	factory.Start(ctx.Done())
	logf("node %s: running pods as processes; host IP %s, pod IPs from %s", a.name, a.hostIP, *podIPStart)

	s := <-sig
	logf("node: %v: stopping all pod processes", s)
	a.mu.Lock()
	runners := make([]*podRunner, 0, len(a.pods))
	for _, r := range a.pods {
		runners = append(runners, r)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() { defer wg.Done(); r.shutdown(5 * time.Second) }()
	}
	wg.Wait()
	removeCreated(filepath.Join(a.dir, "pods", "created-paths"))
	return 0
}

func (a *agent) onPod(ctx context.Context, obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	r, ok := a.pods[p.UID]
	if !ok {
		if p.DeletionTimestamp != nil || a.finished[p.UID] || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			a.mu.Unlock()
			if p.DeletionTimestamp != nil {
				// Nothing of ours runs: finish the deletion.
				a.deletePod(ctx, p)
			}
			return
		}
		r = newPodRunner(a, p)
		a.pods[p.UID] = r
		a.mu.Unlock()
		go r.run(ctx)
		return
	}
	a.mu.Unlock()
	r.update(p)
}

func (a *agent) onPodGone(p *corev1.Pod) {
	a.mu.Lock()
	r, ok := a.pods[p.UID]
	a.mu.Unlock()
	if ok {
		r.forceStop()
	}
}

func (a *agent) forget(r *podRunner) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pods, r.uid)
	a.finished[r.uid] = true
	if r.ip != "" && a.usedIPs[r.ip] == r.uid {
		delete(a.usedIPs, r.ip)
	}
}

// allocIP hands out the next free address from the counter (skipping .0 and .255).
func (a *agent) allocIP(uid types.UID) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range 1 << 16 {
		n := a.nextIP
		a.nextIP++
		if a.nextIP&0xffff == 0 { // stay in the /16
			a.nextIP = a.ipFirst
		}
		if b := n & 0xff; b == 0 || b == 255 {
			continue
		}
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, n)
		s := ip.String()
		if s == a.hostIP {
			continue
		}
		if _, used := a.usedIPs[s]; !used {
			a.usedIPs[s] = uid
			return s, nil
		}
	}
	return "", fmt.Errorf("no free pod IP")
}

func (a *agent) deletePod(ctx context.Context, p *corev1.Pod) {
	zero := int64(0)
	uid := p.UID
	err := a.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		logf("node: delete pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

func (a *agent) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	hostname, _ := os.Hostname()
	return corev1.NodeStatus{
		Capacity:    a.capacity,
		Allocatable: a.capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kfaas node agent"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kfaas node agent"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kfaas node agent"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kfaas node agent is posting ready status; pods run as local processes"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: a.hostIP},
			{Type: corev1.NodeHostName, Address: a.name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: "kfaas-" + hostname, SystemUUID: "kfaas-" + a.name, BootID: strconv.Itoa(os.Getpid()),
			KernelVersion: "", OSImage: "kfaas process node", ContainerRuntimeVersion: "kfaas-process://1",
			KubeletVersion: kubeVersion(), KubeProxyVersion: "", OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH,
		},
	}
}

func (a *agent) register(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.name, Labels: map[string]string{
			"kubernetes.io/hostname": a.name, "kubernetes.io/os": runtime.GOOS, "kubernetes.io/arch": runtime.GOARCH,
			"kfaas.dev/process-node": "true",
		}},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.0.0/16", PodCIDRs: []string{"10.244.0.0/16"}},
	}
	var err error
	for i := 0; i < 60; i++ {
		_, err = a.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			err = nil
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return err
	}
	return a.postStatus(ctx)
}

func (a *agent) postStatus(ctx context.Context) error {
	n, err := a.cs.CoreV1().Nodes().Get(ctx, a.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	st := a.nodeStatus()
	for i, c := range st.Conditions {
		for _, old := range n.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	n.Status = st
	_, err = a.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease every 10s and re-posts node status every 30s.
func (a *agent) heartbeat(ctx context.Context) {
	leases := a.cs.CoordinationV1().Leases("kube-node-lease")
	dur := int32(40)
	holder := a.name
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	n := 0
	for {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, a.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.name, Namespace: "kube-node-lease"},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now},
			}
			if node, err := a.cs.CoreV1().Nodes().Get(ctx, a.name, metav1.GetOptions{}); err == nil {
				l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
			}
			_, err = leases.Create(ctx, l, metav1.CreateOptions{})
			if err != nil {
				logf("node: create lease: %v", err)
			}
		case err != nil:
			logf("node: get lease: %v", err)
		default:
			l.Spec.RenewTime, l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &now, &holder, &dur
			if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
				logf("node: renew lease: %v", err)
			}
		}
		if n%3 == 2 {
			if err := a.postStatus(ctx); err != nil {
				logf("node: post status: %v", err)
			}
		}
		n++
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
