package main

import (
	"context"
	"net"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// serveDNS answers queries on 10.96.0.10:53 (UDP). Cluster names come from lookup; names
// outside cluster.local are refused (the run's network namespace has no upstream anyway).
func (p *serviceProxy) serveDNS(ctx context.Context) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(dnsIP, "53"))
	if err != nil {
		logf("node: DNS: cannot listen on %s:53 (%v); cluster names will not resolve", dnsIP, err)
		return
	}
	p.dnsUp.Store(true)
	go func() { <-ctx.Done(); pc.Close() }()
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := p.answer(buf[:n]); resp != nil {
			_, _ = pc.WriteTo(resp, addr)
		}
	}
}

func (p *serviceProxy) answer(req []byte) []byte {
	var parser dnsmessage.Parser
	hdr, err := parser.Start(req)
	if err != nil {
		return nil
	}
	q, err := parser.Question()
	if err != nil {
		return nil
	}
	rh := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, OpCode: hdr.OpCode, RecursionDesired: hdr.RecursionDesired}
	name := q.Name.String()
	var answers []dnsmessage.AResource
	inCluster := strings.HasSuffix(strings.TrimSuffix(strings.ToLower(name), "."), clusterDomain)
	switch {
	case !inCluster:
		rh.RCode = dnsmessage.RCodeRefused
		rh.Authoritative = false
	default:
		ips, ok := p.lookup(name)
		if !ok {
			rh.RCode = dnsmessage.RCodeNameError
		} else if q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL {
			for _, ip := range ips {
				if v4 := ip.To4(); v4 != nil {
					var a dnsmessage.AResource
					copy(a.A[:], v4)
					answers = append(answers, a)
				}
			}
		}
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil
	}
	if err := b.Question(q); err != nil {
		return nil
	}
	if err := b.StartAnswers(); err != nil {
		return nil
	}
	for _, a := range answers {
		if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, a); err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
