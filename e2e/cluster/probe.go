package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeLoop runs the startup probe until it passes, then readiness and liveness probes,
// against the pod IP. Failing startup/liveness probes restart the container.
func (r *podRunner) probeLoop(ctx context.Context, st *ctrState, env []string) {
	c := &st.spec
	r.mu.Lock()
	kill := st.killReq
	r.mu.Unlock()
	if c.StartupProbe != nil {
		if !r.probeUntil(ctx, c, c.StartupProbe, env, true) {
			if ctx.Err() == nil {
				select {
				case kill <- "startup probe failed":
				default:
				}
			}
			return
		}
		r.mu.Lock()
		st.started = true
		r.mu.Unlock()
		r.markDirty()
	}
	if c.ReadinessProbe == nil {
		r.mu.Lock()
		st.ready = true
		r.mu.Unlock()
		r.markDirty()
	} else {
		go r.readiness(ctx, st, env)
	}
	if c.LivenessProbe != nil {
		if !r.probeUntil(ctx, c, c.LivenessProbe, env, false) && ctx.Err() == nil {
			select {
			case kill <- "liveness probe failed":
			default:
			}
		}
	}
}

// probeUntil probes every period; with wantSuccess it returns true on the first
// success threshold reached, otherwise it returns false once the failure threshold is hit.
func (r *podRunner) probeUntil(ctx context.Context, c *corev1.Container, p *corev1.Probe, env []string, wantSuccess bool) bool {
	period, failures := probeTiming(p)
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return false
	}
	fails := int32(0)
	for {
		ok, _ := r.probeOnce(ctx, c, p, env)
		if ok {
			fails = 0
			if wantSuccess {
				return true
			}
		} else {
			fails++
			if fails >= failures {
				return false
			}
		}
		if !sleepCtx(ctx, period) {
			return false
		}
	}
}

func (r *podRunner) readiness(ctx context.Context, st *ctrState, env []string) {
	c := &st.spec
	p := c.ReadinessProbe
	period, failures := probeTiming(p)
	successes := max(p.SuccessThreshold, 1)
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return
	}
	okRun, failRun := int32(0), int32(0)
	for {
		ok, msg := r.probeOnce(ctx, c, p, env)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		before := st.ready
		if ok {
			okRun, failRun = okRun+1, 0
			if okRun >= successes {
				st.ready = true
			}
		} else {
			okRun, failRun = 0, failRun+1
			if failRun >= failures {
				st.ready = false
			}
		}
		changed := before != st.ready
		r.mu.Unlock()
		if changed {
			r.logf("container %s: ready=%v %s", c.Name, !before, msg)
			r.markDirty()
		}
		if !sleepCtx(ctx, period) {
			return
		}
	}
}

func probeTiming(p *corev1.Probe) (time.Duration, int32) {
	period := time.Duration(p.PeriodSeconds) * time.Second
	if period <= 0 {
		period = 10 * time.Second
	}
	failures := p.FailureThreshold
	if failures <= 0 {
		failures = 3
	}
	return period, failures
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (r *podRunner) resolvePort(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no port named %q", port.StrVal)
}

func (r *podRunner) probeOnce(ctx context.Context, c *corev1.Container, p *corev1.Probe, env []string) (bool, string) {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r.mu.Lock()
	ip := r.ip
	r.mu.Unlock()
	switch {
	case p.HTTPGet != nil:
		h := p.HTTPGet
		port, err := r.resolvePort(c, h.Port)
		if err != nil {
			return false, err.Error()
		}
		host := h.Host
		if host == "" {
			host = ip
		}
		scheme := "http"
		if h.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := h.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/"+strings.TrimPrefix(kubeVersion(), "v"))
		for _, hd := range h.HTTPHeaders {
			if strings.EqualFold(hd.Name, "host") {
				req.Host = hd.Value
			} else {
				req.Header.Set(hd.Name, hd.Value)
			}
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400, "HTTP " + resp.Status
	case p.TCPSocket != nil, p.GRPC != nil:
		var port int
		var err error
		host := ip
		if p.TCPSocket != nil {
			port, err = r.resolvePort(c, p.TCPSocket.Port)
			if p.TCPSocket.Host != "" {
				host = p.TCPSocket.Host
			}
		} else {
			port = int(p.GRPC.Port) // a TCP connect stands in for the gRPC health check
		}
		if err != nil {
			return false, err.Error()
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, "tcp ok"
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return false, "empty exec probe"
		}
		cmd := exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		return true, "exec ok"
	}
	return true, "no handler"
}
