// Command controlplane runs a real, local Kubernetes control plane for Tenantry's
// development and integration tests: an embedded etcd, the real kube-apiserver and a
// kube-controller-manager with the controllers an operator test needs.
//
// It is one multi-call binary (the hyperkube pattern). The kube-apiserver and the
// kube-controller-manager install process-wide signal handlers and cannot be stopped
// in-process, so `controlplane up` re-executes itself once for each of them and keeps
// etcd in its own process.
//
//	controlplane up --dir DIR [--kubeconfig FILE] [--lifeline]
//	controlplane kube-apiserver FLAGS...           (internal)
//	controlplane kube-controller-manager FLAGS...  (internal)
//	controlplane kstatus < object.json              (kstatus verdict on one object)
//	controlplane lua SCRIPT.lua < object.json       (an Argo CD health script, in gopher-lua)
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := kcm.NewControllerManagerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "up":
		if err := up(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
			os.Exit(1)
		}
	case "kstatus":
		if err := kstatusCmd(); err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
			os.Exit(1)
		}
	case "lua":
		if err := luaCmd(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
			os.Exit(1)
		}
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  controlplane up --dir DIR [--kubeconfig FILE] [--lifeline] [--ready-file FILE]
      start etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 and free
      ports; write an admin kubeconfig; print READY; stop everything on SIGTERM/SIGINT
      (or, with --lifeline, when standard input closes).
`)
}
