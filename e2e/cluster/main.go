// kfaas-cluster: a real Kubernetes control plane for the kfaas e2e suite.
//
// One binary holds etcd (embedded), kube-apiserver, kube-controller-manager and
// kube-scheduler (from k8s.io/kubernetes) and a node agent whose pods run as local
// processes. `kfaas-cluster up` prepares certificates and re-executes itself once per
// component, because the components cannot share one process (signal context,
// feature gates and logging flags are process-global).
package main

import (
	"fmt"
	"os"

	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: kfaas-cluster <command> [flags]

commands:
  up --dir DIR [--node-config FILE]   start the whole cluster in the foreground; writes
                                      DIR/admin.kubeconfig and DIR/ready when usable;
                                      SIGTERM/SIGINT stops every component
  version                             print the Kubernetes version built in

internal (started by up):
  etcd DIR | apiserver ARGS | controller-manager ARGS | scheduler ARGS | node ARGS | pod-exec SPEC
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "up":
		os.Exit(runUp(args))
	case "etcd":
		os.Exit(runEtcd(args))
	case "apiserver":
		c := apiserver.NewAPIServerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "controller-manager":
		c := controllermanager.NewControllerManagerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "scheduler":
		c := scheduler.NewSchedulerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "node":
		os.Exit(runNode(args))
	case "pod-exec":
		os.Exit(runPodExec(args))
	case "version":
		fmt.Println(kubeVersion())
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
}
