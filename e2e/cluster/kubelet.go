package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// serveKubelet serves the part of the kubelet API the API server proxies for `kubectl logs`:
// GET /containerLogs/{namespace}/{pod}/{container} (follow, tailLines, previous, limitBytes),
// over TLS on hostIP:10250, for clients with a certificate from the cluster CA.
func (a *agent) serveKubelet(ctx context.Context) {
	pkiDir := filepath.Join(a.dir, "pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "kubelet.crt"), filepath.Join(pkiDir, "kubelet.key"))
	if err != nil {
		logf("node: kubelet endpoint disabled: %v", err)
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.caPEM)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", a.containerLogs)
	srv := &http.Server{
		Addr:      net.JoinHostPort(a.hostIP, "10250"),
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
	}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServeTLS("", ""); err != nil && ctx.Err() == nil {
		logf("node: kubelet endpoint: %v", err)
	}
}

// podDir finds the directory of the newest pod with this namespace and name.
func (a *agent) podDir(ns, name string) string {
	matches, _ := filepath.Glob(filepath.Join(a.dir, "pods", ns+"_"+name+"_*"))
	sort.Slice(matches, func(i, j int) bool {
		fi, _ := os.Stat(matches[i])
		fj, _ := os.Stat(matches[j])
		return fi != nil && fj != nil && fi.ModTime().After(fj.ModTime())
	})
	if len(matches) == 0 {
		return ""
	}
	return matches[0]
}

func (a *agent) containerLogs(w http.ResponseWriter, r *http.Request) {
	dir := a.podDir(r.PathValue("ns"), r.PathValue("pod"))
	container := r.PathValue("container")
	if dir == "" || strings.ContainsAny(container, "/.") {
		http.Error(w, "pod not found on this node", http.StatusNotFound)
		return
	}
	path := filepath.Join(dir, container+".log")
	raw, err := os.ReadFile(path)
	if err != nil {
		http.Error(w, "no logs for container "+container, http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	// Runs are separated by the agent's "==== " marker lines; show the last (or the one
	// before it with previous=true), without the markers.
	var runs [][]string
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		if strings.HasPrefix(line, "==== ") {
			if strings.Contains(line, "kfaas node: start") {
				runs = append(runs, nil)
			}
			continue
		}
		if line == "" {
			continue
		}
		if len(runs) == 0 {
			runs = append(runs, nil)
		}
		runs[len(runs)-1] = append(runs[len(runs)-1], line)
	}
	idx := len(runs) - 1
	if q.Get("previous") == "true" {
		idx--
	}
	if idx < 0 {
		http.Error(w, "no previous run of container "+container, http.StatusBadRequest)
		return
	}
	lines := runs[idx]
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 && n < len(lines) {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "")
	if n, err := strconv.Atoi(q.Get("limitBytes")); err == nil && n >= 0 && n < len(out) {
		out = out[:n]
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, out)
	if q.Get("follow") != "true" || idx != len(runs)-1 {
		return
	}
	// Follow: stream what the process writes next, until the client goes away or the run ends.
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(int64(len(raw)), io.SeekStart); err != nil {
		return
	}
	flusher, _ := w.(http.Flusher)
	rd := bufio.NewReader(f)
	for {
		line, err := rd.ReadString('\n')
		if line != "" && strings.HasSuffix(line, "\n") {
			if strings.HasPrefix(line, "==== ") {
				return
			}
			_, _ = io.WriteString(w, line)
			if flusher != nil {
				flusher.Flush()
			}
			continue
		}
		if err != nil {
			// Partial line or EOF: wait for more, keeping what was read.
			if line != "" {
				_, _ = f.Seek(-int64(len(line)), io.SeekCurrent)
				rd.Reset(f)
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}
