package main

import (
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd runs a single-member embedded etcd on 127.0.0.1:2379 (clients, plain HTTP:
// it is reachable only inside the cluster's private network namespace) until signalled.
func runEtcd(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: kfaas-cluster etcd DATA_DIR")
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = "kfaas"
	cfg.Dir = filepath.Clean(args[0])
	client, _ := url.Parse("http://127.0.0.1:2379")
	peer, _ := url.Parse("http://127.0.0.1:2380")
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// A throw-away test cluster: durability is not worth the fsync latency.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "5m"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintln(os.Stderr, "etcd: ready on", client.String())
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Fprintln(os.Stderr, "etcd: stopping on", s)
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}
