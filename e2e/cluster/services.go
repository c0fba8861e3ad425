package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// The node is also the cluster's kube-proxy and DNS, in user space: for every Service with a
// cluster IP it listens on clusterIP:port (TCP; bindable because the run's network namespace
// routes 10.96.0.0/16 to lo) and forwards each connection to a ready endpoint from the
// EndpointSlices; it answers DNS (A records for <svc>.<ns>.svc.cluster.local) on 10.96.0.10:53,
// and pod processes get a resolv.conf naming it.

const (
	clusterDomain = "cluster.local"
	dnsIP         = "10.96.0.10"
)

type serviceProxy struct {
	a         *agent
	services  cache.Indexer
	slices    cache.Indexer
	mu        sync.Mutex
	listeners map[string]*svcListener // "ip:port"
	warned    map[string]bool
	dnsUp     atomic.Bool
}

type svcListener struct {
	ns, name, portName string
	l                  net.Listener
	rr                 atomic.Uint32
}

const bySvc = "service"

func (a *agent) startServices(ctx context.Context) *serviceProxy {
	factory := informers.NewSharedInformerFactory(a.cs, 0)
	svcInf := factory.Core().V1().Services().Informer()
	sliceInf := factory.Discovery().V1().EndpointSlices().Informer()
	_ = sliceInf.AddIndexers(cache.Indexers{bySvc: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
	}})
	p := &serviceProxy{a: a, services: svcInf.GetIndexer(), slices: sliceInf.GetIndexer(),
		listeners: map[string]*svcListener{}, warned: map[string]bool{}}
	resync := func(any) { p.sync() }
	_, _ = svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: resync, UpdateFunc: func(_, o any) { p.sync() }, DeleteFunc: resync,
	})
	factory.Start(ctx.Done())
	go p.reserveDNSService(ctx)
	go p.serveDNS(ctx)
	return p
}

// reserveDNSService creates kube-system/kube-dns with cluster IP 10.96.0.10 (no selector), so
// the allocator never hands that address to another Service, and so clients find it.
func (p *serviceProxy) reserveDNSService(ctx context.Context) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{
			"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{ClusterIP: dnsIP, Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
		}},
	}
	for i := 0; i < 30; i++ {
		_, err := p.a.cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (p *serviceProxy) sync() {
	want := map[string]*svcListener{}
	for _, obj := range p.services.List() {
		svc, ok := obj.(*corev1.Service)
		if !ok || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		if svc.Namespace == "kube-system" && svc.Name == "kube-dns" {
			continue // served by serveDNS
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			key := net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(sp.Port)))
			want[key] = &svcListener{ns: svc.Namespace, name: svc.Name, portName: sp.Name}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, l := range p.listeners {
		if w, ok := want[key]; !ok || w.ns != l.ns || w.name != l.name || w.portName != l.portName {
			l.l.Close()
			delete(p.listeners, key)
		}
	}
	for key, w := range want {
		if _, ok := p.listeners[key]; ok {
			continue
		}
		ln, err := net.Listen("tcp", key)
		if err != nil {
			if !p.warned[key] {
				logf("node: service %s/%s: cannot listen on %s (%v); is 10.96.0.0/16 routed to lo?", w.ns, w.name, key, err)
				p.warned[key] = true
			}
			continue
		}
		w.l = ln
		p.listeners[key] = w
		go p.accept(w)
	}
}

func (p *serviceProxy) accept(l *svcListener) {
	for {
		c, err := l.l.Accept()
		if err != nil {
			return
		}
		go p.forward(l, c)
	}
}

// endpoints lists the ready "ip:port" backends of a service port.
func (p *serviceProxy) endpoints(ns, name, portName string) []string {
	objs, _ := p.slices.ByIndex(bySvc, ns+"/"+name)
	var out []string
	for _, obj := range objs {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		port := int32(-1)
		for _, ep := range s.Ports {
			n := ""
			if ep.Name != nil {
				n = *ep.Name
			}
			if n == portName && ep.Port != nil {
				port = *ep.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, addr := range e.Addresses {
				out = append(out, net.JoinHostPort(addr, strconv.Itoa(int(port))))
			}
		}
	}
	return out
}

func (p *serviceProxy) forward(l *svcListener, c net.Conn) {
	defer c.Close()
	eps := p.endpoints(l.ns, l.name, l.portName)
	if len(eps) == 0 {
		return // like kube-proxy's reject rule: no ready endpoint, connection closed
	}
	start := int(l.rr.Add(1))
	var up net.Conn
	var err error
	for i := range eps {
		up, err = net.DialTimeout("tcp", eps[(start+i)%len(eps)], 5*time.Second)
		if err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// lookup answers A queries for cluster names: <svc>.<ns>.svc.cluster.local gives the cluster
// IP, or the ready endpoint addresses of a headless service. ok=false means NXDOMAIN.
func (p *serviceProxy) lookup(name string) (ips []net.IP, ok bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	rest, found := strings.CutSuffix(name, ".svc."+clusterDomain)
	if !found {
		return nil, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 2 {
		return nil, false
	}
	obj, exists, _ := p.services.GetByKey(parts[1] + "/" + parts[0])
	if !exists {
		return nil, false
	}
	svc := obj.(*corev1.Service)
	if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		return []net.IP{net.ParseIP(svc.Spec.ClusterIP)}, true
	}
	seen := map[string]bool{}
	objs, _ := p.slices.ByIndex(bySvc, svc.Namespace+"/"+svc.Name)
	for _, o := range objs {
		for _, e := range o.(*discoveryv1.EndpointSlice).Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				if !seen[a] {
					seen[a] = true
					ips = append(ips, net.ParseIP(a))
				}
			}
		}
	}
	return ips, true
}

// resolvConf is what pod processes with dnsPolicy ClusterFirst see as /etc/resolv.conf.
func resolvConf(ns string) string {
	return fmt.Sprintf("nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n",
		dnsIP, ns, clusterDomain, clusterDomain, clusterDomain)
}
