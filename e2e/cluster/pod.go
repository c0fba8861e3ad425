package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podRunner runs one pod: its init containers in order, then its containers as
// supervised local processes, and reports status back to the API server.
type podRunner struct {
	a   *agent
	uid types.UID
	ip  string
	dir string

	mu        sync.Mutex
	cur       *corev1.Pod
	started   metav1.Time
	initDone  bool
	ctrs      map[string]*ctrState // by container name (init and regular)
	initOrder []string
	stopping  bool
	grace     time.Duration
	stopCh    chan struct{} // closed when the pod must stop (deletion or agent shutdown)
	stopOnce  sync.Once
	dirty     chan struct{}
	podFailed string         // reason when the pod fails before containers run
	wg        sync.WaitGroup // container supervisors
	done      chan struct{}  // closed when run returns
	vols      *podVolumes
}

type ctrState struct {
	spec      corev1.Container
	init      bool
	sidecar   bool // init container with restartPolicy Always
	cmd       *exec.Cmd
	running   bool
	startedAt metav1.Time
	started   bool // startup probe passed (or none)
	ready     bool
	restarts  int32
	waiting   string // reason while not running
	waitMsg   string
	term      *corev1.ContainerStateTerminated // current state when exited for good
	lastTerm  *corev1.ContainerStateTerminated
	exited    chan struct{}
	killReq   chan string // liveness/startup failure -> restart
}

func newPodRunner(a *agent, p *corev1.Pod) *podRunner {
	r := &podRunner{
		a: a, uid: p.UID, cur: p.DeepCopy(), started: metav1.Now(), ctrs: map[string]*ctrState{},
		stopCh: make(chan struct{}), dirty: make(chan struct{}, 1), done: make(chan struct{}),
		dir: filepath.Join(a.dir, "pods", p.Namespace+"_"+p.Name+"_"+string(p.UID)),
	}
	for _, c := range p.Spec.InitContainers {
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		r.ctrs[c.Name] = &ctrState{spec: c, init: true, sidecar: sidecar, waiting: "PodInitializing"}
		r.initOrder = append(r.initOrder, c.Name)
	}
	for _, c := range p.Spec.Containers {
		r.ctrs[c.Name] = &ctrState{spec: c, waiting: "ContainerCreating"}
	}
	return r
}

func (r *podRunner) pod() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *podRunner) key() string { p := r.pod(); return p.Namespace + "/" + p.Name }

func (r *podRunner) markDirty() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// update takes a newer copy of the pod; a deletion timestamp starts a graceful stop.
func (r *podRunner) update(p *corev1.Pod) {
	r.mu.Lock()
	r.cur = p.DeepCopy()
	r.mu.Unlock()
	if p.DeletionTimestamp != nil {
		grace := 30 * time.Second
		if p.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
		}
		r.stop(grace)
	}
}

func (r *podRunner) stop(grace time.Duration) {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.stopping = true
		r.grace = grace
		r.mu.Unlock()
		close(r.stopCh)
	})
}

// forceStop: the pod object is gone from the API server; kill at once.
func (r *podRunner) forceStop() { r.stop(0) }

// shutdown: the agent stops; stop processes but leave the pod object alone.
func (r *podRunner) shutdown(grace time.Duration) {
	r.stop(grace)
	<-r.done
}

func (r *podRunner) isStopping() bool {
	select {
	case <-r.stopCh:
		return true
	default:
		return false
	}
}

func (r *podRunner) logf(format string, args ...any) {
	logf("pod %s: %s", r.key(), fmt.Sprintf(format, args...))
}

func (r *podRunner) run(ctx context.Context) {
	defer close(r.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.statusLoop(ctx)
	defer r.a.forget(r)

	ip, err := r.a.allocIP(r.uid)
	if err != nil {
		r.podFailed = err.Error()
		r.writeStatus(ctx)
		return
	}
	r.mu.Lock()
	r.ip = ip
	r.mu.Unlock()
	r.logf("IP %s, dir %s", ip, r.dir)
	_ = os.MkdirAll(r.dir, 0o755)
	r.markDirty()

	// Volumes (service-account token, config maps, secrets, downward API, emptyDir).
	for {
		r.vols, err = r.prepareVolumes(ctx)
		if err == nil {
			break
		}
		r.setAllWaiting("ContainerCreating", err.Error())
		r.logf("volumes: %v", err)
		select {
		case <-r.stopCh:
			r.finish(ctx)
			return
		case <-time.After(2 * time.Second):
		}
	}
	go r.vols.refreshTokens(ctx, r)

	// Init containers in order; a sidecar (restartPolicy Always) keeps running.
	for _, name := range r.initOrder {
		st := r.ctrs[name]
		if st.sidecar {
			r.wg.Add(1)
			go r.supervise(ctx, st)
			// Wait until it is started (startup probe) before the next one.
			for !r.isStopping() {
				r.mu.Lock()
				ok := st.running && st.started
				r.mu.Unlock()
				if ok {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		r.wg.Add(1)
		r.supervise(ctx, st)
		r.mu.Lock()
		ok := st.term != nil && st.term.ExitCode == 0
		r.mu.Unlock()
		if !ok {
			r.finish(ctx)
			return
		}
	}
	r.mu.Lock()
	r.initDone = true
	r.mu.Unlock()
	r.markDirty()
	for _, c := range r.pod().Spec.Containers {
		r.wg.Add(1)
		go r.supervise(ctx, r.ctrs[c.Name])
	}
	// Wait for all containers to end (stop, or exit for good per restartPolicy).
	for _, c := range r.pod().Spec.Containers {
		st := r.ctrs[c.Name]
		for {
			r.mu.Lock()
			done := st.term != nil && !st.running
			r.mu.Unlock()
			if done || r.isStopping() {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !r.isStopping() {
		// Completed pod (restartPolicy Never/OnFailure): stop sidecars, keep the object.
		r.stop(30 * time.Second)
	}
	r.finish(ctx)
}

// finish waits for every process to end; on API deletion it removes the pod object.
func (r *podRunner) finish(ctx context.Context) {
	if !r.isStopping() {
		r.stop(30 * time.Second) // failed init container: stop sidecars
	}
	r.wg.Wait()
	r.writeStatus(ctx)
	p := r.pod()
	if p.DeletionTimestamp != nil {
		r.a.deletePod(ctx, p)
		r.logf("deleted")
		_ = os.RemoveAll(filepath.Join(r.dir, "volumes"))
	}
}

func (r *podRunner) setAllWaiting(reason, msg string) {
	r.mu.Lock()
	for _, st := range r.ctrs {
		if !st.running {
			st.waiting, st.waitMsg = reason, msg
		}
	}
	r.mu.Unlock()
	r.markDirty()
}

func (r *podRunner) restartPolicy(st *ctrState) corev1.RestartPolicy {
	if st.sidecar {
		return corev1.RestartPolicyAlways
	}
	if st.init {
		if p := r.pod().Spec.RestartPolicy; p == corev1.RestartPolicyNever {
			return p
		}
		return corev1.RestartPolicyOnFailure
	}
	return r.pod().Spec.RestartPolicy
}

// supervise runs one container until it ends for good or the pod stops.
func (r *podRunner) supervise(ctx context.Context, st *ctrState) {
	defer r.wg.Done()
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		if r.isStopping() {
			return
		}
		code, reason, msg := r.runOnce(ctx, st)
		if r.isStopping() {
			return
		}
		policy := r.restartPolicy(st)
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && code == 0) {
			return
		}
		r.logf("container %s exited (%d, %s); restarting in %s", st.spec.Name, code, reason, backoff)
		r.mu.Lock()
		st.lastTerm, st.term = st.term, nil
		st.waiting, st.waitMsg = "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s: %s", backoff, st.spec.Name, msg)
		r.mu.Unlock()
		r.markDirty()
		select {
		case <-r.stopCh:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
		r.mu.Lock()
		st.restarts++
		r.mu.Unlock()
	}
}

// execSpec is handed to `kfaas-cluster pod-exec` (see podexec.go).
type execSpec struct {
	Argv   []string    `json:"argv"`
	Env    []string    `json:"env"`
	Dir    string      `json:"dir"`
	Mounts []mountSpec `json:"mounts"`
	// CreatedLog: pod-exec appends every mount-target directory it had to create on the host
	// filesystem, so that the agent can remove them (when empty) on shutdown.
	CreatedLog string `json:"createdLog"`
}

type mountSpec struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
}

// runOnce starts the container's process and waits for it to exit or the pod to stop.
func (r *podRunner) runOnce(ctx context.Context, st *ctrState) (int32, string, string) {
	c := &st.spec
	setTerm := func(code int32, reason, msg string) (int32, string, string) {
		now := metav1.Now()
		r.mu.Lock()
		started := st.startedAt
		if started.IsZero() {
			started = now
		}
		st.running, st.ready, st.started = false, false, false
		st.term = &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg, StartedAt: started, FinishedAt: now,
			ContainerID: fmt.Sprintf("kfaas-process://%s/%s", r.uid, c.Name)}
		r.mu.Unlock()
		r.markDirty()
		return code, reason, msg
	}
	spec, err := r.buildExec(ctx, c)
	if err != nil {
		r.mu.Lock()
		st.waiting, st.waitMsg = "CreateContainerConfigError", err.Error()
		r.mu.Unlock()
		r.markDirty()
		r.logf("container %s: %v", c.Name, err)
		select {
		case <-r.stopCh:
		case <-time.After(2 * time.Second):
		}
		return setTerm(128, "CreateContainerConfigError", err.Error())
	}
	specPath := filepath.Join(r.dir, c.Name+".exec.json")
	raw, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, raw, 0o600); err != nil {
		return setTerm(128, "StartError", err.Error())
	}
	logPath := filepath.Join(r.dir, c.Name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return setTerm(128, "StartError", err.Error())
	}
	defer lf.Close()
	fmt.Fprintf(lf, "==== %s kfaas node: start %q (restart %d)\n", time.Now().Format(time.RFC3339Nano), spec.Argv, st.restarts)
	cmd := exec.Command(r.a.self, "pod-exec", specPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:      true,
		Pdeathsig:    syscall.SIGKILL,
		Unshareflags: syscall.CLONE_NEWNS, // private mounts for the pod's volumes
	}
	if err := cmd.Start(); err != nil {
		r.logf("container %s: start: %v", c.Name, err)
		return setTerm(128, "StartError", err.Error())
	}
	exited := make(chan struct{})
	kill := make(chan string, 1)
	r.mu.Lock()
	st.cmd, st.running, st.startedAt, st.waiting, st.waitMsg, st.term = cmd, true, metav1.Now(), "", "", nil
	st.exited, st.killReq = exited, kill
	st.started = c.StartupProbe == nil
	st.ready = false
	r.mu.Unlock()
	r.markDirty()
	r.logf("container %s: started pid %d: %q", c.Name, cmd.Process.Pid, spec.Argv)

	probeCtx, stopProbes := context.WithCancel(ctx)
	go r.probeLoop(probeCtx, st, spec.Env)

	var waitErr error
	waitDone := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(waitDone) }()
	reasonOverride := ""
	select {
	case <-waitDone:
	case <-r.stopCh:
		r.mu.Lock()
		grace := r.grace
		r.mu.Unlock()
		if p := r.pod(); p.Spec.TerminationGracePeriodSeconds != nil && r.pod().DeletionTimestamp == nil && grace > time.Duration(*p.Spec.TerminationGracePeriodSeconds)*time.Second {
			grace = time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
		}
		terminate(cmd, grace, waitDone)
	case why := <-kill:
		r.logf("container %s: %s; killing", c.Name, why)
		reasonOverride = "Error"
		g := 30 * time.Second
		if p := r.pod(); p.Spec.TerminationGracePeriodSeconds != nil {
			g = time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
		}
		terminate(cmd, g, waitDone)
	}
	stopProbes()
	close(exited)
	code := int32(0)
	reason := "Completed"
	if waitErr != nil {
		code, reason = 1, "Error"
		if ee, ok := waitErr.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
				if ws.Signaled() {
					code = 128 + int32(ws.Signal())
				} else {
					code = int32(ws.ExitStatus())
				}
			}
		}
	}
	if reasonOverride != "" {
		reason = reasonOverride
	}
	msg := ""
	if code != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = logTail(logPath, 2048)
	}
	fmt.Fprintf(lf, "==== %s kfaas node: exited with code %d\n", time.Now().Format(time.RFC3339Nano), code)
	r.logf("container %s: exited with code %d", c.Name, code)
	return setTerm(code, reason, msg)
}

// terminate sends SIGTERM to the process group, then SIGKILL after grace.
func terminate(cmd *exec.Cmd, grace time.Duration, done <-chan struct{}) {
	pgid := cmd.Process.Pid
	if grace > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers in the group
			return
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-done
}

// buildExec turns a container into argv, env, working dir and mounts.
func (r *podRunner) buildExec(ctx context.Context, c *corev1.Container) (*execSpec, error) {
	pod := r.pod()
	rule := r.a.cfg.match(c.Image)
	if rule == nil && len(c.Command) == 0 {
		return nil, fmt.Errorf("image %q has no mapping in the node config and the container has no command", c.Image)
	}
	base := newEnvList()
	for _, k := range []string{"PATH", "HOME", "LANG", "TMPDIR", "RUSTUP_HOME", "CARGO_HOME", "PYENV_ROOT", "NODE_PATH"} {
		if v, ok := os.LookupEnv(k); ok {
			base.set(k, v)
		}
	}
	base.set("HOSTNAME", pod.Name)
	if pod.Spec.Hostname != "" {
		base.set("HOSTNAME", pod.Spec.Hostname)
	}
	for _, k := range sortedKeys(r.a.cfg.Env) {
		base.set(k, r.a.cfg.Env[k])
	}
	if rule != nil {
		for _, k := range sortedKeys(rule.Env) {
			base.set(k, rule.Env[k])
		}
	}
	port := strconv.Itoa(r.a.apiPort)
	base.set("KUBERNETES_SERVICE_HOST", r.a.hostIP)
	base.set("KUBERNETES_SERVICE_PORT", port)
	base.set("KUBERNETES_SERVICE_PORT_HTTPS", port)
	base.set("KUBERNETES_PORT", "tcp://"+r.a.hostIP+":"+port)
	base.set("KUBERNETES_PORT_443_TCP", "tcp://"+r.a.hostIP+":"+port)
	base.set("POD_IP", r.ip)
	base.set("KFAAS_POD_DIR", r.dir)
	if r.vols != nil && r.vols.kubeconfig != "" && r.a.cfg.podKubeconfig() {
		base.set("KUBECONFIG", r.vols.kubeconfig)
	}
	env, err := r.containerEnv(ctx, c, base)
	if err != nil {
		return nil, err
	}
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(argv, c.Command...)
		argv = append(argv, c.Args...)
	case rule != nil:
		argv = append(argv, rule.Entrypoint...)
		if len(c.Args) > 0 {
			argv = append(argv, c.Args...)
		} else {
			argv = append(argv, rule.Cmd...)
		}
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("image %q: no entrypoint configured and no command given", c.Image)
	}
	for i := range argv {
		argv[i] = expandVars(argv[i], env.get)
	}
	argv[0] = rule.resolveCommand(argv[0])
	dir := c.WorkingDir
	if dir == "" && rule != nil {
		dir = rule.WorkingDir
	}
	if dir == "" {
		dir = r.dir
	}
	var mounts []mountSpec
	if rule != nil {
		for _, target := range sortedKeys(rule.Mounts) {
			mounts = append(mounts, mountSpec{Source: rule.Mounts[target], Target: target, ReadOnly: true})
		}
	}
	// /etc/hosts and, with the cluster DNS up, /etc/resolv.conf as the kubelet writes them.
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	hosts := filepath.Join(r.dir, "etc-hosts")
	if err := atomicWrite(hosts, []byte(fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", r.ip, hostname))); err != nil {
		return nil, err
	}
	mounts = append(mounts, mountSpec{Source: hosts, Target: "/etc/hosts", ReadOnly: true})
	dnsPolicy := pod.Spec.DNSPolicy
	clusterDNS := dnsPolicy == "" || dnsPolicy == corev1.DNSClusterFirstWithHostNet ||
		(dnsPolicy == corev1.DNSClusterFirst && !pod.Spec.HostNetwork)
	if clusterDNS && r.a.svc != nil && r.a.svc.dnsUp.Load() {
		rc := filepath.Join(r.dir, "resolv.conf")
		if err := atomicWrite(rc, []byte(resolvConf(pod.Namespace))); err != nil {
			return nil, err
		}
		mounts = append(mounts, mountSpec{Source: rc, Target: "/etc/resolv.conf", ReadOnly: true})
	}
	if r.vols != nil {
		vm, err := r.vols.mountsFor(c)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, vm...)
	}
	return &execSpec{Argv: argv, Env: env.environ(), Dir: dir, Mounts: mounts, CreatedLog: filepath.Join(r.a.dir, "pods", "created-paths")}, nil
}

// statusLoop writes the pod status whenever something changed (coalesced).
func (r *podRunner) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.dirty:
		}
		r.writeStatus(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *podRunner) writeStatus(ctx context.Context) {
	st := r.buildStatus()
	patch, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return
	}
	p := r.pod()
	_, err = r.a.cs.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "not found") {
		r.logf("status: %v", err)
	}
}

func (r *podRunner) buildStatus() corev1.PodStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.cur
	now := metav1.Now()
	ctrStatus := func(st *ctrState) corev1.ContainerStatus {
		cs := corev1.ContainerStatus{
			Name: st.spec.Name, Image: st.spec.Image, ImageID: "kfaas-process://" + st.spec.Image,
			RestartCount: st.restarts, Ready: st.running && st.ready, LastTerminationState: corev1.ContainerState{Terminated: st.lastTerm},
		}
		started := st.running && st.started
		cs.Started = &started
		switch {
		case st.running:
			cs.ContainerID = fmt.Sprintf("kfaas-process://%s/%s", r.uid, st.spec.Name)
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: st.startedAt}
		case st.term != nil:
			cs.ContainerID = st.term.ContainerID
			cs.State.Terminated = st.term
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: st.waiting, Message: st.waitMsg}
		}
		return cs
	}
	var initStatuses, statuses []corev1.ContainerStatus
	initOK := true
	for _, name := range r.initOrder {
		st := r.ctrs[name]
		initStatuses = append(initStatuses, ctrStatus(st))
	}
	initOK = r.initDone
	allReady, anyRunning, allDone, anyFailed := true, false, true, false
	for _, c := range p.Spec.Containers {
		st := r.ctrs[c.Name]
		cs := ctrStatus(st)
		statuses = append(statuses, cs)
		if !cs.Ready {
			allReady = false
		}
		if st.running {
			anyRunning = true
		}
		if st.term == nil || st.running {
			allDone = false
		} else if st.term.ExitCode != 0 {
			anyFailed = true
		}
	}
	phase := corev1.PodPending
	switch {
	case r.podFailed != "":
		phase = corev1.PodFailed
	case !initOK:
		// An init container that failed for good fails the pod.
		for _, name := range r.initOrder {
			if st := r.ctrs[name]; !st.sidecar && st.term != nil && st.term.ExitCode != 0 && r.restartPolicyLocked(st) == corev1.RestartPolicyNever {
				phase = corev1.PodFailed
			}
		}
	case allDone && p.Spec.RestartPolicy != corev1.RestartPolicyAlways && len(statuses) > 0:
		phase = corev1.PodSucceeded
		if anyFailed {
			phase = corev1.PodFailed
		}
	case anyRunning || allDone:
		phase = corev1.PodRunning
	}
	if r.stopping && !anyRunning && p.DeletionTimestamp != nil && phase == corev1.PodRunning {
		phase = corev1.PodFailed // kubelet reports terminated pods as Failed/Succeeded
		if !anyFailed {
			phase = corev1.PodSucceeded
		}
	}
	ready := allReady && initOK && phase == corev1.PodRunning
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: now}
		for _, old := range p.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	conds := []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, r.ip != "", "Sandbox"),
		cond(corev1.PodInitialized, initOK, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, ready, "ContainersNotReady"),
		cond(corev1.PodReady, ready, "ContainersNotReady"),
	}
	for _, old := range p.Status.Conditions {
		if old.Type == corev1.PodScheduled {
			conds = append(conds, old)
		}
	}
	st := corev1.PodStatus{
		Phase: phase, Conditions: conds, HostIP: r.a.hostIP, HostIPs: []corev1.HostIP{{IP: r.a.hostIP}},
		StartTime: &r.started, InitContainerStatuses: initStatuses, ContainerStatuses: statuses, QOSClass: p.Status.QOSClass,
	}
	if r.podFailed != "" {
		st.Reason, st.Message = "NodeAgentError", r.podFailed
	}
	if r.ip != "" {
		st.PodIP, st.PodIPs = r.ip, []corev1.PodIP{{IP: r.ip}}
	}
	return st
}

func (r *podRunner) restartPolicyLocked(st *ctrState) corev1.RestartPolicy {
	if st.sidecar {
		return corev1.RestartPolicyAlways
	}
	if r.cur.Spec.RestartPolicy == corev1.RestartPolicyNever {
		return corev1.RestartPolicyNever
	}
	if st.init {
		return corev1.RestartPolicyOnFailure
	}
	return r.cur.Spec.RestartPolicy
}

// logTail returns the output of the last run in a container log, at most max bytes.
func logTail(path string, max int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := string(raw)
	if i := strings.LastIndex(s, "==== "); i >= 0 {
		if nl := strings.IndexByte(s[i:], '\n'); nl >= 0 {
			s = s[i+nl+1:]
		}
	}
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return s
}
