package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// kstatusCmd prints the kstatus verdict (the library Flux's health checks use) on one
// object, read as JSON from standard input: `<status>\t<message>`.
func kstatusCmd() error {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	res, err := status.Compute(obj)
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\n", res.Status, res.Message)
	return nil
}
