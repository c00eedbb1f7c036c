// Command flux applies a directory of manifests the way Flux's kustomize-controller does,
// with Flux's own apply engine (github.com/fluxcd/pkg/ssa): server-side apply in stages
// (Namespaces, CRDs and ClusterRoles first, then the rest, each stage dry-run before it is
// applied), then waits for every object to be Current by kstatus, as `wait: true` does.
//
//	flux apply --kubeconfig FILE [--timeout 2m] DIR
//
// It prints one line per object (`Kind/namespace/name action`) and exits non-zero, with
// Flux's error, when the apply or the wait fails. Tenantry's integration tests run it
// (tests/integration/gitops.rs); it is not part of the product.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "apply" {
		fmt.Fprintln(os.Stderr, "usage: flux apply --kubeconfig FILE [--timeout 2m] DIR")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("apply", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for every object to be Current")
	_ = fs.Parse(os.Args[2:])
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "flux apply: one directory expected")
		os.Exit(2)
	}
	if err := apply(*kubeconfig, fs.Arg(0), *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "flux apply: %v\n", err)
		os.Exit(1)
	}
}

func apply(kubeconfig, dir string, timeout time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", kubeconfig, err)
	}
	manager, err := newManager(cfg)
	if err != nil {
		return err
	}
	objects, err := readDir(dir)
	if err != nil {
		return err
	}
	// What kustomize-controller does with a Kustomization's objects.
	manager.SetOwnerLabels(objects, "tenancy", "flux-system")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	opts := ssa.DefaultApplyOptions()
	opts.WaitTimeout = timeout
	changes, err := manager.ApplyAllStaged(ctx, objects, opts)
	if changes != nil {
		for _, e := range changes.Entries {
			fmt.Printf("%s %s\n", e.Subject, e.Action)
		}
	}
	if err != nil {
		return fmt.Errorf("applying: %w", err)
	}
	if err := manager.WaitForSet(changes.ToObjMetadataSet(), ssa.WaitOptions{Interval: time.Second, Timeout: timeout}); err != nil {
		return fmt.Errorf("waiting (kstatus): %w", err)
	}
	fmt.Println("all Current")
	return nil
}

func newManager(cfg *rest.Config) (*ssa.ResourceManager, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	poller := polling.NewStatusPoller(c, mapper, polling.Options{})
	return ssa.NewResourceManager(c, poller, ssa.Owner{
		Field: "kustomize-controller",
		Group: "kustomize.toolkit.fluxcd.io",
	}), nil
}

// readDir reads every .yaml file of dir, in name order, as kustomize-controller reads a
// plain directory.
func readDir(dir string) ([]*unstructured.Unstructured, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var objects []*unstructured.Unstructured
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		objs, err := utils.ReadObjects(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		objects = append(objects, objs...)
	}
	return objects, nil
}
